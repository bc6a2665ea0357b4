"""Python runtimes end to end: every installed python3.X runs its own interpreter and imports
boto3 without packaging it (from lamina's SDK minimum on); a runtime that is not installed is
refused; an operator mapping (flag, LAMINA_RUNTIMES or lamina.toml) makes one available
explicitly, and a mapping lamina cannot honour keeps `lamina serve` from starting."""

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

import boto3
import botocore
import pytest

from lamina.runtimes.registry import sdk_min_minor
from tests.e2e.server import ROLE, Server, create, invoke

PYTHON_RUNTIMES = [f"python3.{minor}" for minor in range(9, 15)]

VERSION_CODE = """
import gc, json, logging, os, sys, threading
def handler(event, context):
    logging.getLogger().warning("runtime %s", sys.version_info[:2])
    if event.get("fail"):
        raise KeyError(event["fail"])
    # On 3.12+ the zygote's objects are immortal in here: a full collection over them, and a
    # thread, must work as anywhere else.
    gc.unfreeze()
    gc.collect()
    box = []
    worker = threading.Thread(target=lambda: box.append(json.dumps({"ok": [1, 2]})))
    worker.start()
    worker.join()
    return {
        "version": list(sys.version_info[:2]),
        "full_version": sys.version,
        "executable": sys.executable,
        "execution_env": os.environ.get("AWS_EXECUTION_ENV"),
        "event": event,
        "thread": box,
        "refcount_json_dumps": sys.getrefcount(json.dumps),  # an object the zygote held
    }
"""


def health(server: Server) -> dict[str, Any]:
    with urllib.request.urlopen(server.url + "/_lamina/health", timeout=10) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def health_zygote(server: Server, interpreter: str) -> dict[str, Any]:
    """The health endpoint's entry for the zygote of `interpreter` (what its sys.executable
    says inside an instance)."""
    zygotes = health(server)["sandbox"]["zygotes"]
    found = [z for path, z in zygotes.items() if os.path.realpath(path) == interpreter]
    assert len(found) == 1, (interpreter, zygotes)
    return dict(found[0])


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
        assert got["thread"] == ['{"ok": [1, 2]}']
        # Python 3.12 and 3.13: the zygote made its objects immortal (reference counts stop
        # writing to pages shared with every instance); before 3.12 there is no such thing, and
        # later versions are left alone until verified.
        zygote = health_zygote(server, os.path.realpath(got["executable"]))
        if (3, 12) <= (major, minor) <= (3, 13):
            assert got["refcount_json_dumps"] >= 2**30, got
            assert zygote["immortal"] > 10_000, zygote
        else:
            assert got["refcount_json_dumps"] < 2**30, got
            assert zygote["immortal"] == 0, zygote
        assert zygote["python"].startswith(f"{major}.{minor}."), zygote
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


# -- mappings from lamina.toml and LAMINA_RUNTIMES ------------------------------------------------


