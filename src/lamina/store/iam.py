"""IAM and STS state: users, access keys, roles and STS sessions here; managed and inline
policies in `store/iam_policies.py` (reached as `IamStore.policies`); records and shared rules
in `store/iam_records.py`.

Everything sits in the metadata database (tables in `store/schema.py`, migration 0004) behind
SQLAlchemy Core, one transaction per write. The store keeps IAM's rules — names unique without
regard to case, two access keys per user, five versions per policy, what must go before a
user, role or policy may be deleted — and raises the IAM error a caller gets
(`lamina.errors`: NoSuchEntity, EntityAlreadyExists, DeleteConflict, LimitExceeded,
MalformedPolicyDocument, ValidationError) with AWS's wording.

Secret access keys and session tokens are sealed with `auth/secrets.py` before they are
written; `signing_key()` opens them again for SigV4, from an in-memory cache that every change
to keys invalidates. Policy documents are stored as given (the API layer URL-encodes them on
the way out, as IAM does).
"""

from __future__ import annotations

import base64
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from lamina.auth.identity import Principal, SigningKey
from lamina.auth.secrets import SecretBox, SecretError
from lamina.credentials import Credentials
from lamina.errors import (
    DeleteConflict,
    EntityAlreadyExists,
    LimitExceeded,
    NoSuchEntity,
    ValidationError,
)
from lamina.store.iam_policies import PolicyStore
from lamina.store.iam_records import (
    SIZE_QUOTA,
    AccessKeyRecord,
    NewAccessKey,
    Owner,
    RoleRecord,
    SessionCredentials,
    UserRecord,
    attached_to,
    by_name,
    check_policy,
    check_size,
    new_key_id,
    new_secret,
    owned,
    ts,
    unique_id,
)
from lamina.store.schema import (
    iam_access_keys,
    iam_attachments,
    iam_inline_policies,
    iam_policies,
    iam_policy_versions,
    iam_roles,
    iam_users,
    sts_sessions,
)

log = logging.getLogger("lamina.iam")

MAX_KEYS_PER_USER = 2
SESSION_MIN_S = 900

# -- the store --------------------------------------------------------------------------------


