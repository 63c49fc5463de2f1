"""The mail `listen` directive (ngx_mail_core_listen) and listening-socket counting."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import replace

from .addr import UrlError, parse_url
from .settings import Listen
from .values import atoi, parse_size, parse_time

# Ports that imply a protocol when a server has none yet (ngx_mail_*_module protocol tables).
PROTOCOL_PORTS = {143: "imap", 993: "imap", 110: "pop3", 995: "pop3",
                  25: "smtp", 465: "smtp", 587: "smtp"}

BACKLOG = 511  # NGX_LISTEN_BACKLOG on Linux


class ListenError(ValueError):
    """Message already in nginx's words; the caller adds the location."""


def _so_keepalive(value: str) -> str:
    if value in ("on", "off"):
        return value
    parts = value.split(":", 2)
    while len(parts) < 3:
        parts.append("")
    idle, intvl, cnt = parts
    numbers = []
    for text, parse in ((idle, lambda t: parse_time(t, True)),
                        (intvl, lambda t: parse_time(t, True)), (cnt, atoi)):
        if not text:
            numbers.append(0)
            continue
        n = parse(text)
        if n is None:
            raise ListenError(f'invalid so_keepalive value: "{value}"')
        numbers.append(n)
    if not any(numbers):
        raise ListenError(f'invalid so_keepalive value: "{value}"')
    return value


def parse_listen(args: list[str]) -> tuple[list[Listen], int]:
    """Parse `listen address [params]` into one Listen per address, plus the port.

    The port (0 for unix sockets) drives protocol auto-detection.
    """
    url_text = args[0]
    try:
        url = parse_url(url_text, listen=True)
    except UrlError as e:
        raise ListenError(f'{e} in "{url_text}" of the "listen" directive') from None

    opts: dict = {"backlog": BACKLOG}
    for param in args[1:]:
        if param == "bind":
            opts["bind"] = True
        elif param.startswith("backlog="):
            n = atoi(param[8:])
            if not n:
                raise ListenError(f'invalid backlog "{param}"')
            opts.update(backlog=n, bind=True)
        elif param.startswith("rcvbuf="):
            n = parse_size(param[7:])
            if n is None:
                raise ListenError(f'invalid rcvbuf "{param}"')
            opts.update(rcvbuf=n, bind=True)
        elif param.startswith("sndbuf="):
            n = parse_size(param[7:])
            if n is None:
                raise ListenError(f'invalid sndbuf "{param}"')
            opts.update(sndbuf=n, bind=True)
        elif param.startswith("ipv6only=o"):
            if param[10:] == "n":
                opts["ipv6only"] = True
            elif param[10:] == "ff":
                opts["ipv6only"] = False
            else:
                raise ListenError(f'invalid ipv6only flags "{param[9:]}"')
            opts["bind"] = True
        elif param == "ssl":
            opts["ssl"] = True
        elif param.startswith("so_keepalive="):
            opts.update(so_keepalive=_so_keepalive(param[13:]), bind=True)
        elif param == "proxy_protocol":
            opts["proxy_protocol"] = True
        else:
            raise ListenError(f'the invalid "{param}" parameter')

    listens = []
    for a in url.addrs:
        if a.family == socket.AF_UNIX:
            listens.append(Listen(text=a.name, host=None, port=None, unix_path=a.unix_path,
                                  **opts))
        else:
            listens.append(Listen(text=a.name, host=a.ip, port=a.port, **opts))
    return listens, url.port


def sockaddr_key(listen: Listen) -> tuple:
    """What ngx_cmp_sockaddr() compares: family, address and port."""
    if listen.unix_path is not None:
        return ("unix", listen.unix_path)
    return (":" in (listen.host or ""), listen.host, listen.port)


def is_wildcard(listen: Listen) -> bool:
    return listen.host in ("0.0.0.0", "::")


def count_listening(listens: Iterable[Listen]) -> int:
    """Sockets actually bound (ngx_mail_optimize_servers): per family and port, a
    wildcard absorbs the specific addresses that do not ask for their own bind()."""
    groups: dict[tuple, list[Listen]] = {}
    for ls in listens:
        if ls.unix_path is not None:
            key: tuple = ("unix",)
        else:
            key = (":" in (ls.host or ""), ls.port)
        groups.setdefault(key, []).append(ls)
    total = 0
    for group in groups.values():
        if any(is_wildcard(ls) for ls in group):
            total += 1 + sum(1 for ls in group if not is_wildcard(ls) and ls.bind)
        else:
            total += len(group)
    return total


def with_ssl(listens: Iterable[Listen]) -> tuple[Listen, ...]:
    """`ssl on` in a server makes every one of its listens implicit TLS."""
    return tuple(ls if ls.ssl else replace(ls, ssl=True) for ls in listens)
