"""Helpers for the sandbox escape suite: invoking attack handlers, looking at the host side."""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from tests.e2e.server import Server, create

SANDBOX_UIDS = range(20000, 30000)
_MAX_MEMORY = re.compile(r"Max Memory Used: (\d+) MB")
_INIT = re.compile(r"Init Duration: ([0-9.]+) ms")


def invoke(lam: Any, name: str, payload: Any = None, **kwargs: Any) -> dict[str, Any]:
    """Invoke with the log tail; the result's body, JSON, FunctionError, errorType and log."""
    kwargs.setdefault("LogType", "Tail")
    out: dict[str, Any] = lam.invoke(
        FunctionName=name, Payload=json.dumps({} if payload is None else payload), **kwargs
    )
    body = out["Payload"].read()
    out["Payload"].close()
    parsed = json.loads(body) if body else None
    return {
        "status": out["StatusCode"],
        "body": body.decode("utf-8", "replace"),
        "json": parsed,
        "function_error": out.get("FunctionError"),
        "error_type": parsed.get("errorType") if isinstance(parsed, dict) else None,
        "log": base64.b64decode(out.get("LogResult", "")).decode("utf-8", "replace"),
    }


def result(out: dict[str, Any]) -> dict[str, Any]:
    """The handler's own JSON result; fails if the invocation failed."""
    assert out["status"] == 200, out
    assert out["function_error"] is None, out["body"] + "\n" + out["log"]
    value: dict[str, Any] = out["json"]
    return value


def max_memory_mb(log: str) -> int:
    m = _MAX_MEMORY.search(log)
    assert m, f"no REPORT Max Memory Used in:\n{log}"
    return int(m.group(1))


def init_duration_ms(log: str) -> float | None:
    m = _INIT.search(log)
    return float(m.group(1)) if m else None


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def function(lam: Any, name: str, code: str | dict[str, str | bytes], **kw: Any) -> Iterator[str]:
    """A function for one test, deleted afterwards (which retires its instances)."""
    kw.setdefault("Timeout", 30)
    create(lam, name, code, **kw)
    try:
        yield name
    finally:
        lam.delete_function(FunctionName=name)


CANARY_CODE = """
import os
def handler(event, context):
    return {"echo": event["nonce"], "pid": os.getpid(), "uid": os.getuid()}
"""


class Canary:
    """One function, created once per session, that must keep answering after every attack."""

    def __init__(self, lam: Any, server: Server) -> None:
        self.lam = lam
        self.server = server
        self.name = "security-canary"
        create(lam, self.name, CANARY_CODE, MemorySize=128, Timeout=10)
        self.calls = 0

    def check(self) -> None:
        assert self.server.proc is not None and self.server.proc.poll() is None, (
            "lamina died:\n" + self.server.log[-4000:]
        )
        nonce = uuid.uuid4().hex
        out = result(invoke(self.lam, self.name, {"nonce": nonce}))
        assert out["echo"] == nonce
        assert out["pid"] <= 2 and out["uid"] in SANDBOX_UIDS  # in a PID namespace of its own
        self.calls += 1

    def during(self, attack: Callable[[], Any]) -> Any:
        """Run `attack` in a thread; the canary answers (repeatedly) while it runs."""
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = attack()
            except BaseException as e:
                box["error"] = e

        th = threading.Thread(target=run)
        th.start()
        answered = 0
        time.sleep(0.2)
        while th.is_alive() or answered == 0:
            self.check()
            answered += 1
            th.join(0.2)
        th.join()
        if "error" in box:
            raise box["error"]
        return box["value"]


# -- the host side -------------------------------------------------------------------------------


def run_dirs(server_pid: int) -> list[str]:
    """This lamina run's cgroup run directories, in every hierarchy."""
    found: set[str] = set()
    for depth in ("", "*/", "*/*/", "*/*/*/"):  # v1 .../<controller>/lamina, v2 <group>/lamina
        found.update(glob.glob(f"/sys/fs/cgroup/{depth}lamina/run-{server_pid}-*"))
    return sorted(found)


def host_cgroup_dir(proc_self_cgroup: str, controller: str = "pids") -> str:
    """The host path of the group a sandbox reported in its /proc/self/cgroup."""
    for line in proc_self_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return f"/sys/fs/cgroup/{controller}{path}"
    raise AssertionError(f"no {controller} cgroup in {proc_self_cgroup!r}")


def cgroup_procs(directory: str) -> list[int] | None:
    try:
        with open(f"{directory}/cgroup.procs") as fh:
            return [int(p) for p in fh.read().split()]
    except FileNotFoundError:
        return None


def pid_gone(pid: int) -> bool:
    """True once `pid` no longer exists (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(0.02)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def _text(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def leftover_processes(server_pid: int) -> list[str]:
    """Processes in this run's cgroups, or with a sandbox uid outside any lamina run's cgroup
    (an instance of another lamina on this host is in that lamina's run)."""
    ours = f"/lamina/run-{server_pid}-"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cgroup = _text(f"/proc/{entry}/cgroup")
            status = _text(f"/proc/{entry}/status")
        except (FileNotFoundError, ProcessLookupError):
            continue
        m = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M)
        uid = int(m.group(1)) if m else -1
        sandboxed = m is not None and any(int(u) in SANDBOX_UIDS for u in m.groups())
        if ours in cgroup or (sandboxed and "/lamina/run-" not in cgroup):
            name = re.search(r"^Name:\s+(.*)$", status, re.M)
            found.append(f"pid {entry} uid {uid} {name.group(1) if name else '?'}: {cgroup!r}")
    return found
