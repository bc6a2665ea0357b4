"""Custom runtimes (`provided.al2023`) end to end: a curl shell script and the unmodified
awslambdaric speak the Runtime API to a real lamina."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
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
import os, sys
import awslambdaric
import simplejson

def handler(event, context):
    if event.get("fail"):
        raise ValueError("ric says no")
    return {
        "ric": awslambdaric.__file__,
        "simplejson": simplejson.__file__,
        "python": "%d.%d" % sys.version_info[:2],
        "executable": sys.executable,
        "task_root": os.environ["LAMBDA_TASK_ROOT"],
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining": context.get_remaining_time_in_millis(),
        "event": event,
    }
"""

# A custom runtime's sandbox sees the host's /usr read-only, not the test's virtualenv or pyenv:
# the bootstrap runs a Python from /usr, and awslambdaric (whose HTTP client is a native
# extension) is pip-installed into the package for exactly that interpreter's version, as a
# user builds a package for the Python their bootstrap runs.
SANDBOX_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")


def sandbox_python() -> tuple[str, str]:
    """The interpreter the bootstrap runs (the first of SANDBOX_PYTHONS there is) and its X.Y."""
    for path in SANDBOX_PYTHONS:
        if os.access(path, os.X_OK):
            out = subprocess.run(
                [path, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            return path, out.stdout.strip()
    raise AssertionError(
        f"no Python 3 at {' or '.join(SANDBOX_PYTHONS)} for the awslambdaric bootstrap "
        "(scripts/test.sh installs Debian's python3)"
    )


@pytest.fixture(scope="module")
def ric_package(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, dict[str, bytes]]:
    """(interpreter, its X.Y, the files of awslambdaric and its dependencies pip-installed for
    that version). The awslambdaric release is the one installed in the test environment."""
    python, version = sandbox_python()
    target = tmp_path_factory.mktemp("awslambdaric")
    requirement = f"awslambdaric=={importlib.metadata.version('awslambdaric')}"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--target",
            str(target),
            "--only-binary=:all:",  # the wheel built for `version` (pip needs this for --target)
            "--implementation",
            "cp",
            "--python-version",
            version,
            requirement,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, f"pip could not install {requirement} for {version}:\n{pip.stderr}"
    files = {
        path.relative_to(target).as_posix(): path.read_bytes()
        for path in sorted(target.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }
    tag = f"cpython-{version.replace('.', '')}-"
    assert any(name.startswith("runtime_client.") and tag in name for name in files), sorted(files)
    return python, version, files


def ric_zip_files(package: tuple[str, str, dict[str, bytes]]) -> dict[str, str | bytes]:
    python, _version, installed = package
    files: dict[str, str | bytes] = dict(installed)
    # -S: no site-packages at all, so the copies in the package are what runs
    files["bootstrap"] = (
        "#!/bin/sh\n"
        'export PYTHONPATH="$LAMBDA_TASK_ROOT"\n'
        f'exec {python} -S -m awslambdaric "$_HANDLER"\n'
    )
    files["app.py"] = RIC_APP
    return files


@pytest.fixture(scope="module")
def ric_function(lam: Any, ric_package: tuple[str, str, dict[str, bytes]]) -> str:
    files = ric_zip_files(ric_package)
    create(lam, "cr-ric", files, Runtime=RUNTIME, Handler="app.handler", modes=EXEC)
    return "cr-ric"


def test_awslambdaric_serves_the_handler(
    lam: Any, ric_function: str, ric_package: tuple[str, str, dict[str, bytes]]
) -> None:
    out = invoke(lam, ric_function, {"from": "ric", "ü": 1})
    assert out["StatusCode"] == 200
    assert "FunctionError" not in out, out["body"]
    got = out["json"]
    assert got["task_root"] == "/var/task"
    task_root = Path(got["task_root"])  # a path inside the sandbox: compared, not looked up
    assert Path(got["ric"]).is_relative_to(task_root), got["ric"]
    assert Path(got["simplejson"]).is_relative_to(task_root), got["simplejson"]
    python, version, _files = ric_package
    assert (got["executable"], got["python"]) == (python, version)  # the wheel's interpreter
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


def test_awslambdaric_init_error(lam: Any, ric_package: tuple[str, str, dict[str, bytes]]) -> None:
    files = ric_zip_files(ric_package)
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
