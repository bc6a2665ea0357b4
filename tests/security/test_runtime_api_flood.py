"""Connections to an instance's own Runtime API are accepted by lamina's process: an instance
that opens thousands of them must not use up lamina's file descriptors and starve every other
function (and lamina's own API).

This attack runs against a lamina of its own, so that a failure cannot disturb the other
attacks. lamina inherits its fd limit from whoever starts it (systemd's default soft limit is
1,024); the test sets 4,096 so that the flood is quick. A higher limit only makes the flood
take longer: it is bounded by the function timeout (up to 900 s), not by the limit.
"""

from __future__ import annotations

import resource
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tests.e2e.server import Server, create
from tests.security.harness import CANARY_CODE, Canary, invoke, result

FD_LIMIT = 4096
FLOODERS = 8
PER_FLOODER = 700  # 8 x 700 = 5,600 connections, well past FD_LIMIT

FLOOD = """
import errno, resource, socket, time

def handler(event, context):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks, errors = [], {}
    for _ in range(event["connections"]):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", 9001))  # its own Runtime API: lamina accepts each one
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__
            errors[name] = errors.get(name, 0) + 1
            s.close()
            continue
        socks.append(s)
    time.sleep(event["hold"])
    for s in socks:
        s.close()
    return {"opened": len(socks), "errors": errors}
"""


def _fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def test_runtime_api_connection_flood_does_not_starve_lamina(
    tmp_path: Path, canary: Canary
) -> None:
    server = Server(tmp_path / "data", "--idle-timeout", "60").start()
    assert server.proc is not None
    pid = server.proc.pid
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
        lam = server.client(read_timeout=120, connect_timeout=10)
        create(lam, "canary", CANARY_CODE, MemorySize=128, Timeout=10)
        create(lam, "flood", FLOOD, MemorySize=256, Timeout=120)
        assert result(invoke(lam, "canary", {"nonce": "before"}))["echo"] == "before"

        floods: list[dict[str, Any]] = []

        def flood(client: Any) -> None:
            event = {"connections": PER_FLOODER, "hold": 6}
            try:
                floods.append(invoke(client, "flood", event))
            except Exception as e:  # lamina may fail the flooder's own call too
                floods.append({"function_error": f"{type(e).__name__}: {e}"})

        # (boto3's shared session is not thread-safe: the clients are made here.)
        clients = [server.client(read_timeout=120) for _ in range(FLOODERS)]
        threads = [threading.Thread(target=flood, args=(c,)) for c in clients]
        for th in threads:
            th.start()
        # While the flood holds its connections, other functions (and the API) keep answering.
        answers: list[str] = []
        peak = 0
        probe = server.client(read_timeout=15, connect_timeout=5)
        while any(th.is_alive() for th in threads):
            peak = max(peak, _fds(pid))
            nonce = uuid.uuid4().hex
            try:
                out = invoke(probe, "canary", {"nonce": nonce})
                ok = out["function_error"] is None and out["json"]["echo"] == nonce
                answers.append("ok" if ok else f"{out['error_type']}: {out['body'][:200]}")
            except Exception as e:  # what a client sees when lamina cannot take its call
                answers.append(f"{type(e).__name__}: {str(e)[:200]}")
            time.sleep(0.5)
        for th in threads:
            th.join()
        opened = sum(f["json"]["opened"] for f in floods if f["function_error"] is None)
        failed = [a for a in answers if a != "ok"]
        assert failed == [], (
            f"while {FLOODERS} instances held {opened} Runtime API connections (lamina at up to "
            f"{peak} of {FD_LIMIT} fds), {len(failed)} of {len(answers)} canary invokes failed: "
            f"{failed[:3]}"
        )
        assert server.proc.poll() is None
        assert result(invoke(lam, "canary", {"nonce": "after"}))["echo"] == "after"
    finally:
        server.stop()
    canary.check()
