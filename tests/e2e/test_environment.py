"""The runtime's side of an instance's environment, as Lambda lays it out: the platform's
packages (boto3) at /var/runtime, the variables that point there, and no lamina internals on
the function's import path."""

from __future__ import annotations

from typing import Any

from tests.e2e.server import create, invoke

CODE = """
import os, sys
import boto3

def handler(event, context):
    names = ("LAMBDA_RUNTIME_DIR", "LD_LIBRARY_PATH", "AWS_XRAY_DAEMON_ADDRESS",
             "AWS_XRAY_CONTEXT_MISSING", "LAMINA_RUNTIME_PATH")
    return {
        "env": {k: os.environ.get(k) for k in names},
        "boto3": boto3.__file__,
        "runtime_dir": sorted(os.listdir("/var/runtime")),
        "path": sys.path,
        "lamina": [n for n in ("bootstrap", "confine", "seccomp", "zygote_main", "lamina")
                   if n in sys.modules or _importable(n)],
    }

def _importable(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True
"""


def test_runtime_packages_live_at_var_runtime(lam: Any) -> None:
    create(lam, "env-runtime", CODE, MemorySize=1769)  # boto3 imports at init: a whole vCPU
    out = invoke(lam, "env-runtime", {})
    assert "FunctionError" not in out, out["body"]
    got = out["json"]
    env = got["env"]
    assert env["LAMBDA_RUNTIME_DIR"] == "/var/runtime"
    assert env["LAMINA_RUNTIME_PATH"] is None  # read once by the runtime, then removed
    assert env["LD_LIBRARY_PATH"] == (
        "/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib"
    )
    assert env["AWS_XRAY_DAEMON_ADDRESS"] == "169.254.79.129:2000"
    assert env["AWS_XRAY_CONTEXT_MISSING"] == "LOG_ERROR"
    assert got["boto3"] == "/var/runtime/boto3/__init__.py"
    assert {"boto3", "botocore"} <= set(got["runtime_dir"])
    # the import path: the code, then the runtime's packages, then the standard library
    path = got["path"]
    assert path[0] == "/var/task"
    assert path.index("/var/runtime") < min(i for i, p in enumerate(path) if "/lib/python3" in p)
    assert all("lamina" not in p for p in path), path
    assert got["lamina"] == [], "lamina's own modules are importable by the function"


def test_a_function_module_named_like_lamina_internals_is_its_own(lam: Any) -> None:
    handler = "def handler(event, context):\n    return __name__ + ':' + __file__\n"
    for module in ("bootstrap", "confine", "seccomp"):
        create(lam, f"env-own-{module}", {f"{module}.py": handler}, Handler=f"{module}.handler")
        out = invoke(lam, f"env-own-{module}", {})
        assert out["json"] == f"{module}:/var/task/{module}.py", out["body"]


ENV_VIEWS = """
import ctypes, os, subprocess

libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p

def child_env():
    out = subprocess.run(["/usr/bin/env", "-0"], capture_output=True, check=True).stdout
    return dict(kv.split("=", 1) for kv in out.decode().split("\\0") if kv)

def handler(event, context):
    first = {"python": dict(os.environ), "child": child_env(),
             "environb": {k.decode(): v.decode() for k, v in os.environb.items()},
             "getenv": {k: (libc.getenv(k.encode()) or b"").decode() for k in os.environ}}
    os.environ["ADDED_HERE"] = "yes"
    os.environ.pop("MY_SETTING", None)
    os.environ["OTHER_SETTING"] = "changed"
    trace = libc.getenv(b"_X_AMZN_TRACE_ID").decode()
    return {"first": first, "then": child_env(), "trace_c": trace}
"""


def test_every_view_of_the_environment_agrees(lam: Any) -> None:
    """The instance's environment is set once for C and for os.environ (worker/zygote_main.py
    `_set_environ`): getenv, os.environ, os.environb and a child process all see the same
    variables, and a handler's changes reach the children it starts, as with any process."""
    variables = {"MY_SETTING": "hello world", "OTHER_SETTING": "ü=1", "EMPTY": ""}
    create(lam, "env-views", ENV_VIEWS, Environment={"Variables": variables})
    out = invoke(lam, "env-views", {})["json"]
    first = out["first"]
    python = first["python"]
    assert {k: python[k] for k in variables} == variables
    assert python["AWS_LAMBDA_FUNCTION_NAME"] == "env-views"
    assert first["environb"] == python
    assert first["getenv"] == python
    child = dict(first["child"])
    assert child == python, set(child.items()) ^ set(python.items())
    then = out["then"]
    assert then["ADDED_HERE"] == "yes" and "MY_SETTING" not in then
    assert then["OTHER_SETTING"] == "changed" and then["EMPTY"] == ""
    assert out["trace_c"] == python["_X_AMZN_TRACE_ID"] != ""
    # a second invoke of the same instance: the trace id changes for C as well
    again = invoke(lam, "env-views", {})["json"]
    assert again["trace_c"] == again["first"]["python"]["_X_AMZN_TRACE_ID"] != out["trace_c"]
