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
