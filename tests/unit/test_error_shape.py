"""Every LambdaError renders the one way botocore's rest-json parser expects (pinned here)."""

from __future__ import annotations

import json

import botocore.session
import pytest
from botocore.parsers import RestJSONParser

from lamina.api.render import error_response
from lamina.errors import ALL_ERRORS, LambdaError, TooManyRequestsException

_MODEL = botocore.session.get_session().get_service_model("lambda")


def _make(cls: type[LambdaError]) -> LambdaError:
    if cls is TooManyRequestsException:
        return cls("slow down", reason="ReservedFunctionConcurrentInvocationLimitExceeded")
    return cls("what went wrong")


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.code)
def test_error_renders_as_botocore_parses_it(cls: type[LambdaError]) -> None:
    response = error_response(_make(cls), "rid-1")
    body = bytes(response.body)
    assert response.status_code == cls.status
    assert response.headers["x-amzn-errortype"] == cls.code
    assert response.headers["x-amzn-requestid"] == "rid-1"
    assert response.headers["content-type"] == "application/json"
    payload = json.loads(body)
    assert payload["Type"] in ("User", "Service")
    assert payload[cls.message_key] == _make(cls).message

    parsed = RestJSONParser().parse(
        {"status_code": cls.status, "headers": dict(response.headers), "body": body},
        _MODEL.operation_model("GetFunction").output_shape,
    )
    assert parsed["Error"]["Code"] == cls.code
    assert parsed["Error"]["Message"] == "what went wrong" or cls is TooManyRequestsException
    assert parsed["ResponseMetadata"]["RequestId"] == "rid-1"


def test_throttle_carries_reason_and_retry_after() -> None:
    response = error_response(TooManyRequestsException("slow", reason="X", retry_after=3))
    assert response.headers["retry-after"] == "3"
    assert json.loads(bytes(response.body))["Reason"] == "X"
