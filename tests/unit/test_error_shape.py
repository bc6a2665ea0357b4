"""Every error lamina can answer with, rendered by lamina's own renderers and parsed by botocore's
own parsers and service models, becomes the exception class boto3 raises for it on AWS.

The parse is botocore's: `botocore.parsers` for the protocol, then the modeled error shape the
service model gives the code (as `botocore.endpoint` does), then the class
`client.exceptions.from_code` picks (as `BaseClient._make_api_call` does before raising it).
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import botocore.session
import pytest
from botocore.awsrequest import HeadersDict
from botocore.exceptions import ClientError
from botocore.parsers import create_parser
from starlette.responses import Response

from lamina.api import iam, sts
from lamina.api.query import Service, xml_error
from lamina.api.render import error_response
from lamina.errors import (
    ALL_ERRORS,
    IAM_ERRORS,
    AccessDenied,
    InvalidAction,
    LambdaError,
    RequestTooLargeException,
    ServiceException,
    TooManyRequestsException,
    ValidationError,
)

SESSION = botocore.session.get_session()
MODELS = {name: SESSION.get_service_model(name) for name in ("lambda", "iam", "sts")}
CLIENTS = {
    name: SESSION.create_client(
        name, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    for name in MODELS
}
# An operation per service to parse against (an error's parse does not depend on which).
OPERATION = {"lambda": "GetFunction", "iam": "GetUser", "sts": "GetCallerIdentity"}

# Codes lamina answers Lambda requests with that botocore's Lambda model has no shape for. AWS
# sends each of them unmodeled too, so boto3 raises a plain ClientError carrying the code.
LAMBDA_UNMODELED = {
    # Lambda's answer to a request that fails the API's own constraints before any operation
    # runs (here: a method the path does not take); AWS sends it outside the model.
    "ValidationException": "request shape error, AWS sends it unmodeled",
    # A path that names no operation: AWS's front end answers it for every rest-json service.
    "UnknownOperationException": "no operation matched, answered by AWS's front end",
    # AWS's common authentication and authorization errors: every service answers them and no
    # service model lists them (AWS's "Common Errors" page).
    "MissingAuthenticationTokenException": "common error: no signature",
    "UnrecognizedClientException": "common error: unknown access key or token",
    "InvalidSignatureException": "common error: signature does not match or is expired",
    "ExpiredTokenException": "common error: temporary credentials expired",
    "AccessDeniedException": "common error: no policy allows the action",
}

# The same for the query protocol (IAM, STS), by the code sent there (`query_code` or `code`).
_QUERY_COMMON = {
    "MissingAuthenticationToken": "common error: no signature",
    "InvalidClientTokenId": "common error: unknown access key or token",
    "SignatureDoesNotMatch": "common error: signature does not match or is expired",
    # STS's model has an ExpiredTokenException, but its code is `ExpiredTokenException` (a web
    # identity token past its expiry); expired credentials are the common `ExpiredToken`.
    "ExpiredToken": "common error: temporary credentials expired",
    "AccessDenied": "common error: no policy allows the action (or AssumeRole refused)",
    "ValidationError": "common error: a parameter breaks the model's constraints",
    "InvalidAction": "common error: an Action the service does not know",
    # a form body over lamina's limit: AWS's query services document no code for it
    "RequestTooLargeException": "no AWS code known for an oversized query request",
}
QUERY_UNMODELED = {
    "iam": _QUERY_COMMON,
    # STS models no fault of its own (IAM's is ServiceFailure, modeled there).
    "sts": {**_QUERY_COMMON, "ServiceFailure": "STS models no 500 fault"},
}

# What reaches the query endpoint's XML renderer: the authentication and authorization errors
# (api/auth.py, api/access.py: the classes with a `query_code`), lamina's own faults, a form body
# over the limit (api/requests.py), and the IAM/STS classes each service raises.
_QUERY_SHARED = (
    *(cls for cls in ALL_ERRORS if cls.query_code),
    RequestTooLargeException,
    ValidationError,
    InvalidAction,
    AccessDenied,
)
QUERY_ERRORS = {
    "iam": tuple(dict.fromkeys((*_QUERY_SHARED, *IAM_ERRORS))),
    "sts": _QUERY_SHARED,
}
QUERY_SERVICES: dict[str, Service] = {"iam": iam.SERVICE, "sts": sts.SERVICE}

MESSAGE = 'what went wrong: <b> & "quoted" \u00e9'  # survives JSON and XML escaping


def _make(cls: type[LambdaError]) -> LambdaError:
    message = f"{cls.__name__}: {MESSAGE}"
    if issubclass(cls, TooManyRequestsException):
        return cls(message, reason="ReservedFunctionConcurrentInvocationLimitExceeded")
    return cls(message)


def _parse(service: str, response: Response) -> dict[str, Any]:
    """What botocore makes of `response` for `service`: parsed as `botocore.endpoint` does,
    with the modeled error shape's own members added when the model has one for the code."""
    model = MODELS[service]
    parser = create_parser(model.protocol)
    response_dict = {
        "status_code": response.status_code,
        "headers": HeadersDict(response.headers.items()),  # case-insensitive, as urllib3's
        "body": bytes(response.body),
        "context": {"operation_name": OPERATION[service]},
    }
    operation = model.operation_model(OPERATION[service])
    parsed: dict[str, Any] = parser.parse(response_dict, operation.output_shape)
    shape = model.shape_for_error_code(parsed.get("Error", {}).get("Code"))
    if shape is not None:
        parsed.update(parser.parse(response_dict, shape))
    return parsed


