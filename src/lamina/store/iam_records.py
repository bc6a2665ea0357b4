"""IAM records and the small rules shared by the IAM store's parts: ids, secrets, document
checks (through `lamina.auth.policy`), size quotas, and the SQL predicates for owners."""

from __future__ import annotations

import base64
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa

from lamina.auth.policy import MalformedPolicy, parse_policy
from lamina.errors import LimitExceeded, MalformedPolicyDocument
from lamina.store.schema import iam_attachments, iam_inline_policies

Owner = Literal["user", "role"]
PolicyKind = Literal["identity", "resource"]

# Document size quotas (characters, whitespace not counted), as IAM's defaults.
SIZE_QUOTA = {"managed": ("PolicySize", 6144), "trust": ("ACLSizePerRole", 2048)}
INLINE_QUOTA = {"user": ("UserPolicySize", 2048), "role": ("RolePolicySize", 10240)}
_ID_CHARS = string.ascii_uppercase + string.digits
_KEY_CHARS = string.ascii_uppercase + "234567"


def unique_id(prefix: str) -> str:
    """An IAM unique id: AIDA… (user), AROA… (role), ANPA… (policy); 21 characters."""
    return prefix + "".join(secrets.choice(_ID_CHARS) for _ in range(17))


def new_key_id(prefix: str) -> str:
    """An access key id: AKIA… (long-term) or ASIA… (temporary); 20 characters."""
    return prefix + "".join(secrets.choice(_KEY_CHARS) for _ in range(16))


def new_secret() -> str:
    """A secret access key: 40 base64 characters (30 random bytes)."""
    return base64.b64encode(secrets.token_bytes(30)).decode()  # 40 characters


def check_policy(document: str, kind: PolicyKind = "identity") -> None:
    """Whether `document` is a policy IAM would accept, else MalformedPolicyDocument (the one
    adapter between the store and `lamina.auth.policy`)."""
    try:
        parse_policy(document, kind=kind)
    except MalformedPolicy as exc:
        raise MalformedPolicyDocument(str(exc) or "Syntax errors in policy.") from None


def check_size(document: str, quota: tuple[str, int]) -> None:
    """LimitExceeded when `document` is over `quota` (name, characters without whitespace)."""
    name, limit = quota
    if sum(1 for ch in document if not ch.isspace()) > limit:
        raise LimitExceeded(f"Cannot exceed quota for {name}: {limit}.")


def ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    user_id: str
    path: str
    arn: str
    created: datetime
    tags: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AccessKeyRecord:
    access_key_id: str
    user_name: str
    status: str  # Active | Inactive
    created: datetime


@dataclass(frozen=True, slots=True)
class NewAccessKey:
    """CreateAccessKey's answer: the only time the secret leaves lamina."""

    key: AccessKeyRecord
    secret_access_key: str

    def __repr__(self) -> str:
        return f"NewAccessKey({self.key.access_key_id!r}, secret_access_key='***')"


@dataclass(frozen=True, slots=True)
class RoleRecord:
    name: str
    role_id: str
    path: str
    arn: str
    trust_policy: str  # the AssumeRolePolicyDocument, as given
    description: str | None
    max_session: int
    created: datetime
    tags: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    name: str
    policy_id: str
    path: str
    arn: str
    description: str | None
    default_version: str
    attachment_count: int
    created: datetime
    updated: datetime


@dataclass(frozen=True, slots=True)
class PolicyVersionRecord:
    version_id: str
    document: str
    is_default: bool
    created: datetime


@dataclass(frozen=True, slots=True)
class SessionCredentials:
    """Temporary credentials for a role session (AssumeRole, function instances)."""

    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime
    role_arn: str
    assumed_role_arn: str  # arn:aws:sts::<acct>:assumed-role/<role>/<session>
    assumed_role_id: str  # AROA…:<session>

    def __repr__(self) -> str:
        return f"SessionCredentials({self.access_key_id!r}, {self.assumed_role_arn!r}, ***)"


# -- SQL predicates ---------------------------------------------------------------------------


def by_name(table: sa.Table, name: str) -> sa.ColumnElement[bool]:
    return table.c.name_key == name.lower()


def owned(kind: Owner, owner: str) -> sa.ColumnElement[bool]:
    return sa.and_(iam_inline_policies.c.kind == kind, iam_inline_policies.c.owner_key == owner)


def attached_to(kind: Owner, owner: str) -> sa.ColumnElement[bool]:
    return sa.and_(iam_attachments.c.kind == kind, iam_attachments.c.owner_key == owner)
