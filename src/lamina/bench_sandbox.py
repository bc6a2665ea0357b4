"""Sandbox figures for `lamina bench` (isolation `namespaces`), measured on the same server:

- `exec_baseline_cold_ms`: the same no-op function cold-started by exec'ing a fresh Python
  interpreter inside the same isolation (a `provided.al2023` function whose `bootstrap` execs
  /usr/bin/python3 on lamina's Python bootstrap) — what the zygote saves;
- `sandbox_rate`: new sandboxes per second when many cold starts are asked for at once;
- `idle_uss_kib`: private memory (USS) of idle warm instances, from /proc/<pid>/smaps_rollup;
- `idle_instances`: how many idle warm instances were held at once, and a warm invoke's latency
  while they were.
"""

from __future__ import annotations

import argparse
import base64
import glob
import io
import statistics
import threading
import time
import zipfile
from typing import Any

from lamina.runtimes.registry import BOOTSTRAP

EXEC_BOOTSTRAP = "#!/bin/sh\nexec /usr/bin/python3 -I -S /var/task/lamina_bootstrap.py\n"


def _zip_exec_baseline(noop: str) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", noop)
        zf.writestr("lamina_bootstrap.py", BOOTSTRAP.read_text())
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o100755 << 16
        zf.writestr(info, EXEC_BOOTSTRAP)
    return base64.b64encode(buf.getvalue()).decode()


def _uss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
    except OSError:
        return None
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty") if k in fields)


def _uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return int(next(line for line in fh if line.startswith("Uid:")).split()[1])
    except (OSError, StopIteration):
        return None


def instance_pids(server_pid: int) -> dict[str, list[int]]:
    """Each instance cgroup of that server, with its processes (init and runtime)."""
    found: dict[str, list[int]] = {}
    for procs in glob.glob(f"/sys/fs/cgroup/pids/lamina/run-{server_pid}-*/*/cgroup.procs"):
        try:
            with open(procs) as fh:
                pids = [int(p) for p in fh.read().split()]
            if not any(_uid(p) == 0 for p in pids):  # a blank's runtime waits as root
                found[procs] = pids
        except OSError:
            continue
    return found


def measure(client: Any, server_pid: int, args: argparse.Namespace, helpers: Any) -> dict[str, Any]:
    """`client` is bench.RawClient; `helpers` the bench module (create/zip/summary)."""
    noop = helpers.NOOP
    out: dict[str, Any] = {}

    # 1. exec baseline: same isolation, a fresh interpreter per cold start
    code = _zip_exec_baseline(noop)
    cold = []
    for i in range(max(10, args.cold // 2)):
        name = f"bench-exec-{i}"
        # a fresh interpreter at a small MemorySize gets a small CPU share: give it time
        helpers.create(client, name, code, args.memory, runtime="provided.al2023", timeout=60)
        t = time.perf_counter()
        status, hdrs, body = client.request("POST", helpers.invoke_path(name), b"{}")
        cold.append((time.perf_counter() - t) * 1000)
        if status != 200 or "x-amz-function-error" in hdrs:
            raise RuntimeError(f"exec baseline failed: {status} {body[:300]!r}")
        client.request("DELETE", f"/2015-03-31/functions/{name}")
    out["exec_baseline_cold_ms"] = helpers.summary(cold)

    # 2. sandbox creation rate: N functions, all invoked at once from several connections
    noop_zip = helpers.zip_source(noop)
    n = args.rate_instances
    for i in range(n):
        helpers.create(client, f"bench-rate-{i}", noop_zip, args.memory, args.runtime)
    queue = list(range(n))
    lock = threading.Lock()
    failures = [0]

    def worker() -> None:
        c = helpers.RawClient(*client.address)
        while True:
            with lock:
                if not queue:
                    break
                i = queue.pop()
            status, hdrs, _ = c.request("POST", helpers.invoke_path(f"bench-rate-{i}"), b"{}")
            if status != 200 or "x-amz-function-error" in hdrs:
                failures[0] += 1
        c.close()

    threads = [threading.Thread(target=worker) for _ in range(args.rate_concurrency)]
    began = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - began
    out["sandbox_rate"] = {
        "sandboxes": n,
        "concurrency": args.rate_concurrency,
        "seconds": round(elapsed, 3),
        "per_second": round(n / elapsed, 1),
        "failures": failures[0],
    }

    # 3. idle USS and N idle instances at once (the rate run left n idle instances)
    extra = max(0, args.idle - n)
    for i in range(extra):
        name = f"bench-idle-{i}"
        helpers.create(client, name, noop_zip, args.memory, args.runtime)
        client.request("POST", helpers.invoke_path(name), b"{}")
    time.sleep(0.5)
    groups = instance_pids(server_pid)
    uss = [sum(_uss_kib(p) or 0 for p in pids) for pids in groups.values() if pids]
    out["idle_uss_kib"] = {  # per instance: its init plus its runtime
        "instances": len(uss),
        "p50": statistics.median(uss) if uss else None,
        "p99": sorted(uss)[int(0.99 * len(uss))] if uss else None,
        "total_mib": round(sum(uss) / 1024, 1),
    }
    warm = []
    for _ in range(200):
        t = time.perf_counter()
        status, _, _ = client.request("POST", helpers.invoke_path("bench-noop"), b"{}")
        warm.append((time.perf_counter() - t) * 1000)
    out["idle_instances"] = {
        "held": len(groups),
        "warm_ms_while_held": helpers.summary(warm),
    }
    return out
