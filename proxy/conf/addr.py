"""Address parsing as ngx_parse_url() / ngx_ptocidr() do it, including their error words.

Host names are resolved once, at configuration time, with getaddrinfo(); IPv4 results
come before IPv6 ones and duplicates are dropped, as in ngx_inet_resolve_host().
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

from .values import atoi

UNIX_PATH_MAX = 108  # sizeof(sun_path) on Linux


class UrlError(ValueError):
    """ngx_url_t.err: the caller words it as "<err> in <directive> "<url>"."."""


@dataclass(frozen=True)
class Addr:
    family: int  # socket.AF_INET | AF_INET6 | AF_UNIX
    ip: str | None  # textual IP (None for unix)
    port: int
    name: str  # ngx_sock_ntop() with port: "127.0.0.1:143", "[::1]:143", "unix:/p"
    unix_path: str | None = None


@dataclass
class Url:
    host: str = ""  # host part as written ("[::1]" keeps brackets), or the unix path
    port: int = 0
    no_port: bool = False
    uri: str = ""
    family: int = socket.AF_INET
    wildcard: bool = False
    addrs: list[Addr] = field(default_factory=list)


def inet_addr(text: str) -> int | None:
    """ngx_inet_addr: dotted quad with decimal octets (leading zeros allowed)."""
    addr = octet = dots = 0
    for c in text:
        if "0" <= c <= "9":
            octet = octet * 10 + ord(c) - 48
            if octet > 0xFFFFFFFF:
                return None
            continue
        if c == "." and octet < 256:
            addr = (addr << 8) + octet
            octet = 0
            dots += 1
            continue
        return None
    if dots == 3 and octet < 256:
        return (addr << 8) + octet
    return None


def inet6_addr(text: str) -> bytes | None:
    if not text or "%" in text or "/" in text:
        return None
    try:
        return ipaddress.IPv6Address(text).packed
    except ValueError:
        return None


def inet6_ntop(p: bytes) -> str:
    """ngx_inet6_ntop: RFC 5952-like text, IPv4-mapped tail written dotted."""
    zero = last = -1
    best = 1
    n = 0
    for i in range(0, 16, 2):
        if p[i] or p[i + 1]:
            if best < n:
                zero, best = last, n
            n = 0
            continue
        if n == 0:
            last = i
        n += 1
    if best < n:
        zero, best = last, n
    out = []
    limit = 16
    if zero == 0:
        if ((best == 5 and p[10] == 0xFF and p[11] == 0xFF) or best == 6
                or (best == 7 and p[14] != 0 and p[15] != 1)):
            limit = 12
        out.append(":")
    i = 0
    while i < limit:
        if i == zero:
            out.append(":")
            i += best * 2
            continue
        out.append(format(p[i] * 256 + p[i + 1], "x"))
        if i < 14:
            out.append(":")
        i += 2
    if limit == 12:
        out.append(f"{p[12]}.{p[13]}.{p[14]}.{p[15]}")
    return "".join(out)


def _ipv4_text(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def _add(u: Url, addr: Addr) -> None:
    if all(a.name != addr.name for a in u.addrs):
        u.addrs.append(addr)


def _add_inet(u: Url, ip: str, port: int) -> None:
    _add(u, Addr(socket.AF_INET, ip, port, f"{ip}:{port}"))


def _add_inet6(u: Url, packed: bytes, port: int) -> None:
    ip = inet6_ntop(packed)
    _add(u, Addr(socket.AF_INET6, ip, port, f"[{ip}]:{port}"))


def resolve_host(u: Url, host: str, port: int) -> None:
    """ngx_inet_resolve_host: all addresses, IPv4 first."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UrlError("host not found") from None
    v4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]
    v6 = [i[4][0] for i in infos if i[0] == socket.AF_INET6]
    if not v4 and not v6:
        raise UrlError("host not found")
    for ip in v4:
        _add_inet(u, ip, port)
    for ip in v6:
        _add_inet6(u, ipaddress.IPv6Address(ip.split("%")[0]).packed, port)


