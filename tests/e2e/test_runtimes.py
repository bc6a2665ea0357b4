"""Python runtimes end to end: every installed python3.X runs its own interpreter; a runtime that
is not installed is refused; an operator mapping makes one available explicitly."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import Server, create

PYTHON_RUNTIMES = [f"python3.{minor}" for minor in range(9, 15)]

VERSION_CODE = """
import logging, os, sys
def handler(event, context):
    logging.getLogger().warning("runtime %s", sys.version_info[:2])
    if event.get("fail"):
        raise KeyError(event["fail"])
    return {
        "version": list(sys.version_info[:2]),
        "executable": sys.executable,
        "execution_env": os.environ.get("AWS_EXECUTION_ENV"),
        "event": event,
    }
"""


def health(server: Server) -> dict[str, Any]:
    with urllib.request.urlopen(server.url + "/_lamina/health", timeout=10) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def invoke_json(lam: Any, name: str, payload: Any) -> dict[str, Any]:
    out = lam.invoke(FunctionName=name, Payload=json.dumps(payload))
    body = out["Payload"].read()
    out["Payload"].close()
    assert out["StatusCode"] == 200
    assert "FunctionError" not in out, body
    result: dict[str, Any] = json.loads(body)
    return result


def installed_pythons(server: Server) -> list[str]:
    runtimes = health(server)["runtimes"]
    return [r for r in runtimes if r.startswith("python")]


def test_health_lists_runtimes(server: Server) -> None:
    runtimes = health(server)["runtimes"]
    own = f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert own in runtimes  # the interpreter lamina runs on is always available
    assert {"provided", "provided.al2", "provided.al2023"} <= set(runtimes)
    assert set(installed_pythons(server)) <= set(PYTHON_RUNTIMES)


def test_every_installed_python_runtime_runs_its_version(server: Server, lam: Any) -> None:
    pythons = installed_pythons(server)
    assert pythons

    def run(runtime: str) -> tuple[str, dict[str, Any]]:
        name = "rt-" + runtime.replace(".", "-")
        create(lam, name, VERSION_CODE, Runtime=runtime)
        return runtime, invoke_json(lam, name, {"runtime": runtime, "ü": "ok"})

    with ThreadPoolExecutor(len(pythons)) as pool:
        results = list(pool.map(run, pythons))
    for runtime, got in results:
        major, minor = got["version"]
        assert f"python{major}.{minor}" == runtime, (runtime, got)
        assert got["execution_env"] == f"AWS_Lambda_{runtime}"
        assert got["event"] == {"runtime": runtime, "ü": "ok"}
        assert os.access(got["executable"], os.X_OK)
        # the error path and the logging hook work on every version too
        name = "rt-" + runtime.replace(".", "-")
        out = lam.invoke(FunctionName=name, Payload=b'{"fail": "k"}', LogType="Tail")
        body = json.loads(out["Payload"].read())
        out["Payload"].close()
        assert out["FunctionError"] == "Unhandled"
        assert body["errorType"] == "KeyError" and body["errorMessage"] == "'k'"
        assert body["requestId"] == out["ResponseMetadata"]["RequestId"]
        log = base64.b64decode(out["LogResult"]).decode()
        assert f"\t{body['requestId']}\truntime ({major}, {minor})\n" in log, log
        assert "[ERROR] KeyError: 'k'\rTraceback (most recent call last):" in log, log


def test_missing_runtime_is_rejected(server: Server, lam: Any) -> None:
    pythons = installed_pythons(server)
    missing = [r for r in PYTHON_RUNTIMES if r not in pythons]
    if not missing:
        pytest.skip("every python3.X runtime lamina knows is installed here")
    runtime = missing[-1]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as info:
        create(lam, "rt-missing", VERSION_CODE, Runtime=runtime)
    message = info.value.response["Error"]["Message"]
    assert runtime in message
    for name in pythons:
        assert name in message, message
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName="rt-missing")
    # nor can an existing function be switched to it
    create(lam, "rt-switch", VERSION_CODE)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_configuration(FunctionName="rt-switch", Runtime=runtime)
    assert lam.get_function_configuration(FunctionName="rt-switch")["Runtime"] != runtime


def _interpreter_version(path: str) -> tuple[int, int]:
    out = subprocess.run(
        [path, "-I", "-c", "import sys; print('%d %d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    major, minor = out.stdout.split()
    return int(major), int(minor)


def _other_interpreter() -> str:
    """An installed interpreter (3.9+), preferably not the one lamina itself runs on."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    own = sys.version_info[:2]
    for candidate in sorted(pyenv.glob("3.*/bin/python3.*")):
        name = candidate.name.removeprefix("python3.")
        ok = name.isdigit() and int(name) >= 9 and (3, int(name)) != own
        if ok and os.access(candidate, os.X_OK):
            return str(candidate)
    return sys.executable


def test_operator_mapping_makes_a_runtime_available(server: Server, fresh_server: Server) -> None:
    missing = [r for r in PYTHON_RUNTIMES if r not in installed_pythons(server)]
    runtime = missing[-1] if missing else "python3.14"
    interpreter = _other_interpreter()
    version = _interpreter_version(interpreter)
    fresh_server.extra += ["--runtimes", f"{runtime}={interpreter}"]
    fresh_server.start()
    assert runtime in health(fresh_server)["runtimes"]
    lam = fresh_server.client()
    create(lam, "rt-mapped", VERSION_CODE, Runtime=runtime)
    got = invoke_json(lam, "rt-mapped", {})
    assert tuple(got["version"]) == version
    assert got["executable"] == interpreter
    assert got["execution_env"] == f"AWS_Lambda_{runtime}"
    # the mapping is explicit: the shared server, without it, still refuses that runtime
    if missing:
        assert runtime not in health(server)["runtimes"]
