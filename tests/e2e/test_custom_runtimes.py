"""Custom runtimes (`provided.al2023`) end to end: a curl shell script and the unmodified
awslambdaric speak the Runtime API to a real lamina."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import create, invoke

RUNTIME = "provided.al2023"
EXEC = {"bootstrap": 0o755}

CURL_PRELUDE = """#!/bin/sh
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
HEADERS="$(mktemp)"
trap 'rm -f "$HEADERS"' EXIT
INSTANCE="$(cat /proc/sys/kernel/random/uuid)"  # names this instance (its pid is 1 in a sandbox)
"""

NEXT = """
  EVENT="$(curl -sS -D "$HEADERS" "$API/invocation/next")"
  REQUEST_ID="$(grep -i '^Lambda-Runtime-Aws-Request-Id:' "$HEADERS" \\
    | cut -d: -f2 | tr -d ' \\r\\n')"
"""

CURL_ECHO = (
    CURL_PRELUDE
    + 'echo "init of $_HANDLER"\n'
    + "while true; do"
    + NEXT
    + """  echo "handling $REQUEST_ID"
  BODY="$(printf '{"echo": %s, "requestId": "%s", "instance": "%s", "handler": "%s", ' \\
    "$EVENT" "$REQUEST_ID" "$INSTANCE" "$_HANDLER")"
  FOUND="$(if [ -x "$LAMBDA_TASK_ROOT/bootstrap" ]; then echo true; else echo false; fi)"
  BODY="$BODY$(printf '"execEnv": "%s", "taskRoot": "%s", "bootstrapFound": %s}' \\
    "${AWS_EXECUTION_ENV:-unset}" "$LAMBDA_TASK_ROOT" "$FOUND")"
  curl -sS -o /dev/null -X POST "$API/invocation/$REQUEST_ID/response" \\
    -H 'Content-Type: application/json' --data-binary "$BODY"
done
"""
)

CURL_ERROR = (
    CURL_PRELUDE
    + "while true; do"
    + NEXT
    + """  curl -sS -o /dev/null -X POST "$API/invocation/$REQUEST_ID/error" \\
    -H 'Lambda-Runtime-Function-Error-Type: Function.Custom' \\
    -H 'Content-Type: application/json' \\
    --data-binary '{"errorMessage": "custom failure", "errorType": "Function.Custom"}'
done
"""
)

CURL_INIT_ERROR = (
    CURL_PRELUDE
    + """echo "init failing"
curl -sS -o /dev/null -X POST "$API/init/error" \\
  -H 'Lambda-Runtime-Function-Error-Type: Runtime.CustomInit' \\
  -H 'Content-Type: application/json' \\
  --data-binary '{"errorMessage": "cannot start", "errorType": "Runtime.CustomInit"}'
exit 1
"""
)


def tail_text(out: dict[str, Any]) -> str:
    return base64.b64decode(out["LogResult"]).decode("utf-8")


# -- a shell script with curl --------------------------------------------------------------------


def test_curl_bootstrap_echoes(lam: Any) -> None:
    create(
        lam,
        "cr-curl",
        {"bootstrap": CURL_ECHO},
        Runtime=RUNTIME,
        Handler="function.handler",
        modes=EXEC,
    )
    first = invoke(lam, "cr-curl", {"hello": "wörld", "n": [1, 2]}, LogType="Tail")
    assert first["StatusCode"] == 200
    assert "FunctionError" not in first, first["body"]
    assert first["ExecutedVersion"] == "$LATEST"
    got = first["json"]
    assert got["echo"] == {"hello": "wörld", "n": [1, 2]}
    assert got["requestId"] == first["request_id"]
    assert got["handler"] == "function.handler"
    assert got["execEnv"] == "unset"  # AWS_EXECUTION_ENV is not set for provided runtimes
    assert got["taskRoot"] == "/var/task"
    assert got["bootstrapFound"] is True  # the executable bootstrap, seen from inside
    text = tail_text(first)
    assert "init of function.handler" in text
    assert f"handling {first['request_id']}" in text
    assert "Init Duration:" in text

    second = invoke(lam, "cr-curl", {"again": True}, LogType="Tail")
    assert second["json"]["echo"] == {"again": True}
    assert second["json"]["requestId"] == second["request_id"] != first["request_id"]
    assert second["json"]["instance"] == got["instance"]  # the same warm instance
    assert "Init Duration:" not in tail_text(second)


def test_curl_bootstrap_reports_an_error(lam: Any) -> None:
    create(lam, "cr-curl-error", {"bootstrap": CURL_ERROR}, Runtime=RUNTIME, modes=EXEC)
    for _ in range(2):  # an /error reply leaves the instance usable
        out = invoke(lam, "cr-curl-error")
        assert out["StatusCode"] == 200
        assert out["FunctionError"] == "Unhandled"
        assert out["json"] == {"errorMessage": "custom failure", "errorType": "Function.Custom"}


def test_curl_bootstrap_reports_an_init_error(lam: Any) -> None:
    create(lam, "cr-curl-init", {"bootstrap": CURL_INIT_ERROR}, Runtime=RUNTIME, modes=EXEC)
    out = invoke(lam, "cr-curl-init", LogType="Tail")
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    assert out["json"]["errorType"] == "Runtime.CustomInit"
    assert out["json"]["errorMessage"] == "cannot start"
    text = tail_text(out)
    assert "init failing" in text
    assert f"END RequestId: {out['request_id']}" in text


def test_missing_bootstrap_is_a_function_error(lam: Any) -> None:
    create(lam, "cr-no-bootstrap", {"README.txt": "no bootstrap here"}, Runtime=RUNTIME)
    out = invoke(lam, "cr-no-bootstrap", LogType="Tail")
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    assert out["json"]["errorType"] in ("Runtime.InvalidEntrypoint", "Runtime.ExitError")
    assert out["json"]["errorType"] in tail_text(out)


def test_non_executable_bootstrap_is_a_function_error(lam: Any) -> None:
    create(lam, "cr-noexec", {"bootstrap": CURL_ECHO}, Runtime=RUNTIME, modes={"bootstrap": 0o644})
    out = invoke(lam, "cr-noexec")
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    assert out["json"]["errorType"] in ("Runtime.InvalidEntrypoint", "Runtime.ExitError")


# -- the unmodified awslambdaric -----------------------------------------------------------------

RIC_APP = """
import os
import awslambdaric
import simplejson

