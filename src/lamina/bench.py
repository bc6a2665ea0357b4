"""`lamina bench`: start a fresh lamina, measure the invoke path, print JSON.

Measured over raw HTTP/1.1 keep-alive connections (no SDK in the way), for a no-op Python
function:

- `baseline_health_ms`: round trips to `GET /_lamina/health` — the server's floor, same run;
- `warm_ms`: Invoke at concurrency 1 on a warm instance (p50/p99);
- `throughput`: Invokes per second at concurrency N, each connection in its own thread;
- `cold_ms`: the first Invoke of a new function (a forced cold start), client-observed;
- `init_ms`: the Init Duration lamina reports for those cold starts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zipfile
from typing import Any

from lamina.auth.sessions import LAMBDA_TRUST_POLICY

NOOP = "def handler(event, context):\n    return None\n"
_INIT = re.compile(r"Init Duration: ([0-9.]+) ms")


# Every bench server gets a root key of its own; RawClient signs every request with it (SigV4,
# as any AWS client does), so the figures include the server's signature check.
BENCH_KEY_ID = "AKIABENCH" + secrets.token_hex(6).upper()[:11]
BENCH_SECRET = secrets.token_urlsafe(30)[:40]
BENCH_ROLE = "arn:aws:iam::000000000000:role/bench"


class Signer:
    """A small SigV4 signer for the bench's raw requests (paths and queries it builds itself:
    already URL-safe), cheaper than botocore's so the client's cost stays out of the figures."""

    def __init__(self, key_id: str, secret: str, region: str = "us-east-1") -> None:
        self.key_id, self.secret, self.region = key_id, secret, region
        self._keys: dict[tuple[str, str], bytes] = {}

    def headers(
        self, method: str, host: str, path: str, body: bytes, service: str, extra: dict[str, str]
    ) -> dict[str, str]:
        now = time.gmtime()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", now)
        day = amz_date[:8]
        path, _, query = path.partition("?")
        canonical_query = "&".join(sorted(query.split("&"))) if query else ""
        signed = {"host": host, "x-amz-date": amz_date}
        signed.update({k.lower(): v.strip() for k, v in extra.items()})
        names = sorted(signed)
        canonical = "\n".join(
            [
                method,
                urllib.parse.quote(path, safe="/~") if service != "s3" else path,
                canonical_query,
                "".join(f"{n}:{signed[n]}\n" for n in names),
                ";".join(names),
                hashlib.sha256(body).hexdigest(),
            ]
        )
        scope = f"{day}/{self.region}/{service}/aws4_request"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
            + hashlib.sha256(canonical.encode()).hexdigest()
        )
        key = self._keys.get((day, service))
        if key is None:
            key = ("AWS4" + self.secret).encode()
            for part in (day, self.region, service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys[(day, service)] = key
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        return {
            "X-Amz-Date": amz_date,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={self.key_id}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}",
        }


def encode(
    signer: Signer,
    host: str,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str] | None,
    service: str,
) -> bytes:
    """One signed HTTP/1.1 request, as bytes."""
    extra = dict(headers or {})
    auth = signer.headers(method, host, path, body, service, extra)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in {**extra, **auth}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class AsyncRawClient:
    """RawClient on asyncio streams: many connections from one thread (a cheaper load
    generator, when the client shares the machine with the server)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host
        self.signer = Signer(BENCH_KEY_ID, BENCH_SECRET)

    @classmethod
    async def open(cls, host: str, port: int) -> AsyncRawClient:
        reader, writer = await asyncio.open_connection(host, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, f"{host}:{port}")

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        self.writer.write(encode(self.signer, self.host, method, path, body, headers, "lambda"))
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


