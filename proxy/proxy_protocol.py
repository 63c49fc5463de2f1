"""PROXY protocol v1/v2: reading the header a load balancer puts in front of a client
(`listen ... proxy_protocol`, docs/behaviour.md §4.2) and writing one to the backend (§11.5). Sans-IO.

nginx peeks at the first read only: the whole header must be in it, or the header is
"broken" and the connection is closed without a word. read_header() has the same contract:
give it the first bytes received.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the longest legal v1 line, CRLF included
_ADDR_BYTES = frozenset(b"0123456789abcdefABCDEF.:")


class BrokenHeader(ValueError):
    """The log line nginx writes (`broken header: "..."`) is str(exc)."""


@dataclass(frozen=True)
class ProxyInfo:
    src_addr: str
    src_port: int
    dst_addr: str
    dst_port: int


def _broken(data: bytes) -> BrokenHeader:
    end = len(data)
    for i, ch in enumerate(data):
        if ch in (0x0D, 0x0A):
            end = i
            break
    return BrokenHeader(f'broken header: "{data[:end].decode("latin-1")}"')


def read_header(data: bytes) -> tuple[ProxyInfo | None, int]:
    """(addresses or None for UNKNOWN/LOCAL, header length). Raises BrokenHeader."""
    if data.startswith(V2_SIGNATURE):
        return _read_v2(data)
    if len(data) < 8 or not data.startswith(b"PROXY "):
        raise _broken(data)
    if data.startswith(b"UNKNOWN", 6):
        end = data.find(b"\r\n", 13)
        if end < 0:
            raise _broken(data)
        return None, end + 2
    if data[6:9] != b"TCP" or data[9:10] not in (b"4", b"6") or data[10:11] != b" ":
        raise _broken(data)
    end = data.find(b"\r\n", 11, V1_MAX)
    if end < 0:
        raise _broken(data)
    fields = data[11:end].split(b" ")
    if len(fields) != 4 or not all(fields) \
            or not all(_ADDR_BYTES.issuperset(f) for f in fields[:2]) \
            or not all(f.isdigit() and int(f) <= 65535 for f in fields[2:]):
        raise _broken(data)
    src, dst, sport, dport = (f.decode() for f in fields)
    return ProxyInfo(src, int(sport), dst, int(dport)), end + 2


def _read_v2(data: bytes) -> tuple[ProxyInfo | None, int]:
    if len(data) < 16:
        raise BrokenHeader("broken header: \"\"")
    ver_cmd, family, length = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    if ver_cmd >> 4 != 2:
        raise BrokenHeader(f"unknown PROXY protocol version: {ver_cmd >> 4}")
    if len(data) < 16 + length:
        raise BrokenHeader("header is too large")  # not all in the first read
    body = data[16:16 + length]
    if ver_cmd & 0x0F == 0:  # LOCAL: a health check from the balancer itself
        return None, 16 + length
    if family >> 4 == 1 and len(body) >= 12:
        src, dst = (str(ipaddress.IPv4Address(body[i:i + 4])) for i in (0, 4))
        sport, dport = struct.unpack("!HH", body[8:12])
    elif family >> 4 == 2 and len(body) >= 36:
        src, dst = (str(ipaddress.IPv6Address(body[i:i + 16])) for i in (0, 16))
        sport, dport = struct.unpack("!HH", body[32:36])
    else:
        return None, 16 + length  # UNSPEC or UNIX: no addresses to use
    return ProxyInfo(src, sport, dst, dport), 16 + length


def trusted(peer_ip: str | None, networks) -> bool:
    """set_real_ip_from: is the TCP peer one whose PROXY source we believe?"""
    if peer_ip is None:
        return "unix:" in networks
    try:
        addr = ipaddress.ip_address(peer_ip)
    except ValueError:
        return False
    for net in networks:
        if isinstance(net, str):
            continue
        if addr.version == net.version and addr in net:
            return True
        mapped = getattr(addr, "ipv4_mapped", None)
        if mapped is not None and net.version == 4 and mapped in net:
            return True
    return False


def _same_family(a: str, b: str) -> tuple[ipaddress._BaseAddress, ipaddress._BaseAddress]:
    """Mixed families (an IPv6 client seen on an IPv4 listener after realip, or the reverse)
    are written as IPv6 with the IPv4 side mapped (::ffff:a.b.c.d), so the line stays valid."""
    x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    if x.version != y.version:
        x, y = (ipaddress.IPv6Address(f"::ffff:{v}") if v.version == 4 else v for v in (x, y))
    return x, y


def _text(addr) -> bytes:
    mapped = getattr(addr, "ipv4_mapped", None)
    return (f"::ffff:{mapped}" if mapped else str(addr)).encode()


def v1_line(client: tuple[str, int] | None, local: tuple[str, int] | None) -> bytes:
    if client is None or local is None:
        return b"PROXY UNKNOWN\r\n"
    src, dst = _same_family(client[0], local[0])
    proto = b"TCP4" if src.version == 4 else b"TCP6"
    return b"PROXY %s %s %s %d %d\r\n" % (proto, _text(src), _text(dst), client[1], local[1])


def v2_header(client: tuple[str, int] | None, local: tuple[str, int] | None,
              tlvs: bytes = b"") -> bytes:
    if client is None or local is None:
        return V2_SIGNATURE + bytes((0x21, 0x00)) + struct.pack("!H", len(tlvs)) + tlvs
    src, dst = _same_family(client[0], local[0])
    family = 0x11 if src.version == 4 else 0x21
    body = src.packed + dst.packed + struct.pack("!HH", client[1], local[1]) + tlvs
    return V2_SIGNATURE + bytes((0x21, family)) + struct.pack("!H", len(body)) + body
