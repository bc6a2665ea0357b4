"""Invoke end to end: a real `lamina serve`, real boto3, real function processes."""

from __future__ import annotations

import base64
import json
import math
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import RECORD_CODE, Recorder, Server, create, invoke, python_runtime

REQUEST_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
# Lambda's limit on a synchronous response (the RIE's MaxPayloadSize; AWS's error message names it)
MAX_RESPONSE = 6 * 1024 * 1024 + 100


def tail_text(out: dict[str, Any]) -> str:
    return base64.b64decode(out["LogResult"]).decode("utf-8")


def report(text: str, request_id: str) -> re.Match[str]:
    pattern = (
        rf"REPORT RequestId: {request_id}\tDuration: (?P<duration>\d+\.\d+) ms"
        r"\tBilled Duration: (?P<billed>\d+) ms\tMemory Size: (?P<memory>\d+) MB"
        r"\tMax Memory Used: (?P<used>\d+) MB(?:\tInit Duration: (?P<init>\d+\.\d+) ms)?"
    )
    m = re.search(pattern, text)
    assert m is not None, f"no REPORT line for {request_id} in:\n{text}"
    return m


# -- RequestResponse -----------------------------------------------------------------------------


def test_request_response_returns_handler_json(lam: Any) -> None:
    create(
        lam,
        "inv-json",
        "def handler(event, context):\n"
        "    return {'sum': event['a'] + event['b'], 'items': [1, 'two', None, True]}\n",
    )
    out = invoke(lam, "inv-json", {"a": 2, "b": 40})
    assert out["StatusCode"] == 200
    assert out["json"] == {"sum": 42, "items": [1, "two", None, True]}
    assert "FunctionError" not in out
    assert out["ExecutedVersion"] == "$LATEST"
    assert out["ResponseMetadata"]["HTTPHeaders"]["x-amz-executed-version"] == "$LATEST"
    assert re.fullmatch(REQUEST_ID, out["request_id"])
    assert "LogResult" not in out  # only with LogType=Tail


def test_empty_payload_delivers_empty_object(lam: Any) -> None:
    create(lam, "inv-empty", "def handler(event, context):\n    return {'event': event}\n")
    out = invoke(lam, "inv-empty")
    assert out["StatusCode"] == 200
    assert out["json"] == {"event": {}}


def test_unicode_payload_round_trip(lam: Any) -> None:
    create(
        lam,
        "inv-unicode",
        "def handler(event, context):\n    return {'echo': event, 'len': len(event['s'])}\n",
    )
    text = 'héllo ✓ 日本語 🎉 \u0000 "quoted" \\ Ω'
    out = invoke(lam, "inv-unicode", json.dumps({"s": text}, ensure_ascii=False).encode())
    assert out["StatusCode"] == 200
    assert out["json"] == {"echo": {"s": text}, "len": len(text)}


def test_handler_exception_is_unhandled_function_error(lam: Any) -> None:
    create(
        lam,
        "inv-raise",
        "def helper():\n"
        "    raise ValueError('nope: bad input')\n"
        "\n"
        "def handler(event, context):\n"
        "    helper()\n",
    )
    out = invoke(lam, "inv-raise", {})
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    body = out["json"]
    assert set(body) == {"errorMessage", "errorType", "requestId", "stackTrace"}
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "nope: bad input"
    assert body["requestId"] == out["request_id"]
    assert isinstance(body["stackTrace"], list) and len(body["stackTrace"]) == 2
    assert "app.py" in body["stackTrace"][0] and "in handler" in body["stackTrace"][0]
    assert "in helper" in body["stackTrace"][1]
    assert "bootstrap" not in "".join(body["stackTrace"])  # the runtime's own frames are hidden
    # the instance survives a handler exception
    again = invoke(lam, "inv-raise", {})
    assert again["FunctionError"] == "Unhandled"
    assert again["json"]["requestId"] == again["request_id"] != out["request_id"]


# -- Event and DryRun ----------------------------------------------------------------------------

# The handler's side effect outside lamina: a line sent to the test's Recorder on the host
# (a sandboxed function sees none of the host's files).
MARKER_CODE = (
    RECORD_CODE + "import time\n"
    "def handler(event, context):\n"
    "    time.sleep(event.get('sleep', 0))\n"
    "    record('%s %s' % (event.get('i', '-'), context.aws_request_id))\n"
    "    return 'written'\n"
)