def _raised(service: str, parsed: dict[str, Any]) -> ClientError:
    """The exception boto3 raises for `parsed` (BaseClient._make_api_call's last step)."""
    client = CLIENTS[service]
    error_class = client.exceptions.from_code(parsed["Error"]["Code"])
    exc: ClientError = error_class(parsed, OPERATION[service])
    return exc


def _check_modeled(service: str, code: str, exc: ClientError, unmodeled: dict[str, str]) -> Any:
    """`exc` is the modeled class for `code`, or exactly ClientError for an unmodeled code.
    Returns the model's error shape (None when unmodeled)."""
    model = MODELS[service]
    shape = model.shape_for_error_code(code)
    if code in unmodeled:
        assert shape is None, f"{code} is modeled by {service}: drop it from the unmodeled list"
        assert type(exc) is ClientError
        return None
    assert shape is not None, f"{code} has no error shape in botocore's {service} model"
    modeled = getattr(CLIENTS[service].exceptions, shape.name)
    assert type(exc) is modeled, (type(exc), modeled)
    return shape


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.code)
def test_lambda_error_parses_into_its_modeled_class(cls: type[LambdaError]) -> None:
    error = _make(cls)
    response = error_response(error, "rid-1")
    assert response.status_code == cls.status
    assert response.headers["x-amzn-errortype"] == cls.code
    assert response.headers["content-type"] == "application/json"
    payload = json.loads(bytes(response.body))
    assert payload["Type"] == cls.fault
    assert payload[cls.message_key] == error.message

    parsed = _parse("lambda", response)
    exc = _raised("lambda", parsed)
    assert exc.response["Error"]["Code"] == cls.code
    assert exc.response["Error"]["Message"] == error.message
    assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == cls.status
    assert exc.response["ResponseMetadata"]["RequestId"] == "rid-1"
    assert error.message in str(exc)

    shape = _check_modeled("lambda", cls.code, exc, LAMBDA_UNMODELED)
    if shape is None:
        return
    meta = shape.metadata["error"]
    assert cls.status == meta["httpStatusCode"]
    assert cls.fault == ("User" if meta.get("senderFault", False) else "Service")
    assert cls.message_key in shape.members, (cls.message_key, list(shape.members))
    # the modeled members reach e.response, as on AWS
    assert exc.response["Type"] == cls.fault
    assert exc.response[cls.message_key] == error.message


@pytest.mark.parametrize(
    ("service", "cls"),
    [(service, cls) for service, classes in QUERY_ERRORS.items() for cls in classes],
    ids=lambda x: x if isinstance(x, str) else x.__name__,
)
def test_query_error_parses_into_its_modeled_class(service: str, cls: type[LambdaError]) -> None:
    error = _make(cls)
    code = cls.query_code or cls.code
    response = xml_error(QUERY_SERVICES[service], error, "rid-2")
    assert response.status_code == cls.status
    assert response.headers["content-type"].startswith("text/xml")

    parsed = _parse(service, response)
    exc = _raised(service, parsed)
    assert exc.response["Error"]["Code"] == code
    assert exc.response["Error"]["Message"] == error.message
    assert exc.response["Error"]["Type"] == ("Sender" if cls.fault == "User" else "Receiver")
    assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == cls.status
    assert exc.response["ResponseMetadata"]["RequestId"] == "rid-2"

    shape = _check_modeled(service, code, exc, QUERY_UNMODELED[service])
    if shape is not None:
        meta = shape.metadata["error"]
        assert cls.status == meta["httpStatusCode"]
        assert cls.fault == ("User" if meta.get("senderFault", False) else "Service")


def test_unmodeled_lists_name_only_codes_lamina_sends() -> None:
    assert set(LAMBDA_UNMODELED) <= {cls.code for cls in ALL_ERRORS}
    for service, unmodeled in QUERY_UNMODELED.items():
        assert set(unmodeled) <= {cls.query_code or cls.code for cls in QUERY_ERRORS[service]}


def test_error_classes_are_named_after_their_code() -> None:
    for cls in (*ALL_ERRORS, *IAM_ERRORS):
        assert cls.code == cls.__name__
    codes = [cls.code for cls in (*ALL_ERRORS, *IAM_ERRORS)]
    assert len(codes) == len(set(codes))
    assert ServiceException.query_code == "ServiceFailure"


def _subclasses(cls: type[LambdaError]) -> set[type[LambdaError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_error_lamina_defines_is_listed() -> None:
    """An error class defined anywhere in the server (not only in errors.py) is, or specializes,
    a listed one, so the walks here and in tests/e2e/test_errors.py cover it."""
    for module in ("lamina.server", "lamina.platform", "lamina.api.app", "lamina.cli"):
        importlib.import_module(module)  # everything `lamina serve` loads
    listed = (*ALL_ERRORS, *IAM_ERRORS)
    unlisted = [sub for sub in _subclasses(LambdaError) if not issubclass(sub, listed)]
    assert not unlisted, f"add these to ALL_ERRORS or IAM_ERRORS in errors.py: {unlisted}"


def test_throttle_carries_reason_and_retry_after() -> None:
    error = TooManyRequestsException("slow", reason="X", retry_after=3)
    response = error_response(error)
    assert response.headers["retry-after"] == "3"
    parsed = _parse("lambda", response)
    exc = _raised("lambda", parsed)
    assert type(exc) is CLIENTS["lambda"].exceptions.TooManyRequestsException
    assert exc.response["Reason"] == "X"
    assert exc.response["retryAfterSeconds"] == "3"  # the model binds it to Retry-After
