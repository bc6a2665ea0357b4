"""Blanks (worker/blanks.py): sandboxes half-started ahead of need, taken by cold starts.

A cold start that takes a blank must end up exactly as confined as one started the long way:
its own cgroup with the function's limits, its own namespaces, uid and hostname."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from tests.e2e.server import CGROUP_FS, Server, cgroup_v2, create, is_blank, run_dirs

WHERE = """
import os, socket
def handler(event, context):
    return {"host": socket.gethostname(), "uid": os.getuid(), "pid": os.getpid(),
            "ppid": os.getppid()}
"""


def _health(server: Server) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/_lamina/health") as resp:
        return dict(json.load(resp)["sandbox"]["blanks"])


def _groups(server: Server) -> dict[str, list[int]]:
    """Every group of this lamina's run (instances and blanks): the processes in each."""
    out = {}
    for run in run_dirs(server.pid):
        if "pids" not in run.parts and not cgroup_v2():
            continue
        for group in run.iterdir():
            try:
                out[group.name] = [int(p) for p in (group / "cgroup.procs").read_text().split()]
            except (FileNotFoundError, NotADirectoryError):  # a file, or a group just removed
                continue
    return out


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _memory_limit_mb(server: Server, group: str) -> int:
    base = CGROUP_FS if cgroup_v2() else CGROUP_FS / "memory"
    name = "memory.max" if cgroup_v2() else "memory.limit_in_bytes"
    matches = list(base.glob(f"lamina/run-{server.pid}-*/{group}/{name}"))  # this server's
    assert len(matches) == 1, matches
    return int(matches[0].read_text()) >> 20


def test_cold_starts_take_blanks_that_become_confined_instances(fresh_server: Server) -> None:
    lam = fresh_server.start().client()
    create(lam, "blank-first", WHERE)
    json.loads(lam.invoke(FunctionName="blank-first")["Payload"].read())  # starts the zygote
    _wait(lambda: _health(fresh_server)["ready"] == 4)  # refilled once cold starts pause
    groups = _groups(fresh_server)
    blanks = {g for g, pids in groups.items() if is_blank(pids)}
    assert len(blanks) == 4, groups
    assert all(len(groups[g]) == 2 for g in blanks), groups  # init and the runtime-to-be

    before = _health(fresh_server)["taken"]
    create(lam, "blank-second", WHERE, MemorySize=512)
    out = json.loads(lam.invoke(FunctionName="blank-second")["Payload"].read())
    assert _health(fresh_server)["taken"] == before + 1
    group = out["host"].removeprefix("sandbox-")  # an instance's hostname names its group
    assert group in blanks  # this instance was one of the blanks
    assert out["pid"] == 2 and out["ppid"] == 1  # the runtime under its own init
    assert 20000 <= out["uid"] < 30000
    # the placeholder limit became the function's
    assert _memory_limit_mb(fresh_server, group) == 512
    assert len(_groups(fresh_server)[group]) == 2  # init and runtime: an instance now
    assert not is_blank(_groups(fresh_server)[group])  # both run as the instance's uid
    _wait(lambda: _health(fresh_server)["ready"] == 4)  # and a new blank took its place


def test_no_blanks_when_turned_off(fresh_server: Server) -> None:
    fresh_server.extra += ["--blanks", "0"]
    lam = fresh_server.start().client()
    create(lam, "blank-off", WHERE)
    lam.invoke(FunctionName="blank-off")
    time.sleep(0.3)
    assert _health(fresh_server) == {"ready": 0, "taken": 0}
    groups = _groups(fresh_server)
    assert all(len(p) == 2 and not is_blank(p) for p in groups.values()), groups