def test_event_invoke_runs_in_background(lam: Any) -> None:
    with Recorder() as marker:
        create(lam, "inv-event", MARKER_CODE, Environment={"Variables": marker.env})
        out = invoke(lam, "inv-event", {"i": 7, "sleep": 0.5}, InvocationType="Event")
        assert out["StatusCode"] == 202
        assert out["body"] == b""
        assert "ExecutedVersion" not in out
        assert marker.lines == []  # the handler sleeps first: 202 came before it finished
        (line,) = marker.wait(1)
    assert line == f"7 {out['request_id']}"


def test_many_event_invokes_all_run(lam: Any) -> None:
    with Recorder() as marker:
        create(lam, "inv-events", MARKER_CODE, Environment={"Variables": marker.env})
        request_ids = set()
        for i in range(50):
            out = invoke(lam, "inv-events", {"i": i}, InvocationType="Event")
            assert out["StatusCode"] == 202
            request_ids.add(out["request_id"])
        marker.wait(50)
        time.sleep(0.2)  # nothing runs twice either
        lines = marker.lines
    assert len(lines) == 50
    seen = [line.split() for line in lines]
    assert sorted(int(i) for i, _ in seen) == list(range(50))
    assert {rid for _, rid in seen} == request_ids


def test_dry_run_does_not_run_the_handler(lam: Any) -> None:
    with Recorder() as marker:
        create(lam, "inv-dry", MARKER_CODE, Environment={"Variables": marker.env})
        out = invoke(lam, "inv-dry", {"i": "dry"}, InvocationType="DryRun")
        assert out["StatusCode"] == 204
        assert out["body"] == b""
        time.sleep(0.3)
        assert marker.lines == []
        real = invoke(lam, "inv-dry", {"i": "real"})
        assert real["json"] == "written"
        # record() returns once the line is stored: it is there when the invoke has returned
        assert marker.lines == [f"real {real['request_id']}"]


# -- LogType=Tail --------------------------------------------------------------------------------


def test_tail_log_lines(lam: Any) -> None:
    create(
        lam,
        "inv-tail",
        "import logging\n"
        "print('init-time print')\n"
        "def handler(event, context):\n"
        "    print('hello from print', event['n'])\n"
        "    logging.getLogger('mine').warning('careful %s', 'now')\n"
        "    return 'ok'\n",
    )
    texts = []
    for n in range(2):
        out = invoke(lam, "inv-tail", {"n": n}, LogType="Tail")
        assert out["StatusCode"] == 200 and out["json"] == "ok"
        rid = out["request_id"]
        text = tail_text(out)
        texts.append(text)
        start = text.index(f"START RequestId: {rid} Version: $LATEST\n")
        printed = text.index(f"hello from print {n}\n")
        warned = re.search(rf"\[WARNING\]\t{TIMESTAMP}\t{rid}\tcareful now\n", text)
        assert warned is not None, text
        end = text.index(f"END RequestId: {rid}\n")
        rep = report(text, rid)
        assert start < printed < warned.start() < end < rep.start(), text
        assert rep["memory"] == "128"
        assert int(rep["used"]) > 0
        if n == 0:  # cold: INIT_START and Init Duration, the module's output before START
            assert rep["init"] is not None and float(rep["init"]) > 0
            # init is billed too (AWS, for on-demand functions, since August 2025)
            billed = math.ceil(float(rep["duration"]) + float(rep["init"]))
            assert int(rep["billed"]) in (billed, billed + 1), rep.group(0)  # two roundings
            assert text.index("INIT_START Runtime Version: ") < text.index("init-time print")
            assert text.index("init-time print") < start
        else:  # warm
            assert rep["init"] is None, text
            assert int(rep["billed"]) == max(1, math.ceil(float(rep["duration"])))
            assert "INIT_START" not in text and "init-time print" not in text
        assert text.endswith("\n")
        assert text.splitlines()[-1].startswith(f"REPORT RequestId: {rid}\t")


