"""Every error lamina answers Lambda requests with, triggered for real over the wire, reaches boto3
as the exception class botocore models for it (tests/unit/test_error_shape.py checks the same
for every class in process, IAM's and STS's included)."""

from __future__ import annotations

import base64
import json
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from lamina.errors import ALL_ERRORS
from tests.e2e.server import ROOT_KEY_ENV, Server, create, invoke, python_runtime, signed

ECHO = "def handler(event, context):\n    return event\n"
CREDS = (
    "import os\n"
    "def handler(event, context):\n"
    "    keys = ('AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN')\n"
    "    return {k: os.environ[k] for k in keys}\n"
)
WALK = "errors-walk"
ARN = "arn:aws:lambda:us-east-1:000000000000:function:"


@dataclass(frozen=True)
class Walk:
    server: Server
    raw: Any  # Lambda, as the root key, without botocore's parameter checks
    created: dict[str, Any]  # CreateFunction's answer for WALK
    tmp: pytest.TempPathFactory

    def client(
        self, key: str, secret: str, token: str | None = None, url: str = "", **config: Any
    ) -> Any:
        """A Lambda client signing with `key` (to this walk's server, or to `url`)."""
        return boto3.client(
            "lambda",
            endpoint_url=url or self.server.url,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            aws_session_token=token,
            config=Config(retries={"total_max_attempts": 1}, **config),
        )

    def rerouted(self, operation: str, rewrite: Callable[[Any], None]) -> Any:
        """A root client whose `operation` requests are changed by `rewrite` before signing
        (so lamina sees a correctly signed request botocore would never send)."""
        client = self.server.client(parameter_validation=False)
        client.meta.events.register(
            f"before-sign.lambda.{operation}", lambda request, **_: rewrite(request)
        )
        return client


