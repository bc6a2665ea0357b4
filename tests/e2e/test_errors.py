"""Every error lamina answers with reaches boto3 as botocore's modeled exception class."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import botocore.session
import pytest

from lamina.errors import ALL_ERRORS, LambdaError
from tests.e2e.server import Server, create, python_runtime, signed

ECHO = "def handler(event, context):\n    return event\n"

# Codes lamina answers with that botocore's Lambda model does not define; botocore turns them
# into a generic ClientError, which is right for what they report.
NOT_MODELED = {
    "ValidationException",  # request shape errors with no model member (e.g. a bad method)
    "UnknownOperationException",  # a path that names no operation
    # AWS's common authentication/authorization errors: every service answers them, no
    # service model lists them (botocore raises a ClientError with the code)
    "MissingAuthenticationTokenException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "AccessDeniedException",
}


@pytest.fixture(scope="module")
def raw(server: Server) -> Iterator[Any]:
    """A client that skips botocore's own parameter checks, so bad values reach lamina."""
    client = server.client(parameter_validation=False)
    yield client
    client.close()


def expect(client: Any, code: str, status: int, call: Callable[[], Any], *needles: str) -> str:
    """Run `call`; it must raise `client.exceptions.<code>` with `status`, a message naming
    every needle. Returns the message."""
    modeled = getattr(client.exceptions, code)
    with pytest.raises(modeled) as err:
        call()
    response = err.value.response
    assert response["Error"]["Code"] == code
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == code
    assert response["ResponseMetadata"]["RequestId"]
    message = str(response["Error"]["Message"])
    assert len(message) > 10, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def health(server: Server) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/_lamina/health", timeout=10) as resp:
        body: dict[str, Any] = json.loads(resp.read())
    return body


def test_every_error_type_parses_into_its_modeled_class(server: Server, raw: Any) -> None:
    name = "errors-walk"
    created = create(raw, name, ECHO)
    runtime = python_runtime()

    def create_with(fn: str = "errors-never", **kwargs: Any) -> Callable[[], Any]:
        return lambda: create(raw, fn, ECHO, **kwargs)

    # 404: a function that does not exist.
    expect(
        raw,
        "ResourceNotFoundException",
        404,
        lambda: raw.get_function(FunctionName="errors-missing"),
        "Function not found",
        "arn:aws:lambda:us-east-1:000000000000:function:errors-missing",
    )

    # 409: the name is taken.
    expect(raw, "ResourceConflictException", 409, create_with(name), name, "exist")

    # 400: every configuration check.
    ipv = "InvalidParameterValueException"
    expect(raw, ipv, 400, create_with("bad name!"), "bad name!", "functionName")
    expect(raw, ipv, 400, create_with(MemorySize=64), "memorySize", "128")
    expect(raw, ipv, 400, create_with(MemorySize=10241), "memorySize", "10240")
    expect(raw, ipv, 400, create_with(Timeout=0), "timeout", "1")
    expect(raw, ipv, 400, create_with(Timeout=901), "timeout", "900")
    expect(raw, ipv, 400, create_with(Runtime="python2.7"), "python2.7", "runtime")

    installed = health(server)["runtimes"]
    assert runtime in installed
    missing = next(
        (r for r in ("python3.14", "python3.13", "python3.9") if r not in installed), None
    )
    if missing is not None:
        message = expect(raw, ipv, 400, create_with(Runtime=missing), missing, "not available")
        for available in installed:
            assert available in message, (available, message)

    def no_handler() -> Any:
        return raw.create_function(
            FunctionName="errors-never",
            Runtime=runtime,
            Role="arn:aws:iam::000000000000:role/lamina-test",
            Code={"ZipFile": b"PK\x05\x06" + b"\0" * 18},
        )

    expect(raw, ipv, 400, no_handler, "Handler")
    big_env = {"Variables": {f"KEY_{i}": "x" * 100 for i in range(40)}}
    expect(raw, ipv, 400, create_with(Environment=big_env), "4KB")
    reserved_env = {"Variables": {"AWS_REGION": "eu-west-1", "OK_KEY": "1"}}
    expect(raw, ipv, 400, create_with(Environment=reserved_env), "reserved", "AWS_REGION")
    bad_key_env = {"Variables": {"bad-key": "1"}}
    expect(raw, ipv, 400, create_with(Environment=bad_key_env), "bad-key", "environment")
    # The same checks guard updates, and a refused update changes nothing.
    expect(
        raw,
        ipv,
        400,
        lambda: raw.update_function_configuration(FunctionName=name, MemorySize=64),
        "memorySize",
    )

    # 413: an invoke payload over 6 MB.
    too_big = b'"' + b"a" * (6 * 1024 * 1024) + b'"'
    expect(
        raw,
        "RequestTooLargeException",
        413,
        lambda: raw.invoke(FunctionName=name, Payload=too_big),
        "6291456",
    )

    # 400: an invoke payload that is not JSON.
    expect(
        raw,
        "InvalidRequestContentException",
        400,
        lambda: raw.invoke(FunctionName=name, Payload=b"not json"),
        "json",
    )

    # 412: a stale RevisionId.
    raw.update_function_configuration(FunctionName=name, Description="moved on")
    expect(
        raw,
        "PreconditionFailedException",
        412,
        lambda: raw.update_function_configuration(
            FunctionName=name, Timeout=9, RevisionId=created["RevisionId"]
        ),
        "Revision",
    )

    # None of the refused requests left anything behind.
    names = {f["FunctionName"] for f in raw.list_functions(MaxItems=50)["Functions"]}
    assert "errors-never" not in names and "bad name!" not in names
    after = raw.get_function_configuration(FunctionName=name)
    assert (after["MemorySize"], after["Timeout"]) == (128, 3)
    out = raw.invoke(FunctionName=name, Payload=b'{"still": "works"}')
    assert json.loads(out["Payload"].read()) == {"still": "works"}