def _interpreters() -> list[str]:
    """Installed interpreters (3.9+) other than lamina's own, then lamina's own."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found: list[str] = []
    for candidate in [
        *sorted(pyenv.glob("3.*/bin/python3.*")),
        *Path("/usr/bin").glob("python3.*"),
    ]:
        minor = candidate.name.removeprefix("python3.")
        usable = minor.isdigit() and int(minor) >= 9 and int(minor) != sys.version_info.minor
        if usable and os.access(candidate, os.X_OK) and str(candidate) not in found:
            found.append(str(candidate))
    return [*found, sys.executable]


def _full_version(path: str) -> str:
    out = subprocess.run(
        [path, "-I", "-c", "import sys; print(sys.version)"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.rstrip("\n")


def _runtime_not(version: tuple[int, int], taken: tuple[str, ...] = ()) -> str:
    """A python3.X runtime named for another version than `version` (so what runs proves the
    mapping took effect)."""
    return next(
        r
        for r in reversed(PYTHON_RUNTIMES)
        if r != f"python{version[0]}.{version[1]}" and r not in taken
    )


@pytest.mark.parametrize("form", ["toml-table", "toml-string", "env"])
def test_mapping_from_lamina_toml_and_lamina_runtimes(
    form: str, fresh_server: Server, tmp_path: Path
) -> None:
    first, second = (_interpreters() * 2)[:2]  # two interpreters when there are two
    rt1 = _runtime_not(_interpreter_version(first))
    rt2 = _runtime_not(_interpreter_version(second), (rt1,))
    if form == "env":
        fresh_server.env["LAMINA_RUNTIMES"] = f"{rt1}={first}, {rt2}={second}"
    else:
        toml = tmp_path / "lamina.toml"
        if form == "toml-table":  # a bare dotted key (TOML nests it) and a quoted one
            toml.write_text(f'[runtimes]\n{rt1} = "{first}"\n"{rt2}" = "{second}"\n')
        else:
            toml.write_text(f'runtimes = "{rt1}={first},{rt2}={second}"\n')
        fresh_server.extra += ["--config", str(toml)]
    fresh_server.start()
    assert {rt1, rt2} <= set(installed_pythons(fresh_server))
    lam = fresh_server.client()
    for runtime, interpreter in ((rt1, first), (rt2, second)):
        name = "map-" + runtime.replace(".", "-")
        create(lam, name, VERSION_CODE, Runtime=runtime)
        got = invoke_json(lam, name, {})
        assert got["full_version"] == _full_version(interpreter), (runtime, interpreter)
        assert f"python{got['version'][0]}.{got['version'][1]}" != runtime
        assert got["executable"] == interpreter
        assert got["execution_env"] == f"AWS_Lambda_{runtime}"


def _serve_refused(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run `lamina serve` expecting it to refuse to start: exit status 2, nothing written to its
    data dir, no `ready` line; its stderr is returned."""
    data = tmp_path / "data"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LAMINA_", "AWS_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "lamina", "serve", "--port", "0", "--data-dir", str(data), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        cwd=tmp_path,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "lamina ready" not in proc.stdout + proc.stderr
    assert not data.exists(), "lamina wrote to its data dir before refusing to start"
    assert proc.stderr.startswith("lamina: "), proc.stderr
    return proc.stderr


def test_an_invalid_mapping_refuses_to_start(tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "python3.12")
    err = _serve_refused(tmp_path, "--runtimes", f"python3.12={missing}")
    assert err == (
        f"lamina: runtimes (from --runtimes): python3.12={missing}: {missing} does not exist\n"
    )

    true = str(Path("/bin/true").resolve())
    err = _serve_refused(tmp_path, env={"LAMINA_RUNTIMES": f"python3.13={true}"})
    assert err.startswith(
        f"lamina: runtimes (from LAMINA_RUNTIMES): python3.13={true}: {true} is not a Python "
        "interpreter"
    ), err

    toml = tmp_path / "lamina.toml"  # the default ./lamina.toml
    toml.write_text(f'[runtimes]\n"nodejs20.x" = "{sys.executable}"\n')
    err = _serve_refused(tmp_path)
    assert err.startswith(
        "lamina: runtimes (from lamina.toml): 'nodejs20.x' is not a runtime lamina can map"
    ), err


def test_an_unknown_key_in_lamina_toml_refuses_to_start(tmp_path: Path) -> None:
    toml = tmp_path / "custom.toml"
    toml.write_text('prot = 4851\nregion = "eu-west-1"\n')
    err = _serve_refused(tmp_path, "--config", str(toml))
    assert err.startswith(f"lamina: unknown setting 'prot' in {toml}; known settings: host, port")


# -- the SDK in every Python runtime --------------------------------------------------------------

SDK_CODE = """
import os, sys
import boto3, botocore
from botocore.config import Config

def handler(event, context):
    sts = boto3.client("sts", config=Config(retries={"max_attempts": 1}))
    return {
        "version": list(sys.version_info[:2]),
        "boto3": [boto3.__version__, boto3.__file__],
        "botocore": botocore.__version__,
        "task_root": os.environ["LAMBDA_TASK_ROOT"],
        "runtime_dir": os.environ["LAMBDA_RUNTIME_DIR"],
        "arn": sts.get_caller_identity()["Arn"],
    }
"""


