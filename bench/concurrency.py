"""Benchmark of reserved concurrency and of async invokes over HTTP; prints JSON.

.venv/bin/python bench/concurrency.py [--burst 500 --reserved 50] [--events 2000 --clients 32]
                                      [--paced 500,1000,1500,2000 --paced-seconds 3]

Starts a fresh `lamina serve` (default `namespaces` isolation) and talks to it over raw
HTTP/1.1 keep-alive connections (`lamina.bench.RawClient`).

* burst: a function (MemorySize 1769) whose handler sleeps 0.2 s and returns its start and
  end times (`time.time()`: a monotonic clock does not cross processes), with reserved
  concurrency `--reserved`; `--burst` threads, each with its own connection, released together
  by a barrier, each sending one sync invoke. Done twice: `cold` (no instance yet) and `warm`
  (the instances the first burst left). Reported: how many succeeded, how many got 429 (and
  their `Reason`), and the most handler executions overlapping in time, computed from the
  returned start/end times (must not exceed the reservation).
* async: `--events` `Event` invokes from `--clients` connections against a function that only
  sends `<id> <time.time()>` over TCP to a listener this script runs on the host (reached at the
  host part of the function's AWS_ENDPOINT_URL). Reported: accepted/s, and accepted ->
  handler-started latency (which includes the backlog the burst builds up).
* paced: the same function, `Event` invokes sent on a fixed schedule at each `--paced` rate
  for `--paced-seconds`: the rate achieved and accepted -> started latency when sustained.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import threading
import time
from typing import Any

import uvloop

from lamina.bench import (
    BENCH_ROLE,
    AsyncRawClient,
    RawClient,
    _serve,
    create,
    invoke_path,
    pct,
    zip_source,
)

EVENT = {"X-Amz-Invocation-Type": "Event"}
SLEEPER = """
import time

def handler(event, context):
    start = time.time()
    time.sleep(0.2)
    return {"start": start, "end": time.time()}
"""

REPORTER = """
import os, socket, time, urllib.parse

HOST = urllib.parse.urlsplit(os.environ["AWS_ENDPOINT_URL"]).hostname
PORT = int(os.environ["BENCH_PORT"])

CONN = None

def handler(event, context):
    global CONN
    started = time.time()
    line = ("%s %.6f\\n" % (event["id"], started)).encode()
    try:  # one connection per instance, kept: the report costs a send, not a TCP handshake
        if CONN is None:
            CONN = socket.create_connection((HOST, PORT), timeout=10)
        CONN.sendall(line)
    except OSError:
        CONN = socket.create_connection((HOST, PORT), timeout=10)
        CONN.sendall(line)
    return None
"""


class Listener:
    """A TCP listener on the host collecting `<id> <time>` lines (each instance keeps one
    connection and sends a line per event)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("0.0.0.0", 0), backlog=1024)
        self.port = self.sock.getsockname()[1]
        self.started: dict[str, float] = {}
        self._cond = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        pending = b""
        with conn:
            while chunk := conn.recv(65536):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                with self._cond:
                    for line in lines:
                        key, _, ts = line.decode().partition(" ")
                        self.started.setdefault(key, float(ts))
                    self._cond.notify_all()

    def wait(self, keys: set[str], timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: keys <= self.started.keys(), timeout)

    def close(self) -> None:
        self.sock.close()


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, delta in points:
        running += delta
        peak = max(peak, running)
    return peak


