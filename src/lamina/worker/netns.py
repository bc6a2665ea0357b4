"""Network namespaces for sandboxes: made over netlink, pooled, recycled, swept.

Every instance runs in a network namespace of its own, of one of two kinds:

- **egress** (the default, as Lambda): `lo` up, and a veth pair whose host end (named
  `lamina` + its address in hex, e.g. `lamina0ad50000`) stays in lamina's namespace and whose
  other end is `eth0` inside, the two holding a /31 of lamina's range (`NetworkConfig.subnet`,
  default 10.213.0.0/16, so 32,767 sandboxes); the default route points at the host end. Both
  ends have fixed MACs and permanent neighbour entries: no ARP, and nothing in the kernel's
  neighbour table, which all namespaces share and which overflows at 1,024 entries (measured:
  at ~1,000 sandboxes with ARP, connections failed). IPv6 is off on the veth.
- **none**: only `lo` up.

`NetworkHost` keeps what the host shares: one fixed *endpoint* address (default
10.213.255.254) as a /32 on the host's `lo` labelled `lo:lamina` (this kernel has no dummy
driver; an address on `lo` works everywhere). Every egress sandbox reaches it through its
veth, so a socket lamina binds there answers `AWS_ENDPOINT_URL` from inside, and host services
bound to 0.0.0.0 answer there too.

Isolation does not rest on `ip_forward` being off (another tool may turn it on): routing
rules (`ip rule`, "proto 213") make sandbox-to-sandbox traffic unreachable and, without egress,
also everything a sandbox sends beyond the host and everything arriving for a sandbox from
elsewhere. With `iptables` working and `NetworkConfig.nat` set, `setup()` also adds chains of
its own (veth-to-veth DROP, nothing new into a sandbox, MASQUERADE for the range) and turns
forwarding on: `egress_beyond_host` says which.

A namespace is held by an open fd in lamina's process (`Netns.path` is `/proc/<pid>/fd/<n>`,
which the zygote opens to `setns()` an instance in), never bind-mounted: when lamina dies the
kernel frees every namespace whose processes are gone, veths included. What can outlive a run
is marked so `sweep_stale()` can find it: each host veth carries its owner in its alias
(`lamina owner=<pid>.<n>`), and an owner is alive while its abstract Unix socket
`@lamina-net/<pid>.<n>` exists (the kernel drops it with the process, so a reused pid cannot
fool the sweep). The endpoint address, the rules and the chains are shared by every lamina on
the host; the last owner to leave (or a sweep that finds no owner) removes them. (Laminas
sharing a host and a range should agree on `nat`: an owner without egress adds the stricter
rules, and they stay until the last owner leaves.)

`Netns.listen()` makes a listening socket inside a namespace from lamina's own thread:
setns in, socket + bind + listen, setns back (~15 us). That is how each instance gets its
Runtime API at 127.0.0.1:9001, reachable from its own namespace only.

Contract for reuse (netns_pool.py): `NetnsPool.release()` only once every process that
entered the namespace is dead and lamina has closed the sockets `listen()` gave it. The pool
checks (off the event loop) that no socket is still open inside and destroys the namespace
instead of reusing it if one is. Processes without sockets cannot be seen from here: that
part is the caller's.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import itertools
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from lamina.worker.netlink import (
    FR_ACT_TO_TBL,
    FR_ACT_UNREACHABLE,
    FRA_DST,
    FRA_IIFNAME,
    FRA_PRIORITY,
    FRA_PROTOCOL,
    FRA_SRC,
    IFINFO,
    IFLA_IFALIAS,
    IFLA_LINK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NO_IPV6,
    RT_TABLE_MAIN,
    RTM_DELADDR,
    RTM_DELRULE,
    RTM_GETRULE,
    RTM_NEWLINK,
    RTM_NEWRULE,
    RTMSG,
    Msg,
    Netlink,
    addr_body,
    attr,
    default_route,
    ifinfo,
    mac,
    new_addr,
    new_neigh,
    new_veth,
    parse_attrs,
    set_link,
    text,
)

log = logging.getLogger("lamina.netns")

Kind = Literal["egress", "none"]
KINDS: tuple[Kind, ...] = ("egress", "none")

CLONE_NEWNET = 0x40000000
LOCK_PATH = "/run/lamina/net.lock"
FORWARD_STATE_PATH = "/run/lamina/ip_forward.was"  # ip_forward before lamina changed it
ENDPOINT_LABEL = "lo:lamina"
OWNER_PREFIX = "lamina-net/"  # abstract Unix socket names of live owners
ALIAS_PREFIX = "lamina owner="
VETH_NAME = re.compile(r"^lamina[0-9a-f]{8}$")
LO_IFINDEX = 1

_libc = ctypes.CDLL(None, use_errno=True)
_owner_ids = itertools.count()


# -- namespaces: unshare / setns on the calling thread -------------------------------------------


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _open_current() -> int:
    """An fd for the calling thread's network namespace."""
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


