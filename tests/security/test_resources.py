"""Resource attacks: each is held by the instance's cgroup (pids, memory, CPU) or its sized /tmp,
and lamina, and the canary function, keep answering while and after it runs."""

from __future__ import annotations

import os
import shutil
import threading
import time
from typing import Any

from tests.e2e.server import Server
from tests.security.harness import (
    Canary,
    cgroup_procs,
    function,
    host_cgroup_dir,
    invoke,
    max_memory_mb,
    pid_gone,
    result,
    unique,
    wait_for,
)

FORK_BOMB = """
import errno, os, signal, time

def handler(event, context):
    children, eagain, other = [], 0, {}
    began = time.monotonic()
    for _ in range(event["attempts"]):
        try:
            pid = os.fork()
        except OSError as e:
            if e.errno == errno.EAGAIN:
                eagain += 1
            else:
                other[str(e.errno)] = other.get(str(e.errno), 0) + 1
            continue
        if pid == 0:  # a child only waits to be killed, never returns into the handler
            try:
                while True:
                    time.sleep(3600)
            finally:
                os._exit(0)
        children.append(pid)
    forking_s = time.monotonic() - began
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    for pid in children:
        os.waitpid(pid, 0)
    after = os.fork()  # the limit is per group, and the group is empty again
    if after == 0:
        os._exit(7)
    _, status = os.waitpid(after, 0)
    return {"forked": len(children), "eagain": eagain, "other": other,
            "forking_s": forking_s, "fork_after": os.WEXITSTATUS(status)}
"""


def test_fork_bomb_stops_at_the_pids_limit(lam: Any, canary: Canary) -> None:
    with function(lam, unique("fork-bomb"), FORK_BOMB, MemorySize=1769) as name:
        out = canary.during(lambda: invoke(lam, name, {"attempts": 5000}))
        res = result(out)
        # pids.max is 1024 for the whole instance: its own processes (the runtime, and an init
        # above it if any) hold the rest.
        assert 900 <= res["forked"] < 1024, res
        assert res["eagain"] == 5000 - res["forked"], res
        assert res["other"] == {}, res
        assert res["fork_after"] == 7
        # The same instance serves again, its children gone.
        again = result(invoke(lam, name, {"attempts": 3}))
        assert again["forked"] == 3 and again["eagain"] == 0
    canary.check()


MEMORY_BOMB = """
def handler(event, context):
    hog = []
    for _ in range(100):  # 1 GB in 10 MB chunks, every page touched
        hog.append(b"\\x01" * (10 << 20))
    return {"allocated_mb": 10 * len(hog)}
"""


def test_memory_bomb_is_killed_at_memory_size(lam: Any, canary: Canary) -> None:
    with function(lam, unique("memory-bomb"), MEMORY_BOMB, MemorySize=128) as name:
        out = canary.during(lambda: invoke(lam, name))
        assert out["function_error"] == "Unhandled", out
        assert out["error_type"] == "Runtime.OutOfMemory", out
        used = max_memory_mb(out["log"])
        assert 110 <= used <= 130, out["log"]
        assert "Memory Size: 128 MB" in out["log"]
    canary.check()


FILL_TMP = """
import errno, os

def handler(event, context):
    chunk = b"\\x01" * (8 << 20)
    written, err = 0, None
    with open("/tmp/fill", "wb", buffering=0) as f:
        while written < (2 << 30):
            try:
                written += f.write(chunk)
            except OSError as e:
                err = errno.errorcode.get(e.errno, str(e.errno))
                break
    st = os.statvfs("/tmp")
    return {"written": written, "error": err, "tmp_bytes": st.f_blocks * st.f_frsize}
"""


def test_filling_tmp_stops_at_ephemeral_storage(lam: Any, canary: Canary, server: Server) -> None:
    kw = {"MemorySize": 1024, "EphemeralStorage": {"Size": 512}}
    with function(lam, unique("fill-tmp"), FILL_TMP, **kw) as name:
        free_before = shutil.disk_usage(server.data_dir).free
        res = result(invoke(lam, name))
        free_after = shutil.disk_usage(server.data_dir).free
        assert res["error"] == "ENOSPC", res
        assert res["tmp_bytes"] == 512 << 20
        assert (512 << 20) - (8 << 20) <= res["written"] <= 512 << 20, res
        # /tmp is a tmpfs of the instance's own: the host's disk did not pay for it.
        assert free_before - free_after < 64 << 20, (free_before, free_after)
    canary.check()


SPIN = """
import os

def handler(event, context):
    if event.get("spin"):
        if os.fork() == 0:
            try:
                while True:
                    pass
            finally:
                os._exit(0)
        while True:
            pass
    return {"cgroup": open("/proc/self/cgroup").read()}
"""


def test_cpu_spin_past_the_timeout_is_killed_with_its_processes(
    lam: Any, canary: Canary, server: Server
) -> None:
    with function(lam, unique("spin"), SPIN, MemorySize=128, Timeout=1) as name:
        group = host_cgroup_dir(result(invoke(lam, name))["cgroup"])
        assert f"/lamina/run-{server.proc.pid if server.proc else 0}-" in group
        seen: set[int] = set()
        stop = threading.Event()

        def watch() -> None:  # the instance's processes, as the host sees them
            while not stop.is_set():
                seen.update(cgroup_procs(group) or ())
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        began = time.monotonic()
        try:
            out = canary.during(lambda: invoke(lam, name, {"spin": True}))
        finally:
            stop.set()
            watcher.join()
        assert out["function_error"] == "Unhandled"
        assert out["error_type"] == "Sandbox.Timedout", out
        assert "Task timed out after 1.00 seconds" in out["body"]
        assert time.monotonic() - began < 10
        assert len(seen) >= 2, seen  # the runtime and its spinning child
        wait_for(lambda: cgroup_procs(group) is None, 10, f"{group} removed")
        wait_for(lambda: all(pid_gone(p) for p in seen), 10, f"processes {seen} gone")
        assert not os.path.exists(group)
        # The function starts a fresh instance next time.
        assert "cgroup" in result(invoke(lam, name))
    canary.check()


LOG_FLOOD = """
import os

def handler(event, context):
    chunk = b"x" * 65536
    while True:  # stdout as fast as it goes, into lamina's log pipe
        os.write(1, chunk)
"""


def _rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        line = next(ln for ln in fh if ln.startswith("VmRSS:"))
    return int(line.split()[1]) // 1024


def test_log_flood_is_bounded(lam: Any, canary: Canary, server: Server) -> None:
    """Four instances writing stdout flat out: lamina keeps reading (its timers still fire, the
    canary answers) and keeps only a bounded tail of the output."""
    assert server.proc is not None
    rss_before = _rss_mb(server.proc.pid)
    with function(lam, unique("log-flood"), LOG_FLOOD, MemorySize=1769, Timeout=2) as name:
        outs: list[dict[str, Any]] = []

        def flood() -> list[float]:
            began = time.monotonic()
            threads = [
                threading.Thread(target=lambda: outs.append(invoke(lam, name))) for _ in range(4)
            ]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            return [time.monotonic() - began]

        (took,) = canary.during(flood)
        assert [o["error_type"] for o in outs] == ["Sandbox.Timedout"] * 4, outs
        assert took < 8, took  # the 2 s timeouts fired on time, flood or not
        assert all(len(o["log"]) <= 4096 for o in outs)  # the Tail: the last 4 KB
    assert _rss_mb(server.proc.pid) - rss_before < 100
    canary.check()
