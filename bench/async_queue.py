"""Benchmark of the durable async queue; prints JSON.

.venv/bin/python bench/async_queue.py [--events 5000] [--clients 256] [--paced 300 --rate 200]

In-process (no HTTP): a Platform with `--isolation process` in a temporary data dir, one
function whose handler appends `<id> <time>` to a file when it starts. Every `Event` invoke
goes through `Invoker.invoke`, so each accepted event is committed to SQLite (WAL,
synchronous=NORMAL, grouped commits) before it counts as accepted.

* burst: `--events` events from `--clients` concurrent callers, as fast as they are accepted:
  the accept rate, and accepted -> handler-started latency (which includes the backlog).
* paced: `--paced` events at `--rate`/s: accepted -> handler-started latency without a backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import uvloop

from lamina.auth.sessions import LAMBDA_TRUST_POLICY
from lamina.config import Settings
from lamina.invoke.router import InvokeRequest
from lamina.platform import Platform

HANDLER = """
import os, time
OUT = os.environ["BENCH_OUT"]
def handler(event, context):
    with open(OUT, "a") as fh:
        fh.write("%s %.6f\\n" % (event["id"], time.time()))
    return None
"""


def _zip() -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", HANDLER)
    return base64.b64encode(buf.getvalue()).decode()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _latency(accepted: dict[str, float], started: dict[str, float]) -> dict[str, Any]:
    lat = [(started[k] - accepted[k]) * 1000 for k in accepted if k in started]
    return {
        "ran": len(lat),
        "p50_ms": round(_pct(lat, 0.5), 2),
        "p90_ms": round(_pct(lat, 0.9), 2),
        "p99_ms": round(_pct(lat, 0.99), 2),
        "mean_ms": round(statistics.fmean(lat), 2) if lat else 0.0,
    }


def _started(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, ts = line.partition(" ")
            out.setdefault(key, float(ts))
    return out


async def _wait_ran(path: Path, keys: set[str], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if keys <= set(_started(path)):
            return
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lamina-bench-") as tmp:
        out = Path(tmp) / "started.txt"
        settings = Settings(data_dir=str(Path(tmp) / "data"), isolation="process")
        os.environ.setdefault("LAMINA_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
        platform = Platform.build(settings)
        platform.start()
        try:
            name = "bench-async"
            platform.iam.create_role("bench", LAMBDA_TRUST_POLICY)  # CreateFunction checks the role
            py = f"python{sys.version_info.major}.{sys.version_info.minor}"
            await platform.functions.create(
                {
                    "FunctionName": name,
                    "Runtime": py,
                    "Handler": "app.handler",
                    "Role": "arn:aws:iam::000000000000:role/bench",
                    "Code": {"ZipFile": _zip()},
                    "Environment": {"Variables": {"BENCH_OUT": str(out)}},
                }
            )
            invoker = platform.invoker

            async def accept(key: str, into: dict[str, float]) -> None:
                payload = json.dumps({"id": key}).encode()
                req = InvokeRequest(name, payload, invocation_type="Event")
                result = await invoker.invoke(req)
                assert result.status == 202
                into[key] = time.time()

            # warm up instances so the burst measures the queue, not cold starts
            warm: dict[str, float] = {}
            await asyncio.gather(*(accept(f"w{i}", warm) for i in range(64)))
            await _wait_ran(out, set(warm), 60)

            burst: dict[str, float] = {}
            keys = [f"b{i}" for i in range(args.events)]
            it = iter(keys)

            async def client() -> None:
                for key in it:
                    await accept(key, burst)

            t0 = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(args.clients)))
            accept_s = time.perf_counter() - t0
            await _wait_ran(out, set(keys), 300)
            drained_s = time.perf_counter() - t0

            paced: dict[str, float] = {}
            tasks = []
            for i in range(args.paced):
                tasks.append(asyncio.create_task(accept(f"p{i}", paced)))
                await asyncio.sleep(1 / args.rate)
            await asyncio.gather(*tasks)
            await _wait_ran(out, set(paced), 60)
            started = _started(out)
            return {
                "mode": "in-process (Invoker.invoke, no HTTP), isolation process",
                "cpus": os.cpu_count(),
                "durability": "commit before accept; WAL, synchronous=NORMAL, grouped commits",
                "burst": {
                    "events": args.events,
                    "clients": args.clients,
                    "accept_s": round(accept_s, 3),
                    "accepted_per_s": round(args.events / accept_s, 1),
                    "all_ran_s": round(drained_s, 3),
                    "ran_per_s": round(args.events / drained_s, 1),
                    "accepted_to_started": _latency(burst, started),
                },
                "paced": {
                    "events": args.paced,
                    "rate_per_s": args.rate,
                    "accepted_to_started": _latency(paced, started),
                },
            }
        finally:
            await platform.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--paced", type=int, default=300)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    print(json.dumps(uvloop.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
