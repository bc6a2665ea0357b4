"""lamina's own secrets never reach a sandbox: not in the environment a function's process was
exec'd with (/proc/self/environ, /proc/1/environ), not anywhere in its memory.

Every instance is forked from a zygote; whatever the zygote was started with, every function
could read. The root secret key is searched for in two halves, so that the handler itself never
holds the whole of it unless it leaked."""

from __future__ import annotations

from typing import Any

from tests.e2e.server import ROOT_KEY_ENV
from tests.security.harness import Canary, function, invoke, result, unique

SCAN = """
import os, re

def regions():
    with open("/proc/self/maps") as fh:
        for line in fh:
            addr, perms = line.split()[:2]
            if perms.startswith("r"):
                start, end = (int(x, 16) for x in addr.split("-"))
                yield start, end

def handler(event, context):
    first, second = event["first"].encode(), event["second"].encode()
    found = []
    with open("/proc/self/mem", "rb", buffering=0) as mem:
        for start, end in regions():
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            for m in re.finditer(re.escape(first), data):
                if data[m.end():m.end() + len(second)] == second:
                    found.append(hex(start))
    environ = {}
    for path in ("/proc/self/environ", "/proc/1/environ"):
        try:
            with open(path, "rb") as fh:
                environ[path] = [kv.split(b"=")[0].decode() for kv in fh.read().split(b"\\0") if kv]
        except PermissionError:  # init is not dumpable: its /proc files are root's
            environ[path] = []
    return {"found": found, "environ": environ, "lamina_vars": sorted(
        k for k in os.environ if k.startswith("LAMINA_"))}
"""


def test_root_secret_is_nowhere_in_a_sandbox(lam: Any, canary: Canary) -> None:
    secret = ROOT_KEY_ENV["LAMINA_SECRET_ACCESS_KEY"]
    half = len(secret) // 2
    with function(lam, unique("secrets"), SCAN, MemorySize=512) as name:
        res = result(invoke(lam, name, {"first": secret[:half], "second": secret[half:]}))
    assert res["found"] == [], res["found"]
    for path, names in res["environ"].items():
        assert not [n for n in names if n.startswith(("LAMINA_", "AWS_SECRET"))], (path, names)
    # the exec-time environment is the zygote's minimal one, not lamina's
    assert set(res["environ"]["/proc/1/environ"]) <= {"PATH", "LANG"}
    assert res["lamina_vars"] == []
    canary.check()