def parse_url(url: str, *, default_port: int = 0, listen: bool = False,
              uri_part: bool = False, no_resolve: bool = False) -> Url:
    """ngx_parse_url: "unix:/path[:uri]", "[v6]:port/uri", "host:port/uri", "port"."""
    if url[:5].lower() == "unix:":
        return _parse_unix(url, uri_part)
    if url.startswith("["):
        return _parse_inet6(url, default_port, listen, uri_part)
    return _parse_inet(url, default_port, listen, uri_part, no_resolve)


def _parse_unix(url: str, uri_part: bool) -> Url:
    path = url[5:]
    uri = ""
    if uri_part and ":" in path:
        path, uri = path.split(":", 1)
    if not path:
        raise UrlError("no path in the unix domain socket")
    if len(path.encode("utf-8", "surrogateescape")) + 1 > UNIX_PATH_MAX:
        raise UrlError("too long path in the unix domain socket")
    u = Url(host=path, uri=uri, family=socket.AF_UNIX)
    u.addrs.append(Addr(socket.AF_UNIX, None, 0, url[:5] + path, unix_path=path))
    return u


def _parse_port(text: str) -> int:
    n = atoi(text)
    if n is None or n < 1 or n > 65535:
        raise UrlError("invalid port")
    return n


def _parse_inet(url: str, default_port: int, listen: bool, uri_part: bool,
                no_resolve: bool) -> Url:
    u = Url()
    last = len(url)
    port_at = url.find(":")
    uri_at = url.find("/")
    args_at = url.find("?")
    if args_at != -1 and (uri_at == -1 or args_at < uri_at):
        uri_at = args_at
    if uri_at != -1:
        if listen or not uri_part:
            raise UrlError("invalid host")
        u.uri = url[uri_at:]
        last = uri_at
        if uri_at < port_at:
            port_at = -1
    if port_at != -1:
        u.port = _parse_port(url[port_at + 1:last])
        last = port_at
    else:
        if uri_at == -1 and listen and atoi(url) is not None:
            u.port = _parse_port(url)  # a bare number is a port on all addresses
            u.wildcard = True
            _add_inet(u, "0.0.0.0", u.port)
            return u
        u.no_port = True
        u.port = default_port
    host = url[:last]
    if not host:
        raise UrlError("no host")
    u.host = host
    if listen and host == "*":
        u.wildcard = True
        _add_inet(u, "0.0.0.0", u.port)
        return u
    value = inet_addr(host)
    if value is not None:
        u.wildcard = value == 0
        _add_inet(u, _ipv4_text(value), u.port)
        return u
    if no_resolve:
        return u
    resolve_host(u, host, u.port)
    u.family = u.addrs[0].family
    u.wildcard = u.addrs[0].ip in ("0.0.0.0", "::")
    return u


def _parse_inet6(url: str, default_port: int, listen: bool, uri_part: bool) -> Url:
    u = Url(family=socket.AF_INET6)
    close = url.find("]")
    if close == -1:
        raise UrlError("invalid host")
    last = len(url)
    uri_at = url.find("/", close + 1)
    if uri_at != -1:
        if listen or not uri_part:
            raise UrlError("invalid host")
        u.uri = url[uri_at:]
        last = uri_at
    rest = url[close + 1:last]
    if rest:
        if rest[0] != ":":
            raise UrlError("invalid host")
        u.port = _parse_port(rest[1:])
    else:
        u.no_port = True
        u.port = default_port
    inner = url[1:close]
    if not inner:
        raise UrlError("no host")
    u.host = url[:close + 1]
    packed = inet6_addr(inner)
    if packed is None:
        raise UrlError("invalid IPv6 address")
    u.wildcard = packed == bytes(16)
    _add_inet6(u, packed, u.port)
    return u


def ptocidr(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, bool] | None:
    """ngx_ptocidr: (network, host bits were set) or None when it is not a CIDR/address."""
    addr, _, mask = text.partition("/")
    value = inet_addr(addr)
    if value is not None:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(value)
        width = 32
    else:
        packed = inet6_addr(addr)
        if packed is None:
            return None
        ip = ipaddress.IPv6Address(packed)
        width = 128
    if "/" not in text:
        return ipaddress.ip_network((ip, width)), False
    shift = atoi(mask)
    if shift is None or shift > width:
        return None
    net = ipaddress.ip_network((ip, shift), strict=False)
    return net, net.network_address != ip
