"""rtnetlink, by hand: just the requests `netns.py` makes (links, addresses, routes,
neighbours, rules), over a NETLINK_ROUTE socket. Kept apart so `netns.py` reads as policy
(what a sandbox's network looks like) rather than wire format."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator, Sequence

# -- rtnetlink: just the requests this module makes ---------------------------------------------

_NLMSG = struct.Struct("=IHHII")
IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
RTMSG = struct.Struct("=BBBBBBBBI")
_ATTR = struct.Struct("=HH")
_ERR = struct.Struct("=i")
_NDMSG = struct.Struct("=BxxxiHBB")

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO = 0x1, 0x2, 0x4, 0x8
NLM_F_DUMP, NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x300, 0x100, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR, RTM_NEWROUTE, RTM_NEWNEIGH = 20, 21, 22, 24, 28
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINK, IFLA_LINKINFO, IFLA_IFALIAS = 1, 3, 5, 18, 20
IFLA_AF_SPEC, IFLA_NET_NS_FD = 26, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 8, 1
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
RTA_OIF, RTA_GATEWAY = 4, 5
IFF_UP = 0x1
NDA_DST, NDA_LLADDR, NUD_PERMANENT = 1, 2, 0x80
RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST, RTNH_F_ONLINK = 254, 4, 1, 4
NLA_F_NESTED = 0x8000
FRA_DST, FRA_SRC, FRA_IIFNAME, FRA_PRIORITY, FRA_TABLE, FRA_PROTOCOL = 1, 2, 3, 6, 15, 21
FR_ACT_TO_TBL, FR_ACT_UNREACHABLE = 1, 7


def attr(kind: int, payload: bytes) -> bytes:
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def _nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def text(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def parse_attrs(data: bytes, offset: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + _ATTR.size <= len(data):
        size, kind = _ATTR.unpack_from(data, offset)
        if size < _ATTR.size:
            break
        out[kind & ~NLA_F_NESTED] = data[offset + _ATTR.size : offset + size]
        offset += (size + 3) & ~3
    return out


def _cstr(value: bytes | None) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace") if value else ""


def ifinfo(index: int = 0, up: bool = False) -> bytes:
    return IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0, IFF_UP if up else 0)


def addr_body(index: int, address: str, prefix: int, label: str = "") -> bytes:
    raw = socket.inet_aton(address)
    body = _IFADDR.pack(socket.AF_INET, prefix, 0, 0, index)
    return (
        body
        + attr(IFA_LOCAL, raw)
        + attr(IFA_ADDRESS, raw)
        + (text(IFA_LABEL, label) * bool(label))
    )


Msg = tuple[int, int, bytes]
_NEW = NLM_F_CREATE | NLM_F_REPLACE
NO_IPV6 = _nested(
    IFLA_AF_SPEC,
    _nested(socket.AF_INET6, attr(IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE]))),
)


def set_link(index: int, *attrs: bytes, up: bool = False) -> Msg:
    return RTM_NEWLINK, 0, ifinfo(index, up) + b"".join(attrs)


def new_addr(index: int, address: str, prefix: int, label: str = "") -> Msg:
    return RTM_NEWADDR, _NEW, addr_body(index, address, prefix, label)


def new_neigh(index: int, address: str, mac: bytes) -> Msg:
    """A permanent neighbour entry: no ARP, and nothing in the kernel's neighbour table, which
    every namespace shares and which overflows at gc_thresh3 (1,024) entries."""
    body = _NDMSG.pack(socket.AF_INET, index, NUD_PERMANENT, 0, 0)
    return (
        RTM_NEWNEIGH,
        _NEW,
        body + attr(NDA_DST, socket.inet_aton(address)) + attr(NDA_LLADDR, mac),
    )


def default_route(gateway: str, index: int) -> Msg:
    body = RTMSG.pack(
        socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, 0, RTN_UNICAST, RTNH_F_ONLINK
    )
    body += attr(RTA_GATEWAY, socket.inet_aton(gateway)) + attr(RTA_OIF, struct.pack("=I", index))
    return RTM_NEWROUTE, _NEW, body


def new_veth(name: str, mac: bytes, peer_mac: bytes, peer_ns: int) -> Msg:
    """A veth `name` here whose peer is `eth0` in the namespace `peer_ns`; made down (made up,
    it fails with ENOTCONN), so IPv6 can be turned off before it comes up."""
    peer = ifinfo() + text(IFLA_IFNAME, "eth0") + attr(IFLA_ADDRESS, peer_mac)
    peer += attr(IFLA_NET_NS_FD, struct.pack("=I", peer_ns))
    info = _nested(IFLA_INFO_DATA, _nested(VETH_INFO_PEER, peer))
    body = ifinfo() + text(IFLA_IFNAME, name) + attr(IFLA_ADDRESS, mac)
    body += _nested(IFLA_LINKINFO, text(IFLA_INFO_KIND, "veth"), info)
    return RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO, body


def mac(address: ipaddress.IPv4Address) -> bytes:
    return b"\x02\x00" + address.packed  # locally administered, unique as the address is


class Netlink:
    """A NETLINK_ROUTE socket, bound to the namespace of the thread that made it.

    `request` sends a batch in one write, each message acked, and raises the first error
    once every ack is in; not thread-safe (callers hold a lock or own the socket)."""

    def __init__(self, protocol: int = socket.NETLINK_ROUTE) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol
        )
        self.sock.bind((0, 0))
        self.sock.settimeout(10)  # the kernel answers at once; never hang on it
        self._seq = 0
        self._buf = bytearray(1 << 16)  # the kernel caps a netlink message batch at 32 KiB

    def close(self) -> None:
        self.sock.close()

    def request(self, messages: Sequence[tuple[int, int, bytes]]) -> list[tuple[int, bytes]]:
        """Send (type, flags, body) messages; return what the kernel sent besides acks."""
        out = bytearray()
        pending: dict[int, int] = {}
        for index, (kind, flags, body) in enumerate(messages):
            self._seq += 1
            pending[self._seq] = index
            out += (
                _NLMSG.pack(
                    _NLMSG.size + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, self._seq, 0
                )
                + body
            )
        self.sock.send(out)
        replies: list[tuple[int, bytes]] = []
        failure: tuple[int, int] | None = None
        while pending:
            for kind, seq, body in self._receive():
                if kind == NLMSG_ERROR:
                    (code,) = _ERR.unpack_from(body)
                    if seq in pending:
                        index = pending.pop(seq)
                        if code and failure is None:
                            failure = (index, -code)
                elif seq in pending:
                    replies.append((kind, body))
        if failure is not None:
            index, code = failure
            raise OSError(code, f"netlink request {index}: {os.strerror(code)}")
        return replies

    def dump(self, kind: int, body: bytes) -> list[bytes]:
        self._seq += 1
        seq = self._seq
        self.sock.send(
            _NLMSG.pack(_NLMSG.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body
        )
        out: list[bytes] = []
        while True:
            for reply, reply_seq, data in self._receive():
                if reply_seq != seq:
                    continue
                if reply == NLMSG_DONE:
                    return out
                if reply == NLMSG_ERROR:
                    (code,) = _ERR.unpack_from(data)
                    raise OSError(-code, f"netlink dump: {os.strerror(-code)}")
                out.append(data)

    def _receive(self) -> Iterator[tuple[int, int, bytes]]:
        size = self.sock.recv_into(self._buf)
        data = bytes(self._buf[:size])
        offset = 0
        while offset + _NLMSG.size <= size:
            length, kind, _flags, seq, _pid = _NLMSG.unpack_from(data, offset)
            if length < _NLMSG.size:
                break
            yield kind, seq, data[offset + _NLMSG.size : offset + length]
            offset += (length + 3) & ~3

    # -- the few things lamina asks for ------------------------------------------------------

    def links(self) -> list[tuple[int, str, str]]:
        """(index, name, alias) of every device."""
        out = []
        for data in self.dump(RTM_GETLINK, ifinfo()):
            _family, _type, index, _flags, _change = IFINFO.unpack_from(data)
            attrs = parse_attrs(data, IFINFO.size)
            out.append((index, _cstr(attrs.get(IFLA_IFNAME)), _cstr(attrs.get(IFLA_IFALIAS))))
        return out

    def addresses(self) -> list[tuple[int, int, str, str]]:
        """(index, prefix, address, label) of every IPv4 address."""
        out = []
        for data in self.dump(RTM_GETADDR, _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)):
            _family, prefix, _flags, _scope, index = _IFADDR.unpack_from(data)
            attrs = parse_attrs(data, _IFADDR.size)
            local = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS) or b"\0\0\0\0"
            out.append((index, prefix, socket.inet_ntoa(local[:4]), _cstr(attrs.get(IFA_LABEL))))
        return out

    def delete_link(self, index: int) -> None:
        try:
            self.request([(RTM_DELLINK, 0, ifinfo(index))])
        except OSError as exc:
            if exc.errno != errno.ENODEV:
                raise


# -- owners: which lamina processes are alive ----------------------------------------------------
