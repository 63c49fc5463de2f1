"""Directive handlers that need more than a generic slot (nginx's custom set functions)."""

from __future__ import annotations

import grp
import os
import pwd

from . import accesslog, authclient, build
from .addr import Url, UrlError, parse_url, ptocidr, resolve_host
from .engine import Level, Parser, Stmt
from .listen import PROTOCOL_PORTS, ListenError, parse_listen, sockaddr_key
from .logtarget import LogTargetError, parse_error_log
from .settings import MetricsListen, Resolver
from .values import PAGE_SIZE, atoi, parse_flag, parse_size, parse_time

PROTOCOLS = ("imap", "pop3", "smtp")
EVENT_METHODS = ("epoll", "poll", "select")


def _dup(level: Level, key: str, stmt: Stmt) -> None:
    if key in level.values:
        raise stmt.error(f'"{stmt.name}" directive is duplicate')


# --- main and events contexts ---------------------------------------------------------

def worker_processes(parser: Parser, level: Level, stmt: Stmt) -> None:
    _dup(level, "worker_processes", stmt)
    if stmt.args[0] == "auto":
        level.values["worker_processes"] = os.cpu_count() or 1
        return
    n = atoi(stmt.args[0])
    if n is None:
        raise stmt.error('"worker_processes" directive invalid value')
    level.values["worker_processes"] = n


def worker_connections(parser: Parser, level: Level, stmt: Stmt) -> None:
    _dup(level, "worker_connections", stmt)
    n = atoi(stmt.args[0])
    if n is None:
        raise stmt.error(f'invalid number "{stmt.args[0]}"')
    level.values["worker_connections"] = n


def use(parser: Parser, level: Level, stmt: Stmt) -> None:
    _dup(level, "use", stmt)
    if stmt.args[0] not in EVENT_METHODS:
        raise stmt.error(f'invalid event type "{stmt.args[0]}"')
    level.values["use"] = stmt.args[0]


def worker_priority(parser: Parser, level: Level, stmt: Stmt) -> None:
    _dup(level, "worker_priority", stmt)
    text = stmt.args[0]
    if atoi(text.removeprefix("-")) is None:
        raise stmt.error('"worker_priority" directive invalid number')
    level.values["worker_priority"] = text


def user(parser: Parser, level: Level, stmt: Stmt) -> None:
    _dup(level, "user", stmt)
    if os.geteuid() != 0:
        parser.warn('the "user" directive makes sense only if the master process runs '
                    "with super-user privileges, ignored", stmt.file, stmt.line)
        return
    name = stmt.args[0]
    group = stmt.args[-1]  # a lone user name is also the group name, as in nginx
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise stmt.error(f'getpwnam("{name}") failed') from None
    try:
        grp.getgrnam(group)
    except KeyError:
        raise stmt.error(f'getgrnam("{group}") failed') from None
    level.values["user"] = (name, group)


def events(parser: Parser, level: Level, stmt: Stmt) -> None:
    if "events" in parser.state:
        raise stmt.error('"events" directive is duplicate')
    parser.state["events"] = events_level = Level("events")
    parser.parse_block(stmt.reader, events_level)


def not_a_mail_block(parser: Parser, level: Level, stmt: Stmt) -> None:
    """`http {}` / `stream {}`: read past the block without handling what is inside (its
    includes are not opened), so the mail part of an existing nginx.conf runs as it is."""
    parser.skip_block(stmt.reader)
    parser.warn(f'"{stmt.name}" block skipped: postern proxies mail only, its content and '
                'includes are not read', stmt.file, stmt.line)


def include(parser: Parser, level: Level, stmt: Stmt) -> None:
    parser.include(level, stmt)


def error_log(parser: Parser, level: Level, stmt: Stmt) -> None:
    try:
        target = parse_error_log(stmt.args, parser.prefix)
    except LogTargetError as e:
        raise stmt.error(str(e)) from None
    if target is None:
        parser.warn(f'error log "{stmt.args[0]}" is not supported, ignored',
                    stmt.file, stmt.line)
        return
    level.values.setdefault("error_logs", []).append(target)
    if target.kind == "file":
        parser.state.setdefault("log_files", []).append(target.path)


# --- mail {} and server {} ----------------------------------------------------------

