"""The error log, written exactly as nginx writes it.

    2024/05/01 12:00:00 [info] 4242#4242: *7 client logged in

Destinations come from `error_log` (see proxy.conf.logtarget): files, stderr and syslog
servers (RFC 3164 over UDP or a unix datagram socket, byte for byte what nginx sends).
Writing never raises: a full disk, a removed directory or a dead syslog server must not
take a worker down, so every failure is swallowed (nginx does the same). The log writes
what it is given; keeping passwords out of messages is the caller's job.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable

from .conf.settings import LogTarget

LEVELS = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
RANK = {name: i for i, name in enumerate(LEVELS)}
MAX_LINE = 2048  # NGX_MAX_ERROR_STR: one line, final newline included
FACILITIES = ("kern", "user", "mail", "daemon", "auth", "intern", "lpr", "news", "uucp",
              "clock", "authpriv", "ftp", "ntp", "audit", "alert", "cron", "local0",
              "local1", "local2", "local3", "local4", "local5", "local6", "local7")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def _ident() -> str:
    """"PID#TID": nginx built with threads on Linux prints gettid(), the pid for the
    main thread."""
    return f"{os.getpid()}#{threading.get_native_id()}"


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


class _Clock:
    """Formats the two timestamps nginx uses, once per second."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.second = -1
        self.err_time = b""
        self.syslog_time = b""

    def now(self) -> int:
        second = int(self.clock())
        if second != self.second:
            tm = time.localtime(second)
            self.err_time = time.strftime("%Y/%m/%d %H:%M:%S", tm).encode()
            self.syslog_time = (f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} "
                                f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}").encode()
            self.second = second
        return second


class _FileWriter:
    def __init__(self, path: str):
        self.path = path
        self.fd = -1
        self.disk_full_at = -1
        self.reopen()

    def reopen(self) -> None:
        try:
            fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        except OSError:
            return  # keep writing to the old file, if any
        old, self.fd = self.fd, fd
        if old >= 0:
            _close(old)

    def write(self, line: bytes, level: int, clock: _Clock) -> None:
        if self.fd < 0 or clock.second == self.disk_full_at:
            return
        try:
            os.write(self.fd, line)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                self.disk_full_at = clock.second  # as nginx: skip the rest of this second

    def close(self) -> None:
        if self.fd >= 0:
            _close(self.fd)
            self.fd = -1


class _StderrWriter:
    def write(self, line: bytes, level: int, clock: _Clock) -> None:
        with contextlib.suppress(OSError):
            os.write(2, line)

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


class _SyslogWriter:
    """ngx_syslog_writer(): the error-log line without its newline after an RFC 3164
    header whose severity is the message's level (the severity= parameter only applies
    to access logs)."""

    def __init__(self, target: LogTarget, hostname: str):
        self.facility = (FACILITIES.index(target.syslog_facility)
                         if target.syslog_facility in FACILITIES else 23)  # local7
        host = b"" if target.syslog_nohostname else _encode(hostname) + b" "
        self.tail = host + _encode(target.syslog_tag) + b": "
        if target.syslog_unix_path is not None:
            self.family, self.address = socket.AF_UNIX, target.syslog_unix_path
        else:
            ip = target.syslog_host or "127.0.0.1"
            self.family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            self.address = (ip, target.syslog_port)
        self.sock: socket.socket | None = None

    def write(self, line: bytes, level: int, clock: _Clock) -> None:
        packet = (b"<%d>" % (self.facility * 8 + level) + clock.syslog_time + b" "
                  + self.tail + line[:-1])
        try:
            if self.sock is None:
                sock = socket.socket(self.family, socket.SOCK_DGRAM)
                try:
                    sock.setblocking(False)
                    sock.connect(self.address)
                except OSError:
                    sock.close()
                    raise
                self.sock = sock
            self.sock.send(packet)
        except OSError:
            self.close()  # reconnect with the next message, as nginx does

    def reopen(self) -> None:
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


class SyslogSender:
    """Access-log lines to a syslog target: its severity= parameter, not a level, is every
    message's severity (ngx_syslog_add_header for access logs)."""

    def __init__(self, target: LogTarget, *, hostname: str | None = None,
                 clock: Callable[[], float] = time.time):
        host = hostname if hostname is not None else socket.gethostname().lower()
        self._writer = _SyslogWriter(target, host)
        self._clock = _Clock(clock)
        self._severity = RANK.get(target.syslog_severity, RANK["info"])

    def send(self, line: bytes) -> None:
        """One line, its newline included (it is left out of the packet); never raises."""
        self._clock.now()
        self._writer.write(line, self._severity, self._clock)

    def close(self) -> None:
        self._writer.close()


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class ErrorLog:
    """Writes nginx-format lines to every target whose level admits the message."""

    def __init__(self, targets: Iterable[LogTarget], *, hostname: str | None = None,
                 clock: Callable[[], float] = time.time):
        host = hostname if hostname is not None else socket.gethostname().lower()
        self._clock = _Clock(clock)
        self._writers: list[tuple[int, _FileWriter | _StderrWriter | _SyslogWriter]] = []
        for target in targets:
            if target.kind == "file" and target.path:
                writer: _FileWriter | _StderrWriter | _SyslogWriter = _FileWriter(target.path)
            elif target.kind == "stderr":
                writer = _StderrWriter()
            elif target.kind == "syslog":
                writer = _SyslogWriter(target, host)
            else:
                continue
            self._writers.append((RANK.get(target.level, RANK["error"]), writer))
        self._max_rank = max((rank for rank, _ in self._writers), default=-1)

    def enabled(self, level: str) -> bool:
        """True if some target would write a message of this level (skip costly
        formatting of debug messages when not)."""
        return RANK.get(level, 0) <= self._max_rank

    def log(self, level: str, message: str, conn: int | None = None) -> None:
        """`YYYY/MM/DD HH:MM:SS [level] PID#TID: *CONN message`; never raises."""
        with contextlib.suppress(Exception):  # a log line is never worth a crash
            rank = RANK[level]
            if rank > self._max_rank:
                return
            clock = self._clock
            clock.now()
            head = b"%s [%s] %s: " % (clock.err_time, level.encode(), _ident().encode())
            if conn is not None:
                head += b"*%d " % conn
            line = head + _encode(message)
            if len(line) > MAX_LINE - 1:
                line = line[:MAX_LINE - 1]
            line += b"\n"
            for target_rank, writer in self._writers:
                if rank <= target_rank:
                    writer.write(line, rank, clock)

    def reopen(self) -> None:
        """Reopen files (SIGUSR1 after rotation) and syslog sockets."""
        for _, writer in self._writers:
            with contextlib.suppress(Exception):
                writer.reopen()

    def close(self) -> None:
        for _, writer in self._writers:
            with contextlib.suppress(Exception):
                writer.close()


# -- debug lines ------------------------------------------------------------------------------
# Header names whose values are secrets: the password (or SASL response, token, CRAM-MD5
# or APOP digest) nginx sends and the auth server may send back. nginx logs the auth
# request whole at debug; Postern writes xxxxxxxx instead of these values.
SECRET_HEADERS = (b"auth-pass:",)
MASK = "xxxxxxxx"


def masked_header_lines(block: bytes) -> list[str]:
    """An HTTP header block as printable lines, secret values masked."""
    lines = []
    for raw in block.split(b"\r\n"):
        if not raw:
            continue
        if raw.lower().startswith(SECRET_HEADERS):
            name = raw.split(b":", 1)[0]
            lines.append(f"{name.decode('latin-1')}: {MASK}")
        else:
            lines.append(raw.decode("latin-1"))
    return lines