def burst(host: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    admin = RawClient(host, port)
    name = "bench-reserved"
    create(admin, name, zip_source(SLEEPER), 1769)
    body = json.dumps({"ReservedConcurrentExecutions": args.reserved}).encode()
    status, _, data = admin.request("PUT", f"/2017-10-31/functions/{name}/concurrency", body)
    if status != 200:
        raise RuntimeError(f"PutFunctionConcurrency: {status} {data!r}")
    admin.close()

    return {
        "function": {"memory_mb": 1769, "handler_sleep_s": 0.2},
        "reserved_concurrency": args.reserved,
        "invokes": args.burst,
        # the first burst meets no instance (cold starts spread the executions out); by the
        # second, the first has left `reserved` warm instances
        "cold": _fire(host, port, name, args),
        "warm": _fire(host, port, name, args),
    }


def _fire(host: str, port: int, name: str, args: argparse.Namespace) -> dict[str, Any]:
    path = invoke_path(name)
    results: list[tuple[int, dict[str, str], bytes] | None] = [None] * args.burst
    clients = [RawClient(host, port) for _ in range(args.burst)]
    barrier = threading.Barrier(args.burst + 1)

    def one(i: int) -> None:
        barrier.wait()
        results[i] = clients[i].request("POST", path, b"{}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.burst)]
    for th in threads:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    for c in clients:
        c.close()

    ok, intervals, other = 0, [], []
    reasons: dict[str, int] = {}
    throttled = 0
    for res in results:
        assert res is not None
        status, hdrs, data = res
        if status == 200 and "x-amz-function-error" not in hdrs:
            ok += 1
            out = json.loads(data)
            intervals.append((out["start"], out["end"]))
        elif status == 429:
            throttled += 1
            reason = json.loads(data).get("Reason", "?")
            reasons[reason] = reasons.get(reason, 0) + 1
        else:
            other.append(f"{status} {data[:200]!r}")
    peak = max_overlap(intervals)
    return {
        "seconds": round(elapsed, 3),
        "succeeded": ok,
        "throttled_429": throttled,
        "throttle_reasons": reasons,
        "other": other[:5],
        "max_overlapping_executions": peak,
        "within_reservation": peak <= args.reserved,
    }


def _cpu_s(pid: int) -> float:
    """user + system CPU seconds of `pid` and its reaped children (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of lamina and everything it runs (zygotes and instances included)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or _descends(int(entry), pid):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _descends(pid: int, ancestor: int) -> bool:
    for _ in range(8):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def _reporter(host: str, port: int, name: str) -> tuple[Listener, str]:
    """The REPORTER function, created and warmed (64 instances), and its listener."""
    listener = Listener()
    admin = RawClient(host, port)
    body = json.dumps(
        {
            "FunctionName": name,
            "Runtime": f"python{sys.version_info.major}.{sys.version_info.minor}",
            "Handler": "app.handler",
            "Role": BENCH_ROLE,
            "MemorySize": 1769,
            "Code": {"ZipFile": zip_source(REPORTER)},
            "Environment": {"Variables": {"BENCH_PORT": str(listener.port)}},
        }
    ).encode()
    status, _, data = admin.request("POST", "/2015-03-31/functions", body)
    if status != 201:
        raise RuntimeError(f"CreateFunction {name}: {status} {data!r}")
    path = invoke_path(name)
    # warm up: a few instances, so the run measures the queue more than cold starts
    warm = {f"{name}-w{i}" for i in range(64)}
    for key in warm:
        status, _, data = admin.request("POST", path, json.dumps({"id": key}).encode(), EVENT)
        assert status == 202, (status, data)
    listener.wait(warm, 60)
    admin.close()
    return listener, path


def async_events(host: str, port: int, args: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    listener, path = _reporter(host, port, "bench-event")
    accepted: dict[str, float] = {}
    errors: list[str] = []
    keys = iter([f"e{i}" for i in range(args.events)])

    async def burst() -> float:
        """`--clients` connections, one thread (asyncio): each sends the next key until none
        are left; the seconds it took."""
        conns = [await AsyncRawClient.open(host, port) for _ in range(args.clients)]

        async def client(c: AsyncRawClient) -> None:
            for key in keys:  # one thread: the iterator is shared safely
                status, data = await c.request(
                    "POST", path, json.dumps({"id": key}).encode(), EVENT
                )
                if status == 202:
                    accepted[key] = time.time()
                else:
                    errors.append(f"{status} {data[:200]!r}")
            await c.close()

        began = time.perf_counter()
        await asyncio.gather(*(client(c) for c in conns))
        return time.perf_counter() - began

    cpu0 = (_cpu_s(server_pid), _tree_cpu_s(server_pid), time.process_time())
    t0 = time.perf_counter()
    accept_s = uvloop.run(burst())
    listener.wait(set(accepted), 120)
    ran_s = time.perf_counter() - t0
    cpu1 = (_cpu_s(server_pid), _tree_cpu_s(server_pid), time.process_time())
    started = dict(listener.started)
    listener.close()
    lat = [(started[k] - accepted[k]) * 1000 for k in accepted if k in started]
    return {
        "function": {"memory_mb": 1769, "handler": "sends its start time over TCP to the host"},
        "events": args.events,
        "clients": args.clients,
        "accepted": len(accepted),
        "errors": errors[:5],
        "accept_s": round(accept_s, 3),
        "accepted_per_s": round(len(accepted) / accept_s, 1),
        "all_started_s": round(ran_s, 3),
        "started": len(lat),
        "cpu_s_until_all_started": {  # on a 2-core machine, wall x 2 is all there is
            "lamina": round(cpu1[0] - cpu0[0], 2),
            "lamina_with_instances": round(cpu1[1] - cpu0[1], 2),
            "this_client": round(cpu1[2] - cpu0[2], 2),
        },
        "accepted_to_started_ms": {
            "p50": round(pct(lat, 0.5), 2) if lat else None,
            "p99": round(pct(lat, 0.99), 2) if lat else None,
        },
    }


class _Paced:
    """One paced run: `n` events at `rate`/s from `clients` connections, on a schedule."""

    def __init__(self, host: str, port: int, path: str, rate: float, n: int, clients: int):
        self.host, self.port, self.path = host, port, path
        self.rate, self.n, self.clients = rate, n, clients
        self.accepted: dict[str, float] = {}
        self.late = 0
        self.t0 = 0.0

    def run(self) -> float:
        """Send everything; the seconds it took."""
        return uvloop.run(self._run())

    async def _run(self) -> float:
        conns = [await AsyncRawClient.open(self.host, self.port) for _ in range(self.clients)]
        self.t0 = time.perf_counter() + 0.2
        await asyncio.gather(*(self._client(k, c) for k, c in enumerate(conns)))
        return time.perf_counter() - self.t0

    async def _client(self, k: int, c: AsyncRawClient) -> None:
        period = self.clients / self.rate
        for step, i in enumerate(range(k, self.n, self.clients)):
            wait = self.t0 + k / self.rate + step * period - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.05:
                self.late += 1
            key = f"r{self.rate}-{i}"
            status, _ = await c.request("POST", self.path, json.dumps({"id": key}).encode(), EVENT)
            if status == 202:
                self.accepted[key] = time.time()
        await c.close()


def async_paced(
    host: str, port: int, args: argparse.Namespace, server_pid: int
) -> list[dict[str, Any]]:
    """Sustained load: for each rate in `--paced`, `Event` invokes sent on a fixed schedule
    (open loop, `--clients` connections on one asyncio thread) for `--paced-seconds`;
    reported per rate: the rate achieved, accepted -> started latency, and whether the
    handlers kept up."""
    listener, path = _reporter(host, port, "bench-paced")
    out = []
    for rate in args.paced:
        run = _Paced(host, port, path, rate, int(rate * args.paced_seconds), args.clients)
        cpu0 = _cpu_s(server_pid)
        sent_s = run.run()
        listener.wait(set(run.accepted), 120)
        done_s = time.perf_counter() - run.t0
        started = dict(listener.started)
        lat = [(started[k] - t) * 1000 for k, t in run.accepted.items() if k in started]
        out.append(
            {
                "target_per_s": rate,
                "events": run.n,
                "accepted": len(run.accepted),
                "accepted_per_s": round(len(run.accepted) / sent_s, 1),
                "all_started_per_s": round(len(lat) / done_s, 1),
                "sends_late_over_50ms": run.late,
                "lamina_cpu_s": round(_cpu_s(server_pid) - cpu0, 2),
                "accepted_to_started_ms": {
                    "p50": round(pct(lat, 0.5), 2) if lat else None,
                    "p99": round(pct(lat, 0.99), 2) if lat else None,
                },
            }
        )
    listener.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isolation", default="namespaces", choices=["namespaces", "process"])
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--reserved", type=int, default=50)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--paced",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[500.0, 1000.0, 1500.0, 2000.0],
        help="sustained Event rates to hold, comma-separated (events/s)",
    )
    parser.add_argument("--paced-seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lamina-bench-") as data:
        proc, host, port = _serve(data, args.isolation)
        try:
            result = {
                "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                "isolation": args.isolation,
                "reserved_burst": burst(host, port, args),
                "async_over_http": async_events(host, port, args, proc.pid),
                "async_paced_over_http": async_paced(host, port, args, proc.pid),
            }
        finally:
            proc.terminate()
            proc.wait(60)
            if proc.stderr is not None:
                proc.stderr.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