def mail(parser: Parser, level: Level, stmt: Stmt) -> None:
    if "mail" in parser.state:
        raise stmt.error('"mail" directive is duplicate')
    parser.state["mail"] = mail_level = Level("mail")
    parser.state["servers"] = []
    parser.state["mail_listens"] = []
    parser.parse_block(stmt.reader, mail_level)
    # merging happens when the block closes, as in ngx_mail_block(); errors that
    # nginx words with the parser's position point at the closing "}"
    parser.state["server_settings"] = build.build_servers(
        parser, mail_level, parser.state["servers"], stmt.reader.name, stmt.reader.line)
    accesslog.check_variables(parser)  # after the merge, as ngx_stream_variables_init_vars


def server(parser: Parser, level: Level, stmt: Stmt) -> None:
    srv = Level("server", file=stmt.file, line=stmt.line)
    parser.state["servers"].append(srv)
    parser.parse_block(stmt.reader, srv)
    if "listen" not in srv.values:
        raise build.location_error('no "listen" is defined for server', srv)


def listen(parser: Parser, level: Level, stmt: Stmt) -> None:
    level.values["listen"] = True
    try:
        listens, port = parse_listen(stmt.args)
    except ListenError as e:
        raise stmt.error(str(e)) from None
    if level.protocol is None and listens[0].unix_path is None:
        level.protocol = PROTOCOL_PORTS.get(port)
    if any(ls.ssl for ls in listens):
        level.ssl_listen = True
        level.ssl_file, level.ssl_line = stmt.file, stmt.line
    known = parser.state["mail_listens"]
    for ls in listens:
        if any(sockaddr_key(prev) == sockaddr_key(ls) for prev in known):
            raise stmt.error(f'duplicate "{ls.text}" address and port pair')
        known.append(ls)
    level.listens.extend(listens)


def protocol(parser: Parser, level: Level, stmt: Stmt) -> None:
    if stmt.args[0] not in PROTOCOLS:
        raise stmt.error(f'unknown protocol "{stmt.args[0]}"')
    level.protocol = stmt.args[0]


def resolver(parser: Parser, level: Level, stmt: Stmt) -> None:
    _dup(level, "resolver", stmt)
    if stmt.args[0] == "off":
        level.values["resolver"] = None
        return
    addresses: list[tuple[str, int]] = []
    valid: float | None = None
    ipv4 = ipv6 = True
    for word in stmt.args:
        if word.startswith("valid="):
            seconds = parse_time(word[6:], is_sec=True)
            if seconds is None:
                raise stmt.error(f"invalid parameter: {word}")
            valid = float(seconds)
            continue
        if word.startswith(("ipv4=", "ipv6=")):
            value = {"on": True, "off": False}.get(word[5:])
            if value is None:
                raise stmt.error(f"invalid parameter: {word}")
            if word.startswith("ipv4="):
                ipv4 = value
            else:
                ipv6 = value
            continue
        if word.startswith("status_zone="):
            continue  # statistics zone of newer nginx: nothing to collect here
        try:
            url = parse_url(word, default_port=53)
        except UrlError as e:
            raise stmt.error(f'{e} in resolver "{word}"') from None
        addresses.extend((a.ip, a.port) for a in url.addrs if a.ip is not None)
    if not ipv4 and not ipv6:
        raise stmt.error('"ipv4" and "ipv6" cannot both be "off"')
    if not addresses:
        raise stmt.error("no name servers defined")
    level.values["resolver"] = Resolver(tuple(addresses), valid, ipv4, ipv6)


def auth_http(parser: Parser, level: Level, stmt: Stmt) -> None:
    level.values["auth_http"] = authclient.parse_auth_url(stmt, stmt.args[0])


def metrics_listen(parser: Parser, level: Level, stmt: Stmt) -> None:
    """`metrics_listen address:port`: one TCP listener of the master (proxy.metrics)."""
    if "metrics_listen" in parser.state:
        raise stmt.error('"metrics_listen" directive is duplicate')
    word = stmt.args[0]
    if word[:5].lower() == "unix:":
        raise stmt.error(f'unix domain sockets are not supported in "metrics_listen {word}"')
    try:
        url = parse_url(word, listen=True)
    except UrlError as e:
        raise stmt.error(f'{e} in "{word}" of the "metrics_listen" directive') from None
    if url.no_port or not url.addrs:
        raise stmt.error(f'no port in "{word}" of the "metrics_listen" directive')
    if len(url.addrs) > 1:
        raise stmt.error(f'"{word}" of the "metrics_listen" directive has more than one '
                         "address")
    addr = url.addrs[0]
    parser.state["metrics_listen"] = MetricsListen(addr.name, addr.ip, addr.port)


