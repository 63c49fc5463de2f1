"""The access log: one line per session at its end (`access_log`, `log_format`).

nginx's mail module has none; this follows nginx's stream module (ngx_stream_log_module):
formats are compiled once per configuration (proxy.conf.accesslog), each worker turns them
into a list of getters once, and a session's line is built once, when it closes. Nothing
runs per read except the byte counters, one integer add per chunk. Values are escaped as
nginx escapes them (escape=default: \\xHH for `"`, `\\`, control and non-ASCII bytes;
escape=json: JSON string escapes; escape=none). Lines go to files, written at once or
gathered in a buffer (buffer=, flush=) like nginx's, or to syslog servers; USR1 flushes and
reopens them.

A line never holds a password or a SASL exchange: no variable reads them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
import zlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postern.proxy.conf.settings import AccessLog, LogFormat, ServerSettings
    from postern.proxy.log import ErrorLog

DEFAULT_FORMAT_NAME = "mail"
DEFAULT_FORMAT = ('$remote_addr:$remote_port [$time_local] $protocol $server_addr:$server_port '
                  '"$login" "$auth_status" $upstream_addr "$end" $bytes_received $bytes_sent '
                  '$session_time $ssl_protocol $session_id')

# How a session ended ($end); the first reason given wins.
RELAYED = "relayed"
TIMEOUT = "timeout"
UPSTREAM_TIMEOUT = "upstream timeout"
AUTH_FAILED = "auth failed"
BACKEND_REFUSED = "backend login failed"
INTERNAL_ERROR = "internal error"
TLS_ERROR = "tls error"
CLIENT_CLOSED = "client closed"
CLOSED = "closed"  # the dialogue ended it: QUIT, LOGOUT, too many errors, a bad PROXY header
SHUTDOWN = "shutdown"

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct",
           b"Nov", b"Dec")


class AccessLogged:
    """What Session keeps for its access-log line (class defaults: nothing per session
    until used)."""

    end: str | None = None
    bytes_received = 0  # from the client, after TLS
    bytes_sent = 0  # to the client, before TLS
    upstream_bytes_received = 0
    upstream_login_sent = 0  # PROXY header and login commands
    relay_mark = -1  # bytes_received when the relay took over, less what it carried along
    started = 0.0  # loop time at accept

    def _ending(self, reason: str) -> None:
        if self.end is None:
            self.end = reason

    def _log_access(self, relaying: bool, quiet: bool) -> None:
        """At close: the reason if none was given, then the line(s)."""
        if self.end is None:
            self.end = RELAYED if relaying else CLIENT_CLOSED if quiet else CLOSED
        log = self.rt.access_log
        if log is not None and self.transport is not None:
            log.write(self)


# -- escaping -------------------------------------------------------------------------------
_DEFAULT_UNSAFE = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')
_JSON_UNSAFE = re.compile(rb'[\x00-\x1f"\\]')
_JSON_SHORT = {0x22: b'\\"', 0x5C: b"\\\\", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t",
               0x08: b"\\b", 0x0C: b"\\f"}


def escape_default(value: bytes) -> bytes:
    """ngx_stream_log_escape."""
    if _DEFAULT_UNSAFE.search(value) is None:
        return value
    return _DEFAULT_UNSAFE.sub(lambda m: b"\\x%02X" % m.group()[0], value)


def escape_json(value: bytes) -> bytes:
    """ngx_escape_json: bytes above 0x7f stay as they are."""
    if _JSON_UNSAFE.search(value) is None:
        return value
    return _JSON_UNSAFE.sub(
        lambda m: _JSON_SHORT.get(m.group()[0]) or b"\\u%04X" % m.group()[0], value)


# a missing value: "-" escaped by default, nothing in json and none (as nginx)
_ESCAPES: dict[str, tuple[Callable[[bytes], bytes] | None, bytes]] = {
    "default": (escape_default, b"-"), "json": (escape_json, b""), "none": (None, b"")}


# -- variables: getter(session, now) -> bytes, or None when the session has no value --------
def _text(value) -> bytes | None:
    return None if value is None else str(value).encode("utf-8", "surrogateescape")


def _addr(session, which: str, index: int) -> bytes | None:
    addr = getattr(session, which)
    if not addr:
        return b"unix:" if index == 0 and which == "client_addr" else None
    return str(addr[index]).encode()


def _login(session, now) -> bytes | None:
    machine = session.machine
    login = machine.creds.login if machine is not None else b""
    return login or None


def _auth_status(session, now) -> bytes | None:
    """The auth server's last word: OK, the Auth-Status text of a failure, WAIT."""
    exchange = session._exchange
    resp = exchange.response if exchange is not None else None
    if resp is None:
        return None
    if resp.error is None and not resp.wait_status:
        return b"OK"
    return resp.error if resp.error is not None else b"WAIT"


