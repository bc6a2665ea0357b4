"""IAM and STS on lamina's one endpoint, driven by real boto3 `iam` and `sts` clients."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.e2e.server import Server, signed

ACCOUNT = "000000000000"
ALLOW_S3 = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}
DENY_ALL = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}],
}


def trust(principal: dict[str, str]) -> str:
    stmt = {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}
    return json.dumps({"Version": "2012-10-17", "Statement": [stmt]})


ACCOUNT_TRUST = trust({"AWS": f"arn:aws:iam::{ACCOUNT}:root"})
LAMBDA_TRUST = trust({"Service": "lambda.amazonaws.com"})


@pytest.fixture(scope="module")
def iam_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A lamina of this module's own, its master key under a config dir of its own."""
    base = tmp_path_factory.mktemp("iam")
    srv = Server(
        base / "data", "--isolation", "process", env={"XDG_CONFIG_HOME": str(base / "config")}
    )
    srv.start()
    yield srv
    srv.stop()
    print(srv.log)  # shown by pytest only when a test fails


@pytest.fixture(scope="module")
def iam(iam_server: Server) -> Any:
    return iam_server.client("iam")


@pytest.fixture(scope="module")
def sts(iam_server: Server) -> Any:
    return iam_server.client("sts")


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_users(iam: Any) -> None:
    made = iam.create_user(UserName="u-alice", Path="/team/", Tags=[{"Key": "k", "Value": "v"}])
    user = made["User"]
    assert user["UserId"].startswith("AIDA")
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/team/u-alice"
    assert isinstance(user["CreateDate"], datetime)
    got = iam.get_user(UserName="u-alice")["User"]
    assert got["UserId"] == user["UserId"] and got["Tags"] == [{"Key": "k", "Value": "v"}]
    assert "u-alice" in [u["UserName"] for u in iam.list_users(PathPrefix="/team/")["Users"]]

    with pytest.raises(iam.exceptions.EntityAlreadyExistsException) as dup:
        iam.create_user(UserName="U-ALICE")
    assert dup.value.response["Error"]["Message"] == "User with name U-ALICE already exists."
    assert dup.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    with pytest.raises(iam.exceptions.NoSuchEntityException) as missing:
        iam.get_user(UserName="u-nobody")
    assert "The user with name u-nobody cannot be found." in str(missing.value)
    with pytest.raises(ClientError) as bad:
        iam.create_user(UserName="bad name!")
    assert code(bad) == "ValidationError"
    assert "regular expression pattern" in str(bad.value)
    with pytest.raises(ClientError) as long_name:
        iam.create_user(UserName="x" * 65)
    assert code(long_name) == "ValidationError"

    me = iam.get_user()["User"]  # no UserName: the caller (root until SigV4 is enforced)
    assert me["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"

    iam.delete_user(UserName="u-alice")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.delete_user(UserName="u-alice")


def test_access_keys(iam: Any) -> None:
    iam.create_user(UserName="u-keys")
    first = iam.create_access_key(UserName="u-keys")["AccessKey"]
    assert first["AccessKeyId"].startswith("AKIA") and len(first["AccessKeyId"]) == 20
    assert len(first["SecretAccessKey"]) == 40 and first["Status"] == "Active"
    second = iam.create_access_key(UserName="u-keys")["AccessKey"]
    with pytest.raises(iam.exceptions.LimitExceededException):
        iam.create_access_key(UserName="u-keys")

    listed = iam.list_access_keys(UserName="u-keys")["AccessKeyMetadata"]
    assert {k["AccessKeyId"] for k in listed} == {first["AccessKeyId"], second["AccessKeyId"]}
    assert all("SecretAccessKey" not in k for k in listed)
    iam.update_access_key(UserName="u-keys", AccessKeyId=first["AccessKeyId"], Status="Inactive")
    listed = iam.list_access_keys(UserName="u-keys")["AccessKeyMetadata"]
    assert {k["AccessKeyId"]: k["Status"] for k in listed}[first["AccessKeyId"]] == "Inactive"
    with pytest.raises(ClientError) as bad_status:
        iam.update_access_key(UserName="u-keys", AccessKeyId=first["AccessKeyId"], Status="Off")
    assert code(bad_status) == "ValidationError"

    with pytest.raises(iam.exceptions.DeleteConflictException):
        iam.delete_user(UserName="u-keys")
    with pytest.raises(iam.exceptions.NoSuchEntityException) as gone:
        iam.delete_access_key(UserName="u-keys", AccessKeyId="AKIAAAAAAAAAAAAAAAAA")
    assert "The Access Key with id AKIAAAAAAAAAAAAAAAAA cannot be found." in str(gone.value)
    for key in (first, second):
        iam.delete_access_key(UserName="u-keys", AccessKeyId=key["AccessKeyId"])
    assert iam.list_access_keys(UserName="u-keys")["AccessKeyMetadata"] == []
    iam.delete_user(UserName="u-keys")


def test_roles(iam: Any) -> None:
    made = iam.create_role(
        RoleName="r-exec",
        Path="/service/",
        AssumeRolePolicyDocument=LAMBDA_TRUST,
        Description="runs functions",
        MaxSessionDuration=7200,
    )["Role"]
    assert made["RoleId"].startswith("AROA")
    assert made["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/service/r-exec"
    role = iam.get_role(RoleName="r-exec")["Role"]
    assert role["AssumeRolePolicyDocument"] == json.loads(LAMBDA_TRUST)  # URL-encoded on the wire
    assert role["Description"] == "runs functions" and role["MaxSessionDuration"] == 7200
    assert "r-exec" in [r["RoleName"] for r in iam.list_roles()["Roles"]]

    iam.update_assume_role_policy(RoleName="r-exec", PolicyDocument=ACCOUNT_TRUST)
    role = iam.get_role(RoleName="r-exec")["Role"]
    assert role["AssumeRolePolicyDocument"] == json.loads(ACCOUNT_TRUST)

    with pytest.raises(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName="R-EXEC", AssumeRolePolicyDocument=LAMBDA_TRUST)
    with pytest.raises(iam.exceptions.MalformedPolicyDocumentException):
        iam.create_role(RoleName="r-bad", AssumeRolePolicyDocument="{not json")
    with pytest.raises(iam.exceptions.MalformedPolicyDocumentException):
        iam.update_assume_role_policy(RoleName="r-exec", PolicyDocument=json.dumps(ALLOW_S3))
    with pytest.raises(ClientError) as too_long:
        iam.create_role(
            RoleName="r-bad", AssumeRolePolicyDocument=LAMBDA_TRUST, MaxSessionDuration=50000
        )
    assert code(too_long) == "ValidationError"
    with pytest.raises(iam.exceptions.NoSuchEntityException) as missing:
        iam.get_role(RoleName="r-nobody")
    assert "The role with name r-nobody cannot be found." in str(missing.value)

    iam.delete_role(RoleName="r-exec")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.delete_role(RoleName="r-exec")


def test_managed_policies_and_versions(iam: Any) -> None:
    pol = iam.create_policy(
        PolicyName="p-s3", Path="/p/", PolicyDocument=json.dumps(ALLOW_S3), Description="s3"
    )["Policy"]
    arn = pol["Arn"]
    assert arn == f"arn:aws:iam::{ACCOUNT}:policy/p/p-s3"
    assert pol["PolicyId"].startswith("ANPA") and pol["DefaultVersionId"] == "v1"
    got = iam.get_policy(PolicyArn=arn)["Policy"]
    assert got["Description"] == "s3" and got["AttachmentCount"] == 0
    local = iam.list_policies(Scope="Local")["Policies"]
    assert arn in [p["Arn"] for p in local]
    assert iam.list_policies(Scope="AWS")["Policies"] == []

    with pytest.raises(iam.exceptions.EntityAlreadyExistsException):
        iam.create_policy(PolicyName="p-s3", PolicyDocument=json.dumps(ALLOW_S3))
    with pytest.raises(iam.exceptions.MalformedPolicyDocumentException):
        iam.create_policy(PolicyName="p-bad", PolicyDocument=json.dumps({"Statement": "x"}))
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_policy(PolicyArn=f"arn:aws:iam::{ACCOUNT}:policy/p-nope")

    v2 = iam.create_policy_version(
        PolicyArn=arn, PolicyDocument=json.dumps(DENY_ALL), SetAsDefault=True
    )["PolicyVersion"]
    assert v2["VersionId"] == "v2" and v2["IsDefaultVersion"] is True
    assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v2"
    v1 = iam.get_policy_version(PolicyArn=arn, VersionId="v1")["PolicyVersion"]
    assert v1["Document"] == ALLOW_S3 and v1["IsDefaultVersion"] is False
    versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
    assert [v["VersionId"] for v in versions] == ["v2", "v1"]
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_policy_version(PolicyArn=arn, VersionId="v9")
    for _ in range(3):
        iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(ALLOW_S3))
    with pytest.raises(iam.exceptions.LimitExceededException):
        iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(ALLOW_S3))
    pages = iam.get_paginator("list_policy_versions").paginate(
        PolicyArn=arn, PaginationConfig={"PageSize": 2}
    )
    ids = [[v["VersionId"] for v in page["Versions"]] for page in pages]
    assert ids == [["v5", "v4"], ["v3", "v2"], ["v1"]]

    with pytest.raises(iam.exceptions.DeleteConflictException):
        iam.delete_policy(PolicyArn=arn)  # versions besides the default remain
    iam.set_default_policy_version(PolicyArn=arn, VersionId="v1")
    for version in ("v2", "v3", "v4", "v5"):
        iam.delete_policy_version(PolicyArn=arn, VersionId=version)
    iam.delete_policy(PolicyArn=arn)
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_policy(PolicyArn=arn)