@pytest.fixture(scope="module")
def walk(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    raw = server.client(parameter_validation=False)
    yield Walk(server, raw, create(raw, WALK, ECHO), tmp_path_factory)
    raw.close()


# -- the table: one row per error class, each triggered as a user would meet it ------------------

Call = Callable[[], Any]
Trigger = Callable[[Walk], tuple[Any, Call]]  # the client used, and the call that must fail


@dataclass(frozen=True)
class Row:
    code: str
    status: int
    modeled: bool  # botocore's Lambda model has the class (else boto3 raises a ClientError)
    trigger: Trigger
    needles: tuple[str, ...] = ()  # in the message
    check: Callable[[ClientError], None] | None = None  # anything more the row asserts


def _service_fault(w: Walk) -> tuple[Any, Call]:
    # A fault in lamina itself (500), without breaking the server: the stored package of one
    # function of this test is damaged on disk (what a failing disk would do), so building its
    # first instance finds the zip no longer matches its CodeSha256. Only that function fails.
    name = "errors-corrupt"
    out = create(w.raw, name, "def handler(event, context):\n    return 'errors-corrupt'\n")
    sha = base64.b64decode(out["CodeSha256"]).hex()
    store = w.server.data_dir / "code"
    shutil.rmtree(store / "unpacked" / sha)
    (store / "zips" / f"{sha}.zip").write_bytes(b"not the package any more")

    def call() -> Any:
        try:
            return w.raw.invoke(FunctionName=name, Payload=b"{}")
        finally:
            w.raw.delete_function(FunctionName=name)

    return w.raw, call


def _conflict(w: Walk) -> tuple[Any, Call]:
    return w.raw, lambda: create(w.raw, WALK, ECHO)


def _too_large(w: Walk) -> tuple[Any, Call]:
    payload = b'"' + b"a" * (6 * 1024 * 1024) + b'"'
    return w.raw, lambda: w.raw.invoke(FunctionName=WALK, Payload=payload)


def _exactly_too_large(err: ClientError) -> None:
    # AWS names the operation (as its IAM action), e.g. "Request must be smaller than 6291456
    # bytes for the InvokeFunction operation"
    assert err.response["Error"]["Message"] == (
        "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
    )


def _throttled(w: Walk) -> tuple[Any, Call]:
    name = "errors-throttled"
    create(w.raw, name, ECHO)
    w.raw.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    return w.raw, lambda: w.raw.invoke(FunctionName=name, Payload=b"{}")


def _throttle_reason(err: ClientError) -> None:
    assert err.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert int(err.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"]) >= 1


def _stale_revision(w: Walk) -> tuple[Any, Call]:
    w.raw.update_function_configuration(FunctionName=WALK, Description="moved on")
    stale = w.created["RevisionId"]
    return w.raw, lambda: w.raw.update_function_configuration(
        FunctionName=WALK, Timeout=9, RevisionId=stale
    )


def _wrong_method(w: Walk) -> tuple[Any, Call]:
    def patch(request: Any) -> None:
        request.method = "PATCH"  # a path lamina knows, with a method it does not take

    client = w.rerouted("GetFunction", patch)
    return client, lambda: client.get_function(FunctionName=WALK)


def _unknown_path(w: Walk) -> tuple[Any, Call]:
    def elsewhere(request: Any) -> None:
        request.url = request.url.replace(f"/2015-03-31/functions/{WALK}", "/2015-03-31/nope")

    client = w.rerouted("GetFunction", elsewhere)
    return client, lambda: client.get_function(FunctionName=WALK)


def _policy_too_long(w: Walk) -> tuple[Any, Call]:
    name = "errors-policy"
    create(w.raw, name, ECHO)

    def permit(sid: str) -> Any:
        return w.raw.add_permission(
            FunctionName=name,
            StatementId=sid,
            Action="lambda:InvokeFunction",
            Principal="s3.amazonaws.com",
            SourceArn="arn:aws:s3:::" + "b" * 12000,
        )

    permit("first")  # 12 KB: allowed; a second one takes the policy past 20 KB
    return w.raw, lambda: permit("second")


def _no_provisioned_config(w: Walk) -> tuple[Any, Call]:
    version = w.raw.publish_version(FunctionName=WALK)["Version"]
    return w.raw, lambda: w.raw.get_provisioned_concurrency_config(
        FunctionName=WALK, Qualifier=version
    )


# Authentication and authorization: tests/e2e/test_auth.py checks each in depth (every route
# unsigned, the clock-skew window, session tokens, policies); here each is met once through boto3.


def _unsigned(w: Walk) -> tuple[Any, Call]:
    client = w.client("x", "x", signature_version=UNSIGNED)
    return client, lambda: client.get_function(FunctionName=WALK)


def _unknown_key(w: Walk) -> tuple[Any, Call]:
    client = w.client("AKIAUNKNOWNUNKNOWN00", "whatever")
    return client, lambda: client.get_function(FunctionName=WALK)


def _wrong_secret(w: Walk) -> tuple[Any, Call]:
    client = w.client(ROOT_KEY_ENV["LAMINA_ACCESS_KEY_ID"], "not-the-secret")
    return client, lambda: client.get_function(FunctionName=WALK)


def _expired_session(w: Walk) -> tuple[Any, Call]:
    # A function's execution-role credentials, used after they expire: a lamina of its own whose
    # sessions last 2 s (the shortest it allows), so waiting out the expiry is quick.
    short = Server(w.tmp.mktemp("errors-expiry"), "--credentials-ttl", "2").start()
    try:
        lam = short.client()
        create(lam, "errors-creds", CREDS)
        creds = invoke(lam, "errors-creds")["json"]
        client = w.client(
            creds["AWS_ACCESS_KEY_ID"],
            creds["AWS_SECRET_ACCESS_KEY"],
            creds["AWS_SESSION_TOKEN"],
            url=short.url,
        )
        # while the session lasts its credentials authenticate (the role allows nothing more)
        assert _refusal(client) == "AccessDeniedException"
    except BaseException:
        short.stop()
        raise

    def call() -> Any:
        try:
            deadline = time.monotonic() + 10
            while _refusal(client) == "AccessDeniedException":
                assert time.monotonic() < deadline, "the session never expired"
                time.sleep(0.2)
            return client.list_functions()
        finally:
            short.stop()

    return client, call


def _refusal(client: Any) -> str | None:
    """The error code ListFunctions answers `client` with (None: it succeeds)."""
    try:
        client.list_functions()
    except ClientError as err:
        return str(err.response["Error"]["Code"])
    return None


def _denied(w: Walk) -> tuple[Any, Call]:
    iam = w.server.client("iam")
    iam.create_user(UserName="errors-nobody")  # no policies: allowed nothing
    key = iam.create_access_key(UserName="errors-nobody")["AccessKey"]
    client = w.client(key["AccessKeyId"], key["SecretAccessKey"])
    return client, lambda: client.get_function(FunctionName=WALK)


ROWS = [
    Row("ServiceException", 500, True, _service_fault, ("corrupt",)),
    Row(
        "ResourceNotFoundException",
        404,
        True,
        lambda w: (w.raw, lambda: w.raw.get_function(FunctionName="errors-missing")),
        ("Function not found", ARN + "errors-missing"),
    ),
    Row("ResourceConflictException", 409, True, _conflict, (WALK, "exist")),
    Row(
        "InvalidParameterValueException",
        400,
        True,
        lambda w: (w.raw, lambda: create(w.raw, "errors-never", ECHO, MemorySize=64)),
        ("memorySize", "128"),
    ),
    Row(
        "InvalidRequestContentException",
        400,
        True,
        lambda w: (w.raw, lambda: w.raw.invoke(FunctionName=WALK, Payload=b"not json")),
        ("json",),
    ),
    Row("RequestTooLargeException", 413, True, _too_large, check=_exactly_too_large),
    Row("TooManyRequestsException", 429, True, _throttled, ("Rate Exceeded",), _throttle_reason),
    Row("PreconditionFailedException", 412, True, _stale_revision, ("Revision Id",)),
    Row("ValidationException", 400, False, _wrong_method, ("PATCH", "not allowed")),
    Row("PolicyLengthExceededException", 400, True, _policy_too_long, ("20480",)),
    Row(
        "ProvisionedConcurrencyConfigNotFoundException",
        404,
        True,
        _no_provisioned_config,
        ("Provisioned Concurrency",),
    ),
    Row("UnknownOperationException", 404, False, _unknown_path, ("/2015-03-31/nope",)),
    Row("MissingAuthenticationTokenException", 403, False, _unsigned, ("Missing",)),
    Row("UnrecognizedClientException", 403, False, _unknown_key, ("token", "invalid")),
    Row("InvalidSignatureException", 403, False, _wrong_secret, ("signature",)),
    Row("ExpiredTokenException", 403, False, _expired_session, ("expired",)),
    Row("AccessDeniedException", 403, False, _denied, ("lambda:GetFunction",)),
]


def test_the_table_has_one_row_per_error_class() -> None:
    """Adding an error class to errors.py without a row here fails."""
    codes = [row.code for row in ROWS]
    assert len(codes) == len(set(codes))
    assert set(codes) == {cls.code for cls in ALL_ERRORS}
    for row in ROWS:
        cls = next(c for c in ALL_ERRORS if c.code == row.code)
        assert row.status == cls.status, row.code


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.code)
def test_every_error_type_parses_into_its_modeled_class(walk: Walk, row: Row) -> None:
    client, call = row.trigger(walk)
    assert hasattr(client.exceptions, row.code) == row.modeled, row.code
    expected = getattr(client.exceptions, row.code) if row.modeled else ClientError
    with pytest.raises(ClientError) as err:
        call()
    assert type(err.value) is expected, (type(err.value), expected)
    response = err.value.response
    assert response["Error"]["Code"] == row.code
    meta = response["ResponseMetadata"]
    assert meta["HTTPStatusCode"] == row.status
    assert meta["HTTPHeaders"]["x-amzn-errortype"] == row.code
    assert meta["HTTPHeaders"]["content-type"].startswith("application/json")
    assert meta["RequestId"]
    message = str(response["Error"]["Message"])
    assert len(message) > 10, message
    for needle in row.needles:
        assert needle.lower() in message.lower(), (needle, message)
    if row.check is not None:
        row.check(err.value)


# -- the same classes, in more detail ----------------------------------------------------------


def expect(client: Any, code: str, status: int, call: Call, *needles: str) -> str:
    """Run `call`; it must raise `client.exceptions.<code>` with `status`, a message naming
    every needle. Returns the message."""
    with pytest.raises(getattr(client.exceptions, code)) as err:
        call()
    response = err.value.response
    assert response["Error"]["Code"] == code
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status
    message = str(response["Error"]["Message"])
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def health(server: Server) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/_lamina/health", timeout=10) as resp:
        body: dict[str, Any] = json.loads(resp.read())
    return body


def test_configuration_checks_say_what_is_wrong(server: Server, walk: Walk) -> None:
    raw = walk.raw
    runtime = python_runtime()

    def create_with(fn: str = "errors-never", **kwargs: Any) -> Call:
        return lambda: create(raw, fn, ECHO, **kwargs)

    ipv = "InvalidParameterValueException"
    expect(raw, ipv, 400, create_with("bad name!"), "bad name!", "functionName")
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
        lambda: raw.update_function_configuration(FunctionName=WALK, MemorySize=64),
        "memorySize",
    )

    # None of the refused requests left anything behind.
    names = {f["FunctionName"] for f in raw.list_functions(MaxItems=50)["Functions"]}
    assert "errors-never" not in names and "bad name!" not in names
    after = raw.get_function_configuration(FunctionName=WALK)
    assert after["MemorySize"] == 128
    out = raw.invoke(FunctionName=WALK, Payload=b'{"still": "works"}')
    assert json.loads(out["Payload"].read()) == {"still": "works"}


def test_too_large_names_the_operation(walk: Walk) -> None:
    """Each invoke path refuses a body over its own limit, naming the operation as AWS does."""
    raw = walk.raw
    rte = "RequestTooLargeException"
    over_1mb = b'"' + b"a" * (1024 * 1024) + b'"'
    message = expect(
        raw,
        rte,
        413,
        lambda: raw.invoke(FunctionName=WALK, InvocationType="Event", Payload=over_1mb),
    )
    assert message == "Request must be smaller than 1048576 bytes for the InvokeFunction operation"
    over_256kb = b'"' + b"a" * (256 * 1024) + b'"'
    message = expect(
        raw, rte, 413, lambda: raw.invoke_async(FunctionName=WALK, InvokeArgs=over_256kb)
    )
    assert message == "Request must be smaller than 262144 bytes for the InvokeAsync operation"
    assert invoke(raw, WALK, {"small": True})["json"] == {"small": True}


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