def handler(event, context):
    if event.get("fail"):
        raise ValueError("ric says no")
    return {
        "ric": awslambdaric.__file__,
        "simplejson": simplejson.__file__,
        "task_root": os.environ["LAMBDA_TASK_ROOT"],
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining": context.get_remaining_time_in_millis(),
        "event": event,
    }
"""


def _package_files(module: str) -> dict[str, str | bytes]:
    """The files of an importable top-level module or package, keyed by zip path."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        pytest.skip(f"{module} is not installed in this environment")
    origin = Path(spec.origin)
    if origin.name != "__init__.py":
        return {origin.name: origin.read_bytes()}
    files: dict[str, str | bytes] = {}
    root = origin.parent
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root.parent)
        if path.is_file() and "__pycache__" not in rel.parts and "tests" not in rel.parts:
            files[rel.as_posix()] = path.read_bytes()
    return files


# The sandbox sees the host's /usr read-only (not the test's virtualenv): the bootstrap runs the
# system Python, which must be the version the packaged native extensions were built for.
SYSTEM_PYTHON = "/usr/bin/python3"


def system_python_matches() -> bool:
    try:
        out = subprocess.run(
            [SYSTEM_PYTHON, "-I", "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError:
        return False
    return out.stdout.split() == [str(v) for v in sys.version_info[:2]]


def ric_zip_files() -> dict[str, str | bytes]:
    if not system_python_matches():
        pytest.skip(f"{SYSTEM_PYTHON} is not Python {sys.version_info[0]}.{sys.version_info[1]}")
    files: dict[str, str | bytes] = {}
    # awslambdaric, what it imports at runtime (simplejson, snapshot_restore_py) and its native
    # HTTP client (the top-level `runtime_client` extension module)
    for module in ("awslambdaric", "simplejson", "snapshot_restore_py", "runtime_client"):
        files.update(_package_files(module))
    # -S: no site-packages at all, so the copies in the package are what runs
    files["bootstrap"] = (
        "#!/bin/sh\n"
        'export PYTHONPATH="$LAMBDA_TASK_ROOT"\n'
        f'exec {SYSTEM_PYTHON} -S -m awslambdaric "$_HANDLER"\n'
    )
    files["app.py"] = RIC_APP
    return files


@pytest.fixture(scope="module")
def ric_function(lam: Any) -> str:
    create(lam, "cr-ric", ric_zip_files(), Runtime=RUNTIME, Handler="app.handler", modes=EXEC)
    return "cr-ric"


def test_awslambdaric_serves_the_handler(lam: Any, ric_function: str) -> None:
    out = invoke(lam, ric_function, {"from": "ric", "ü": 1})
    assert out["StatusCode"] == 200
    assert "FunctionError" not in out, out["body"]
    got = out["json"]
    assert got["task_root"] == "/var/task"
    task_root = Path(got["task_root"])  # a path inside the sandbox: compared, not looked up
    assert Path(got["ric"]).is_relative_to(task_root), got["ric"]
    assert Path(got["simplejson"]).is_relative_to(task_root), got["simplejson"]
    assert got["request_id"] == out["request_id"]
    assert got["function_name"] == ric_function
    assert got["memory"] == "128"
    assert 0 < got["remaining"] <= 3000
    assert got["event"] == {"from": "ric", "ü": 1}
    again = invoke(lam, ric_function, {"n": 2})
    assert again["json"]["request_id"] == again["request_id"] != out["request_id"]


def test_awslambdaric_reports_a_handler_exception(lam: Any, ric_function: str) -> None:
    out = invoke(lam, ric_function, {"fail": True}, LogType="Tail")
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    body = out["json"]
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "ric says no"
    assert body["requestId"] == out["request_id"]
    assert any("app.py" in frame for frame in body["stackTrace"])
    text = tail_text(out)
    assert re.search(r"\[ERROR\] ValueError: ric says no\rTraceback", text), text
    # the instance keeps serving after the error
    ok = invoke(lam, ric_function, {"after": "error"})
    assert "FunctionError" not in ok and ok["json"]["event"] == {"after": "error"}


def test_awslambdaric_init_error(lam: Any) -> None:
    files = ric_zip_files()
    files["app.py"] = "import not_installed_anywhere\n"
    create(lam, "cr-ric-init", files, Runtime=RUNTIME, modes=EXEC)
    out = invoke(lam, "cr-ric-init")
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    assert out["json"]["errorType"] == "Runtime.ImportModuleError"
    assert "not_installed_anywhere" in out["json"]["errorMessage"]


CURL_PROTOCOL = (
    CURL_PRELUDE
    + 'LAST="none"\n'
    + "while true; do"
    + NEXT
    + """  cat "$HEADERS"
  BAD="$(curl -s -o /dev/null -w '%{http_code}' -X POST "$API/invocation/not-the-id/response" \\
    --data-binary '{}')"
  UNKNOWN="$(curl -s -o /dev/null -w '%{http_code}' -X POST "$API/invocation/$REQUEST_ID/nope" \\
    --data-binary '{}')"
  echo "bad-id=$BAD unknown-path=$UNKNOWN"
  printf 'plain text from %s, last double post: %s' "$REQUEST_ID" "$LAST" > "$HEADERS.body"
  curl -sS -o /dev/null -X POST "$API/invocation/$REQUEST_ID/response" \\
    -H 'Content-Type: text/plain; charset=utf-8' -H 'Transfer-Encoding: chunked' \\
    --data-binary "@$HEADERS.body"
  LAST="$(curl -s -o /dev/null -w '%{http_code}' -X POST \\
    "$API/invocation/$REQUEST_ID/response" --data-binary '"again"')"
done
"""
)


def test_runtime_api_protocol_with_curl(lam: Any) -> None:
    created = create(lam, "cr-protocol", {"bootstrap": CURL_PROTOCOL}, Runtime=RUNTIME, modes=EXEC)
    context = {"custom": {"k": "v"}}
    encoded = base64.b64encode(json.dumps(context).encode()).decode()
    first = invoke(lam, "cr-protocol", {"x": 1}, LogType="Tail", ClientContext=encoded)
    rid = first["request_id"]
    assert "FunctionError" not in first, first["body"]
    # a non-JSON response, sent chunked, reaches the caller verbatim with its content type
    assert first["body"] == f"plain text from {rid}, last double post: none".encode()
    headers = first["ResponseMetadata"]["HTTPHeaders"]
    assert headers["content-type"].startswith("text/plain")
    text = tail_text(first)
    assert "bad-id=400 unknown-path=404" in text
    sent = dict(
        line.split(": ", 1) for line in text.splitlines() if line.startswith("Lambda-Runtime-")
    )
    assert sent["Lambda-Runtime-Aws-Request-Id"] == rid
    assert sent["Lambda-Runtime-Invoked-Function-Arn"] == created["FunctionArn"]
    deadline_ms = int(sent["Lambda-Runtime-Deadline-Ms"])
    now_ms = int(time.time() * 1000)
    assert now_ms - 3000 < deadline_ms <= now_ms + 3000  # the function timeout is 3 s
    assert json.loads(sent["Lambda-Runtime-Client-Context"]) == context
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};.*", sent["Lambda-Runtime-Trace-Id"])
    # a second /response for an answered invocation is refused: 403 InvalidStateTransition, or
    # 400 InvalidRequestID once the next invocation is under way (it races with this one)
    second = invoke(lam, "cr-protocol", {"x": 2})
    assert second["body"].decode().rsplit(": ", 1)[1] in ("400", "403")
    assert second["body"].decode().startswith(f"plain text from {second['request_id']}")