def proxy_protocol(parser: Parser, level: Level, stmt: Stmt) -> None:
    _dup(level, "proxy_protocol", stmt)
    word = stmt.args[0]
    if word.lower() == "v2":  # PROXY v2 to backends, nginx 1.31.4
        level.values["proxy_protocol"] = "v2"
        return
    value = parse_flag(word)
    if value is None:
        raise stmt.error(f'invalid value "{word}" in "{stmt.name}" directive, '
                         'it must be "on" or "off"')
    level.values["proxy_protocol"] = "on" if value else "off"


def set_real_ip_from(parser: Parser, level: Level, stmt: Stmt) -> None:
    trusted = level.values.setdefault("set_real_ip_from", [])
    word = stmt.args[0]
    if word == "unix:":
        trusted.append("unix:")
        return
    parsed = ptocidr(word)
    if parsed is not None:
        net, host_bits = parsed
        if host_bits:
            parser.warn(f"low address bits of {word} are meaningless", stmt.file, stmt.line)
        trusted.append(net)
        return
    url = Url()
    try:
        resolve_host(url, word, 0)
    except UrlError as e:
        raise stmt.error(f'{e} in set_real_ip_from "{word}"') from None
    for a in url.addrs:
        trusted.append(ptocidr(a.ip)[0])  # type: ignore[index, arg-type]


# --- ssl --------------------------------------------------------------------------

def _tls_location(level: Level, stmt: Stmt) -> None:
    if not level.ssl_listen:
        level.ssl_file, level.ssl_line = stmt.file, stmt.line


def ssl_after(parser: Parser, level: Level, stmt: Stmt) -> None:
    """`ssl on|off` (nginx 1.22, removed in 1.25.1): kept for old configurations."""
    parser.warn('the "ssl" directive is deprecated, use the "listen ... ssl" directive '
                "instead", stmt.file, stmt.line)
    if level.values["ssl.enable"] and level.values.get("ssl.starttls", "off") != "off":
        raise stmt.error('"starttls" directive conflicts with "ssl on"')
    _tls_location(level, stmt)


def starttls_after(parser: Parser, level: Level, stmt: Stmt) -> None:
    if level.values.get("ssl.enable") and level.values["ssl.starttls"] != "off":
        raise stmt.error('"ssl" directive conflicts with "starttls"')
    _tls_location(level, stmt)


def ssl_session_cache(parser: Parser, level: Level, stmt: Stmt) -> None:
    zones: dict[str, int] = parser.state.setdefault("shm_zones", {})
    for word in stmt.args:
        if word in ("off", "none", "builtin"):
            continue
        if word.startswith("builtin:") and len(word) > 8:
            if atoi(word[8:]) is None:
                raise stmt.error(f'invalid session cache "{word}"')
            continue
        if word.startswith("shared:") and len(word) > 7:
            name, colon, size_text = word[7:].partition(":")
            n = parse_size(size_text) if colon else None
            if not name or n is None:
                raise stmt.error(f'invalid session cache "{word}"')
            if n < 8 * PAGE_SIZE:
                raise stmt.error(f'session cache "{word}" is too small')
            if zones.get(name, n) != n:
                raise stmt.error(f'the size {n} of shared memory zone "{name}" conflicts '
                                 f"with already declared size {zones[name]}")
            zones[name] = n
            continue
        raise stmt.error(f'invalid session cache "{word}"')
    level.values["ssl.session_cache"] = " ".join(stmt.args)


def ssl_password_file(parser: Parser, level: Level, stmt: Stmt) -> None:
    _dup(level, "ssl.password_file", stmt)
    path = parser.full_name(stmt.args[0], conf_prefix=True)
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise stmt.error(f'open() "{path}" failed ({e.errno}: {os.strerror(e.errno or 5)})'
                         ) from None
    level.values["ssl.password_file"] = path


def record_sessions(parser: Parser, level: Level, stmt: Stmt) -> None:
    """``record_sessions PATH | off`` (Postern's, proxy/recorder.py): a relative PATH hangs
    off the prefix, as nginx's log paths do, and is opened (created) when the configuration
    is read."""
    _dup(level, "record_sessions", stmt)
    if stmt.args[0] == "off":
        level.values["record_sessions"] = None
        return
    path = parser.full_name(stmt.args[0])
    try:  # as nginx opens its log files: at start, so a bad path is an [emerg], not silence
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640))
    except OSError as e:
        raise stmt.error(f'open() "{path}" failed ({e.errno}: {os.strerror(e.errno or 5)})'
                         ) from None
    level.values["record_sessions"] = path