def test_tail_is_at_most_4kb(lam: Any) -> None:
    create(
        lam,
        "inv-tail-big",
        "def handler(event, context):\n"
        "    for i in range(200):\n"
        "        print('%05d' % i + 'x' * 94)\n"  # 100 bytes a line: 20 KB
        "    return 'done'\n",
    )
    out = invoke(lam, "inv-tail-big", {}, LogType="Tail")
    raw = base64.b64decode(out["LogResult"])
    assert len(raw) <= 4096
    assert len(raw) > 3000  # the last 4 KB, not a stub
    text = raw.decode("utf-8", "replace")
    rid = out["request_id"]
    assert "START RequestId" not in text  # scrolled out with the head of the output
    assert "00199" + "x" * 94 in text  # the last line printed is kept
    assert "00100" not in text
    assert f"END RequestId: {rid}" in text
    report(text, rid)
    assert text.endswith("\n")


# -- response size -------------------------------------------------------------------------------


def test_response_too_large_is_a_function_error(lam: Any) -> None:
    create(
        lam,
        "inv-large",
        "import os\n"
        "def handler(event, context):\n"
        "    if 'size' in event:\n"
        "        return 'x' * (event['size'] - 2)\n"  # a JSON string of exactly `size` bytes
        "    return {'pid': os.getpid()}\n",
    )
    first = invoke(lam, "inv-large", {})
    pid = first["json"]["pid"]

    at_limit = invoke(lam, "inv-large", {"size": MAX_RESPONSE})
    assert "FunctionError" not in at_limit
    assert len(at_limit["body"]) == MAX_RESPONSE

    out = invoke(lam, "inv-large", {"size": MAX_RESPONSE + 1})
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    assert out["json"]["errorType"] == "Function.ResponseSizeTooLarge"
    assert str(MAX_RESPONSE) in out["json"]["errorMessage"]
    assert len(out["body"]) < 1024

    after = invoke(lam, "inv-large", {})
    assert "FunctionError" not in after
    assert after["json"] == {"pid": pid}  # the same instance keeps working


# -- the context object and the environment ------------------------------------------------------

CONTEXT_CODE = """
def handler(event, context):
    cc = context.client_context
    return {
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "aws_request_id": context.aws_request_id,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "identity": [
            context.identity.cognito_identity_id,
            context.identity.cognito_identity_pool_id,
        ],
        "client_context": None if cc is None else {
            "custom": cc.custom,
            "env": cc.env,
            "installation_id": cc.client and cc.client.installation_id,
            "app_title": cc.client and cc.client.app_title,
        },
    }
"""


def test_context_object(lam: Any) -> None:
    created = create(lam, "inv-context", CONTEXT_CODE, MemorySize=256, Timeout=7)
    client_context = {
        "client": {"installation_id": "inst-1", "app_title": "lamina tests"},
        "custom": {"tenant": "acme", "nested": {"n": 1}},
        "env": {"platform": "linux"},
    }
    encoded = base64.b64encode(json.dumps(client_context).encode()).decode()
    out = invoke(lam, "inv-context", {}, ClientContext=encoded)
    ctx = out["json"]
    assert ctx["function_name"] == "inv-context"
    assert ctx["function_version"] == "$LATEST"
    assert ctx["invoked_function_arn"] == created["FunctionArn"]
    assert ctx["memory_limit_in_mb"] == "256"  # a str, as in awslambdaric
    assert ctx["aws_request_id"] == out["request_id"]
    assert ctx["log_group_name"] == "/aws/lambda/inv-context"
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", ctx["log_stream_name"])
    assert isinstance(ctx["remaining"], int)
    assert 5000 < ctx["remaining"] <= 7000
    assert ctx["identity"] == [None, None]
    assert ctx["client_context"] == {
        "custom": {"tenant": "acme", "nested": {"n": 1}},
        "env": {"platform": "linux"},
        "installation_id": "inst-1",
        "app_title": "lamina tests",
    }
    # without a client context; and the same instance gets a new request id and deadline
    plain = invoke(lam, "inv-context", {})
    assert plain["json"]["client_context"] is None
    assert plain["json"]["aws_request_id"] == plain["request_id"] != out["request_id"]
    assert plain["json"]["log_stream_name"] == ctx["log_stream_name"]  # same instance


TENANT_CODE = """
def handler(event, context):
    return {"has": hasattr(context, "tenant_id"), "tenant_id": context.tenant_id,
            "repr": "tenant_id=None" in repr(context)}
"""


