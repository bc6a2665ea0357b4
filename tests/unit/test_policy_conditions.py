"""IAM condition operators (lamina.auth.conditions): each operator, IfExists, missing keys,
ForAnyValue/ForAllValues, and how conditions combine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lamina.auth.policy import (
    evaluate,
)
from tests.unit.policy_cases import (
    ACCT,
    FN,
    ctx,
    ident,
    stmt,
)

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
