"""Builders for the policy tests: principals, statements, policies, request contexts."""

from __future__ import annotations

from typing import Any

from lamina.auth.identity import Principal
from lamina.auth.policy import (
    Policy,
    RequestContext,
    parse_policy,
)

ACCT = "111122223333"
OTHER = "444455556666"
FN = f"arn:aws:lambda:us-east-1:{ACCT}:function:f1"
OTHER_FN = f"arn:aws:lambda:us-east-1:{OTHER}:function:f1"
INVOKE = "lambda:InvokeFunction"


def user(name: str = "alice", account: str = ACCT) -> Principal:
    return Principal(
        "user", account, f"arn:aws:iam::{account}:user/{name}", f"AIDA{name.upper()}", name, "AKIA1"
    )


def session(role: str = "deployer", sess: str = "s1", account: str = ACCT) -> Principal:
    return Principal(
        "assumed-role",
        account,
        f"arn:aws:sts::{account}:assumed-role/{role}/{sess}",
        f"AROAXYZ:{sess}",
        role,
        "ASIA1",
        role_arn=f"arn:aws:iam::{account}:role/{role}",
        session_name=sess,
    )


def root(account: str = ACCT) -> Principal:
    return Principal("root", account, f"arn:aws:iam::{account}:root", account, "root", "AKIAROOT")


ALICE, BOB, ROLE = user("alice"), user("bob"), session()
EVE = user("eve", OTHER)  # another account
OTHER_ROOT = root(OTHER)


def stmt(
    effect: str = "Allow", action: Any = INVOKE, resource: Any = FN, **extra: Any
) -> dict[str, Any]:
    s: dict[str, Any] = {"Effect": effect}
    if action is not None:
        s["Action"] = action
    if resource is not None:
        s["Resource"] = resource
    s.update(extra)
    return s


def ident(*statements: dict[str, Any], version: str | None = "2012-10-17") -> Policy:
    doc: dict[str, Any] = {"Statement": list(statements)}
    if version:
        doc["Version"] = version
    return parse_policy(doc)


def res(*statements: dict[str, Any]) -> Policy:
    return parse_policy({"Version": "2012-10-17", "Statement": list(statements)}, kind="resource")


def ctx(
    principal: Principal | None = ALICE,
    action: str = INVOKE,
    resource: str = FN,
    keys: dict[str, Any] | None = None,
    service: str | None = None,
) -> RequestContext:
    return RequestContext(action, resource, principal, service, keys=keys or {})


ALLOW_ALL = ident(stmt(action="*", resource="*"))
P = {"AWS": ALICE.arn}  # resource-policy principal naming alice