def test_context_tenant_id_is_none_without_tenant_isolation(lam: Any) -> None:
    """lamina has no tenant isolation mode (no TenancyConfig), so the runtime is never given
    Lambda-Runtime-Aws-Tenant-Id and `context.tenant_id` is None, as on AWS for such a
    function."""
    create(lam, "inv-tenant", TENANT_CODE)
    got = invoke(lam, "inv-tenant", {})
    assert got["json"] == {"has": True, "tenant_id": None, "repr": True}
    assert "TenancyConfig" not in lam.get_function_configuration(FunctionName="inv-tenant")


def test_invalid_client_context_is_rejected(lam: Any) -> None:
    create(lam, "inv-bad-cc", "def handler(event, context):\n    return 1\n")
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName="inv-bad-cc", ClientContext="not base64 json!")


ENV_CODE = """
import os
NAMES = (
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_REGION", "AWS_DEFAULT_REGION", "_HANDLER", "LAMBDA_TASK_ROOT", "AWS_LAMBDA_RUNTIME_API",
    "AWS_EXECUTION_ENV", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "TZ", "MY_SETTING", "OTHER_SETTING", "_X_AMZN_TRACE_ID",
)
def handler(event, context):
    env = {name: os.environ.get(name) for name in NAMES}
    env["cwd"] = os.getcwd()
    root = os.environ["LAMBDA_TASK_ROOT"]
    env["task_root_files"] = sorted(os.listdir(root)) if os.path.isdir(root) else None
    env["log_stream_name"] = context.log_stream_name
    return env
"""


def test_lambda_environment_variables(lam: Any) -> None:
    create(
        lam,
        "inv-env",
        ENV_CODE,
        MemorySize=512,
        Environment={"Variables": {"MY_SETTING": "hello world", "OTHER_SETTING": "ü=1"}},
    )
    env = invoke(lam, "inv-env", {})["json"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "inv-env"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["_HANDLER"] == "app.handler"
    # the code, read-only at /var/task in the sandbox (a directory there, holding app.py)
    assert env["LAMBDA_TASK_ROOT"] == "/var/task"
    assert env["cwd"] == "/var/task"
    assert env["task_root_files"] == ["app.py"]
    assert env["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:9001"  # in the sandbox's own network
    assert env["AWS_EXECUTION_ENV"] == f"AWS_Lambda_{python_runtime()}"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/inv-env"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == env["log_stream_name"]
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert env["TZ"] in (":UTC", "UTC")
    assert env["MY_SETTING"] == "hello world"
    assert env["OTHER_SETTING"] == "ü=1"


TRACE_RE = r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=[01]"


def test_trace_id_is_set_per_invoke(lam: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    create(lam, "inv-trace", ENV_CODE)
    first = invoke(lam, "inv-trace", {})["json"]["_X_AMZN_TRACE_ID"]
    second = invoke(lam, "inv-trace", {})["json"]["_X_AMZN_TRACE_ID"]
    assert re.fullmatch(TRACE_RE, first), first
    assert re.fullmatch(TRACE_RE, second), second
    assert first != second
    # an incoming X-Amzn-Trace-Id (botocore sends it from inside a Lambda) is passed through
    given = "Root=1-65a1b2c3-0123456789abcdef01234567;Parent=89abcdef01234567;Sampled=1"
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "caller")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", given)
    third = invoke(lam, "inv-trace", {})["json"]["_X_AMZN_TRACE_ID"]
    assert third == given


# -- the SDK inside the function -----------------------------------------------------------------

SDK_CODE = """
import os
import boto3
def handler(event, context):
    return {
        "version": boto3.__version__,
        "file": boto3.__file__,
        "task_root": os.environ["LAMBDA_TASK_ROOT"],
        "client": type(boto3.client("lambda")).__name__ if event.get("client") else None,
    }
"""


def test_boto3_is_importable_without_packaging(lam: Any) -> None:
    import boto3

    create(lam, "inv-boto3", SDK_CODE)
    out = invoke(lam, "inv-boto3", {"client": True})
    assert "FunctionError" not in out, out["json"]
    got = out["json"]
    assert got["version"] == boto3.__version__
    assert not Path(got["file"]).resolve().is_relative_to(Path(got["task_root"]).resolve())
    assert got["client"] == "Lambda"


def test_packaged_boto3_wins(lam: Any) -> None:
    create(
        lam,
        "inv-boto3-own",
        {"app.py": SDK_CODE, "boto3/__init__.py": '__version__ = "packaged"\n'},
    )
    got = invoke(lam, "inv-boto3-own", {})["json"]
    assert got["version"] == "packaged"
    task_root = Path(got["task_root"]).resolve()
    assert Path(got["file"]).resolve() == task_root / "boto3" / "__init__.py"


def test_invoked_function_arn_carries_the_qualifier(lam: Any) -> None:
    created = create(lam, "inv-arn", CONTEXT_CODE)
    arn = created["FunctionArn"]
    plain = invoke(lam, "inv-arn", {})
    assert plain["json"]["invoked_function_arn"] == arn
    by_arn = invoke(lam, arn, {})
    assert by_arn["json"]["invoked_function_arn"] == arn
    assert by_arn["ExecutedVersion"] == "$LATEST"
    by_param = invoke(lam, "inv-arn", {}, Qualifier="$LATEST")
    assert by_param["json"]["invoked_function_arn"] == arn + ":$LATEST"
    by_name = invoke(lam, "inv-arn:$LATEST", {})
    assert by_name["json"]["invoked_function_arn"] == arn + ":$LATEST"
    assert by_name["ExecutedVersion"] == "$LATEST"


# -- request checks ------------------------------------------------------------------------------


def test_invoke_request_errors(lam: Any) -> None:
    create(lam, "inv-checks", "def handler(event, context):\n    return event\n")
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName="inv-checks", Payload=b"{not json")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="inv-no-such-function", Payload=b"{}")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="inv-no-such-function", InvocationType="DryRun")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="inv-checks", Qualifier="7", Payload=b"{}")


