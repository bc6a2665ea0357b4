"""Managed IAM policies (with their versions), their attachments to users and roles, and
inline user and role policies — the policy half of the IAM store (`store/iam.py` owns users,
roles, keys and sessions, and reaches this part as `IamStore.policies`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from lamina.errors import DeleteConflict, EntityAlreadyExists, LimitExceeded, NoSuchEntity
from lamina.store.iam_records import (
    INLINE_QUOTA,
    SIZE_QUOTA,
    Owner,
    PolicyRecord,
    PolicyVersionRecord,
    attached_to,
    by_name,
    check_policy,
    check_size,
    owned,
    ts,
    unique_id,
)
from lamina.store.schema import (
    iam_attachments,
    iam_inline_policies,
    iam_policies,
    iam_policy_versions,
)

MAX_POLICY_VERSIONS = 5
MAX_ATTACHED = 10


class PolicyStore:
    """Managed and inline policies of one account. `owner_key(kind, name)` finds a user's or
    role's key (raising NoSuchEntity); `changed()` is called after every write."""

    def __init__(
        self,
        engine: sa.Engine,
        arn: Callable[[str, str, str], str],
        owner_key: Callable[[Owner, str], str],
        changed: Callable[[], None],
    ) -> None:
        self.engine = engine
        self.arn = arn
        self._owner_key = owner_key
        self._changed = changed

    # -- managed policies ---------------------------------------------------------------------

    def _policy(self, row: Mapping[Any, Any], count: int) -> PolicyRecord:
        return PolicyRecord(
            name=row["name"],
            policy_id=row["policy_id"],
            path=row["path"],
            arn=self.arn("policy", row["path"], row["name"]),
            description=row["description"],
            default_version=row["default_version"],
            attachment_count=count,
            created=ts(row["created"]),
            updated=ts(row["updated"]),
        )

    def _policy_row(
        self, conn: sa.Connection, arn: str, missing: str = "{arn} was not found."
    ) -> Mapping[Any, Any]:
        name = arn.rsplit("/", 1)[-1]
        row = (
            conn.execute(sa.select(iam_policies).where(by_name(iam_policies, name)))
            .mappings()
            .first()
        )
        if row is None or self.arn("policy", row["path"], row["name"]) != arn:
            raise NoSuchEntity("Policy " + missing.format(arn=arn))
        return row

    @staticmethod
    def _count(conn: sa.Connection, policy_key: str) -> int:
        query = sa.select(sa.func.count()).where(iam_attachments.c.policy_key == policy_key)
        return int(conn.execute(query).scalar_one())

    def create_policy(
        self, name: str, document: str, path: str = "/", description: str | None = None
    ) -> PolicyRecord:
        check_size(document, SIZE_QUOTA["managed"])
        check_policy(document)
        now = time.time()
        with self.engine.begin() as conn:
            if conn.execute(
                sa.select(iam_policies.c.name).where(by_name(iam_policies, name))
            ).first():
                raise EntityAlreadyExists(
                    f"A policy called {name} already exists. Duplicate names are not allowed."
                )
            row = {
                "name_key": name.lower(),
                "name": name,
                "policy_id": unique_id("ANPA"),
                "path": path,
                "description": description,
                "default_version": "v1",
                "last_version": 1,
                "created": now,
                "updated": now,
            }
            conn.execute(iam_policies.insert().values(**row))
            conn.execute(
                iam_policy_versions.insert().values(
                    policy_key=name.lower(), version_id="v1", document=document, created=now
                )
            )
        return self._policy(row, 0)

    def get_policy(self, arn: str) -> PolicyRecord:
        with self.engine.connect() as conn:
            row = self._policy_row(conn, arn)
            return self._policy(row, self._count(conn, row["name_key"]))

    def list_policies(
        self, path_prefix: str = "/", only_attached: bool = False
    ) -> list[PolicyRecord]:
        count = (
            sa.select(sa.func.count())
            .where(iam_attachments.c.policy_key == iam_policies.c.name_key)
            .scalar_subquery()
        )
        query = sa.select(iam_policies, count.label("n")).order_by(iam_policies.c.name_key)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            self._policy(r, r["n"])
            for r in rows
            if r["path"].startswith(path_prefix) and (r["n"] or not only_attached)
        ]

    def delete_policy(self, arn: str) -> None:
        with self.engine.begin() as conn:
            key = self._policy_row(conn, arn)["name_key"]
            if self._count(conn, key):
                raise DeleteConflict("Cannot delete a policy attached to entities.")
            versions = sa.select(sa.func.count()).where(iam_policy_versions.c.policy_key == key)
            if conn.execute(versions).scalar_one() > 1:
                raise DeleteConflict(
                    "This policy has more than one version. Before you delete a policy, you "
                    "must delete the policy's versions. The default version is deleted with "
                    "the policy."
                )
            conn.execute(
                iam_policy_versions.delete().where(iam_policy_versions.c.policy_key == key)
            )
            conn.execute(iam_policies.delete().where(iam_policies.c.name_key == key))
        self._changed()

    # -- policy versions ----------------------------------------------------------------------

    def create_policy_version(
        self, arn: str, document: str, set_default: bool = False
    ) -> PolicyVersionRecord:
        check_size(document, SIZE_QUOTA["managed"])
        check_policy(document)
        now = time.time()
        with self.engine.begin() as conn:
            row = self._policy_row(conn, arn)
            key = row["name_key"]
            versions = sa.select(sa.func.count()).where(iam_policy_versions.c.policy_key == key)
            if conn.execute(versions).scalar_one() >= MAX_POLICY_VERSIONS:
                raise LimitExceeded(
                    f"A managed policy can have up to {MAX_POLICY_VERSIONS} versions. Before you "
                    "create a new version, you must delete an existing version."
                )
            number = row["last_version"] + 1
            version_id = f"v{number}"
            conn.execute(
                iam_policy_versions.insert().values(
                    policy_key=key, version_id=version_id, document=document, created=now
                )
            )
            values: dict[str, Any] = {"last_version": number, "updated": now}
            if set_default:
                values["default_version"] = version_id
            conn.execute(
                iam_policies.update().where(iam_policies.c.name_key == key).values(**values)
            )
        self._changed()
        return PolicyVersionRecord(version_id, document, set_default, ts(now))

    def list_policy_versions(self, arn: str) -> list[PolicyVersionRecord]:
        with self.engine.connect() as conn:
            row = self._policy_row(conn, arn)
            query = sa.select(iam_policy_versions).where(
                iam_policy_versions.c.policy_key == row["name_key"]
            )
            found = conn.execute(query).mappings().all()
        out = [
            PolicyVersionRecord(
                v["version_id"],
                v["document"],
                v["version_id"] == row["default_version"],
                ts(v["created"]),
            )
            for v in found
        ]
        return sorted(out, key=lambda v: -int(v.version_id[1:]))

    def get_policy_version(self, arn: str, version_id: str) -> PolicyVersionRecord:
        for version in self.list_policy_versions(arn):
            if version.version_id == version_id:
                return version
        raise NoSuchEntity(
            f"Policy {arn} version {version_id} does not exist or is not attachable."
        )

    def set_default_policy_version(self, arn: str, version_id: str) -> None:
        self.get_policy_version(arn, version_id)
        with self.engine.begin() as conn:
            key = self._policy_row(conn, arn)["name_key"]
            conn.execute(
                iam_policies.update()
                .where(iam_policies.c.name_key == key)
                .values(default_version=version_id, updated=time.time())
            )
        self._changed()

    def delete_policy_version(self, arn: str, version_id: str) -> None:
        version = self.get_policy_version(arn, version_id)
        if version.is_default:
            raise DeleteConflict("Cannot delete the default version of a policy.")
        with self.engine.begin() as conn:
            key = self._policy_row(conn, arn)["name_key"]
            conn.execute(
                iam_policy_versions.delete()
                .where(iam_policy_versions.c.policy_key == key)
                .where(iam_policy_versions.c.version_id == version_id)
            )

    # -- attachments --------------------------------------------------------------------------

    def attach(self, kind: Owner, name: str, policy_arn: str) -> None:
        owner = self._owner_key(kind, name)
        with self.engine.begin() as conn:
            missing = "{arn} does not exist or is not attachable."
            key = self._policy_row(conn, policy_arn, missing)["name_key"]
            pair = sa.and_(attached_to(kind, owner), iam_attachments.c.policy_key == key)
            if conn.execute(sa.select(iam_attachments).where(pair)).first():
                return  # attaching twice is not an error
            attached = sa.select(sa.func.count()).where(attached_to(kind, owner))
            if conn.execute(attached).scalar_one() >= MAX_ATTACHED:
                quota = "PoliciesPerUser" if kind == "user" else "PoliciesPerRole"
                raise LimitExceeded(f"Cannot exceed quota for {quota}: {MAX_ATTACHED}.")
            conn.execute(
                iam_attachments.insert().values(kind=kind, owner_key=owner, policy_key=key)
            )
        self._changed()

    def detach(self, kind: Owner, name: str, policy_arn: str) -> None:
        owner = self._owner_key(kind, name)
        with self.engine.begin() as conn:
            key = self._policy_row(conn, policy_arn)["name_key"]
            pair = sa.and_(attached_to(kind, owner), iam_attachments.c.policy_key == key)
            if conn.execute(iam_attachments.delete().where(pair)).rowcount == 0:
                raise NoSuchEntity(f"Policy {policy_arn} was not found.")
        self._changed()

    def attached(self, kind: Owner, name: str, path_prefix: str = "/") -> list[PolicyRecord]:
        owner = self._owner_key(kind, name)
        query = (
            sa.select(iam_policies)
            .join(iam_attachments, iam_attachments.c.policy_key == iam_policies.c.name_key)
            .where(attached_to(kind, owner))
            .order_by(iam_policies.c.name_key)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [self._policy(r, 0) for r in rows if r["path"].startswith(path_prefix)]

    # -- inline policies ----------------------------------------------------------------------

    def put_inline(self, kind: Owner, name: str, policy_name: str, document: str) -> None:
        owner = self._owner_key(kind, name)
        check_size(document, INLINE_QUOTA[kind])
        check_policy(document)
        where = sa.and_(owned(kind, owner), iam_inline_policies.c.policy_name == policy_name)
        with self.engine.begin() as conn:
            if (
                conn.execute(
                    iam_inline_policies.update().where(where).values(document=document)
                ).rowcount
                == 0
            ):
                conn.execute(
                    iam_inline_policies.insert().values(
                        kind=kind, owner_key=owner, policy_name=policy_name, document=document
                    )
                )
        self._changed()

    def get_inline(self, kind: Owner, name: str, policy_name: str) -> str:
        owner = self._owner_key(kind, name)
        where = sa.and_(owned(kind, owner), iam_inline_policies.c.policy_name == policy_name)
        with self.engine.connect() as conn:
            doc = conn.execute(sa.select(iam_inline_policies.c.document).where(where)).scalar()
        if doc is None:
            raise NoSuchEntity(f"The {kind} policy with name {policy_name} cannot be found.")
        return str(doc)

    def list_inline(self, kind: Owner, name: str) -> list[str]:
        owner = self._owner_key(kind, name)
        query = (
            sa.select(iam_inline_policies.c.policy_name)
            .where(owned(kind, owner))
            .order_by(iam_inline_policies.c.policy_name)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def delete_inline(self, kind: Owner, name: str, policy_name: str) -> None:
        owner = self._owner_key(kind, name)
        where = sa.and_(owned(kind, owner), iam_inline_policies.c.policy_name == policy_name)
        with self.engine.begin() as conn:
            if conn.execute(iam_inline_policies.delete().where(where)).rowcount == 0:
                raise NoSuchEntity(f"The {kind} policy with name {policy_name} cannot be found.")
        self._changed()