def test_attached_policies(iam: Any) -> None:
    arn = iam.create_policy(PolicyName="p-att", PolicyDocument=json.dumps(ALLOW_S3))["Policy"][
        "Arn"
    ]
    iam.create_user(UserName="u-att")
    iam.create_role(RoleName="r-att", AssumeRolePolicyDocument=LAMBDA_TRUST)

    iam.attach_user_policy(UserName="u-att", PolicyArn=arn)
    iam.attach_role_policy(RoleName="r-att", PolicyArn=arn)
    assert iam.get_policy(PolicyArn=arn)["Policy"]["AttachmentCount"] == 2
    attached = iam.list_attached_user_policies(UserName="u-att")["AttachedPolicies"]
    assert attached == [{"PolicyName": "p-att", "PolicyArn": arn}]
    attached = iam.list_attached_role_policies(RoleName="r-att")["AttachedPolicies"]
    assert attached == [{"PolicyName": "p-att", "PolicyArn": arn}]
    only = iam.list_policies(Scope="Local", OnlyAttached=True)["Policies"]
    assert arn in [p["Arn"] for p in only]

    with pytest.raises(iam.exceptions.DeleteConflictException):
        iam.delete_user(UserName="u-att")
    with pytest.raises(iam.exceptions.DeleteConflictException) as role_conflict:
        iam.delete_role(RoleName="r-att")
    assert "must detach all policies first" in str(role_conflict.value)
    with pytest.raises(iam.exceptions.DeleteConflictException):
        iam.delete_policy(PolicyArn=arn)
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.attach_user_policy(UserName="u-att", PolicyArn=f"arn:aws:iam::{ACCOUNT}:policy/nope")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.attach_role_policy(RoleName="r-nobody", PolicyArn=arn)

    iam.detach_user_policy(UserName="u-att", PolicyArn=arn)
    iam.detach_role_policy(RoleName="r-att", PolicyArn=arn)
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.detach_role_policy(RoleName="r-att", PolicyArn=arn)
    assert iam.list_attached_user_policies(UserName="u-att")["AttachedPolicies"] == []
    iam.delete_user(UserName="u-att")
    iam.delete_role(RoleName="r-att")
    iam.delete_policy(PolicyArn=arn)


