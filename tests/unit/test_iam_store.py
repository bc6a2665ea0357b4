"""The IAM store against a real SQLite database made by the alembic migrations."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.auth.secrets import SecretBox, SecretError, master_key_path
from lamina.auth.sessions import LAMBDA_TRUST_POLICY
from lamina.credentials import Credentials
from lamina.errors import (
    DeleteConflict,
    EntityAlreadyExists,
    LimitExceeded,
    MalformedPolicyDocument,
    NoSuchEntity,
    ValidationError,
)
from lamina.store.iam import IamStore
from lamina.store.metadata import MetadataStore

ACCOUNT = "123456789012"
ROOT = Credentials("AKIAROOTROOTROOTROOT", "root-secret-" + "x" * 28)
ALLOW_S3 = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
)
DENY_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}
)


@pytest.fixture
def meta(tmp_path: Path) -> Iterator[MetadataStore]:
    store = MetadataStore.open(tmp_path)
    yield store
    store.close()


@pytest.fixture
def iam(meta: MetadataStore) -> IamStore:
    return IamStore(meta.engine, SecretBox.generate(), ACCOUNT, ROOT)


def test_users_are_unique_without_regard_to_case(iam: IamStore) -> None:
    user = iam.create_user("Alice", "/team/", [{"Key": "k", "Value": "v"}])
    assert user.user_id.startswith("AIDA") and len(user.user_id) == 21
    assert user.arn == f"arn:aws:iam::{ACCOUNT}:user/team/Alice"
    with pytest.raises(EntityAlreadyExists, match="User with name alice already exists"):
        iam.create_user("alice")
    assert iam.get_user("ALICE").name == "Alice"
    assert iam.get_user("Alice").tags == [{"Key": "k", "Value": "v"}]
    assert [u.name for u in iam.list_users("/team/")] == ["Alice"]
    assert iam.list_users("/other/") == []
    with pytest.raises(NoSuchEntity, match=re.escape("The user with name bob cannot be found.")):
        iam.get_user("bob")


def test_access_keys_two_per_user_and_secrets_sealed(iam: IamStore, meta: MetadataStore) -> None:
    iam.create_user("carol")
    first = iam.create_access_key("carol")
    assert first.key.access_key_id.startswith("AKIA") and len(first.key.access_key_id) == 20
    assert len(first.secret_access_key) == 40
    assert first.secret_access_key not in repr(first)
    iam.create_access_key("carol")
    with pytest.raises(LimitExceeded, match="AccessKeysPerUser: 2"):
        iam.create_access_key("carol")
    assert len(iam.list_access_keys("carol")) == 2
    with meta.engine.connect() as conn:
        raw = conn.exec_driver_sql("SELECT secret_sealed FROM iam_access_keys").fetchall()
    assert all(first.secret_access_key.encode() not in bytes(r[0]) for r in raw)

    key = iam.signing_key(first.key.access_key_id)
    assert key is not None and key.active
    assert key.secret_access_key == first.secret_access_key
    assert key.principal.kind == "user" and key.principal.name == "carol"
    assert first.secret_access_key not in repr(key)
    iam.update_access_key("carol", first.key.access_key_id, "Inactive")
    key = iam.signing_key(first.key.access_key_id)
    assert key is not None and not key.active  # the cache was invalidated
    with pytest.raises(
        NoSuchEntity, match=re.escape("The Access Key with id AKIANOPE cannot be found.")
    ):
        iam.delete_access_key("carol", "AKIANOPE")
    with pytest.raises(DeleteConflict, match="must delete access keys first"):
        iam.delete_user("carol")
    for k in iam.list_access_keys("carol"):
        iam.delete_access_key("carol", k.access_key_id)
    assert iam.signing_key(first.key.access_key_id) is None
    iam.delete_user("carol")


def test_root_signing_key_and_unknown_keys(iam: IamStore) -> None:
    root = iam.signing_key(ROOT.access_key_id)
    assert root is not None and root.principal.kind == "root"
    assert root.principal.arn == f"arn:aws:iam::{ACCOUNT}:root"
    assert root.secret_access_key == ROOT.secret_access_key
    assert iam.signing_key("AKIAUNKNOWNUNKNOWN00") is None
    assert iam.identity_policies(root.principal) == []


def test_roles_and_sessions(iam: IamStore) -> None:
    role = iam.create_role("exec", LAMBDA_TRUST_POLICY, "/service/", "runs functions", 7200)
    assert role.role_id.startswith("AROA")
    assert role.arn == f"arn:aws:iam::{ACCOUNT}:role/service/exec"
    assert iam.role(role.arn) == role
    assert iam.role(f"arn:aws:iam::{ACCOUNT}:role/exec") is None  # wrong path
    with pytest.raises(EntityAlreadyExists):
        iam.create_role("EXEC", LAMBDA_TRUST_POLICY)
    with pytest.raises(MalformedPolicyDocument):
        iam.create_role("bad", "{not json")
    with pytest.raises(MalformedPolicyDocument):
        iam.create_role("bad", ALLOW_S3)  # a trust policy names a principal

    creds = iam.mint_role_session(role.arn, "fn-1", 900)
    assert creds.access_key_id.startswith("ASIA")
    assert creds.assumed_role_arn == f"arn:aws:sts::{ACCOUNT}:assumed-role/exec/fn-1"
    assert creds.assumed_role_id == f"{role.role_id}:fn-1"
    assert creds.secret_access_key not in repr(creds)
    key = iam.signing_key(creds.access_key_id)
    assert key is not None and key.session_token == creds.session_token
    assert key.expires == creds.expiration
    assert key.principal.kind == "assumed-role" and key.principal.role_arn == role.arn
    with pytest.raises(ValidationError, match="exceeds the MaxSessionDuration"):
        iam.mint_role_session(role.arn, "fn-1", 7201)
    with pytest.raises(NoSuchEntity):
        iam.mint_role_session(f"arn:aws:iam::{ACCOUNT}:role/nope", "s", 900)

    iam.policies.put_inline("role", "exec", "inline", ALLOW_S3)
    assert iam.identity_policies(key.principal) == [ALLOW_S3]
    with pytest.raises(DeleteConflict, match="must delete policies first"):
        iam.delete_role("exec")
    iam.policies.delete_inline("role", "exec", "inline")
    assert iam.identity_policies(key.principal) == []
    iam.update_trust_policy("exec", LAMBDA_TRUST_POLICY.replace("lambda", "edgelambda"))
    assert "edgelambda" in iam.get_role("exec").trust_policy
    iam.delete_role("exec")
    with pytest.raises(NoSuchEntity, match=re.escape("The role with name exec cannot be found.")):
        iam.get_role("exec")


def test_managed_policies_versions_and_attachments(iam: IamStore) -> None:
    pol = iam.policies
    made = pol.create_policy("s3", ALLOW_S3, "/p/", "read")
    assert made.policy_id.startswith("ANPA")
    assert made.arn == f"arn:aws:iam::{ACCOUNT}:policy/p/s3"
    with pytest.raises(EntityAlreadyExists, match="A policy called S3 already exists"):
        pol.create_policy("S3", ALLOW_S3)
    with pytest.raises(MalformedPolicyDocument):
        pol.create_policy("trusty", LAMBDA_TRUST_POLICY)  # an identity policy names no principal
    with pytest.raises(NoSuchEntity):
        pol.get_policy(f"arn:aws:iam::{ACCOUNT}:policy/s3")  # the path is part of the ARN

    user = iam.create_user("dave")
    pol.attach("user", "dave", made.arn)
    pol.attach("user", "dave", made.arn)  # twice is fine
    assert pol.get_policy(made.arn).attachment_count == 1
    assert [p.name for p in pol.list_policies(only_attached=True)] == ["s3"]
    assert [p.arn for p in pol.attached("user", "dave")] == [made.arn]
    principal = iam.signing_key(iam.create_access_key("dave").key.access_key_id)
    assert principal is not None
    assert iam.identity_policies(principal.principal) == [ALLOW_S3]

    v2 = pol.create_policy_version(made.arn, DENY_ALL, set_default=True)
    assert v2.version_id == "v2" and pol.get_policy(made.arn).default_version == "v2"
    assert iam.identity_policies(principal.principal) == [DENY_ALL]  # cache invalidated
    assert [v.version_id for v in pol.list_policy_versions(made.arn)] == ["v2", "v1"]
    for _ in range(3):
        pol.create_policy_version(made.arn, ALLOW_S3)
    with pytest.raises(LimitExceeded, match="up to 5 versions"):
        pol.create_policy_version(made.arn, ALLOW_S3)
    with pytest.raises(DeleteConflict, match="default version"):
        pol.delete_policy_version(made.arn, "v2")

    with pytest.raises(DeleteConflict, match="must detach all policies first"):
        for k in iam.list_access_keys("dave"):
            iam.delete_access_key("dave", k.access_key_id)
        iam.delete_user("dave")
    with pytest.raises(DeleteConflict, match="attached to entities"):
        pol.delete_policy(made.arn)
    pol.detach("user", "dave", made.arn)
    with pytest.raises(NoSuchEntity, match="was not found"):
        pol.detach("user", "dave", made.arn)
    with pytest.raises(DeleteConflict, match="more than one version"):
        pol.delete_policy(made.arn)
    for v in pol.list_policy_versions(made.arn):
        if not v.is_default:
            pol.delete_policy_version(made.arn, v.version_id)
    pol.delete_policy(made.arn)
    iam.delete_user(user.name)


def test_inline_user_policies_and_size_quota(iam: IamStore) -> None:
    iam.create_user("erin")
    iam.policies.put_inline("user", "erin", "p1", ALLOW_S3)
    iam.policies.put_inline("user", "erin", "p1", DENY_ALL)  # replaces
    assert iam.policies.get_inline("user", "erin", "p1") == DENY_ALL
    assert iam.policies.list_inline("user", "erin") == ["p1"]
    with pytest.raises(
        NoSuchEntity, match=re.escape("The user policy with name p2 cannot be found.")
    ):
        iam.policies.get_inline("user", "erin", "p2")
    big = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::" + "b" * 3000}
    with pytest.raises(LimitExceeded, match="UserPolicySize: 2048"):
        iam.policies.put_inline("user", "erin", "big", json.dumps({"Statement": [big]}))
    with pytest.raises(NoSuchEntity, match=re.escape("The user with name nobody cannot be found.")):
        iam.policies.put_inline("user", "nobody", "p", ALLOW_S3)


def test_secret_box_binds_and_keeps_the_key_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LAMINA_MASTER_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    data = tmp_path / "data"
    box = SecretBox.for_data_dir(data)
    path = master_key_path(data)
    assert not path.exists()  # made on first use only
    sealed = box.seal("s3cr3t", "AKIA1")
    assert path.is_file() and not path.is_relative_to(data)
    assert path.stat().st_mode & 0o777 == 0o600
    assert b"s3cr3t" not in sealed
    assert SecretBox.for_data_dir(data).open(sealed, "AKIA1") == "s3cr3t"  # same key again
    with pytest.raises(SecretError):
        box.open(sealed, "AKIA2")  # bound to its row
    with pytest.raises(SecretError):
        SecretBox.generate().open(sealed, "AKIA1")
    monkeypatch.setenv("LAMINA_MASTER_KEY", "A" * 43 + "=")
    assert SecretBox.for_data_dir(data).source == "LAMINA_MASTER_KEY"
    assert "AAAA" not in repr(SecretBox.for_data_dir(data))


def test_keys_sealed_under_another_master_key_do_not_sign(
    iam: IamStore, meta: MetadataStore
) -> None:
    iam.create_user("frank")
    made = iam.create_access_key("frank")
    other = IamStore(meta.engine, SecretBox.generate(), ACCOUNT, ROOT)  # a different master key
    assert other.signing_key(made.key.access_key_id) is None
    assert iam.signing_key(made.key.access_key_id) is not None