def _installed_on_this_machine() -> set[str]:
    """python3.X runtimes (3.9+) with an interpreter in pyenv or /usr, and lamina's own."""
    own = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return {own} | {
        r
        for r in PYTHON_RUNTIMES
        if any(f"python{Path(p).name.removeprefix('python')}" == r for p in _interpreters())
    }


def test_boto3_without_packaging_on_every_runtime_from_the_sdk_minimum(
    server: Server, lam: Any
) -> None:
    minimum = sdk_min_minor()
    pythons = installed_pythons(server)
    assert _installed_on_this_machine() <= set(pythons)  # every one found, so none is skipped
    supported = [r for r in pythons if int(r.removeprefix("python3.")) >= minimum]
    assert supported

    def run(runtime: str) -> tuple[str, dict[str, Any]]:
        name = "rt-sdk-" + runtime.replace(".", "-")
        # A whole vCPU (1,769 MB) and Lambda's longest timeout: at the default 128 MB, importing
        # boto3 and making a client gets 7% of a CPU, which on a busy 2-core machine can outlast
        # the 10 s init limit. This test is about where boto3 comes from, not how fast.
        create(lam, name, SDK_CODE, Runtime=runtime, MemorySize=1769, Timeout=60)
        return runtime, invoke_json(lam, name, {})

    with ThreadPoolExecutor(len(supported)) as pool:
        results = list(pool.map(run, supported))
    for runtime, got in results:
        assert f"python{got['version'][0]}.{got['version'][1]}" == runtime
        assert got["boto3"][0] == boto3.__version__, runtime
        assert got["botocore"] == botocore.__version__, runtime
        # from the runtime's directory (/var/runtime), not the package
        assert Path(got["boto3"][1]).is_relative_to(got["runtime_dir"]), got
        assert not Path(got["boto3"][1]).is_relative_to(got["task_root"]), got
        name = "rt-sdk-" + runtime.replace(".", "-")
        assert got["arn"].endswith(f":assumed-role/{ROLE.rsplit('/', 1)[1]}/{name}"), got


SDK_OR_NOT = """
import sys
def handler(event, context):
    try:
        import boto3
    except ImportError as e:
        return {"version": list(sys.version_info[:2]), "error": str(e)}
    return {"version": list(sys.version_info[:2]), "boto3": boto3.__version__}
"""


def test_a_runtime_below_the_sdk_minimum_packages_its_own_boto3(
    server: Server, lam: Any, fresh_server: Server
) -> None:
    """README: the SDK lamina carries needs Python 3.<minimum>; an older runtime's function
    packages its own boto3. (Where no such interpreter is installed, the runtime is mapped to
    lamina's own: the SDK follows the runtime's name, not the interpreter.)"""
    minimum = sdk_min_minor()
    older = [r for r in PYTHON_RUNTIMES if int(r.removeprefix("python3.")) < minimum]
    if not older:
        pytest.skip(f"lamina's SDK supports every Python runtime (3.{minimum}+)")
    runtime = older[-1]
    if runtime not in installed_pythons(server):
        fresh_server.extra += ["--runtimes", f"{runtime}={sys.executable}"]
        lam = fresh_server.start().client()
    create(lam, "rt-old-sdk", SDK_OR_NOT, Runtime=runtime)
    got = invoke_json(lam, "rt-old-sdk", {})
    assert got == {"version": got["version"], "error": "No module named 'boto3'"}
    create(
        lam,
        "rt-old-own-sdk",
        {"app.py": SDK_OR_NOT, "boto3/__init__.py": '__version__ = "packaged"\n'},
        Runtime=runtime,
    )
    assert invoke_json(lam, "rt-old-own-sdk", {})["boto3"] == "packaged"
    # a function whose module imports boto3 at the top fails its init, as AWS words it
    create(
        lam, "rt-old-sdk-init", "import boto3\ndef handler(e, c):\n    return 1\n", Runtime=runtime
    )
    out = invoke(lam, "rt-old-sdk-init")
    assert out["FunctionError"] == "Unhandled"
    assert out["json"]["errorType"] == "Runtime.ImportModuleError"
    assert out["json"]["errorMessage"] == "Unable to import module 'app': No module named 'boto3'"
