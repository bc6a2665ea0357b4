from __future__ import annotations

import pytest

from lamina.types import FunctionRef, function_arn, parse_function_name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("my-fn", FunctionRef("my-fn")),
        ("my-fn:prod", FunctionRef("my-fn", "prod")),
        ("123456789012:function:my-fn", FunctionRef("my-fn", None, "123456789012")),
        (
            "arn:aws:lambda:us-east-1:123456789012:function:my-fn:$LATEST",
            FunctionRef("my-fn", "$LATEST", "123456789012", "us-east-1"),
        ),
    ],
)
def test_parse_function_name(raw: str, expected: FunctionRef) -> None:
    assert parse_function_name(raw) == expected


@pytest.mark.parametrize("raw", ["", "bad name", "a" * 65, "arn:aws:s3:::bucket", "x:y:z"])
def test_parse_function_name_rejects(raw: str) -> None:
    assert parse_function_name(raw) is None


def test_function_arn() -> None:
    assert function_arn("us-east-1", "000000000000", "f") == (
        "arn:aws:lambda:us-east-1:000000000000:function:f"
    )
    assert function_arn("us-east-1", "000000000000", "f", "7").endswith(":function:f:7")


def test_request_ids_are_version_4_uuids_and_do_not_repeat() -> None:
    import uuid

    from lamina.types import request_id

    ids = [request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for raw in ids[:200]:
        parsed = uuid.UUID(raw)
        assert str(parsed) == raw and parsed.version == 4 and parsed.variant == uuid.RFC_4122
