"""Sandbox network namespaces against the real kernel: real namespaces, veths, sockets and
processes that enter them (a child opens `Netns.path` and `setns()`es itself, as an instance
does). Only loopback and addresses these tests make are ever contacted."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from lamina.worker import netns
from lamina.worker.netns import Netns, NetworkConfig, NetworkHost
from lamina.worker.netns_pool import NetnsPool

if os.geteuid() != 0:
    pytest.skip(
        "network namespace tests need root (they make namespaces and veths)",
        allow_module_level=True,
    )

PY = sys.executable
ENTER = """
import ctypes, json, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDONLY)
if libc.setns(fd, 0x40000000) != 0:
    sys.exit("setns failed: %d" % ctypes.get_errno())
"""
# Connect to each host:port target ("loop": a listener of its own on 127.0.0.1), send a line,
# print what happened to each.
PROBE = (
    ENTER
    + """
out = []
for target in sys.argv[2:]:
    s = socket.socket()
    s.settimeout(0.3)
    try:
        if target == "loop":
            srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
            s.connect(srv.getsockname()); srv.close()
        else:
            host, port = target.rsplit(":", 1)
            s.connect((host, int(port)))
            s.sendall(b"hello\\n")
        out.append("ok")
    except OSError as e:
        out.append(type(e).__name__)
    finally:
        s.close()
print(json.dumps(out))
"""
)
# Listen on 0.0.0.0:port inside, say so, then wait to be killed.
SQUAT = (
    ENTER
    + """