@contextlib.contextmanager
def _inside(ns_fd: int) -> Iterator[None]:
    """Run the body with the calling thread in the namespace `ns_fd`; always come back.

    Only this thread moves; sockets made in the body stay in that namespace for good."""
    home = _open_current()
    try:
        _check(_libc.setns(ns_fd, CLONE_NEWNET), "setns into sandbox namespace")
        try:
            yield
        finally:
            _check(_libc.setns(home, CLONE_NEWNET), "setns back to lamina's namespace")
    finally:
        os.close(home)


def _new_namespace() -> tuple[int, Netlink]:
    """A fresh network namespace: its fd and a netlink socket inside it."""
    home = _open_current()
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            fd = _open_current()
            try:
                nl = Netlink()
            except BaseException:
                os.close(fd)
                raise
        finally:
            _check(_libc.setns(home, CLONE_NEWNET), "setns back to lamina's namespace")
    finally:
        os.close(home)
    return fd, nl


def _live_owners() -> set[str]:
    """Tokens of every live owner on this host (abstract sockets in this namespace)."""
    owners = set()
    with open("/proc/thread-self/net/unix") as fh:
        for line in fh:
            path = line.rstrip("\n").split(" ")[-1]
            if path.startswith("@" + OWNER_PREFIX):
                owners.add(path[len(OWNER_PREFIX) + 1 :])
    return owners


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    """Serialize set-up, tear-down and sweeps of every lamina on this host."""
    os.makedirs(os.path.dirname(LOCK_PATH), mode=0o755, exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- shared host state: the endpoint address, routing rules, iptables (optional) -----------------

RULE_PROTOCOL = 213  # marks lamina's routing rules (`ip rule` shows "proto 213")
RULE_PRIORITY = 10213
FORWARD_CHAIN, NAT_CHAIN = "LAMINA-FORWARD", "LAMINA-POSTROUTING"
_FORWARD_RULES = (
    ("-i", "lamina+", "-o", "lamina+", "-j", "DROP"),
    ("-i", "lamina+", "-j", "ACCEPT"),
    ("-o", "lamina+", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
    ("-o", "lamina+", "-j", "DROP"),
)
_CHAINS = (("filter", FORWARD_CHAIN, "FORWARD"), ("nat", NAT_CHAIN, "POSTROUTING"))


def _rule(priority: int, action: int, src: str = "", dst: str = "", iif: str = "") -> Msg:
    """A routing-policy rule for IPv4 prefixes `src`/`dst`."""
    src_net = ipaddress.IPv4Network(src) if src else None
    dst_net = ipaddress.IPv4Network(dst) if dst else None
    table = RT_TABLE_MAIN if action == FR_ACT_TO_TBL else 0
    body = RTMSG.pack(
        socket.AF_INET,
        dst_net.prefixlen if dst_net else 0,
        src_net.prefixlen if src_net else 0,
        0,
        table,
        0,
        0,
        action,
        0,
    )
    body += attr(FRA_PRIORITY, struct.pack("=I", priority)) + attr(FRA_PROTOCOL, b"\xd5")
    body += attr(FRA_SRC, src_net.network_address.packed) if src_net else b""
    body += attr(FRA_DST, dst_net.network_address.packed) if dst_net else b""
    body += text(FRA_IIFNAME, iif) if iif else b""
    return RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, body


def _routing_rules(subnet: str, egress: bool) -> list[Msg]:
    """Rules that keep sandboxes apart whatever `ip_forward` says (another tool may have turned
    it on). What the host itself sends to a sandbox routes as usual (so do reverse-path
    checks); sandbox-to-sandbox is unreachable; without egress beyond the host, so is whatever
    a sandbox sends that is not for the host, and whatever arrives for a sandbox from
    elsewhere. The host's own addresses are found in the local table, before all of these."""
    rules = [
        _rule(RULE_PRIORITY, FR_ACT_TO_TBL, dst=subnet, iif="lo"),
        _rule(RULE_PRIORITY + 1, FR_ACT_UNREACHABLE, src=subnet, dst=subnet),
    ]
    if not egress:
        rules.append(_rule(RULE_PRIORITY + 2, FR_ACT_UNREACHABLE, src=subnet))
        rules.append(_rule(RULE_PRIORITY + 3, FR_ACT_UNREACHABLE, dst=subnet))
    return rules


def _iptables(*args: str) -> bool:
    try:
        result = subprocess.run(["iptables", "-w", *args], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def iptables_usable() -> bool:
    """`iptables` is installed and the kernel answers it (nat table included)."""
    return shutil.which("iptables") is not None and _iptables("-t", "nat", "-S", "POSTROUTING")


def _install_nat(subnet: str) -> None:
    """Chains of lamina's own (veth-to-veth DROP, nothing new into a sandbox, MASQUERADE for
    the range), then IPv4 forwarding on; raises if a rule could not be added."""
    masquerade = ("-s", subnet, "!", "-o", "lamina+", "-j", "MASQUERADE")
    wanted: list[tuple[str, str, tuple[str, ...]]]
    wanted = [("filter", FORWARD_CHAIN, rule) for rule in _FORWARD_RULES]
    wanted += [("nat", NAT_CHAIN, masquerade)]
    for table, chain, _parent in _CHAINS:
        _iptables("-t", table, "-N", chain)  # fails harmlessly when it exists
    for table, chain, rule in wanted:
        if not _iptables("-t", table, "-C", chain, *rule) and not _iptables(
            "-t", table, "-A", chain, *rule
        ):
            raise OSError(f"iptables -t {table} -A {chain} {' '.join(rule)} failed")
    for table, chain, parent in _CHAINS:
        if not _iptables("-t", table, "-C", parent, "-j", chain) and not _iptables(
            "-t", table, "-I", parent, "1", "-j", chain
        ):
            raise OSError(f"iptables -t {table} -I {parent} -j {chain} failed")
    with open("/proc/sys/net/ipv4/ip_forward") as fh:
        was = fh.read().strip()
    if was != "1":
        if not os.path.exists(FORWARD_STATE_PATH):
            with open(FORWARD_STATE_PATH, "w") as fh:
                fh.write(was)
        with open("/proc/sys/net/ipv4/ip_forward", "w") as fh:
            fh.write("1")


def _remove_shared(nl: Netlink) -> None:
    """Remove what every lamina on the host shares: forwarding back as it was, the iptables
    chains, the routing rules, the endpoint address(es)."""
    if os.path.exists(FORWARD_STATE_PATH):
        with open(FORWARD_STATE_PATH) as fh:
            was = fh.read().strip() or "0"
        with open("/proc/sys/net/ipv4/ip_forward", "w") as fh:
            fh.write(was)
        os.unlink(FORWARD_STATE_PATH)
    if shutil.which("iptables") is not None:
        for table, chain, parent in _CHAINS:
            while _iptables("-t", table, "-D", parent, "-j", chain):
                pass
            if _iptables("-t", table, "-F", chain):
                _iptables("-t", table, "-X", chain)
    for body in nl.dump(RTM_GETRULE, RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
        if parse_attrs(body, RTMSG.size).get(FRA_PROTOCOL) == bytes([RULE_PROTOCOL]):
            with contextlib.suppress(FileNotFoundError):
                nl.request([(RTM_DELRULE, 0, body)])
    for index, prefix, address, label in nl.addresses():
        if label == ENDPOINT_LABEL:
            with contextlib.suppress(OSError):
                nl.request([(RTM_DELADDR, 0, addr_body(index, address, prefix, label))])


# -- namespaces ----------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Netns:
    """One sandbox network namespace, held open by lamina (`fd`).

    `path` is what an instance's process opens to `setns(fd, CLONE_NEWNET)` itself;
    `sandbox_address` is eth0's address (None for the `none` kind)."""

    kind: Kind
    fd: int
    pair: int | None = None  # which /31 of the range
    host_interface: str | None = None
    host_index: int = 0
    sandbox_address: str | None = None
    uses: int = 0  # times handed out by a pool
    path: str = field(init=False)

    def __post_init__(self) -> None:
        self.path = f"/proc/{os.getpid()}/fd/{self.fd}"

    def __repr__(self) -> str:
        where = f" {self.host_interface} {self.sandbox_address}" if self.host_interface else ""
        return f"<Netns {self.kind} fd={self.fd}{where}>"

    @property
    def closed(self) -> bool:
        return self.fd < 0

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the body with the calling thread inside this namespace (sockets made there stay
        there); the thread always comes back, also on an exception."""
        if self.fd < 0:
            raise ValueError(f"{self!r} is destroyed")
        with _inside(self.fd):
            yield

    def listen(
        self, host: str = "127.0.0.1", port: int = 9001, backlog: int = 128
    ) -> socket.socket:
        """A TCP socket listening on host:port inside this namespace, made from this thread
        (setns in, socket/bind/listen, setns back); the caller owns and closes it."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with self.entered():
            return socket.create_server((host, port), family=family, backlog=backlog)

    def open_sockets(self) -> int:
        """How many sockets inside are still held by a process (or by lamina): listening TCP,
        any UDP (both asked of sock_diag, which skips the big established-connection table),
        and raw/ICMP/Unix/packet/user-netlink ones (from /proc/net). ~0.3 ms."""
        count = 0
        with self.entered():
            diag = Netlink(NETLINK_SOCK_DIAG)
            try:
                for family, protocol, states in _DIAG_QUERIES:
                    query = _DIAG_REQ.pack(family, protocol, 0, 0, states) + bytes(48)
                    for msg in diag.dump(SOCK_DIAG_BY_FAMILY, query):
                        count += _DIAG_INODE.unpack_from(msg, 68)[0] != 0
            finally:
                diag.close()
            for name, column in _SOCKET_TABLES:
                try:
                    with open(f"/proc/thread-self/net/{name}") as fh:
                        next(fh, None)
                        count += sum(1 for line in fh if line.split()[column : column + 1] != ["0"])
                except FileNotFoundError:
                    continue
        return count


NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, TCP_LISTEN = 4, 20, 10
_DIAG_REQ, _DIAG_INODE = struct.Struct("=BBBBI"), struct.Struct("=I")
_DIAG_QUERIES = tuple(
    (family, protocol, states)
    for family in (socket.AF_INET, socket.AF_INET6)
    for protocol, states in (
        (socket.IPPROTO_TCP, 1 << TCP_LISTEN),
        (socket.IPPROTO_UDP, ~0 & 0xFFFFFFFF),
    )
)
# small /proc/net tables, and the column that is 0 for a socket no process holds
_SOCKET_TABLES = (
    *((name, 9) for name in ("raw", "raw6", "icmp", "icmp6")),
    ("unix", 6),
    ("packet", 8),
    ("netlink", 2),
)


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """Where sandbox addresses come from. `subnet` is split into /31 pairs (host end, sandbox);
    `endpoint` (default: the range's last address but one) is the host address every egress
    sandbox reaches; `nat` allows forwarding + MASQUERADE when iptables works."""

    subnet: str = "10.213.0.0/16"
    endpoint: str = ""
    nat: bool = True


class NetworkHost:
    """lamina's side of sandbox networking: the endpoint address, the optional NAT rules, the
    address pairs, and the making and destroying of namespaces."""

    def __init__(self, config: NetworkConfig | None = None) -> None:
        self.config = config or NetworkConfig()
        net = ipaddress.IPv4Network(self.config.subnet)
        if net.prefixlen > 30:
            raise ValueError(f"sandbox subnet {net} is too small")
        self._net = net
        endpoint = ipaddress.IPv4Address(self.config.endpoint or int(net.broadcast_address) - 1)
        if endpoint not in net:
            raise ValueError(f"endpoint {endpoint} is outside the sandbox subnet {net}")
        self._endpoint = endpoint
        skip = (int(endpoint) - int(net.network_address)) // 2
        pairs = [p for p in range(net.num_addresses // 2) if p != skip]
        start = (os.getpid() * 2654435761) % len(pairs)  # lamina processes start apart
        self._pairs: deque[int] = deque(pairs[start:] + pairs[:start])
        self._token = f"{os.getpid()}.{next(_owner_ids)}"
        self._owner: socket.socket | None = None
        self._nl: Netlink | None = None
        self._lock = threading.Lock()  # guards _nl, _pairs and _live
        self._live: set[Netns] = set()
        self.egress_beyond_host = False

    @property
    def endpoint_address(self) -> str:
        return str(self._endpoint)

    @property
    def owner(self) -> str:
        return self._token

    # -- set-up and tear-down --------------------------------------------------------------

    def setup(self) -> None:
        """Become an owner, put the endpoint address up, install NAT rules if possible.
        Idempotent."""
        if self._owner is not None:
            return
        with _host_lock():
            owner = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            owner.bind(b"\0" + (OWNER_PREFIX + self._token).encode())
            self._owner = owner
            self._nl = Netlink()
            try:
                egress = self.config.nat and iptables_usable()
                if egress:
                    try:
                        _install_nat(str(self._net))
                    except OSError as exc:
                        log.warning("sandbox NAT not installed, no egress beyond the host: %s", exc)
                        egress = False
                for rule in _routing_rules(str(self._net), egress):
                    with contextlib.suppress(FileExistsError):  # another lamina's
                        self._nl.request([rule])
                endpoint = new_addr(LO_IFINDEX, self.endpoint_address, 32, ENDPOINT_LABEL)
                self._nl.request([endpoint])
                self.egress_beyond_host = egress
            except BaseException:
                self._nl.close()
                self._nl = None
                owner.close()
                self._owner = None
                raise
        log.info(
            "sandbox network: endpoint %s, range %s, egress beyond host %s",
            self.endpoint_address,
            self._net,
            "on (iptables NAT)" if self.egress_beyond_host else "off (no iptables)",
        )

    def teardown(self) -> None:
        """Destroy what this host made; if no other lamina is left, remove the endpoint
        address and the rules too. Idempotent."""
        with self._lock:
            live = list(self._live)
        self.destroy_many(live)
        mine = ALIAS_PREFIX + self._token
        self._reap(lambda _index, _name, alias: alias == mine, 5.0)  # destroyed earlier, too
        if self._owner is None:
            return
        with _host_lock():
            self._owner.close()
            self._owner = None
            if self._nl is not None:
                if not _live_owners():
                    _remove_shared(self._nl)
                self._nl.close()
                self._nl = None
        self.egress_beyond_host = False

    @staticmethod
    def sweep_stale() -> int:
        """Remove what lamina runs that died left behind: host veths of dead owners and, when
        no lamina is alive, the endpoint address and the rules. Returns how many veths went."""
        removed = 0
        with _host_lock():
            nl = Netlink()
            try:
                owners = _live_owners()
                for index, name, alias in nl.links():
                    if not VETH_NAME.match(name):
                        continue
                    if not alias:  # being made: its maker holds it, so it dies with its maker
                        continue
                    token = alias[len(ALIAS_PREFIX) :] if alias.startswith(ALIAS_PREFIX) else ""
                    if token not in owners:
                        nl.delete_link(index)
                        removed += 1
                if not owners:
                    _remove_shared(nl)
            finally:
                nl.close()
        if removed:
            log.info("removed %d sandbox network interfaces left by a lamina that died", removed)
        return removed

    # -- namespaces ------------------------------------------------------------------------

    def create(self, kind: Kind = "egress") -> Netns:
        """Make one namespace of `kind` (synchronously, ~1 ms; pools call this off-loop)."""
        if kind not in KINDS:
            raise ValueError(f"unknown network kind {kind!r} (egress or none)")
        fd, inner = _new_namespace()
        try:
            if kind == "none":
                inner.request([(RTM_NEWLINK, 0, ifinfo(LO_IFINDEX, up=True))])
                ns = Netns(kind, fd)
            else:
                ns = self._connect(fd, inner)
        except BaseException:
            os.close(fd)
            raise
        finally:
            inner.close()
        with self._lock:
            self._live.add(ns)
        return ns

    def destroy(self, ns: Netns, cut_off: bool = False) -> None:
        """Close the namespace. The kernel then frees it, veth included, in the background
        (batched: ~0.4 ms a namespace) once nothing else holds it. `cut_off` also deletes the
        veth now, which takes ~25 ms but disconnects anything still inside at once."""
        with self._lock:
            self._live.discard(ns)
        if ns.fd >= 0:
            os.close(ns.fd)
            ns.fd = -1
        with self._lock:
            if cut_off and ns.host_index and self._nl is not None:
                self._nl.delete_link(ns.host_index)
                ns.host_index = 0
            if ns.pair is not None:
                self._pairs.append(ns.pair)  # reused last: its veth may take a moment to go
                ns.pair = None

    def destroy_many(self, namespaces: Sequence[Netns], wait: float = 5.0) -> None:
        """Destroy these namespaces and return once their veths are gone (the kernel removes
        them in batches); any still there after `wait` s (something holds its namespace) is
        deleted."""
        veths = {(ns.host_index, ns.host_interface) for ns in namespaces if ns.host_index}
        for ns in namespaces:
            self.destroy(ns)
        self._reap(lambda index, name, _alias: (index, name) in veths, wait)

    def _reap(self, match: Callable[[int, str, str], bool], wait: float) -> None:
        """Wait until no host link matches (index, name, alias); then delete what still does."""
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                if self._nl is None:
                    return
                left = [
                    index for index, name, alias in self._nl.links() if match(index, name, alias)
                ]
                if left and time.monotonic() > deadline:
                    log.warning(
                        "%d sandbox namespaces are still held open: deleting their veths", len(left)
                    )
                    for index in left:
                        self._nl.delete_link(index)
                if not left or time.monotonic() > deadline:
                    return
            time.sleep(0.01)

    def _connect(self, fd: int, inner: Netlink) -> Netns:
        """Give the fresh namespace `fd` a veth pair, a /31 and a default route, with static
        neighbour entries both ways (so no ARP)."""
        with self._lock:
            if self._nl is None:
                raise RuntimeError("NetworkHost.setup() must run before egress namespaces")
            nl = self._nl
            pair, index, peer = self._claim_pair(nl, fd)
            host_ip = self._net.network_address + 2 * pair
            sandbox_ip, alias = host_ip + 1, text(IFLA_IFALIAS, ALIAS_PREFIX + self._token)
            try:
                nl.request(
                    [
                        set_link(index, NO_IPV6, alias),
                        new_addr(index, str(host_ip), 31),
                        new_neigh(index, str(sandbox_ip), mac(sandbox_ip)),
                        set_link(index, up=True),
                    ]
                )
            except BaseException:
                nl.delete_link(index)
                self._pairs.append(pair)
                raise
        try:
            inner.request(
                [
                    set_link(LO_IFINDEX, up=True),
                    set_link(peer, NO_IPV6),
                    new_addr(peer, str(sandbox_ip), 31),
                    new_neigh(peer, str(host_ip), mac(host_ip)),
                    set_link(peer, up=True),
                    default_route(str(host_ip), peer),
                ]
            )
        except BaseException:
            with self._lock:
                nl.delete_link(index)
                self._pairs.append(pair)
            raise
        return Netns("egress", fd, pair, f"lamina{int(host_ip):08x}", index, str(sandbox_ip))

    def _claim_pair(self, nl: Netlink, fd: int) -> tuple[int, int, int]:
        """Make the veth of the next free address pair (its name claims the pair, also against
        other laminas on the host): (pair, host-end index, eth0's index inside)."""
        for _attempt in range(64):
            if not self._pairs:
                break
            pair = self._pairs.popleft()
            host_ip = self._net.network_address + 2 * pair
            veth = new_veth(f"lamina{int(host_ip):08x}", mac(host_ip), mac(host_ip + 1), fd)
            try:
                replies = nl.request([veth])
            except OSError as exc:
                self._pairs.append(pair)
                if exc.errno in (errno.EEXIST, errno.EBUSY):  # another lamina's, or dying
                    continue
                raise
            echo = next(body for kind, body in replies if kind == RTM_NEWLINK)
            (peer,) = struct.unpack_from("=I", parse_attrs(echo, IFINFO.size)[IFLA_LINK])
            return pair, IFINFO.unpack_from(echo)[2], peer
        raise OSError(errno.EADDRNOTAVAIL, f"no free sandbox address pair in {self._net}")