def test_inline_policies(iam: Any) -> None:
    iam.create_user(UserName="u-inl")
    iam.create_role(RoleName="r-inl", AssumeRolePolicyDocument=LAMBDA_TRUST)
    iam.put_user_policy(UserName="u-inl", PolicyName="s3", PolicyDocument=json.dumps(ALLOW_S3))
    iam.put_role_policy(RoleName="r-inl", PolicyName="deny", PolicyDocument=json.dumps(DENY_ALL))

    got = iam.get_user_policy(UserName="u-inl", PolicyName="s3")
    assert got["UserName"] == "u-inl" and got["PolicyDocument"] == ALLOW_S3
    got = iam.get_role_policy(RoleName="r-inl", PolicyName="deny")
    assert got["RoleName"] == "r-inl" and got["PolicyDocument"] == DENY_ALL
    assert iam.list_user_policies(UserName="u-inl")["PolicyNames"] == ["s3"]
    assert iam.list_role_policies(RoleName="r-inl")["PolicyNames"] == ["deny"]

    with pytest.raises(iam.exceptions.NoSuchEntityException) as missing:
        iam.get_role_policy(RoleName="r-inl", PolicyName="nope")
    assert "The role policy with name nope cannot be found." in str(missing.value)
    with pytest.raises(iam.exceptions.MalformedPolicyDocumentException):
        iam.put_user_policy(UserName="u-inl", PolicyName="bad", PolicyDocument="[]")
    with pytest.raises(iam.exceptions.DeleteConflictException):
        iam.delete_user(UserName="u-inl")
    with pytest.raises(iam.exceptions.DeleteConflictException):
        iam.delete_role(RoleName="r-inl")

    iam.delete_user_policy(UserName="u-inl", PolicyName="s3")
    iam.delete_role_policy(RoleName="r-inl", PolicyName="deny")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.delete_user_policy(UserName="u-inl", PolicyName="s3")
    assert iam.list_role_policies(RoleName="r-inl")["PolicyNames"] == []
    iam.delete_user(UserName="u-inl")
    iam.delete_role(RoleName="r-inl")