def _tls(session):
    tls = session.tls
    return tls if tls is not None and tls.established else None


def _ssl_client_verify(session, now) -> bytes | None:
    tls = _tls(session)
    if tls is None:
        return None
    if tls.peer_certificate() is None:
        return b"NONE"
    rc = tls.verify_result()
    if rc == 0:
        return b"SUCCESS"
    from postern.proxy.tls_headers import verify_error_text
    return b"FAILED:" + verify_error_text(rc).encode()


def _upstream_bytes_sent(session, now) -> bytes:
    relayed = session.bytes_received - session.relay_mark if session.relay_mark >= 0 else 0
    return b"%d" % (session.upstream_login_sent + relayed)


def _seconds(value: float) -> bytes:
    msec = max(0, round(value * 1000))
    return b"%d.%03d" % divmod(msec, 1000)


def _per_second(build: Callable[[time.struct_time], bytes]) -> Callable[[object, float], bytes]:
    """A time variable formatted once per second, not once per line (nginx too keeps its
    time strings cached and updates them when the second changes). The zone is part of the
    key, so a tzset() to another zone is seen at once."""
    cache = [None, b""]

    def get(session, now: float) -> bytes:
        key = (int(now), time.timezone)
        if key != cache[0]:
            cache[0], cache[1] = key, build(time.localtime(key[0]))
        return cache[1]
    return get


@_per_second
def _time_local(tm: time.struct_time) -> bytes:
    return b"%02d/%s/%d:%02d:%02d:%02d %s" % (
        tm.tm_mday, _MONTHS[tm.tm_mon - 1], tm.tm_year, tm.tm_hour, tm.tm_min, tm.tm_sec,
        _offset(tm, b""))


@_per_second
def _time_iso8601(tm: time.struct_time) -> bytes:
    return b"%d-%02d-%02dT%02d:%02d:%02d%s" % (
        tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, _offset(tm, b":"))


