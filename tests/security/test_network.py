"""Each instance has a network namespace of its own: its Runtime API answers at 127.0.0.1:9001
inside it only, and other sandboxes' addresses are unreachable from it."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from typing import Any

from tests.security.harness import Canary, function, invoke, result, unique

WHERE = """
import os, socket
from urllib.parse import urlparse

def handler(event, context):
    endpoint = urlparse(os.environ["AWS_ENDPOINT_URL"]).hostname
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((endpoint, 9))  # picks the route out: its source is this sandbox's eth0
    address = s.getsockname()[0]
    s.close()
    return {"address": address, "endpoint": endpoint, "api": os.environ["AWS_LAMBDA_RUNTIME_API"]}
"""

SCAN = """
import errno, os, select, socket, time, urllib.error, urllib.request

def handler(event, context):
    pending, results = {}, {}
    for host, port in event["targets"]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((host, port))
        key = "%s:%d" % (host, port)
        if err in (0, errno.EINPROGRESS):
            pending[s] = key
        else:
            results[key] = errno.errorcode.get(err, str(err))
            s.close()
    deadline = time.monotonic() + event["timeout"]
    while pending and time.monotonic() < deadline:
        _, ready, _ = select.select([], list(pending), [], deadline - time.monotonic())
        for s in ready:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            outcome = "connected" if err == 0 else errno.errorcode.get(err, str(err))
            results[pending.pop(s)] = outcome
            s.close()
    for s, key in pending.items():
        results[key] = "timeout"
        s.close()
    # lamina's own endpoint (reachable by design) serves no Runtime API of anyone's.
    url = os.environ["AWS_ENDPOINT_URL"] + "/2018-06-01/runtime/invocation/next"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            endpoint = [r.status, r.read(200).decode("utf-8", "replace")]
    except urllib.error.HTTPError as e:
        endpoint = [e.code, ""]
    return {"results": results, "endpoint_next": endpoint}
"""


def _sandbox_addresses() -> list[str]:
    """The sandbox ends of every lamina veth on the host (the host end holds the even one)."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True)
    found = []
    for m in re.finditer(r"^\d+: lamina[0-9a-f]{8}\s+inet (\S+)/31", out.stdout, re.M):
        found.append(str(ipaddress.IPv4Address(m.group(1)) + 1))
    return found


def test_other_sandboxes_runtime_api_is_unreachable(lam: Any, canary: Canary) -> None:
    with (
        function(lam, unique("victim-api"), WHERE) as victim,
        function(lam, unique("scanner"), SCAN) as scanner,
    ):
        b = result(invoke(lam, victim))  # B's instance stays warm: its API socket is live
        assert b["api"] == "127.0.0.1:9001"
        b_ip = ipaddress.IPv4Address(b["address"])
        assert b_ip in ipaddress.IPv4Network("10.213.0.0/16")
        others = set(_sandbox_addresses())
        assert str(b_ip) in others  # B's veth, as the host sees it
        neighbours = {str(b_ip + d) for d in range(-16, 17) if d}
        targets = sorted(others | neighbours | {str(b_ip), str(b_ip - 1)})
        event = {
            "targets": [[t, 9001] for t in targets] + [["127.0.0.1", 9001]],
            "timeout": 1.0,
        }
        scan = result(invoke(lam, scanner, event))
        assert scan["endpoint_next"][0] in (403, 404), scan["endpoint_next"]
        res = scan["results"]
        assert res.pop("127.0.0.1:9001") == "connected"  # its own Runtime API, and only that
        assert len(res) == len(targets) >= 33  # B, its 32 neighbours, and every other sandbox
        reached = {t: r for t, r in res.items() if r == "connected"}
        assert reached == {}, reached
        blocked = {"EHOSTUNREACH", "ENETUNREACH", "ECONNREFUSED", "timeout"}
        assert set(res.values()) <= blocked, res
        # Addresses of other sandboxes in particular are not even routed to.
        assert res[f"{b_ip}:9001"] in ("EHOSTUNREACH", "ENETUNREACH", "timeout"), res
    canary.check()
