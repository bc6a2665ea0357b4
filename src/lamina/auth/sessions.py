"""Execution-role credentials for function instances: minted in memory, checked statelessly.

Every instance gets temporary credentials for its function's execution role, as on AWS
(`AWS_ACCESS_KEY_ID` = `ASIA…`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`). Minting sits on
the cold-start path, so it writes nothing anywhere:

* **The session token is the session.** It is a sealed, self-describing blob — access key id,
  expiry, role ARN, role id, session name and secret — encrypted with AES-256-GCM under a key
  made in memory when lamina starts. Whoever presents the token with a request hands lamina
  everything needed to verify its signature; `signing_key` opens it (microseconds) and checks
  that it names the access key id it came with.
* **No persistence, on purpose.** Instances never outlive the lamina process that started
  them, so neither do their credentials: a token minted by another lamina process (or before
  a restart) does not open, and nothing is ever written to the database.
* **Expiry** is inside the token; `signing_key` reports it (`SigningKey.expires`) and SigV4
  verification refuses an expired token with ExpiredToken. Instances are replaced before
  their credentials expire (`worker/pool.py`), since an environment variable cannot change
  under a running process.

`lambda_may_assume` is the check CreateFunction makes: the role's trust policy must let the
service principal `lambda.amazonaws.com` perform `sts:AssumeRole`.

Neither the key, a secret nor a token ever appears in a repr or a log line.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lamina.auth.identity import Principal, SigningKey
from lamina.auth.policy import MalformedPolicy, RequestContext, evaluate, parse_policy

__all__ = [
    "LAMBDA_SERVICE",
    "InstanceSessions",
    "SessionCredentials",
    "lambda_may_assume",
    "service_may_assume",
]

LAMBDA_SERVICE = "lambda.amazonaws.com"
# The trust policy of a role Lambda may assume (what `lamina deploy` and the benches create).
LAMBDA_TRUST_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": LAMBDA_SERVICE},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)

_MAGIC = b"L\x01"  # "L" for lamina, then the format version
_NONCE = 12
_TAG = 16
_AAD = b"lamina/instance-session/v1"
_FIELDS = 6  # access key id, expiry, role ARN, role id, session name, secret


@dataclass(frozen=True, slots=True)
class SessionCredentials:
    """Temporary credentials for an instance: what its environment variables carry."""

    access_key_id: str  # ASIA… (20 characters)
    secret_access_key: str  # 40 characters
    session_token: str  # the sealed session (see the module docstring)
    expires: datetime  # UTC, tz-aware, whole seconds

    def __repr__(self) -> str:  # never print the secret or the token by accident
        return f"SessionCredentials({self.access_key_id!r}, expires={self.expires.isoformat()})"


def service_may_assume(role_arn: str, trust_policy: str, service: str) -> bool:
    """Whether the role's trust policy lets the AWS service principal `service` perform
    `sts:AssumeRole` (explicit denies win; a malformed trust policy admits nobody)."""
    try:
        trust = parse_policy(trust_policy, kind="resource")
    except MalformedPolicy:
        return False
    ctx = RequestContext(
        action="sts:AssumeRole", resource=role_arn, principal=None, principal_service=service
    )
    return evaluate(ctx, [], trust).allowed


def lambda_may_assume(role_arn: str, trust_policy: str) -> bool:
    """Whether Lambda (`lambda.amazonaws.com`) may assume the role: CreateFunction's check."""
    return service_may_assume(role_arn, trust_policy, LAMBDA_SERVICE)


def derived_role_id(role_arn: str) -> str:
    """A stable AROA-style id for a role whose real id is not known (21 characters)."""
    digest = hashlib.sha256(role_arn.encode()).digest()
    return "AROA" + base64.b32encode(digest).decode()[:17]


class InstanceSessions:
    """Mints execution-role credentials for instances and verifies them, under one in-memory
    key (made here unless given: tests pass one to mimic another process or the same one)."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != 32:
            raise ValueError("the session key must be 32 bytes")
        self._aead = AESGCM(key if key is not None else AESGCM.generate_key(256))

    def __repr__(self) -> str:
        return "InstanceSessions()"

    def mint(
        self, role_arn: str, session_name: str, ttl_s: int, role_id: str | None = None
    ) -> SessionCredentials:
        """Credentials for `role_arn` as session `session_name` (a function's name), valid
        `ttl_s` seconds. The caller has checked that the role may be assumed. No I/O."""
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        if "\n" in role_arn or "\n" in session_name:
            raise ValueError("a role ARN or session name cannot hold a newline")
        rnd = os.urandom(10 + 30 + _NONCE)
        key_id = "ASIA" + base64.b32encode(rnd[:10]).decode()  # 16 characters of A-Z2-7
        secret = base64.b64encode(rnd[10:40]).decode()  # 40 characters
        expires = int(time.time()) + ttl_s
        plain = "\n".join(
            (
                key_id,
                str(expires),
                role_arn,
                role_id or derived_role_id(role_arn),
                session_name,
                secret,
            )
        ).encode()
        nonce = rnd[40:]
        sealed = _MAGIC + nonce + self._aead.encrypt(nonce, plain, _AAD)
        return SessionCredentials(
            access_key_id=key_id,
            secret_access_key=secret,
            session_token=base64.b64encode(sealed).decode(),
            expires=datetime.fromtimestamp(expires, UTC),
        )

    def minter(
        self, role_arn: str, session_name: str, ttl_s: int, role_id: str | None = None
    ) -> Callable[[], SessionCredentials]:
        """`mint` with its arguments bound: what a blueprint calls once per new instance."""
        return functools.partial(self.mint, role_arn, session_name, ttl_s, role_id)

    def signing_key(self, access_key_id: str, session_token: str | None) -> SigningKey | None:
        """The key SigV4 verifies a request signed with `access_key_id` + `session_token`
        with, or None when the token is not one this process minted for that key id (malformed,
        tampered with, sealed under another key, or naming another access key id). An expired
        session is returned with its `expires`: SigV4 verification reports ExpiredToken."""
        if not session_token or not access_key_id.startswith("ASIA"):
            return None
        try:
            blob = base64.b64decode(session_token, validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(blob) < len(_MAGIC) + _NONCE + _TAG or blob[: len(_MAGIC)] != _MAGIC:
            return None
        nonce = blob[len(_MAGIC) : len(_MAGIC) + _NONCE]
        try:
            plain = self._aead.decrypt(nonce, blob[len(_MAGIC) + _NONCE :], _AAD)
        except InvalidTag:
            return None
        fields = plain.decode().split("\n")
        if len(fields) != _FIELDS:
            return None
        key_id, expires, role_arn, role_id, session_name, secret = fields
        if not hmac.compare_digest(key_id, access_key_id):
            return None
        role_name = role_arn.rsplit("/", 1)[-1]
        parts = role_arn.split(":", 5)
        account = parts[4] if len(parts) == 6 else ""
        principal = Principal(
            kind="assumed-role",
            account=account,
            arn=f"arn:aws:sts::{account}:assumed-role/{role_name}/{session_name}",
            user_id=f"{role_id}:{session_name}",
            name=role_name,
            access_key_id=key_id,
            role_arn=role_arn,
            session_name=session_name,
        )
        return SigningKey(
            key_id,
            secret,
            principal,
            session_token=session_token,
            expires=datetime.fromtimestamp(int(expires), UTC),
        )