def test_paging(iam: Any) -> None:
    names = [f"u-page-{i:02d}" for i in range(7)]
    for name in names:
        iam.create_user(UserName=name, Path="/paged/")
    first = iam.list_users(PathPrefix="/paged/", MaxItems=3)
    assert [u["UserName"] for u in first["Users"]] == names[:3]
    assert first["IsTruncated"] is True and first["Marker"]
    rest = iam.list_users(PathPrefix="/paged/", MaxItems=10, Marker=first["Marker"])
    assert [u["UserName"] for u in rest["Users"]] == names[3:]
    assert rest["IsTruncated"] is False and "Marker" not in rest

    pages = iam.get_paginator("list_users").paginate(
        PathPrefix="/paged/", PaginationConfig={"PageSize": 2}
    )
    seen = [[u["UserName"] for u in page["Users"]] for page in pages]
    assert [len(p) for p in seen] == [2, 2, 2, 1]
    assert [name for page in seen for name in page] == names
    for name in names:
        iam.delete_user(UserName=name)


def test_sts_caller_identity_and_assume_role(iam: Any, sts: Any) -> None:
    me = sts.get_caller_identity()
    assert me["Account"] == ACCOUNT and me["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    role = iam.create_role(
        RoleName="r-assume", AssumeRolePolicyDocument=ACCOUNT_TRUST, MaxSessionDuration=7200
    )["Role"]

    before = datetime.now(UTC)
    out = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="sess-1", DurationSeconds=1800)
    creds = out["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and len(creds["AccessKeyId"]) == 20
    assert len(creds["SecretAccessKey"]) == 40 and len(creds["SessionToken"]) > 100
    expires = creds["Expiration"]
    assert isinstance(expires, datetime)
    assert before + timedelta(seconds=1790) <= expires <= before + timedelta(seconds=1810)
    user = out["AssumedRoleUser"]
    assert user["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/r-assume/sess-1"
    assert user["AssumedRoleId"] == f"{role['RoleId']}:sess-1"

    with pytest.raises(ClientError) as too_long:
        sts.assume_role(RoleArn=role["Arn"], RoleSessionName="s2", DurationSeconds=7201)
    assert code(too_long) == "ValidationError"
    assert "MaxSessionDuration" in str(too_long.value)
    with pytest.raises(ClientError) as bad_name:
        sts.assume_role(RoleArn=role["Arn"], RoleSessionName="bad name!")
    assert code(bad_name) == "ValidationError"
    missing = f"arn:aws:iam::{ACCOUNT}:role/r-nobody"
    with pytest.raises(ClientError) as denied:
        sts.assume_role(RoleArn=missing, RoleSessionName="s3")
    assert code(denied) == "AccessDenied"
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert str(denied.value).endswith(
        f"User: arn:aws:iam::{ACCOUNT}:root is not authorized to perform: sts:AssumeRole on "
        f"resource: {missing}"
    )
    # a trust policy that admits only Lambda does not admit the caller
    service_only = iam.create_role(RoleName="r-svc", AssumeRolePolicyDocument=LAMBDA_TRUST)
    with pytest.raises(ClientError) as not_trusted:
        sts.assume_role(RoleArn=service_only["Role"]["Arn"], RoleSessionName="s4")
    assert code(not_trusted) == "AccessDenied"
    iam.delete_role(RoleName="r-svc")
    iam.delete_role(RoleName="r-assume")


def _raw(url: str, data: bytes | None = None, service: str | None = None) -> tuple[int, str]:
    """A query-protocol request by hand, signed for IAM or STS (by its Version) as root."""
    text = (data or b"").decode() + url
    service = service or ("sts" if "2011-06-15" in text else "iam")
    method = "POST" if data is not None else "GET"
    status, _headers, body = signed(url, method, data or b"", service)
    return status, body.decode()


def test_query_protocol_by_hand(iam_server: Server) -> None:
    status, body = _raw(iam_server.url + "/", b"Action=Nope&Version=2010-05-08")
    assert status == 400
    assert "<Type>Sender</Type><Code>InvalidAction</Code>" in body
    assert body.startswith('<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">')
    status, body = _raw(iam_server.url + "/?Action=GetCallerIdentity&Version=2011-06-15")
    assert status == 200
    assert body.startswith(
        '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        "<GetCallerIdentityResult>"
    )
    status, body = _raw(iam_server.url + "/", b"Action=GetUser&Version=2010-05-08&UserName=")
    assert status == 400 and "<Code>ValidationError</Code>" in body
    # no Action and no IAM/STS signature: not a query request, lamina's JSON
    status, body = _raw(iam_server.url + "/", service="lambda")
    assert status == 404 and json.loads(body)["Type"] == "User"


def test_no_secret_in_logs_or_data_dir(iam_server: Server, iam: Any, sts: Any) -> None:
    iam.create_user(UserName="u-secret")
    key = iam.create_access_key(UserName="u-secret")["AccessKey"]
    role = iam.create_role(RoleName="r-secret", AssumeRolePolicyDocument=ACCOUNT_TRUST)["Role"]
    creds = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="leak-check")["Credentials"]
    secrets = [key["SecretAccessKey"], creds["SecretAccessKey"], creds["SessionToken"]]

    assert not [s for s in secrets if s in iam_server.log]
    data: Path = iam_server.data_dir
    stored = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    assert b"iam_access_keys" in stored  # the database is there, and was read
    assert not [s for s in secrets if s.encode() in stored]
    assert not list(data.rglob("master-*.key"))  # the master key lives outside the data dir
    config = data.parent / "config" / "lamina"
    assert [p.name[:7] for p in config.iterdir()] == ["master-"]

    iam.delete_access_key(UserName="u-secret", AccessKeyId=key["AccessKeyId"])
    iam.delete_user(UserName="u-secret")
    iam.delete_role(RoleName="r-secret")
