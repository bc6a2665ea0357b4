"""IAM policy parsing (lamina.auth.policy.parse_policy): what is refused and how it is worded,
the accepted forms, and fuzzing of parse and evaluate."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.auth.identity import Principal
from lamina.auth.policy import (
    MalformedPolicy,
    Policy,
    RequestContext,
    action_matches,
    evaluate,
    parse_policy,
)
from tests.unit.policy_cases import (
    ACCT,
    ALICE,
    BOB,
    EVE,
    FN,
    INVOKE,
    OTHER,
    OTHER_FN,
    OTHER_ROOT,
    ROLE,
    ctx,
    ident,
    res,
    root,
    stmt,
)

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