def test_result_shapes(lam: Any) -> None:
    create(
        lam,
        "inv-shapes",
        "import decimal\n"
        "def handler(event, context):\n"
        "    kind = event['kind']\n"
        "    if kind == 'none':\n"
        "        return None\n"
        "    if kind == 'bytes':\n"
        "        return b'\\x00raw\\xffbytes'\n"
        "    if kind == 'decimal':\n"
        "        return {'d': decimal.Decimal('1.5'), 'i': decimal.Decimal('3')}\n"
        "    return 'text'\n",
    )
    none = invoke(lam, "inv-shapes", {"kind": "none"})
    assert none["body"] == b"null"
    raw = invoke(lam, "inv-shapes", {"kind": "bytes"})
    assert raw["body"] == b"\x00raw\xffbytes"
    assert raw["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/unknown"
    dec = invoke(lam, "inv-shapes", {"kind": "decimal"})
    assert dec["json"] == {"d": 1.5, "i": 3}
    text = invoke(lam, "inv-shapes", {"kind": "text"})
    assert text["json"] == "text"
    assert text["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/json"


def test_report_duration_measures_the_handler(lam: Any) -> None:
    create(
        lam,
        "inv-duration",
        "import time\ndef handler(event, context):\n    time.sleep(0.25)\n    return 1\n",
    )
    invoke(lam, "inv-duration", {})  # cold start out of the way
    out = invoke(lam, "inv-duration", {}, LogType="Tail")
    rep = report(tail_text(out), out["request_id"])
    duration = float(rep["duration"])
    assert 250 <= duration < 1500
    assert int(rep["billed"]) == math.ceil(duration)


def test_tail_of_multibyte_output_is_valid_utf8(lam: Any) -> None:
    create(
        lam,
        "inv-tail-utf8",
        "def handler(event, context):\n"
        "    print(event['prefix'] + '日本語' * 3000)\n"
        "    return 'ok'\n",
    )
    for prefix in ("", "a", "ab"):  # shift the output so the 4 KB cut falls everywhere
        out = invoke(lam, "inv-tail-utf8", {"prefix": prefix}, LogType="Tail")
        raw = base64.b64decode(out["LogResult"])
        assert len(raw) <= 4096
        text = raw.decode("utf-8")  # strict: the cut never splits a character
        assert "日本語" in text
        report(text, out["request_id"])


def test_shutdown_drains_queued_events(fresh_server: Server) -> None:
    lam = fresh_server.start().client()
    with Recorder() as marker:
        create(lam, "inv-drain", MARKER_CODE, Environment={"Variables": marker.env})
        ids = {
            invoke(lam, "inv-drain", {"i": i, "sleep": 0.3}, InvocationType="Event")["request_id"]
            for i in range(3)
        }
        fresh_server.stop(signal.SIGTERM)
        # record() returns only once its line is stored: what ran before lamina exited is here
        lines = marker.lines
    assert sorted(line.split()[1] for line in lines) == sorted(ids)