class RawClient:
    """A minimal HTTP/1.1 client on one keep-alive connection; signs as the bench's root key."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.host = f"{host}:{port}"
        self.address = (host, port)
        self.signer = Signer(BENCH_KEY_ID, BENCH_SECRET)

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        service: str = "lambda",
    ) -> tuple[int, dict[str, str], bytes]:
        self.sock.sendall(encode(self.signer, self.host, method, path, body, headers, service))
        status = int(self.file.readline().split()[1])
        hdrs: dict[str, str] = {}
        while True:
            line = self.file.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            hdrs[k.strip().lower()] = v.strip()
        data = self.file.read(int(hdrs.get("content-length", "0")))
        return status, hdrs, data

    def ensure_role(self, arn: str = BENCH_ROLE) -> None:
        """The execution role bench functions use (lamina checks that it exists)."""
        form = urllib.parse.urlencode(
            {
                "Action": "CreateRole",
                "Version": "2010-05-08",
                "RoleName": arn.rsplit("/", 1)[1],
                "AssumeRolePolicyDocument": LAMBDA_TRUST_POLICY,
            }
        ).encode()
        ctype = {"Content-Type": "application/x-www-form-urlencoded"}
        status, _, data = self.request("POST", "/", form, ctype, service="iam")
        if status != 200 and b"EntityAlreadyExists" not in data:
            raise RuntimeError(f"CreateRole: {status} {data[:300]!r}")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": pct(values, 0.50),
        "p99": pct(values, 0.99),
        "mean": round(statistics.fmean(values), 3),
    }


def zip_source(source: str) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", source)
    return base64.b64encode(buf.getvalue()).decode()


_OWN_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"


def create(
    client: RawClient,
    name: str,
    code_b64: str,
    memory: int,
    runtime: str | None = None,
    timeout: int = 3,
) -> None:
    body = json.dumps(
        {
            "MemorySize": memory,
            "Timeout": timeout,
            "FunctionName": name,
            "Runtime": runtime or _OWN_RUNTIME,
            "Handler": "app.handler",
            "Role": BENCH_ROLE,
            "Code": {"ZipFile": code_b64},
        }
    ).encode()
    status, _, data = client.request("POST", "/2015-03-31/functions", body)
    if status != 201:
        raise RuntimeError(f"CreateFunction {name}: {status} {data!r}")


def invoke_path(name: str) -> str:
    return f"/2015-03-31/functions/{name}/invocations"


def measure(host: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    client = RawClient(host, port)
    code = zip_source(NOOP)
    create(client, "bench-noop", code, args.memory, args.runtime)
    path = invoke_path("bench-noop")

    health = []
    for _ in range(max(200, args.warm // 4)):
        t = time.perf_counter()
        client.request("GET", "/_lamina/health")
        health.append((time.perf_counter() - t) * 1000)

    for _ in range(50):  # warm up: one instance, caches, branch predictors
        client.request("POST", path, b"{}")
    warm = []
    for _ in range(args.warm):
        t = time.perf_counter()
        status, _, _ = client.request("POST", path, b"{}")
        warm.append((time.perf_counter() - t) * 1000)
        assert status == 200

    # throughput at concurrency N: N connections, each in its own thread
    stop = time.monotonic() + args.throughput_seconds
    counts = [0] * args.concurrency
    errors = [0] * args.concurrency

    def worker(i: int) -> None:
        c = RawClient(host, port)
        c.request("POST", path, b"{}")  # warm this connection's instance
        barrier.wait()
        while time.monotonic() < stop:
            status, hdrs, _ = c.request("POST", path, b"{}")
            if status == 200 and "x-amz-function-error" not in hdrs:
                counts[i] += 1
            else:
                errors[i] += 1
        c.close()

    barrier = threading.Barrier(args.concurrency + 1)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
    for th in threads:
        th.start()
    barrier.wait()
    began = time.monotonic()
    stop = began + args.throughput_seconds
    for th in threads:
        th.join()
    elapsed = time.monotonic() - began

    cold, init = [], []
    for i in range(args.cold):
        name = f"bench-cold-{i}"
        create(client, name, code, args.memory, args.runtime)
        t = time.perf_counter()
        status, hdrs, _ = client.request(
            "POST", invoke_path(name), b"{}", {"X-Amz-Log-Type": "Tail"}
        )
        cold.append((time.perf_counter() - t) * 1000)
        m = _INIT.search(base64.b64decode(hdrs.get("x-amz-log-result", "")).decode())
        if m:
            init.append(float(m.group(1)))
        client.request("DELETE", f"/2015-03-31/functions/{name}")
    client.close()
    return {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "function": {"runtime": args.runtime or _OWN_RUNTIME, "memory_mb": args.memory},
        "baseline_health_ms": summary(health),
        "warm_ms": summary(warm),
        "throughput": {
            "concurrency": args.concurrency,
            "seconds": round(elapsed, 2),
            "invokes": sum(counts),
            "errors": sum(errors),
            "per_second": round(sum(counts) / elapsed, 1),
        },
        "cold_ms": summary(cold),
        "init_ms": summary(init) if init else None,
    }


def _drain(stream: Any) -> None:
    for _ in stream:
        pass


def _serve(data: str, isolation: str, *extra: str) -> tuple[subprocess.Popen[str], str, int]:
    argv = [sys.executable, "-m", "lamina", "serve", "--port", "0", "--data-dir", data]
    argv += ["--isolation", isolation, *extra]
    env = {**os.environ, "LAMINA_LOG_LEVEL": "warning"}
    env.update(LAMINA_ACCESS_KEY_ID=BENCH_KEY_ID, LAMINA_SECRET_ACCESS_KEY=BENCH_SECRET)
    env.setdefault("LAMINA_MASTER_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:
        m = re.search(r"lamina ready on http://([^:]+):(\d+)", line)
        if m:
            threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
            host, port = m.group(1), int(m.group(2))
            admin = RawClient(host, port)
            try:
                admin.ensure_role()
            finally:
                admin.close()
            return proc, host, port
    proc.wait(30)
    raise RuntimeError(f"lamina serve --isolation {isolation} did not start")


def bench_one(isolation: str, args: argparse.Namespace) -> dict[str, Any]:
    from lamina import bench_sandbox

    with tempfile.TemporaryDirectory(prefix="lamina-bench-") as data:
        proc, host, port = _serve(data, isolation)
        try:
            result = measure(host, port, args)
            result["function"]["isolation"] = isolation
            if isolation == "namespaces":
                client = RawClient(host, port)
                try:
                    result |= bench_sandbox.measure(client, proc.pid, args, sys.modules[__name__])
                finally:
                    client.close()
        finally:
            proc.terminate()
            proc.wait(60)
            if proc.stderr is not None:
                proc.stderr.close()
    return result


def interleaved_warm(args: argparse.Namespace) -> dict[str, Any]:
    """Warm latency of both isolation modes, and of `namespaces` without authentication,
    measured alternately, one request to each server in turn, so that whatever else the
    machine does affects all alike. The last shows what SigV4 + the policy check cost."""
    modes = ("process", "namespaces", "namespaces_no_auth")
    flags: tuple[tuple[str, ...], ...] = (
        ("process",),
        ("namespaces",),
        ("namespaces", "--no-auth"),
    )
    with (
        tempfile.TemporaryDirectory(prefix="lamina-bench-") as d1,
        tempfile.TemporaryDirectory(prefix="lamina-bench-") as d2,
        tempfile.TemporaryDirectory(prefix="lamina-bench-") as d3,
    ):
        servers = [_serve(d, *f) for d, f in zip((d1, d2, d3), flags, strict=True)]
        try:
            clients = [RawClient(host, port) for _proc, host, port in servers]
            for c in clients:
                create(c, "bench-noop", zip_source(NOOP), args.memory, args.runtime)
                for _ in range(50):
                    c.request("POST", invoke_path("bench-noop"), b"{}")
            times: list[list[float]] = [[] for _ in modes]
            for _ in range(args.warm):
                for i, c in enumerate(clients):
                    t = time.perf_counter()
                    c.request("POST", invoke_path("bench-noop"), b"{}")
                    times[i].append((time.perf_counter() - t) * 1000)
            for c in clients:
                c.close()
        finally:
            for proc, _h, _p in servers:
                proc.terminate()
                proc.wait(60)
                if proc.stderr is not None:
                    proc.stderr.close()
    out: dict[str, Any] = {m: summary(t) for m, t in zip(modes, times, strict=True)}
    base, iso = out["process"]["p50"], out["namespaces"]["p50"]
    out["namespaces_p50_vs_process"] = f"{(iso / base - 1) * 100:+.1f}%"
    out["auth_cost_p50_ms"] = round(iso - out["namespaces_no_auth"]["p50"], 3)
    return out


def run(args: argparse.Namespace) -> int:
    modes = ["process", "namespaces"] if args.isolation == "both" else [args.isolation]
    results: dict[str, Any] = {mode: bench_one(mode, args) for mode in modes}
    if len(results) == 2:
        results["warm_interleaved_ms"] = interleaved_warm(args)
    print(json.dumps(results if len(results) > 1 else results[modes[0]], indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    from lamina.cli import build_parser

    return run(build_parser().parse_args(["bench", *(argv or sys.argv[1:])]))


if __name__ == "__main__":
    sys.exit(main())
