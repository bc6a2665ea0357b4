"""2,000 cold starts leave nothing behind: no cgroups, mounts, processes, network interfaces,
and no growth in lamina's open files.

A fresh lamina with `--idle-timeout 0.2`; a few threads each own a function and, every round,
change its environment (UpdateFunctionConfiguration retires the warm instance) and invoke it,
so every invoke is a genuine cold start, counted by the REPORT line's `Init Duration`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.e2e.server import Server, create
from tests.security.harness import (
    children_of,
    init_duration_ms,
    invoke,
    leftover_processes,
    pid_gone,
    result,
    run_dirs,
    wait_for,
)

COLD_STARTS = 2000
THREADS = 4
FIRST = 100  # the fd count is sampled after this many cold starts, and again at the end
FD_SLACK = 8

CODE = """
import os
def handler(event, context):
    return {"round": os.environ["ROUND"]}
"""


def _mounts() -> set[tuple[str, str, str]]:
    """(mount point, fs type, source) of every mount in the host's mount namespace."""
    found = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, source = right.split()[:2]
        found.add((left.split()[4], fstype, source))
    return found


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) if m else 0


def _our_links(server_pid: int) -> list[str]:
    """lamina's host veths owned by this lamina process (their alias names the owner), and any
    without an owner (which no sweep could ever attribute). Other laminas may share the host."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return [
        ln
        for ln in out.stdout.splitlines()
        if re.search(r"^\d+: lamina", ln)
        and (f"owner={server_pid}." in ln or "alias lamina owner=" not in ln)
    ]


def test_cold_starts_leave_nothing_behind(tmp_path: Path) -> None:
    mounts_before = _mounts()
    server = Server(tmp_path / "data", "--idle-timeout", "0.2").start()
    assert server.proc is not None
    pid = server.proc.pid
    try:
        lam = server.client(read_timeout=60)
        names = [f"leak-{t}" for t in range(THREADS)]
        for name in names:
            create(lam, name, CODE, MemorySize=1769, Environment={"Variables": {"ROUND": "-"}})

        counts = {"cold": 0, "warm": 0}
        init_ms: list[float] = []
        lock = threading.Lock()
        errors: list[BaseException] = []

        # boto3 makes clients from one shared session, which is not thread-safe: make them here.
        clients = {name: server.client(read_timeout=60) for name in names}

        def drive(name: str, rounds: range) -> None:
            client = clients[name]
            try:
                for r in rounds:
                    env = {"Variables": {"ROUND": f"{name}-{r}"}}
                    client.update_function_configuration(FunctionName=name, Environment=env)
                    out = invoke(client, name, {})
                    assert result(out)["round"] == f"{name}-{r}"
                    init = init_duration_ms(out["log"])
                    with lock:
                        counts["cold" if init is not None else "warm"] += 1
                        if init is not None:
                            init_ms.append(init)
            except BaseException as e:
                errors.append(e)

        def phase(total: int, start: int) -> float:
            began = time.monotonic()
            per = total // THREADS
            threads = [
                threading.Thread(target=drive, args=(n, range(start, start + per))) for n in names
            ]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            assert not errors, errors[0]
            return time.monotonic() - began

        first_s = phase(FIRST, 0)
        fds_first, rss_first = _fds(pid), _rss_kb(pid)
        rest_s = phase(COLD_STARTS - FIRST, FIRST)
        elapsed = first_s + rest_s
        assert counts == {"cold": COLD_STARTS, "warm": 0}, counts
        time.sleep(0.5)  # let the reaper stop the last idle instances
        fds_last, rss_last = _fds(pid), _rss_kb(pid)
        zygotes = children_of(pid)
        assert zygotes
        assert run_dirs(pid)  # the run's cgroups exist while it runs (the check below is real)
        assert _our_links(pid)  # so do its veths (the pooled namespaces)
        print(
            f"\n{COLD_STARTS} cold starts in {elapsed:.1f} s ({COLD_STARTS / elapsed:.1f}/s,"
            f" {THREADS} threads); init p50 {sorted(init_ms)[len(init_ms) // 2]:.1f} ms;"
            f" server fds {fds_first} after {FIRST} -> {fds_last} at the end;"
            f" RSS {rss_first // 1024} -> {rss_last // 1024} MB"
        )
        assert fds_last <= fds_first + FD_SLACK, (fds_first, fds_last)
    finally:
        code = server.stop(signal.SIGTERM)
    assert code == 0, server.log[-3000:]

    assert run_dirs(pid) == []
    assert all(pid_gone(z) for z in zygotes), zygotes
    assert leftover_processes(pid) == []
    wait_for(lambda: _our_links(pid) == [], 10, "lamina's veths gone")
    assert _mounts() - mounts_before == set()