def _offset(tm: time.struct_time, sep: bytes) -> bytes:
    off = (tm.tm_gmtoff or 0) // 60
    sign = b"-" if off < 0 else b"+"
    return b"%s%02d%s%02d" % (sign, abs(off) // 60, sep, abs(off) % 60)


VARIABLES: dict[str, Callable[[object, float], bytes | None]] = {
    "remote_addr": lambda s, now: _text(s.client_ip) if s.client_ip else None,
    "remote_port": lambda s, now: _addr(s, "client_addr", 1),
    "server_addr": lambda s, now: _addr(s, "local_addr", 0),
    "server_port": lambda s, now: _addr(s, "local_addr", 1),
    "protocol": lambda s, now: s.conf.protocol.encode(),
    "server_name": lambda s, now: _text(s.conf.server_name),
    "login": _login,
    "auth_status": _auth_status,
    "upstream_addr": lambda s, now: _text(s.upstream_name),
    "ssl_protocol": lambda s, now: _text(t.protocol_version) if (t := _tls(s)) else None,
    "ssl_cipher": lambda s, now: _text(t.cipher) if (t := _tls(s)) else None,
    "ssl_client_verify": _ssl_client_verify,
    "bytes_received": lambda s, now: b"%d" % s.bytes_received,
    "bytes_sent": lambda s, now: b"%d" % s.bytes_sent,
    "upstream_bytes_received": lambda s, now: b"%d" % s.upstream_bytes_received,
    "upstream_bytes_sent": _upstream_bytes_sent,
    "session_time": lambda s, now: _seconds(s.rt.loop.time() - s.started),
    "session_id": lambda s, now: s.session_id.encode(),
    "end": lambda s, now: _text(s.end),
    "connection": lambda s, now: b"%d" % s.id,
    "pid": lambda s, now: b"%d" % os.getpid(),
    "msec": lambda s, now: b"%d.%03d" % divmod(int(now * 1000), 1000),
    "time_local": _time_local,
    "time_iso8601": _time_iso8601,
}


# variables whose value is never missing and never holds a byte any escaping changes
# (digits, dots, ASCII letters, spaces, ':', '/', '+', '-'): no escape call for them
_PLAIN = frozenset(("protocol", "bytes_received", "bytes_sent", "upstream_bytes_received",
                    "upstream_bytes_sent", "session_time", "connection", "pid", "msec",
                    "time_local", "time_iso8601"))


def _escaped(get: Callable[[object, float], bytes | None],
             escape: Callable[[bytes], bytes] | None,
             missing: bytes) -> Callable[[object, float], bytes]:
    if escape is None:
        return lambda session, now: (
            missing if (value := get(session, now)) is None else value)
    return lambda session, now: (
        missing if (value := get(session, now)) is None else escape(value))


# -- formats ----------------------------------------------------------------------------------
class CompiledFormat:
    """A LogFormat as a bytes template (its literals, '%s' for each variable) and one getter
    per variable that returns the value ready to print: render(session, now) -> the line."""

    __slots__ = ("getters", "parts", "template")

    def __init__(self, fmt: LogFormat) -> None:
        escape, missing = _ESCAPES[fmt.escape]
        template, getters = [], []
        for part in fmt.parts:
            if isinstance(part, str):
                template.append(part.encode("utf-8", "surrogateescape").replace(b"%", b"%%"))
            else:
                get = VARIABLES[part.name]
                getters.append(get if part.name in _PLAIN else _escaped(get, escape, missing))
                template.append(b"%s")
        self.parts = fmt.parts
        self.template = b"".join(template)
        self.getters = tuple(getters)

    def render(self, session, now: float) -> bytes:
        return self.template % tuple([get(session, now) for get in self.getters])


# -- files -----------------------------------------------------------------------------------
class LogFile:
    """One access-log file of a worker: written at once, or through a buffer that is
    written when the next line does not fit, when `flush` seconds passed since its first
    line, on reopen and at exit (ngx_stream_log_handler, ngx_stream_log_flush)."""

    def __init__(self, path: str, size: int, flush: float, loop, error_log: ErrorLog,
                 gzip: int = 0) -> None:
        self.path, self.size, self.flush_after, self.gzip = path, size, flush, gzip
        self.loop, self.error_log = loop, error_log
        self.buffer = bytearray()
        self.timer = None
        self.fd = -1
        self.disk_full_at = -1
        self.failed_at = -100.0
        self.reopen()

    def write(self, line: bytes) -> None:
        if not self.size:
            self._write(line)
            return
        if len(line) > self.size - len(self.buffer):
            self.flush()
        if len(line) <= self.size - len(self.buffer):
            if self.flush_after and not self.buffer:
                self.timer = self.loop.call_later(self.flush_after, self.flush)
            self.buffer += line
            return
        self._write(line)  # longer than the whole buffer

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.buffer:
            data, self.buffer = bytes(self.buffer), bytearray()
            self._write(data)

    def _write(self, data: bytes) -> None:
        now = time.monotonic()
        if self.fd < 0 or int(now) == self.disk_full_at:
            return
        if self.gzip:
            data = gzip_member(data, self.gzip)
        try:
            written = os.write(self.fd, data)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self.disk_full_at = int(now)  # as nginx: skip the rest of this second
            if now - self.failed_at > 59:  # one alert a minute, as nginx
                self.failed_at = now
                self.error_log.log("alert", f'write() to "{self.path}" failed '
                                   f"({exc.errno}: {os.strerror(exc.errno or errno.EIO)})")
            return
        if written != len(data) and now - self.failed_at > 59:
            self.failed_at = now
            self.error_log.log("alert", f'write() to "{self.path}" was incomplete: '
                               f"{written} of {len(data)}")

    def reopen(self) -> None:
        self.flush()
        try:
            fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        except OSError as exc:
            self.error_log.log("alert", f'open() "{self.path}" failed '
                               f"({exc.errno}: {os.strerror(exc.errno or errno.EIO)})")
            return  # keep writing to the old file, if any
        old, self.fd = self.fd, fd
        if old >= 0:
            with contextlib.suppress(OSError):
                os.close(old)

    def close(self) -> None:
        self.flush()
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def gzip_member(data: bytes, level: int) -> bytes:
    """ngx_stream_log_gzip: each write is a whole gzip member (`zcat` reads them as one
    stream), with a window no larger than the data needs."""
    wbits, memlevel = zlib.MAX_WBITS, 8
    while len(data) < (1 << (wbits - 1)) - 262:
        wbits -= 1
        memlevel -= 1
    packer = zlib.compressobj(level, zlib.DEFLATED, wbits + 16, max(memlevel, 1))
    return packer.compress(data) + packer.flush()


class SyslogFile:
    """An access_log syslog:server=... (never buffered, as in nginx)."""

    def __init__(self, spec: AccessLog) -> None:
        from postern.proxy.log import SyslogSender
        self.sender = SyslogSender(spec.syslog)

    def write(self, line: bytes) -> None:
        self.sender.send(line)

    def reopen(self) -> None:
        self.sender.close()  # a new socket with the next line

    def close(self) -> None:
        self.sender.close()


class ServerAccessLog:
    """The access logs of one server{}: (file, format, if= condition) each."""

    __slots__ = ("entries", "error_log")

    def __init__(self, entries: list[tuple[LogFile, CompiledFormat, CompiledFormat | None]],
                 error_log: ErrorLog) -> None:
        self.entries = entries
        self.error_log = error_log

    def write(self, session) -> None:
        """Never raises: a log line is not worth a session's clean end."""
        try:
            now = time.time()
            for file, fmt, condition in self.entries:
                if condition is not None and condition.render(session, now) in (b"", b"0"):
                    continue
                file.write(fmt.render(session, now) + b"\n")
        except Exception as exc:  # noqa: BLE001
            self.error_log.log("alert", f"access log line failed: {type(exc).__name__}: {exc}")


class AccessLogs:
    """A worker's access-log files, one per path, shared by the servers that name it."""

    def __init__(self, servers: Iterable[ServerSettings], loop, error_log: ErrorLog) -> None:
        self.loop, self.error_log = loop, error_log
        # nginx keeps a buffer per file: an unbuffered access_log of a buffered file uses it
        self.buffers: dict[str, tuple[int, float, int]] = {}
        for conf in servers:
            for spec in conf.access_logs:
                if spec.buffer:
                    self.buffers[spec.path] = (spec.buffer, spec.flush, spec.gzip)
        self.files: dict[str | int, LogFile | SyslogFile] = {}
        self.formats: dict[int, CompiledFormat] = {}

    def for_server(self, conf: ServerSettings) -> ServerAccessLog | None:
        if not conf.access_logs:
            return None
        entries = []
        for spec in conf.access_logs:
            entries.append((self._file(spec), self._format(spec.format),
                            self._format(spec.condition) if spec.condition else None))
        return ServerAccessLog(entries, self.error_log)

    def _file(self, spec: AccessLog) -> LogFile | SyslogFile:
        if spec.syslog is not None:
            return self.files.setdefault(id(spec), SyslogFile(spec))
        file = self.files.get(spec.path)
        if file is None:
            size, flush, gzip = self.buffers.get(spec.path, (0, 0.0, 0))
            file = self.files[spec.path] = LogFile(spec.path, size, flush, self.loop,
                                                   self.error_log, gzip)
        return file

    def _format(self, fmt: LogFormat) -> CompiledFormat:
        compiled = self.formats.get(id(fmt))
        if compiled is None:
            compiled = self.formats[id(fmt)] = CompiledFormat(fmt)
        return compiled

    def reopen(self) -> None:
        for file in self.files.values():
            file.reopen()

    def close(self) -> None:
        for file in self.files.values():
            file.close()
