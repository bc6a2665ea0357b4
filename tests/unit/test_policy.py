"""IAM policy parsing and evaluation (lamina.auth.policy), against AWS's documented semantics."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.auth.identity import Principal
from lamina.auth.policy import (
    Decision,
    MalformedPolicy,
    Policy,
    RequestContext,
    action_matches,
    evaluate,
    parse_policy,
    resource_matches,
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

# -- evaluation --------------------------------------------------------------------------------

# (identity policies, resource policy, context, (allowed, reason, via))
EVAL_ROWS = [
    pytest.param([], None, ctx(), (False, "implicit-deny", None), id="no-policies-implicit-deny"),
    pytest.param([ident(stmt())], None, ctx(), (True, "allowed", "identity"), id="identity-allow"),
    pytest.param(
        [ident(stmt(action="lambda:GetFunction"))],
        None,
        ctx(),
        (False, "implicit-deny", None),
        id="identity-other-action",
    ),
    pytest.param(
        [ALLOW_ALL, ident(stmt("Deny"))],
        None,
        ctx(),
        (False, "explicit-deny", "identity"),
        id="deny-in-other-policy-beats-allow",
    ),
    pytest.param(
        [ALLOW_ALL],
        res(stmt("Deny", Principal="*")),
        ctx(),
        (False, "explicit-deny", "resource"),
        id="resource-deny-beats-identity-allow",
    ),
    pytest.param(
        [ident(stmt("Deny", Condition={"Bool": {"aws:SecureTransport": False}})), ALLOW_ALL],
        None,
        ctx(keys={"aws:SecureTransport": "false"}),
        (False, "explicit-deny", "identity"),
        id="conditional-deny-applies",
    ),
    pytest.param(
        [ident(stmt("Deny", Condition={"Bool": {"aws:SecureTransport": False}})), ALLOW_ALL],
        None,
        ctx(keys={"aws:SecureTransport": "true"}),
        (True, "allowed", "identity"),
        id="conditional-deny-not-applying",
    ),
    # NotAction / NotResource
    pytest.param(
        [ident(stmt(action=None, NotAction="iam:*", resource="*"))],
        None,
        ctx(),
        (True, "allowed", "identity"),
        id="notaction-allow-covers-other-services",
    ),
    pytest.param(
        [ident(stmt(action=None, NotAction="lambda:*", resource="*"))],
        None,
        ctx(),
        (False, "implicit-deny", None),
        id="notaction-allow-excludes-listed",
    ),
    pytest.param(
        [ALLOW_ALL, ident(stmt("Deny", resource=None, NotResource=FN.replace("f1", "safe")))],
        None,
        ctx(),
        (False, "explicit-deny", "identity"),
        id="notresource-deny-hits-others",
    ),
    pytest.param(
        [ALLOW_ALL, ident(stmt("Deny", resource=None, NotResource=FN))],
        None,
        ctx(),
        (True, "allowed", "identity"),
        id="notresource-deny-spares-listed",
    ),
    # wildcards and case
    pytest.param(
        [ident(stmt(action="lambda:Get*", resource="*"))],
        None,
        ctx(action="lambda:GetFunction"),
        (True, "allowed", "identity"),
        id="action-prefix-wildcard",
    ),
    pytest.param(
        [ident(stmt(action="lambda:Get*", resource="*"))],
        None,
        ctx(action="lambda:ListFunctions"),
        (False, "implicit-deny", None),
        id="action-prefix-wildcard-miss",
    ),
    pytest.param(
        [ident(stmt(action="lambda:*Function*", resource="*"))],
        None,
        ctx(action="lambda:GetFunctionConfiguration"),
        (True, "allowed", "identity"),
        id="action-infix-wildcard",
    ),
    pytest.param(
        [ident(stmt(action="lambda:?etFunction", resource="*"))],
        None,
        ctx(action="lambda:GetFunction"),
        (True, "allowed", "identity"),
        id="action-question-mark",
    ),
    pytest.param(
        [ident(stmt(action="lambda:?etFunction", resource="*"))],
        None,
        ctx(action="lambda:GGetFunction"),
        (False, "implicit-deny", None),
        id="action-question-mark-one-char-only",
    ),
    pytest.param(
        [ident(stmt(action="LAMBDA:invokefunction"))],
        None,
        ctx(),
        (True, "allowed", "identity"),
        id="action-case-insensitive",
    ),
    pytest.param(
        [ident(stmt(resource="arn:aws:lambda:*:*:function:f*"))],
        None,
        ctx(resource=FN + ":prod"),
        (True, "allowed", "identity"),
        id="resource-star-spans-colon",
    ),
    pytest.param(
        [ident(stmt(resource="arn:aws:lambda:*:*:function:f*"))],
        None,
        ctx(resource=FN.replace("f1", "g1")),
        (False, "implicit-deny", None),
        id="resource-wildcard-miss",
    ),
    pytest.param(
        [ident(stmt(resource=FN.replace("f1", "F1")))],
        None,
        ctx(),
        (False, "implicit-deny", None),
        id="resource-case-sensitive",
    ),
    pytest.param(
        [ident(stmt(resource=FN.replace("f1", "f?")))],
        None,
        ctx(),
        (True, "allowed", "identity"),
        id="resource-question-mark",
    ),
    # same account: either side suffices
    pytest.param(
        [],
        res(stmt(Principal=P)),
        ctx(),
        (True, "allowed", "resource"),
        id="same-account-resource-only",
    ),
    pytest.param(
        [],
        res(stmt(Principal=P)),
        ctx(BOB),
        (False, "implicit-deny", None),
        id="resource-names-other-user",
    ),
    pytest.param(
        [],
        res(stmt(Principal={"AWS": ACCT})),
        ctx(),
        (False, "implicit-deny", None),
        id="same-account-account-principal-delegates",
    ),
    pytest.param(
        [ident(stmt())],
        res(stmt(Principal={"AWS": f"arn:aws:iam::{ACCT}:root"})),
        ctx(),
        (True, "allowed", "identity"),
        id="same-account-delegation-plus-identity",
    ),
    pytest.param(
        [],
        res(stmt(Principal={"AWS": ROLE.role_arn})),
        ctx(ROLE),
        (True, "allowed", "resource"),
        id="role-arn-matches-its-session",
    ),
    pytest.param(
        [],
        res(stmt(Principal={"AWS": ROLE.arn})),
        ctx(ROLE),
        (True, "allowed", "resource"),
        id="session-arn-matches-session",
    ),
    pytest.param(
        [],
        res(stmt(Principal={"AWS": [f"arn:aws:iam::{ACCT}:role/other"]})),
        ctx(ROLE),
        (False, "implicit-deny", None),
        id="other-role-arn-no-match",
    ),
    # cross account: both sides required
    pytest.param(
        [ident(stmt())],
        None,
        ctx(EVE),
        (False, "implicit-deny", None),
        id="cross-account-identity-only",
    ),
    pytest.param(
        [],
        res(stmt(Principal={"AWS": EVE.arn})),
        ctx(EVE),
        (False, "implicit-deny", None),
        id="cross-account-resource-only",
    ),
    pytest.param(
        [ident(stmt())],
        res(stmt(Principal={"AWS": EVE.arn})),
        ctx(EVE),
        (True, "allowed", "identity+resource"),
        id="cross-account-both",
    ),
    pytest.param(
        [ident(stmt())],
        res(stmt(Principal={"AWS": [OTHER]})),
        ctx(EVE),
        (True, "allowed", "identity+resource"),
        id="cross-account-account-id-principal",
    ),
    pytest.param(
        [ident(stmt())],
        res(stmt(Principal={"AWS": ACCT})),
        ctx(EVE),
        (False, "implicit-deny", None),
        id="cross-account-wrong-account",
    ),
    pytest.param(
        [],
        res(stmt(Principal="*")),
        ctx(EVE),
        (False, "implicit-deny", None),
        id="cross-account-star-still-needs-identity",
    ),
    pytest.param(
        [ident(stmt())],
        res(stmt(Principal="*"), stmt("Deny", Principal={"AWS": OTHER})),
        ctx(EVE),
        (False, "explicit-deny", "resource"),
        id="cross-account-account-deny",
    ),
    # root
    pytest.param([], None, ctx(root()), (True, "allowed", "root"), id="root-own-account"),
    pytest.param(
        [],
        res(stmt("Deny", Principal="*")),
        ctx(root()),
        (False, "explicit-deny", "resource"),
        id="root-subject-to-resource-deny",
    ),
    pytest.param(
        [],
        res(stmt(Principal={"AWS": OTHER})),
        ctx(OTHER_ROOT),
        (True, "allowed", "identity+resource"),
        id="cross-account-root-with-resource-grant",
    ),
    pytest.param(
        [], None, ctx(OTHER_ROOT), (False, "implicit-deny", None), id="cross-account-root-alone"
    ),
    # service principals
    pytest.param(
        [],
        res(
            stmt(
                Principal={"Service": "s3.amazonaws.com"},
                Condition={
                    "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::uploads-*"},
                    "StringEquals": {"aws:SourceAccount": ACCT},
                },
            )
        ),
        ctx(
            None,
            service="s3.amazonaws.com",
            keys={"aws:SourceArn": "arn:aws:s3:::uploads-1", "aws:SourceAccount": ACCT},
        ),
        (True, "allowed", "resource"),
        id="service-with-source-arn-and-account",
    ),
    pytest.param(
        [],
        res(
            stmt(
                Principal={"Service": "s3.amazonaws.com"},
                Condition={"ArnLike": {"aws:SourceArn": "arn:aws:s3:::uploads-*"}},
            )
        ),
        ctx(None, service="s3.amazonaws.com", keys={"aws:SourceArn": "arn:aws:s3:::other"}),
        (False, "implicit-deny", None),
        id="service-wrong-source-arn",
    ),
    pytest.param(
        [],
        res(
            stmt(
                Principal={"Service": "s3.amazonaws.com"},
                Condition={"StringEquals": {"aws:SourceAccount": ACCT}},
            )
        ),
        ctx(None, service="s3.amazonaws.com"),
        (False, "implicit-deny", None),
        id="service-missing-source-account",
    ),
    pytest.param(
        [],
        res(stmt(Principal={"Service": "sns.amazonaws.com"})),
        ctx(None, service="s3.amazonaws.com"),
        (False, "implicit-deny", None),
        id="service-other-service",
    ),
    pytest.param(
        [ALLOW_ALL],
        None,
        ctx(ALICE, service="s3.amazonaws.com"),
        (False, "implicit-deny", None),
        id="service-ignores-identity-policies",
    ),
    # anonymous
    pytest.param(
        [], res(stmt(Principal="*")), ctx(None), (True, "allowed", "resource"), id="anonymous-star"
    ),
    pytest.param(
        [],
        res(stmt(Principal={"AWS": ACCT})),
        ctx(None),
        (False, "implicit-deny", None),
        id="anonymous-needs-star",
    ),
    # NotPrincipal (Deny only): every layer of the caller must be listed to be exempt
    pytest.param(
        [ALLOW_ALL],
        res(stmt("Deny", NotPrincipal={"AWS": [f"arn:aws:iam::{ACCT}:root", ALICE.arn]})),
        ctx(ALICE),
        (True, "allowed", "identity"),
        id="notprincipal-exempts-listed-user",
    ),
    pytest.param(
        [ALLOW_ALL],
        res(stmt("Deny", NotPrincipal={"AWS": [f"arn:aws:iam::{ACCT}:root", ALICE.arn]})),
        ctx(BOB),
        (False, "explicit-deny", "resource"),
        id="notprincipal-denies-others",
    ),
    pytest.param(
        [ALLOW_ALL],
        res(stmt("Deny", NotPrincipal={"AWS": ALICE.arn})),
        ctx(ALICE),
        (False, "explicit-deny", "resource"),
        id="notprincipal-without-account-denies",
    ),
    pytest.param(
        [ALLOW_ALL],
        res(stmt("Deny", NotPrincipal={"AWS": [ACCT, ROLE.role_arn]})),
        ctx(ROLE),
        (True, "allowed", "identity"),
        id="notprincipal-role-and-account-exempt-session",
    ),
    pytest.param(
        [],
        res(stmt("Deny", NotPrincipal={"Service": "s3.amazonaws.com"}), stmt(Principal="*")),
        ctx(None, service="s3.amazonaws.com"),
        (True, "allowed", "resource"),
        id="notprincipal-exempts-service",
    ),
    # resource policy without Resource applies to the resource it is attached to
    pytest.param(
        [],
        res(stmt(resource=None, Principal=P)),
        ctx(),
        (True, "allowed", "resource"),
        id="resource-policy-without-resource",
    ),
    # policy variables
    pytest.param(
        [ident(stmt(resource="arn:aws:lambda:*:*:function:${aws:username}-*"))],
        None,
        ctx(resource=FN.replace("f1", "alice-fn")),
        (True, "allowed", "identity"),
        id="var-username",
    ),
    pytest.param(
        [ident(stmt(resource="arn:aws:lambda:*:*:function:${aws:username}-*"))],
        None,
        ctx(BOB, resource=FN.replace("f1", "alice-fn")),
        (False, "implicit-deny", None),
        id="var-username-other-user",
    ),
    pytest.param(
        [ident(stmt(resource="arn:aws:lambda:*:*:function:${aws:username}-*"), version=None)],
        None,
        ctx(resource=FN.replace("f1", "alice-fn")),
        (False, "implicit-deny", None),
        id="var-literal-in-2008-version",
    ),
    pytest.param(
        [ident(stmt(resource="arn:aws:lambda:*:*:function:${aws:username}-*"))],
        None,
        ctx(ROLE, resource=FN.replace("f1", "deployer-fn")),
        (False, "implicit-deny", None),
        id="var-unresolvable-no-match",
    ),
    pytest.param(
        [ident(stmt(resource="arn:aws:lambda:*:*:function:${aws:username, 'shared'}-*"))],
        None,
        ctx(ROLE, resource=FN.replace("f1", "shared-fn")),
        (True, "allowed", "identity"),
        id="var-default-value",
    ),
    pytest.param(
        [ident(stmt(resource="arn:aws:lambda:*:${aws:PrincipalAccount}:function:*"))],
        None,
        ctx(),
        (True, "allowed", "identity"),
        id="var-principal-account",
    ),
    pytest.param(
        [ident(stmt(resource="arn:aws:lambda:*:*:function:star${*}"))],
        None,
        ctx(resource=FN.replace("f1", "star*")),
        (True, "allowed", "identity"),
        id="var-literal-star",
    ),
    pytest.param(
        [ident(stmt(resource="arn:aws:lambda:*:*:function:star${*}"))],
        None,
        ctx(resource=FN.replace("f1", "starX")),
        (False, "implicit-deny", None),
        id="var-literal-star-is-not-wildcard",
    ),
    pytest.param(
        [ident(stmt(Condition={"StringEquals": {"aws:SourceAccount": "${aws:PrincipalAccount}"}}))],
        None,
        ctx(keys={"aws:SourceAccount": ACCT}),
        (True, "allowed", "identity"),
        id="var-in-condition",
    ),
    pytest.param(
        [ident(stmt(Condition={"StringEquals": {"aws:userid": "${aws:userid}"}}))],
        None,
        ctx(ROLE),
        (True, "allowed", "identity"),
        id="var-userid-derived",
    ),
    pytest.param(
        [ident(stmt(Condition={"StringLike": {"lambda:Tag": "a${?}${$}*"}}))],
        None,
        ctx(keys={"lambda:Tag": "a?$xyz"}),
        (True, "allowed", "identity"),
        id="var-literal-question-dollar",
    ),
    pytest.param(
        [ident(stmt(Condition={"StringLike": {"lambda:Tag": "a${?}"}}))],
        None,
        ctx(keys={"lambda:Tag": "ab"}),
        (False, "implicit-deny", None),
        id="var-literal-question-not-wild",
    ),
]


@pytest.mark.parametrize(("identity", "resource", "context", "expected"), EVAL_ROWS)
def test_evaluate(
    identity: list[Policy],
    resource: Policy | None,
    context: RequestContext,
    expected: tuple[Any, ...],
) -> None:
    d = evaluate(context, identity, resource)
    assert (d.allowed, d.reason, d.via) == expected
    assert (d.matched is not None) == (d.reason != "implicit-deny") or d.via == "root"


def test_decision_names_the_statement() -> None:
    deny = parse_policy({"Statement": [{"Sid": "NoProd", **stmt("Deny")}]})
    d = evaluate(ctx(), [ALLOW_ALL, deny])
    assert d == Decision(False, "explicit-deny", "identity[1]:NoProd", "identity")
    d = evaluate(ctx(EVE), [ident(stmt())], res({"Sid": "X", **stmt(Principal={"AWS": OTHER})}))
    assert d.matched == "identity[0]:Statement[0] + resource:X"


# -- condition operators -----------------------------------------------------------------------

T0 = "2025-06-01T12:00:00Z"
# (operator, key, policy value(s), request value (None = key absent), expected)
COND_ROWS = [
    ("StringEquals", "aws:username", "alice", "alice", True),
    ("StringEquals", "aws:username", "alice", "Alice", False),
    ("StringEquals", "k", "v", None, False),
    ("StringEquals", "k", ["a", "b"], "b", True),
    ("StringNotEquals", "k", "bob", "alice", True),
    ("StringNotEquals", "k", "alice", "alice", False),
    ("StringNotEquals", "k", ["alice", "bob"], "alice", False),
    ("StringNotEquals", "k", ["alice", "bob"], "carol", True),
    ("StringNotEquals", "k", "x", None, True),
    ("StringEqualsIgnoreCase", "k", "ALICE", "alice", True),
    ("StringEqualsIgnoreCase", "k", "ALICE", "bob", False),
    ("StringNotEqualsIgnoreCase", "k", "ALICE", "alice", False),
    ("StringNotEqualsIgnoreCase", "k", "ALICE", "bob", True),
    ("StringNotEqualsIgnoreCase", "k", "ALICE", None, True),
    ("StringLike", "k", "ali*", "alice", True),
    ("StringLike", "k", "a?ice", "alice", True),
    ("StringLike", "k", "b*", "alice", False),
    ("StringLike", "k", "a*", None, False),
    ("StringNotLike", "k", "b*", "alice", True),
    ("StringNotLike", "k", "a*", "alice", False),
    ("StringNotLike", "k", "a*", None, True),
    ("StringEqualsIfExists", "k", "v", None, True),
    ("StringEqualsIfExists", "k", "v", "w", False),
    ("StringEqualsIfExists", "k", "v", "v", True),
    ("StringNotLikeIfExists", "k", "v*", "vx", False),
    ("NumericEquals", "k", "10", "10", True),
    ("NumericEquals", "k", 10, "10.0", True),
    ("NumericEquals", "k", "10", "11", False),
    ("NumericEquals", "k", "10", "ten", False),
    ("NumericNotEquals", "k", "10", "11", True),
    ("NumericNotEquals", "k", "10", "10", False),
    ("NumericNotEquals", "k", "10", None, True),
    ("NumericLessThan", "k", "10", "9", True),
    ("NumericLessThan", "k", "10", "10", False),
    ("NumericLessThan", "k", "10", None, False),
    ("NumericLessThanIfExists", "k", "10", None, True),
    ("NumericLessThanEquals", "k", "10", "10", True),
    ("NumericLessThanEquals", "k", "10", "10.5", False),
    ("NumericGreaterThan", "k", "10", "11", True),
    ("NumericGreaterThan", "k", "10", "10", False),
    ("NumericGreaterThanEquals", "k", "-1.5", "-1.5", True),
    ("NumericGreaterThanEquals", "k", "10", "9", False),
    ("DateLessThan", "aws:CurrentTime", "2030-01-01T00:00:00Z", T0, True),
    ("DateLessThan", "aws:CurrentTime", "2030-01-01T00:00:00Z", "2031-01-01T00:00:00Z", False),
    ("DateLessThan", "aws:CurrentTime", "2030-01-01", None, False),
    ("DateGreaterThan", "aws:CurrentTime", "1700000000", T0, True),
    ("DateGreaterThan", "aws:EpochTime", "2020-01-01T00:00:00Z", "1748779200", True),
    ("DateEquals", "aws:CurrentTime", "2025-01-01T00:00:00Z", "1735689600", True),
    ("DateEquals", "aws:CurrentTime", "2025-01-01T02:00:00+02:00", "2025-01-01T00:00:00Z", True),
    ("DateEquals", "aws:CurrentTime", "2025-01-01", "2025-01-02", False),
    ("DateNotEquals", "aws:CurrentTime", T0, T0, False),
    ("DateNotEquals", "aws:CurrentTime", T0, None, True),
    ("DateLessThanEquals", "aws:CurrentTime", T0, T0, True),
    ("DateGreaterThanEquals", "aws:CurrentTime", T0, T0, True),
    ("DateGreaterThanEquals", "aws:CurrentTime", T0, "2020-01-01T00:00:00Z", False),
    ("DateGreaterThan", "aws:CurrentTime", T0, "not a date", False),
    ("Bool", "aws:SecureTransport", "true", "true", True),
    ("Bool", "aws:SecureTransport", True, "true", True),
    ("Bool", "aws:SecureTransport", "true", "false", False),
    ("Bool", "aws:SecureTransport", "true", None, False),
    ("BoolIfExists", "aws:SecureTransport", "true", None, True),
    ("BinaryEquals", "k", "QmluYXJ5VmFsdWU=", "QmluYXJ5VmFsdWU=", True),
    ("BinaryEquals", "k", "QmluYXJ5VmFsdWU=", "T3RoZXI=", False),
    ("BinaryEquals", "k", "QmluYXJ5VmFsdWU=", None, False),
    ("IpAddress", "aws:SourceIp", "203.0.113.0/24", "203.0.113.7", True),
    ("IpAddress", "aws:SourceIp", "203.0.113.0/24", "198.51.100.1", False),
    ("IpAddress", "aws:SourceIp", "203.0.113.7", "203.0.113.7", True),
    ("IpAddress", "aws:SourceIp", "2001:db8::/32", "2001:db8::1", True),
    ("IpAddress", "aws:SourceIp", "2001:db8::/32", "203.0.113.7", False),
    ("IpAddress", "aws:SourceIp", ["10.0.0.0/8", "2001:db8::/32"], "10.1.2.3", True),
    ("IpAddress", "aws:SourceIp", "10.0.0.0/8", None, False),
    ("IpAddress", "aws:SourceIp", "10.0.0.0/8", "garbage", False),
    ("NotIpAddress", "aws:SourceIp", "203.0.113.0/24", "203.0.113.7", False),
    ("NotIpAddress", "aws:SourceIp", "203.0.113.0/24", "198.51.100.1", True),
    ("NotIpAddress", "aws:SourceIp", "203.0.113.0/24", None, True),
    ("IpAddressIfExists", "aws:SourceIp", "10.0.0.0/8", None, True),
    ("ArnEquals", "aws:SourceArn", "arn:aws:s3:::bucket", "arn:aws:s3:::bucket", True),
    ("ArnEquals", "aws:SourceArn", "arn:aws:s3:::bucket", "arn:aws:s3:::bucket2", False),
    ("ArnLike", "aws:SourceArn", "arn:aws:s3:::bucket-*", "arn:aws:s3:::bucket-1", True),
    ("ArnLike", "aws:SourceArn", f"arn:aws:lambda:*:{ACCT}:function:*", FN + ":prod", True),
    ("ArnLike", "aws:SourceArn", f"arn:aws:*:{ACCT}:function:f1", FN, False),
    ("ArnLike", "aws:SourceArn", "arn:aws:s3:::*", "not-an-arn", False),
    ("ArnLike", "aws:SourceArn", "*", "arn:aws:s3:::x", True),
    ("ArnLike", "aws:SourceArn", "arn:aws:s3:::*", None, False),
    ("ArnNotEquals", "aws:SourceArn", "arn:aws:s3:::a", "arn:aws:s3:::b", True),
    ("ArnNotLike", "aws:SourceArn", "arn:aws:s3:::a*", "arn:aws:s3:::abc", False),
    ("ArnNotLike", "aws:SourceArn", "arn:aws:s3:::a*", "arn:aws:s3:::xyz", True),
    ("ArnNotLike", "aws:SourceArn", "arn:aws:s3:::a*", None, True),
    ("ArnLikeIfExists", "aws:SourceArn", "arn:aws:s3:::a*", None, True),
    ("Null", "aws:TokenIssueTime", "true", None, True),
    ("Null", "aws:TokenIssueTime", "true", "2025-01-01T00:00:00Z", False),
    ("Null", "aws:TokenIssueTime", False, "2025-01-01T00:00:00Z", True),
    ("Null", "aws:TokenIssueTime", "false", None, False),
    ("Null", "aws:TagKeys", "true", [], True),
    # set qualifiers over multivalued keys
    ("ForAnyValue:StringEquals", "aws:TagKeys", ["a", "b"], ["b", "c"], True),
    ("ForAnyValue:StringEquals", "aws:TagKeys", ["a", "b"], ["c"], False),
    ("ForAnyValue:StringEquals", "aws:TagKeys", ["a", "b"], [], False),
    ("ForAnyValue:StringEquals", "aws:TagKeys", ["a", "b"], None, False),
    ("ForAnyValue:StringEqualsIfExists", "aws:TagKeys", ["a"], None, True),
    ("ForAllValues:StringEquals", "aws:TagKeys", ["a", "b"], ["a", "b"], True),
    ("ForAllValues:StringEquals", "aws:TagKeys", ["a", "b"], ["a", "c"], False),
    ("ForAllValues:StringEquals", "aws:TagKeys", ["a", "b"], [], True),
    ("ForAllValues:StringEquals", "aws:TagKeys", ["a", "b"], None, True),
    ("ForAllValues:StringLike", "aws:TagKeys", "Created*", ["CreatedBy", "CreatedAt"], True),
    ("ForAnyValue:StringNotEquals", "aws:TagKeys", "a", ["a", "b"], True),
    ("ForAnyValue:StringNotEquals", "aws:TagKeys", "a", ["a"], False),
    ("ForAllValues:StringNotEquals", "aws:TagKeys", "a", ["b", "c"], True),
    ("ForAllValues:StringNotEquals", "aws:TagKeys", "a", ["a", "b"], False),
    ("ForAnyValue:NumericLessThan", "k", "5", ["9", "3"], True),
    ("forallvalues:stringequals", "aws:TagKeys", "a", ["a"], True),
    # key names are case-insensitive
    ("IpAddress", "AWS:SOURCEIP", "10.0.0.0/8", "10.0.0.1", True),
]


def _cond_id(row: tuple[Any, ...]) -> str:
    op, key, pv, rv, ok = row
    return f"{op}-{key}-{json.dumps(pv)}-{'absent' if rv is None else json.dumps(rv)}-{ok}"


@pytest.mark.parametrize("row", COND_ROWS, ids=[_cond_id(r) for r in COND_ROWS])
def test_condition_operator(row: tuple[Any, ...]) -> None:
    op, key, policy_value, request_value, expected = row
    pol = ident(stmt(Condition={op: {key: policy_value}}))
    keys = {} if request_value is None else {key.lower(): request_value}
    assert evaluate(ctx(keys=keys), [pol]).allowed is expected


@pytest.mark.parametrize(
    ("condition", "keys", "expected"),
    [
        pytest.param(
            {"StringEquals": {"a": "1", "b": "2"}}, {"a": "1", "b": "2"}, True, id="keys-and"
        ),
        pytest.param(
            {"StringEquals": {"a": "1", "b": "2"}}, {"a": "1", "b": "3"}, False, id="keys-and-miss"
        ),
        pytest.param(
            {"StringEquals": {"a": "1"}, "Bool": {"b": "true"}},
            {"a": "1", "b": "false"},
            False,
            id="operators-and",
        ),
        pytest.param({"StringEquals": {"a": ["1", "2"]}}, {"a": "2"}, True, id="values-or"),
        pytest.param({}, {}, True, id="empty-condition-block"),
    ],
)
def test_condition_combination(
    condition: dict[str, Any], keys: dict[str, str], expected: bool
) -> None:
    assert evaluate(ctx(keys=keys), [ident(stmt(Condition=condition))]).allowed is expected


# -- helpers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "action", "expected"),
    [
        ("*", "lambda:InvokeFunction", True),
        ("lambda:*", "lambda:InvokeFunction", True),
        ("lambda:*", "iam:GetUser", False),
        ("Lambda:invoke*", "lambda:InvokeFunction", True),
        ("lambda:Invoke", "lambda:InvokeFunction", False),
        ("lambda:Invoke?unction", "lambda:InvokeFunction", True),
        ("lambda:Invoke.*", "lambda:InvokeFunction", False),  # regex metacharacters are literal
    ],
)
def test_action_matches(pattern: str, action: str, expected: bool) -> None:
    assert action_matches(pattern, action) is expected


@pytest.mark.parametrize(
    ("pattern", "arn", "expected"),
    [
        ("*", FN, True),
        ("arn:aws:lambda:*", FN, True),
        (f"arn:aws:lambda:us-east-1:{ACCT}:function:*", FN + ":$LATEST", True),
        ("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket/a/b/c.txt", True),
        ("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket", False),
        (FN, FN.upper(), False),
        ("arn:aws:lambda:us-east-1:????????????:function:f1", FN, True),
        ("arn:aws:lambda:us-east-1:(1+):function:f1", FN, False),
    ],
)
def test_resource_matches(pattern: str, arn: str, expected: bool) -> None:
    assert resource_matches(pattern, arn) is expected


# -- parsing -----------------------------------------------------------------------------------

GOOD = {"Version": "2012-10-17", "Statement": [stmt()]}


def _with(**changes: Any) -> dict[str, Any]:
    s = stmt()
    for k, v in changes.items():
        if v is None:
            s.pop(k, None)
        else:
            s[k] = v
    return {"Version": "2012-10-17", "Statement": [s]}


PARSE_ERRORS = [
    pytest.param("{not json", "identity", "Syntax", id="bad-json"),
    pytest.param('{"Statement": NaN}', "identity", "NaN", id="json-nan"),
    pytest.param("[1, 2]", "identity", "JSON object", id="not-an-object"),
    pytest.param({**GOOD, "Version": "2012-10-18"}, "identity", "Version", id="bad-version"),
    pytest.param({**GOOD, "Foo": 1}, "identity", "'Foo'", id="unknown-top-level-key"),
    pytest.param({"Version": "2012-10-17"}, "identity", "Statement", id="missing-statement"),
    pytest.param({"Statement": []}, "identity", "must not be empty", id="empty-statement-list"),
    pytest.param({"Statement": "x"}, "identity", "must be an object", id="statement-not-object"),
    pytest.param({**GOOD, "Id": 5}, "identity", "Id", id="id-not-string"),
    pytest.param(_with(Effect="allow"), "identity", "Effect", id="effect-case"),
    pytest.param(_with(Effect=None), "identity", "Effect", id="effect-missing"),
    pytest.param(_with(NotAction="iam:*"), "identity", "cannot both", id="action-and-notaction"),
    pytest.param(_with(Action=None), "identity", "Action or NotAction", id="no-action"),
    pytest.param(
        _with(Action="InvokeFunction"), "identity", "prefixed", id="action-without-service"
    ),
    pytest.param(
        _with(Action=["lambda:Get*", 3]), "identity", "list of strings", id="action-not-string"
    ),
    pytest.param(_with(Action=[]), "identity", "must not be empty", id="action-empty-list"),
    pytest.param(
        _with(Resource=None), "identity", "Resource or NotResource", id="identity-needs-resource"
    ),
    pytest.param(_with(NotResource="*"), "identity", "cannot both", id="resource-and-notresource"),
    pytest.param(_with(Resource="function:f1"), "identity", "ARN format", id="resource-not-arn"),
    pytest.param(
        _with(Principal="*"), "identity", "must not specify Principal", id="identity-with-principal"
    ),
    pytest.param(GOOD, "resource", "must specify Principal", id="resource-without-principal"),
    pytest.param(_with(NotPrincipal="*"), "resource", "Deny", id="notprincipal-with-allow"),
    pytest.param(
        _with(Principal="*", NotPrincipal="*"), "resource", "cannot both", id="principal-and-not"
    ),
    pytest.param(_with(Principal={"Foo": "x"}), "resource", "'Foo'", id="principal-unknown-type"),
    pytest.param(
        _with(Principal={"AWS": "bob"}), "resource", "invalid principal", id="principal-bad-aws"
    ),
    pytest.param(
        _with(Principal="someone"), "resource", "Principal must be", id="principal-bad-string"
    ),
    pytest.param(_with(Principal={}), "resource", "Principal must be", id="principal-empty-object"),
    pytest.param(
        {"Statement": [{"Sid": "A", **stmt()}, {"Sid": "A", **stmt()}]},
        "identity",
        "unique",
        id="duplicate-sid",
    ),
    pytest.param(_with(Sid=7), "identity", "Sid", id="sid-not-string"),
    pytest.param(_with(Actions="lambda:*"), "identity", "'Actions'", id="unknown-statement-key"),
    pytest.param(
        _with(Condition=[]), "identity", "Condition must be an object", id="condition-not-object"
    ),
    pytest.param(
        _with(Condition={"StringEqualz": {"k": "v"}}),
        "identity",
        "unknown condition operator",
        id="unknown-operator",
    ),
    pytest.param(
        _with(Condition={"ForSomeValues:StringEquals": {"k": "v"}}),
        "identity",
        "qualifier",
        id="unknown-qualifier",
    ),
    pytest.param(
        _with(Condition={"StringEquals": "v"}), "identity", "map condition keys", id="op-not-object"
    ),
    pytest.param(
        _with(Condition={"StringEquals": {"k": None}}),
        "identity",
        "condition values",
        id="null-value",
    ),
    pytest.param(
        _with(Condition={"StringEquals": {"k": []}}), "identity", "no values", id="empty-values"
    ),
    pytest.param(
        _with(Condition={"StringEquals": {"k": {"x": 1}}}),
        "identity",
        "condition values",
        id="object-value",
    ),
    pytest.param(
        _with(Condition={"NumericEquals": {"k": "abc"}}),
        "identity",
        "not a valid value",
        id="bad-number",
    ),
    pytest.param(
        _with(Condition={"DateLessThan": {"k": "yesterday"}}),
        "identity",
        "not a valid value",
        id="bad-date",
    ),
    pytest.param(
        _with(Condition={"IpAddress": {"k": "999.1.1.1/8"}}),
        "identity",
        "not a valid value",
        id="bad-cidr",
    ),
    pytest.param(
        _with(Condition={"Null": {"k": "maybe"}}), "identity", "not a valid value", id="bad-null"
    ),
    pytest.param(
        _with(Condition={"Bool": {"k": "yes"}}), "identity", "not a valid value", id="bad-bool"
    ),
    pytest.param(
        _with(Condition={"NullIfExists": {"k": "true"}}), "identity", "Null", id="null-ifexists"
    ),
]


@pytest.mark.parametrize(("document", "kind", "message"), PARSE_ERRORS)
def test_parse_errors(document: Any, kind: str, message: str) -> None:
    with pytest.raises(MalformedPolicy) as err:
        parse_policy(document, kind=kind)  # type: ignore[arg-type]
    assert message in err.value.message


def test_parse_valid_forms() -> None:
    p = parse_policy(json.dumps({"Statement": stmt()}))
    assert (
        p.version == "2008-10-17"
        and len(p.statements) == 1
        and p.statements[0].label == "Statement[0]"
    )
    r = parse_policy(
        {
            "Version": "2012-10-17",
            "Id": "default",
            "Statement": [
                {
                    "Sid": "a",
                    "Effect": "Allow",
                    "Principal": {"Service": ["S3.amazonaws.com"]},
                    "Action": "*",
                },
                {
                    "Effect": "Deny",
                    "NotPrincipal": {"AWS": [ACCT]},
                    "Action": "*",
                    "NotResource": "*",
                },
            ],
        },
        kind="resource",
    )
    assert r.id == "default" and r.statements[0].resources is None and r.statements[1].not_principal
    c = parse_policy(
        _with(Condition={"stringlikeifexists": {"k": ["a", 1, 2.5, True]}})
    ).statements[0]
    assert c.conditions[0].operator == "StringLikeIfExists"
    assert c.conditions[0].values == ("a", "1", "2.5", "true")


def test_to_json_round_trips() -> None:
    doc: dict[str, Any] = {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "s", **stmt(Condition={"Bool": {"k": True}})}],
    }
    p = parse_policy(doc)
    assert json.loads(p.to_json()) == doc
    assert parse_policy(p.to_json()) == p
    doc["Statement"][0]["Sid"] = "changed"  # the policy keeps its own snapshot
    assert json.loads(p.to_json())["Statement"][0]["Sid"] == "s"


def test_resource_account_defaults_to_arn_account() -> None:
    assert ctx(EVE).owner_account == ACCT
    assert RequestContext(INVOKE, "*", EVE).owner_account == OTHER
    assert RequestContext(INVOKE, FN, EVE, resource_account=OTHER).owner_account == OTHER


def test_hostile_wildcards_are_linear() -> None:
    pattern = "arn:aws:lambda:*" + "*a" * 40 + "*b"
    pol = ident(stmt(resource=pattern, Condition={"StringLike": {"k": "*a" * 40 + "*b"}}))
    long = "a" * 20000
    d = evaluate(ctx(resource=FN + long, keys={"k": long}), [pol])  # must return promptly
    assert not d.allowed
    assert action_matches("lambda:" + "*a" * 40 + "*b", "lambda:" + long) is False


@pytest.mark.parametrize(
    "entry",
    [f"arn:aws:iam::{ACCT}:role/*", f"arn:aws:iam::{ACCT}:user/b?b", "12345678901", "١١١١٢٢٢٢٣٣٣٣"],
)
def test_principal_entries_must_be_exact(entry: str) -> None:
    with pytest.raises(MalformedPolicy, match="invalid principal"):
        res(stmt(Principal={"AWS": entry}))


def test_policies_are_hashable_values() -> None:
    a, b = ident(stmt()), ident(stmt())
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1


# -- fuzz --------------------------------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_ELEMENTS = sorted(
    {
        "Version",
        "Id",
        "Statement",
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
    }
    | {"Resource", "NotResource", "Condition", "AWS", "Service", "StringEquals", "ForAnyValue:Bool"}
)
_OPS = [
    "StringEquals",
    "StringNotLike",
    "StringEqualsIgnoreCase",
    "NumericLessThan",
    "DateGreaterThan",
    "Bool",
    "BinaryEquals",
    "IpAddress",
    "NotIpAddress",
    "ArnLike",
    "ArnNotEquals",
    "Null",
    "ForAnyValue:StringLike",
    "ForAllValues:StringNotEquals",
    "StringEqualsIfExists",
    "NumericEqualsIfExists",
]
_VALUES = [
    "alice",
    "10",
    "-3.5",
    "2025-01-01T00:00:00Z",
    "1700000000",
    "10.0.0.0/8",
    "::1/128",
    "true",
    "false",
    "arn:aws:s3:::b*",
    "${aws:username}",
    "${aws:SourceArn, 'x'}",
    "${*}${?}${$}",
    "${nope}",
    "${",
    "a*?b",
]
_value = st.sampled_from(_VALUES) | st.text(max_size=8)
_keys = st.sampled_from(_ELEMENTS) | st.text(max_size=6)
_jsonish = st.recursive(
    _scalars | st.sampled_from(_ELEMENTS + _VALUES),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=25,
)
# Mostly well-formed documents with arbitrary values spliced in, to reach the deeper checks.


def _mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.integers(0, 7).flatmap(lambda n: _jsonish if n == 7 else valid)


_near_valid = st.fixed_dictionaries(
    {
        "Statement": st.lists(
            st.fixed_dictionaries(
                {
                    "Effect": _mostly(st.sampled_from(["Allow", "Deny"])),
                    "Action": _mostly(st.sampled_from(["*", "lambda:*", ["s3:Get*"]])),
                    "Resource": _mostly(st.sampled_from(["*", FN, [FN, "*"]])),
                },
                optional={
                    "Sid": _mostly(st.sampled_from(["a", "b"])),
                    "Principal": _mostly(st.sampled_from(["*", {"AWS": ACCT}, {"Service": "x"}])),
                    "Condition": st.dictionaries(
                        st.sampled_from(_OPS) | st.text(max_size=5),
                        _mostly(st.dictionaries(st.sampled_from(["k", "K2"]), _value, max_size=2)),
                        max_size=2,
                    ),
                },
            ),
            min_size=1,
            max_size=3,
        )
    },
    optional={"Version": _mostly(st.sampled_from(["2012-10-17", "2008-10-17"]))},
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=_jsonish | st.dictionaries(_keys, _jsonish, max_size=5) | _near_valid,
    kind=st.sampled_from(["identity", "resource"]),
)
def test_fuzz_parse_raises_only_malformed(doc: Any, kind: str) -> None:
    for candidate in (doc, json.dumps(doc)):
        try:
            p = parse_policy(candidate, kind=kind)  # type: ignore[arg-type]
        except MalformedPolicy:
            continue
        assert isinstance(p, Policy)
        assert parse_policy(p.to_json(), kind=kind) == p  # type: ignore[arg-type]


@settings(max_examples=80, deadline=None)
@given(text=st.text(max_size=40))
def test_fuzz_parse_text(text: str) -> None:
    with contextlib.suppress(MalformedPolicy):
        parse_policy(text)


_statement = st.fixed_dictionaries(
    {
        "Effect": st.sampled_from(["Allow", "Deny"]),
        "Action": st.lists(
            st.sampled_from(["*", "lambda:*", "lambda:Get*", "s3:?et*"]), min_size=1, max_size=2
        ),
        "Resource": st.lists(
            st.sampled_from(
                ["*", FN, "arn:aws:lambda:*:*:function:${aws:username}*", "arn:${*}:*"]
            ),
            min_size=1,
            max_size=2,
        ),
        "Principal": st.sampled_from(
            ["*", {"AWS": ACCT}, {"AWS": ALICE.arn}, {"Service": "s3.amazonaws.com"}]
        ),
        "Condition": st.dictionaries(
            st.sampled_from(_OPS),
            st.dictionaries(
                st.sampled_from(["k", "aws:SourceIp", "aws:TagKeys", "AWS:username"]),
                st.lists(_value, min_size=1, max_size=3),
                min_size=1,
                max_size=2,
            ),
            max_size=3,
        ),
    }
)
_principal = st.sampled_from([None, ALICE, BOB, ROLE, EVE, root(), OTHER_ROOT]) | st.builds(
    Principal,
    st.sampled_from(["root", "user", "assumed-role"]),
    st.text(max_size=13),
    st.text(max_size=20),
    st.text(max_size=8),
    st.text(max_size=8),
    st.text(max_size=4),
    st.none() | st.text(max_size=20),
)
_context = st.builds(
    RequestContext,
    action=st.sampled_from([INVOKE, "lambda:GetFunction", "s3:GetObject"]) | st.text(max_size=10),
    resource=st.sampled_from([FN, OTHER_FN, "*"]) | st.text(max_size=20),
    principal=_principal,
    principal_service=st.none() | st.sampled_from(["s3.amazonaws.com"]) | st.text(max_size=5),
    resource_account=st.sampled_from(["", ACCT, OTHER]) | st.text(max_size=5),
    keys=st.dictionaries(
        st.sampled_from(["k", "aws:SourceIp", "aws:TagKeys", "aws:username", "AWS:SourceArn"])
        | st.text(max_size=5),
        _value | st.lists(_value, max_size=3),
        max_size=4,
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    context=_context,
    id_statements=st.lists(_statement, max_size=2),
    res_statements=st.lists(_statement, max_size=2),
    version=st.sampled_from(["2012-10-17", "2008-10-17"]),
)
def test_fuzz_evaluate_never_raises(
    context: RequestContext,
    id_statements: list[dict[str, Any]],
    res_statements: list[dict[str, Any]],
    version: str,
) -> None:
    policies: list[Policy] = []
    for s in id_statements:
        s = {k: v for k, v in s.items() if k != "Principal"}
        with contextlib.suppress(MalformedPolicy):
            policies.append(parse_policy({"Version": version, "Statement": [s]}))
    resource = None
    if res_statements:
        with contextlib.suppress(MalformedPolicy):
            resource = parse_policy(
                {"Version": version, "Statement": res_statements}, kind="resource"
            )
    d = evaluate(context, policies, resource)
    assert d.allowed == (d.reason == "allowed")