s = socket.socket(); s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen()
print("listening", flush=True)
time.sleep(60)
"""
)


def probe(ns: Netns, *targets: str) -> list[str]:
    out = subprocess.run(
        [PY, "-S", "-c", PROBE, ns.path, *targets],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: list[str] = json.loads(out.stdout)
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port: int = s.getsockname()[1]
        return port


def host_listener(address: str = "0.0.0.0") -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, 0))
    s.listen()
    s.settimeout(5)
    return s


def our_veths() -> list[str]:
    """Host veths owned by a NetworkHost of this test process."""
    mine = f"{netns.ALIAS_PREFIX}{os.getpid()}."
    out = subprocess.run(["ip", "-o", "-d", "link"], capture_output=True, text=True, check=True)
    return [
        line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines() if mine in line
    ]


def leftovers() -> list[str]:
    """What lamina leaves on the host when no lamina runs: must be nothing."""
    found = []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [
        ln.split(":")[1].strip()
        for ln in links.splitlines()
        if ln.split(":")[1].strip().startswith("lamina")
    ]
    addrs = subprocess.run(
        ["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True
    ).stdout
    found += [ln for ln in addrs.splitlines() if netns.ENDPOINT_LABEL in ln]
    rules = subprocess.run(["ip", "rule"], capture_output=True, text=True).stdout
    found += [r for r in rules.splitlines() if f"proto {netns.RULE_PROTOCOL}" in r]
    if os.path.isdir("/run/netns"):
        found += [n for n in os.listdir("/run/netns") if n.startswith("lamina")]
    if netns.iptables_usable():
        for table in ("filter", "nat"):
            rules = subprocess.run(
                ["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True
            ).stdout
            found += [r for r in rules.splitlines() if "LAMINA" in r]
    return found


@pytest.fixture
def host() -> Iterator[NetworkHost]:
    h = NetworkHost()
    h.setup()
    yield h
    h.teardown()
    assert our_veths() == []


@pytest.fixture(params=["forwarding off", "forwarding on, no iptables", "iptables NAT"])
def isolation_host(request: pytest.FixtureRequest) -> Iterator[NetworkHost]:
    """Sandboxes stay apart with forwarding off, with forwarding turned on by something else
    (no iptables: lamina's routing rules alone), and with lamina's own NAT."""
    nat = request.param == "iptables NAT"
    if nat and not netns.iptables_usable():
        pytest.skip("iptables is not installed: lamina runs with forwarding off")
    with open("/proc/sys/net/ipv4/ip_forward") as fh:
        was = fh.read().strip()
    try:
        if request.param == "forwarding on, no iptables":
            _write("/proc/sys/net/ipv4/ip_forward", "1")
        h = NetworkHost(NetworkConfig(nat=nat))
        h.setup()
        assert h.egress_beyond_host is nat
        yield h
        h.teardown()
    finally:
        _write("/proc/sys/net/ipv4/ip_forward", was)


def _write(path: str, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _ip_json(ns: Netns, *args: str) -> list[dict[str, object]]:
    out = subprocess.run(
        ["nsenter", f"--net={ns.path}", "ip", "-j", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    result: list[dict[str, object]] = json.loads(out.stdout)
    return result


def test_egress_namespace_has_lo_eth0_and_a_default_route(host: NetworkHost) -> None:
    ns = host.create("egress")
    links = {str(link["ifname"]): link for link in _ip_json(ns, "link")}
    assert set(links) == {"lo", "eth0"}
    assert all("UP" in link["flags"] for link in links.values())  # type: ignore[operator]
    addrs = {str(a["ifname"]): a["addr_info"] for a in _ip_json(ns, "addr")}
    assert [(i["local"], i["prefixlen"]) for i in addrs["eth0"]] == [(ns.sandbox_address, 31)]  # type: ignore[attr-defined]
    routes = _ip_json(ns, "route")
    assert any(r["dst"] == "default" and r["dev"] == "eth0" for r in routes)
    assert probe(ns, "loop") == ["ok"]
    host.destroy(ns)


def test_egress_reaches_the_endpoint_address_and_host_services(host: NetworkHost) -> None:
    ns = host.create("egress")
    anywhere, endpoint_only = host_listener(), host_listener(host.endpoint_address)
    with anywhere, endpoint_only:
        targets = [
            f"{host.endpoint_address}:{s.getsockname()[1]}" for s in (anywhere, endpoint_only)
        ]
        assert probe(ns, *targets) == ["ok", "ok"]
        for s in (anywhere, endpoint_only):
            conn, peer = s.accept()
            with conn:
                assert peer[0] == ns.sandbox_address  # the host sees the sandbox as itself
                assert conn.recv(6) == b"hello\n"
    host.destroy(ns)


def test_none_reaches_nothing_but_its_own_loopback(host: NetworkHost) -> None:
    ns = host.create("none")
    assert [str(link["ifname"]) for link in _ip_json(ns, "link")] == ["lo"]
    with host_listener() as listener:
        port = listener.getsockname()[1]
        assert probe(ns, "loop", f"{host.endpoint_address}:{port}", f"127.0.0.1:{port}") == [
            "ok",
            "OSError",
            "ConnectionRefusedError",
        ]  # ENETUNREACH; lo has no such listener
    host.destroy(ns)


def test_runtime_api_socket_is_reachable_from_its_namespace_only(host: NetworkHost) -> None:
    a, b = host.create("egress"), host.create("none")
    home = os.stat("/proc/thread-self/ns/net").st_ino
    api = a.listen("127.0.0.1", 9001)
    port = free_port()  # free on the host, so a host connection could only reach lamina's socket
    other = a.listen("127.0.0.1", port)
    assert os.stat("/proc/thread-self/ns/net").st_ino == home  # the thread came back
    with api, other:
        assert probe(a, "127.0.0.1:9001") == ["ok"]
        api.settimeout(5)
        conn, _ = api.accept()
        with conn:
            assert conn.recv(6) == b"hello\n"
        assert probe(b, "127.0.0.1:9001") == ["ConnectionRefusedError"]
        with pytest.raises(ConnectionRefusedError), socket.socket() as s:
            s.connect(("127.0.0.1", port))
        other.settimeout(0.05)
        with pytest.raises(TimeoutError):
            other.accept()
    # exception-safe: a failed bind inside leaves the thread home too
    with pytest.raises(OSError):
        a.listen("192.0.2.123", 9001)
    assert os.stat("/proc/thread-self/ns/net").st_ino == home
    host.destroy(a)
    host.destroy(b)


def test_a_sandbox_cannot_reach_another(isolation_host: NetworkHost) -> None:
    a, b = isolation_host.create("egress"), isolation_host.create("egress")
    assert b.sandbox_address is not None
    with b.listen(b.sandbox_address, 8080) as listener:
        target = f"{b.sandbox_address}:8080"
        assert probe(b, target) == ["ok"]  # the listener works from its own namespace
        assert probe(a, target)[0] in ("TimeoutError", "OSError")  # dropped or unreachable
        listener.settimeout(0.05)
        with pytest.raises(TimeoutError):  # only b's own probe ever arrived
            listener.accept()[0].close()
            listener.accept()
    isolation_host.destroy(a)
    isolation_host.destroy(b)


def test_egress_beyond_the_host_goes_out_masqueraded() -> None:
    """With iptables: a sandbox reaches an address outside lamina's range (a namespace these
    tests make, behind a veth of its own) and is seen there as the host."""
    if not netns.iptables_usable():
        pytest.skip("iptables is not installed: egress beyond the host is off")
    if netns._live_owners():  # its NAT rules were set up by that lamina, not by this test
        pytest.skip("another lamina on this host owns the shared sandbox network")
    h = NetworkHost()
    h.setup()
    outside = h.create("none")
    try:
        subprocess.run(
            [
                "ip",
                "link",
                "add",
                "lmtout0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                outside.path,
            ],
            check=True,
        )
        subprocess.run(
            "ip addr add 198.18.0.1/30 dev lmtout0 && ip link set lmtout0 up",
            shell=True,
            check=True,
        )
        subprocess.run(
            [
                "nsenter",
                f"--net={outside.path}",
                "sh",
                "-c",
                "ip addr add 198.18.0.2/30 dev eth0 && ip link set eth0 up",
            ],
            check=True,
        )
        sandbox = h.create("egress")
        with outside.listen("198.18.0.2", 8080) as listener:
            assert probe(sandbox, "198.18.0.2:8080") == ["ok"]
            listener.settimeout(5)
            conn, peer = listener.accept()
            conn.close()
            assert peer[0] == "198.18.0.1"
    finally:
        subprocess.run(["ip", "link", "del", "lmtout0"], capture_output=True)
        h.teardown()


def test_recycled_namespace_has_no_leftover_sockets(host: NetworkHost) -> None:
    pool = NetnsPool(host, "egress", target_size=1)
    try:
        ns = pool.acquire()
        api = ns.listen()
        squatter = subprocess.Popen(
            [PY, "-S", "-c", SQUAT, ns.path, "7000"], stdout=subprocess.PIPE, text=True
        )
        assert squatter.stdout is not None and squatter.stdout.readline() == "listening\n"
        assert probe(ns, "127.0.0.1:7000") == ["ok"]
        squatter.kill()
        squatter.wait()
        squatter.stdout.close()
        api.close()
        pool.release(ns)
        _wait(lambda: pool.stats.recycled == 1)
        again = [pool.acquire() for _ in range(2)]
        assert ns in again  # the same namespace came back...
        assert ns.open_sockets() == 0  # ...with nothing listening
        assert probe(ns, "127.0.0.1:7000", "127.0.0.1:9001") == ["ConnectionRefusedError"] * 2
        ns.listen().close()  # and 9001 is free again
        # a namespace released with a socket still open inside is destroyed, not reused
        kept = again[0].listen()
        for each in again:
            pool.release(each)
        _wait(lambda: pool.stats.discarded_unclean == 1 and pool.stats.recycled == 2)
        kept.close()
        assert again[0].closed
    finally:
        pool.close()
    assert our_veths() == []


def test_pool_refills_in_the_background_and_close_destroys_everything(host: NetworkHost) -> None:
    pools = [NetnsPool(host, "egress", target_size=4), NetnsPool(host, "none", target_size=2)]
    _wait(lambda: pools[0].idle == 4 and pools[1].idle == 2)
    leased = [pools[0].acquire() for _ in range(6)] + [pools[1].acquire()]
    stats = pools[0].stats  # 4 were ready; the rest made on the spot or just refilled
    assert stats.reused >= 4 and stats.reused + stats.created_sync == 6
    _wait(lambda: pools[0].idle == 4)
    for pool in pools:
        pool.close()
        pool.close()  # idempotent
    assert all(ns.closed for ns in leased)
    assert our_veths() == []
    with pytest.raises(RuntimeError):
        pools[0].acquire()


def test_teardown_of_the_last_owner_and_sweep_leave_nothing() -> None:
    if netns._live_owners():
        pytest.skip("another lamina on this host owns the shared sandbox network")
    with open("/proc/sys/net/ipv4/ip_forward") as fh:
        forwarding = fh.read()
    first, second = NetworkHost(), NetworkHost()
    first.setup()
    second.setup()
    pool = NetnsPool(first, "egress", target_size=2)
    _wait(lambda: pool.idle == 2)
    first.teardown()  # destroys its namespaces; `second` still owns the shared address
    first.teardown()
    assert our_veths() == []
    assert any(netns.ENDPOINT_LABEL in line for line in leftovers())
    pool.close()
    second.teardown()
    assert leftovers() == []
    with open("/proc/sys/net/ipv4/ip_forward") as fh:
        assert fh.read() == forwarding  # as it was before lamina
    NetworkHost.sweep_stale()
    assert leftovers() == []


DIES = """
import os, subprocess, sys, time
from lamina.worker.netns import NetworkHost
host = NetworkHost()
host.setup()
ns = host.create("egress")
hold = subprocess.Popen([sys.executable, "-S", "-c", sys.argv[1], ns.path, "7001"],
                        stdout=subprocess.PIPE, text=True, start_new_session=True)
