"""IAM policy evaluation (lamina.auth.policy) against AWS's documented semantics: the decision
rules, and the Action/Resource matchers."""

from __future__ import annotations

from typing import Any

import pytest

from lamina.auth.policy import (
    Decision,
    Policy,
    RequestContext,
    action_matches,
    evaluate,
    parse_policy,
    resource_matches,
)
from tests.unit.policy_cases import (
    ACCT,
    ALICE,
    ALLOW_ALL,
    BOB,
    EVE,
    FN,
    OTHER,
    OTHER_ROOT,
    ROLE,
    P,
    ctx,
    ident,
    res,
    root,
    stmt,
)

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