LAMBDA_MODEL = botocore.session.get_session().get_service_model("lambda")
MODELED = {shape.name: shape for shape in LAMBDA_MODEL.error_shapes}


def test_allow_list_names_only_real_lamina_codes() -> None:
    codes = {cls.code for cls in ALL_ERRORS}
    assert codes >= NOT_MODELED
    assert not NOT_MODELED & set(MODELED)


@pytest.mark.parametrize("error", ALL_ERRORS, ids=lambda cls: cls.__name__)
def test_error_class_matches_the_service_model(error: type[LambdaError]) -> None:
    assert error.code == error.__name__
    if error.code in NOT_MODELED:
        return
    assert error.code in MODELED, f"{error.code} is not an error shape in botocore's model"
    shape = MODELED[error.code]
    assert error.status == shape.metadata["error"]["httpStatusCode"]
    members = set(shape.members)
    assert error.message_key in members, (error.message_key, members)
    sender_fault = shape.metadata["error"].get("senderFault", False)
    assert error.fault == ("User" if sender_fault else "Service")


def raw_request(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, Any, Any]:
    """A signed request by hand (root key); headers keyed lower-case."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    return signed(url, method, body or b"", "lambda", headers)


def test_unknown_path_answers_json_not_html(server: Server) -> None:
    for method, path in [
        ("GET", "/2015-03-31/nope"),
        ("GET", "/"),
        ("POST", "/2099-01-01/functions"),
        ("PATCH", "/2015-03-31/functions"),
    ]:
        status, headers, body = raw_request(server.url + path, method)
        assert 400 <= status < 500, (method, path, status)
        assert headers["content-type"].startswith("application/json"), (path, headers)
        assert headers["x-amzn-errortype"], (path, headers)
        assert headers["x-amzn-requestid"]
        assert b"<html" not in body.lower()
        parsed = json.loads(body)
        assert parsed["Type"] == "User"
        assert parsed.get("message") or parsed.get("Message")


def test_create_function_body_not_json(server: Server) -> None:
    status, headers, body = raw_request(server.url + "/2015-03-31/functions", "POST", b"{not json")
    assert status == 400
    assert headers["x-amzn-errortype"] == "InvalidRequestContentException"
    assert "json" in json.loads(body)["message"].lower()

    status, headers, _ = raw_request(server.url + "/2015-03-31/functions", "POST", b"[1, 2]")
    assert status == 400
    assert headers["x-amzn-errortype"] == "InvalidRequestContentException"
