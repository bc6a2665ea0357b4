"""Who a request comes from, once its signature checks out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Kind = Literal["root", "user", "assumed-role"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    `arn` is what AWS reports (GetCallerIdentity, AccessDenied messages):
    `arn:aws:iam::<account>:root`, `arn:aws:iam::<account>:user/<name>` or
    `arn:aws:sts::<account>:assumed-role/<role>/<session>`. For an assumed role, `role_arn`
    names the role (`arn:aws:iam::<account>:role/<path><name>`) whose policies apply.
    """

    kind: Kind
    account: str
    arn: str
    user_id: str  # account id (root), AIDA… (user), AROA…:<session> (assumed role)
    name: str  # user name, role name, or "root"
    access_key_id: str
    role_arn: str | None = None
    session_name: str | None = None


@dataclass(frozen=True, slots=True)
class SigningKey:
    """What SigV4 verification needs to know about an access key."""

    access_key_id: str
    secret_access_key: str
    principal: Principal
    session_token: str | None = None  # temporary credentials must present exactly this token
    expires: datetime | None = None  # temporary credentials only (UTC, tz-aware)
    active: bool = True

    def __repr__(self) -> str:  # never print the secret by accident
        return f"SigningKey({self.access_key_id!r}, principal={self.principal.arn!r})"