class IamStore:
    """IAM users, keys, roles and policies, and STS sessions, for one account."""

    def __init__(self, engine: sa.Engine, box: SecretBox, account: str, root: Credentials) -> None:
        self.engine = engine
        self.account = account
        self._box = box
        self._root = root
        self._lock = threading.Lock()
        self._keys: dict[str, SigningKey | None] = {}
        self._policies: dict[str, list[str]] = {}
        self._roles: dict[str, RoleRecord | None] = {}  # role(arn), on every cold start
        self._generation = 0  # bumped by every change: a lookup that raced one is not cached
        self.policies = PolicyStore(engine, self.arn, self._owner_key, self._changed)

    def __repr__(self) -> str:
        return f"IamStore(account={self.account!r})"

    def arn(self, kind: str, path: str, name: str) -> str:
        return f"arn:aws:iam::{self.account}:{kind}{path}{name}"

    @property
    def root_principal(self) -> Principal:
        return Principal(
            kind="root",
            account=self.account,
            arn=f"arn:aws:iam::{self.account}:root",
            user_id=self.account,
            name="root",
            access_key_id=self._root.access_key_id,
        )

    def _changed(self, key_id: str | None = None) -> None:
        """Forget cached lookups after a write (one key's, and every principal's policies)."""
        with self._lock:
            if key_id is not None:
                self._keys.pop(key_id, None)
            self._policies.clear()
            self._roles.clear()
            self._generation += 1

    # -- users --------------------------------------------------------------------------------

    def _user(self, row: Mapping[Any, Any]) -> UserRecord:
        return UserRecord(
            name=row["name"],
            user_id=row["user_id"],
            path=row["path"],
            arn=self.arn("user", row["path"], row["name"]),
            created=ts(row["created"]),
            tags=list(row["tags"]),
        )

    def create_user(
        self, name: str, path: str = "/", tags: list[dict[str, str]] | None = None
    ) -> UserRecord:
        with self.engine.begin() as conn:
            if conn.execute(sa.select(iam_users.c.name).where(by_name(iam_users, name))).first():
                raise EntityAlreadyExists(f"User with name {name} already exists.")
            row = {
                "name_key": name.lower(),
                "name": name,
                "user_id": unique_id("AIDA"),
                "path": path,
                "created": time.time(),
                "tags": tags or [],
            }
            conn.execute(iam_users.insert().values(**row))
        return self._user(row)

    def get_user(self, name: str) -> UserRecord:
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(iam_users).where(by_name(iam_users, name)))
                .mappings()
                .first()
            )
        if row is None:
            raise NoSuchEntity(f"The user with name {name} cannot be found.")
        return self._user(row)

    def list_users(self, path_prefix: str = "/") -> list[UserRecord]:
        query = sa.select(iam_users).order_by(iam_users.c.name_key)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [self._user(r) for r in rows if r["path"].startswith(path_prefix)]

    def delete_user(self, name: str) -> None:
        user = self.get_user(name)
        key = user.name.lower()
        with self.engine.begin() as conn:
            keys = iam_access_keys.c.user_key == key
            if conn.execute(sa.select(iam_access_keys.c.access_key_id).where(keys)).first():
                raise DeleteConflict("Cannot delete entity, must delete access keys first.")
            if conn.execute(sa.select(iam_inline_policies).where(owned("user", key))).first():
                raise DeleteConflict("Cannot delete entity, must delete policies first.")
            if conn.execute(sa.select(iam_attachments).where(attached_to("user", key))).first():
                raise DeleteConflict("Cannot delete entity, must detach all policies first.")
            conn.execute(iam_users.delete().where(iam_users.c.name_key == key))
        self._changed()

    # -- access keys --------------------------------------------------------------------------

    def create_access_key(self, user_name: str) -> NewAccessKey:
        user = self.get_user(user_name)
        key_id, secret = new_key_id("AKIA"), new_secret()
        now = time.time()
        with self.engine.begin() as conn:
            owned = sa.select(sa.func.count()).where(
                iam_access_keys.c.user_key == user.name.lower()
            )
            if conn.execute(owned).scalar_one() >= MAX_KEYS_PER_USER:
                raise LimitExceeded(
                    f"Cannot exceed quota for AccessKeysPerUser: {MAX_KEYS_PER_USER}"
                )
            conn.execute(
                iam_access_keys.insert().values(
                    access_key_id=key_id,
                    user_key=user.name.lower(),
                    secret_sealed=self._box.seal(secret, key_id),
                    status="Active",
                    created=now,
                )
            )
        self._changed(key_id)
        return NewAccessKey(AccessKeyRecord(key_id, user.name, "Active", ts(now)), secret)

    def list_access_keys(self, user_name: str) -> list[AccessKeyRecord]:
        user = self.get_user(user_name)
        query = (
            sa.select(iam_access_keys)
            .where(iam_access_keys.c.user_key == user.name.lower())
            .order_by(iam_access_keys.c.created, iam_access_keys.c.access_key_id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            AccessKeyRecord(r["access_key_id"], user.name, r["status"], ts(r["created"]))
            for r in rows
        ]

    def _own_key(self, user_name: str, key_id: str) -> sa.ColumnElement[bool]:
        user = self.get_user(user_name)
        match = sa.and_(
            iam_access_keys.c.access_key_id == key_id,
            iam_access_keys.c.user_key == user.name.lower(),
        )
        with self.engine.connect() as conn:
            if conn.execute(sa.select(iam_access_keys.c.status).where(match)).first() is None:
                raise NoSuchEntity(f"The Access Key with id {key_id} cannot be found.")
        return match

    def update_access_key(self, user_name: str, key_id: str, status: str) -> None:
        if status not in ("Active", "Inactive"):
            raise ValidationError(f"Invalid status {status}: use Active or Inactive.")
        match = self._own_key(user_name, key_id)
        with self.engine.begin() as conn:
            conn.execute(iam_access_keys.update().where(match).values(status=status))
        self._changed(key_id)

    def delete_access_key(self, user_name: str, key_id: str) -> None:
        match = self._own_key(user_name, key_id)
        with self.engine.begin() as conn:
            conn.execute(iam_access_keys.delete().where(match))
        self._changed(key_id)

    # -- roles --------------------------------------------------------------------------------

    def _role(self, row: Mapping[Any, Any]) -> RoleRecord:
        return RoleRecord(
            name=row["name"],
            role_id=row["role_id"],
            path=row["path"],
            arn=self.arn("role", row["path"], row["name"]),
            trust_policy=row["trust_policy"],
            description=row["description"],
            max_session=row["max_session"],
            created=ts(row["created"]),
            tags=list(row["tags"]),
        )

    def create_role(
        self,
        name: str,
        trust_policy: str,
        path: str = "/",
        description: str | None = None,
        max_session: int = 3600,
        tags: list[dict[str, str]] | None = None,
    ) -> RoleRecord:
        check_size(trust_policy, SIZE_QUOTA["trust"])
        check_policy(trust_policy, "resource")
        with self.engine.begin() as conn:
            if conn.execute(sa.select(iam_roles.c.name).where(by_name(iam_roles, name))).first():
                raise EntityAlreadyExists(f"Role with name {name} already exists.")
            row = {
                "name_key": name.lower(),
                "name": name,
                "role_id": unique_id("AROA"),
                "path": path,
                "trust_policy": trust_policy,
                "description": description,
                "max_session": max_session,
                "created": time.time(),
                "tags": tags or [],
            }
            conn.execute(iam_roles.insert().values(**row))
        self._changed()
        return self._role(row)

    def get_role(self, name: str) -> RoleRecord:
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(iam_roles).where(by_name(iam_roles, name)))
                .mappings()
                .first()
            )
        if row is None:
            raise NoSuchEntity(f"The role with name {name} cannot be found.")
        return self._role(row)

    def role(self, role_arn: str) -> RoleRecord | None:
        """The role an ARN names (`arn:aws:iam::<acct>:role/<path><name>`), or None (cached
        until IAM changes: CreateFunction and every new blueprint ask)."""
        with self._lock:
            if role_arn in self._roles:
                return self._roles[role_arn]
            generation = self._generation
        name = role_arn.rsplit("/", 1)[-1]
        try:
            found: RoleRecord | None = self.get_role(name)
        except NoSuchEntity:
            found = None
        if found is not None and found.arn != role_arn:
            found = None
        with self._lock:
            if generation == self._generation:
                self._roles[role_arn] = found
        return found

    def list_roles(self, path_prefix: str = "/") -> list[RoleRecord]:
        query = sa.select(iam_roles).order_by(iam_roles.c.name_key)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [self._role(r) for r in rows if r["path"].startswith(path_prefix)]

    def update_trust_policy(self, name: str, trust_policy: str) -> None:
        role = self.get_role(name)
        check_size(trust_policy, SIZE_QUOTA["trust"])
        check_policy(trust_policy, "resource")
        with self.engine.begin() as conn:
            conn.execute(
                iam_roles.update()
                .where(iam_roles.c.name_key == role.name.lower())
                .values(trust_policy=trust_policy)
            )
        self._changed()

    def delete_role(self, name: str) -> None:
        key = self.get_role(name).name.lower()
        with self.engine.begin() as conn:
            if conn.execute(sa.select(iam_attachments).where(attached_to("role", key))).first():
                raise DeleteConflict("Cannot delete entity, must detach all policies first.")
            if conn.execute(sa.select(iam_inline_policies).where(owned("role", key))).first():
                raise DeleteConflict("Cannot delete entity, must delete policies first.")
            conn.execute(iam_roles.delete().where(iam_roles.c.name_key == key))
        self._changed()

    def _owner_key(self, kind: Owner, name: str) -> str:
        return (self.get_user(name) if kind == "user" else self.get_role(name)).name.lower()

    # -- STS sessions -------------------------------------------------------------------------

    def mint_role_session(
        self, role_arn: str, session_name: str, duration_s: int = 3600
    ) -> SessionCredentials:
        """Temporary credentials for `role_arn` (AssumeRole, and the execution role lamina gives
        function instances). The caller has checked the trust policy; this checks the role
        exists (NoSuchEntity) and the duration (ValidationError)."""
        found = self.role(role_arn)
        if found is None:
            raise NoSuchEntity(f"The role with name {role_arn.rsplit('/', 1)[-1]} cannot be found.")
        if not SESSION_MIN_S <= duration_s <= found.max_session:
            raise ValidationError(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
                if duration_s > found.max_session
                else f"DurationSeconds must be at least {SESSION_MIN_S}."
            )
        key_id, secret = new_key_id("ASIA"), new_secret()
        token = "IQoJb3JpZ2luX2VjE" + base64.b64encode(secrets.token_bytes(180)).decode()
        now = time.time()
        expires = int(now) + duration_s
        with self.engine.begin() as conn:
            conn.execute(sts_sessions.delete().where(sts_sessions.c.expires < now - 3600))
            conn.execute(
                sts_sessions.insert().values(
                    access_key_id=key_id,
                    secret_sealed=self._box.seal(secret, key_id),
                    token_sealed=self._box.seal(token, key_id + "/token"),
                    role_arn=found.arn,
                    role_id=found.role_id,
                    session_name=session_name,
                    expires=float(expires),
                )
            )
        self._changed(key_id)
        return SessionCredentials(
            access_key_id=key_id,
            secret_access_key=secret,
            session_token=token,
            expiration=ts(expires),
            role_arn=found.arn,
            assumed_role_arn=self._session_arn(found.name, session_name),
            assumed_role_id=f"{found.role_id}:{session_name}",
        )

    def _session_arn(self, role_name: str, session_name: str) -> str:
        return f"arn:aws:sts::{self.account}:assumed-role/{role_name}/{session_name}"

    # -- what SigV4 and policy checks ask on every request ------------------------------------

    def signing_key(self, access_key_id: str) -> SigningKey | None:
        """The key SigV4 verifies `access_key_id`'s signatures with (root, an IAM user's key, or
        an STS session's), or None when there is no such key. Cached; writes invalidate."""
        with self._lock:
            if access_key_id in self._keys:
                return self._keys[access_key_id]
        try:
            found = self._load_key(access_key_id)
        except SecretError:  # sealed under another master key: unusable, say so once
            log.warning(
                "access key %s: its secret does not open with this master key", access_key_id
            )
            found = None
        with self._lock:
            if len(self._keys) >= 10_000:  # unknown ids are cached too: bound the cache
                self._keys.clear()
            self._keys[access_key_id] = found
        return found

    def _load_key(self, key_id: str) -> SigningKey | None:
        if key_id == self._root.access_key_id:
            return SigningKey(key_id, self._root.secret_access_key, self.root_principal)
        with self.engine.connect() as conn:
            query = sa.select(iam_access_keys, iam_users).join(
                iam_users, iam_users.c.name_key == iam_access_keys.c.user_key
            )
            row = conn.execute(query.where(iam_access_keys.c.access_key_id == key_id)).first()
            if row is not None:
                rec = row._mapping
                user = self._user(rec)
                principal = Principal(
                    kind="user",
                    account=self.account,
                    arn=user.arn,
                    user_id=user.user_id,
                    name=user.name,
                    access_key_id=key_id,
                )
                secret = self._box.open(rec["secret_sealed"], key_id)
                return SigningKey(key_id, secret, principal, active=rec["status"] == "Active")
            query = sa.select(sts_sessions).where(sts_sessions.c.access_key_id == key_id)
            sess = conn.execute(query).mappings().first()
        if sess is None:
            return None
        role_name = sess["role_arn"].rsplit("/", 1)[-1]
        principal = Principal(
            kind="assumed-role",
            account=self.account,
            arn=self._session_arn(role_name, sess["session_name"]),
            user_id=f"{sess['role_id']}:{sess['session_name']}",
            name=role_name,
            access_key_id=key_id,
            role_arn=sess["role_arn"],
            session_name=sess["session_name"],
        )
        return SigningKey(
            key_id,
            self._box.open(sess["secret_sealed"], key_id),
            principal,
            session_token=self._box.open(sess["token_sealed"], key_id + "/token"),
            expires=ts(sess["expires"]),
        )

    def identity_policies(self, principal: Principal) -> list[str]:
        """The identity-based policy documents that apply to `principal`: a user's inline and
        attached (default versions); an assumed role's role's; none for root (allowed all)."""
        if principal.kind == "root":
            return []
        cache_key = principal.role_arn or principal.arn
        with self._lock:
            if cache_key in self._policies:
                return self._policies[cache_key]
        docs: list[str] = []
        kind: Owner = "user" if principal.kind == "user" else "role"
        if kind == "user":
            owner = principal.name.lower()
        else:
            found = self.role(principal.role_arn or "")
            owner = found.name.lower() if found else ""
        if owner:
            default = sa.and_(
                iam_policy_versions.c.policy_key == iam_policies.c.name_key,
                iam_policy_versions.c.version_id == iam_policies.c.default_version,
            )
            managed = (
                sa.select(iam_policy_versions.c.document)
                .join(iam_policies, default)
                .join(iam_attachments, iam_attachments.c.policy_key == iam_policies.c.name_key)
                .where(attached_to(kind, owner))
            )
            inline = sa.select(iam_inline_policies.c.document).where(owned(kind, owner))
            with self.engine.connect() as conn:
                docs = list(conn.execute(inline).scalars()) + list(conn.execute(managed).scalars())
        with self._lock:
            self._policies[cache_key] = docs
        return docs