hold.stdout.readline()
print(hold.pid, ns.host_interface, flush=True)
time.sleep(60)
"""


def test_sweep_stale_removes_what_a_killed_run_left(host: NetworkHost) -> None:
    run = subprocess.Popen([PY, "-c", DIES, SQUAT], stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    holder_pid, veth = run.stdout.readline().split()
    try:
        run.send_signal(signal.SIGKILL)
        run.wait()
        run.stdout.close()
        # A process still inside keeps the namespace, and so the veth, alive.
        assert veth in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert NetworkHost.sweep_stale() >= 1
        assert (
            veth not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        )
        assert our_veths() == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(holder_pid), signal.SIGKILL)
    # A live owner's veths are left alone.
    ns = host.create("egress")
    NetworkHost.sweep_stale()
    assert our_veths() == [ns.host_interface]


def test_costs(host: NetworkHost, capsys: pytest.CaptureFixture[str]) -> None:
    """Measure, print, assert nothing about time."""
    lines = []
    for kind in netns.KINDS:
        made = []
        times = []
        for _ in range(100):
            start = time.perf_counter()
            made.append(host.create(kind))
            times.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        host.destroy_many(made)
        gone = (time.perf_counter() - start) * 1000
        lines.append(
            f"create {kind}: median {statistics.median(times):.2f} ms, "
            f"p99 {sorted(times)[98]:.2f} ms; destroying 100 until gone {gone:.0f} ms"
        )
    ns = host.create("egress")
    start = time.perf_counter()
    for _ in range(200):
        ns.listen().close()
    lines.append(f"listen()+close: {(time.perf_counter() - start) / 200 * 1e6:.1f} us")
    start = time.perf_counter()
    for _ in range(50):
        ns.open_sockets()
    lines.append(f"recycle check (open_sockets): {(time.perf_counter() - start) / 50 * 1e3:.2f} ms")
    host.destroy(ns)
    for kind in netns.KINDS:
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.5:
            host.destroy(host.create(kind))
            count += 1
        lines.append(f"sustained {kind} create+destroy: {count / 0.5:.0f}/s")
    with capsys.disabled():
        print("\n" + "\n".join(f"  netns: {line}" for line in lines))


def _slab_kib() -> int:
    with open("/proc/meminfo") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("Slab:"))


@pytest.mark.slow
def test_a_thousand_egress_namespaces_at_once(
    host: NetworkHost, capsys: pytest.CaptureFixture[str]
) -> None:
    """1,000 at once, each talking to the host at the same time (which overflowed the kernel's
    shared neighbour table before the veths got static neighbour entries)."""
    slab, start = _slab_kib(), time.perf_counter()
    made = [host.create("egress") for _ in range(1000)]
    created = time.perf_counter() - start
    kernel_mib = (_slab_kib() - slab) / 1024
    assert len(our_veths()) == 1000
    open_conns = []
    with host_listener() as listener:
        port = listener.getsockname()[1]
        for ns in made:  # a socket made inside each namespace, all connections left open
            with ns.entered():
                conn = socket.socket()
            conn.settimeout(5)
            conn.connect((host.endpoint_address, port))
            open_conns += [conn, listener.accept()[0]]
        for ns in made[::250]:  # and a real process inside a few
            assert probe(ns, f"{host.endpoint_address}:{port}") == ["ok"]
    for conn in open_conns:
        conn.close()
    start = time.perf_counter()
    host.destroy_many(made)
    destroyed = time.perf_counter() - start
    assert our_veths() == []
    with capsys.disabled():
        print(
            f"\n  netns: 1000 egress namespaces made in {created:.2f} s "
            f"(kernel slab +{kernel_mib:.0f} MiB), all connected to the host at once, "
            f"all gone {destroyed:.2f} s after destroy"
        )


def _wait(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)
