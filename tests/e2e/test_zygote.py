"""The zygote: instances are forked from it, and it is restarted when it dies."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from typing import Any

from tests.e2e.server import Server, create


def _zygotes(server_pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read()
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if b"zygote_main.py" in cmd and ppid == server_pid:
            found.append(int(entry))
    return found


def _health(server: Server) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/_lamina/health") as resp:
        return dict(json.load(resp))


def test_zygote_restarts_after_it_dies(fresh_server: Server) -> None:
    fresh_server.start()
    assert fresh_server.proc is not None
    lam = fresh_server.client()
    code = "def handler(event, context):\n    return 'ok'\n"
    create(lam, "zy-a", code, MemorySize=1769)
    assert json.loads(lam.invoke(FunctionName="zy-a")["Payload"].read()) == "ok"
    zygotes = _zygotes(fresh_server.proc.pid)
    assert len(zygotes) == 1
    os.kill(zygotes[0], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _zygotes(fresh_server.proc.pid) == zygotes and time.monotonic() < deadline:
        time.sleep(0.05)

    create(lam, "zy-b", code, MemorySize=1769)  # a cold start needs a zygote again
    out = lam.invoke(FunctionName="zy-b")
    assert "FunctionError" not in out
    assert json.loads(out["Payload"].read()) == "ok"
    restarted = _zygotes(fresh_server.proc.pid)
    assert len(restarted) == 1 and restarted != zygotes
    sandbox = _health(fresh_server)["sandbox"]
    assert sum(z["restarts"] for z in sandbox["zygotes"].values()) == 1
