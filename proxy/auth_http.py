"""The auth_http client: the request nginx sends, and nginx's exact reading of the reply.

build_request() and parse_response() are pure; query() is the only I/O here. The parser
copies nginx's rules (docs/behaviour.md §10.3-10.4): the HTTP status is ignored, header names are
[A-Za-z0-9-], the whole header block must fit in 1024 bytes, the last occurrence wins.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import re
from dataclasses import dataclass, field

from postern.proxy.conf.settings import AuthHttp

RESPONSE_LIMIT = 1024

_ESCAPE = {b: b"%%%02X" % b for b in range(0x21)} | {0x25: b"%25"}


def errno_text(exc: OSError) -> str:
    """"(111: Connection refused)", as nginx appends a system error to a log line."""
    if exc.errno is None:
        return f"({exc})"
    return f"({exc.errno}: {os.strerror(exc.errno)})"


_TO_ESCAPE = re.compile(rb"[\x00-\x20%]")


def escape(value: bytes) -> bytes:
    """Escape as nginx's NGX_ESCAPE_MAIL_AUTH: controls, space and '%' only."""
    return _TO_ESCAPE.sub(lambda m: _ESCAPE[m[0][0]], value)


@dataclass
class AuthRequest:
    """What one auth request says; the session fills it from its state."""

    method: str  # plain | apop | cram-md5 | external | none
    user: bytes
    password: bytes | None
    protocol: str
    attempt: int
    client_ip: str
    salt: bytes | None = None  # includes its CRLF, as nginx stores it
    client_host: str | None = None
    proxy_protocol: tuple[str, int, str, int] | None = None
    smtp_helo: bytes = b""
    smtp_from: bytes = b""
    smtp_to: bytes = b""
    ssl_headers: list[tuple[str, bytes]] = field(default_factory=list)


def request_head(conf: AuthHttp, http11: bool = False) -> bytes:
    """The request line and Host header: all that differs between auth servers."""
    return b"GET %s HTTP/1.%d\r\nHost: %s\r\n" % (conf.uri.encode(), http11,
                                                   conf.host_header.encode())


def build_request(conf: AuthHttp, extra_headers: tuple[tuple[str, str], ...],
                  req: AuthRequest) -> bytes:
    out = [
        request_head(conf),
        b"Auth-Method: %s\r\n" % req.method.encode(),
        b"Auth-User: %s\r\n" % escape(req.user),
        b"Auth-Pass: %s\r\n" % escape(req.password or b""),
    ]
    if req.salt and req.method in ("apop", "cram-md5"):
        out.append(b"Auth-Salt: %s" % req.salt)
    out += [
        b"Auth-Protocol: %s\r\n" % req.protocol.encode(),
        b"Auth-Login-Attempt: %d\r\n" % req.attempt,
        b"Client-IP: %s\r\n" % req.client_ip.encode(),
    ]
    if req.client_host is not None:
        out.append(b"Client-Host: %s\r\n" % req.client_host.encode())
    if req.proxy_protocol:
        src, sport, dst, dport = req.proxy_protocol
        out.append(b"Proxy-Protocol-Addr: %s\r\nProxy-Protocol-Port: %d\r\n"
                   b"Proxy-Protocol-Server-Addr: %s\r\nProxy-Protocol-Server-Port: %d\r\n"
                   % (src.encode(), sport, dst.encode(), dport))
    if req.method == "none":
        out.append(b"Auth-SMTP-Helo: %s\r\nAuth-SMTP-From: %s\r\nAuth-SMTP-To: %s\r\n"
                   % (req.smtp_helo, req.smtp_from, req.smtp_to))
    for name, value in req.ssl_headers:
        out.append(b"%s: %s\r\n" % (name.encode(), value))
    for name, value in extra_headers:
        out.append(b"%s: %s\r\n" % (name.encode(), value.encode()))
    out.append(b"\r\n")
    return b"".join(out)


class AuthServerError(Exception):
    """The auth server misbehaved; the client gets the internal-error line. The message is
    nginx's error-level log line; empty where nginx logs nothing."""


@dataclass
class AuthResponse:
    """The decoded reply. Exactly one of: failed (error text), wait, or success."""

    error: bytes | None = None  # Auth-Status text other than OK/WAIT
    wait_status: bool = False
    server: bytes = b""
    port: bytes = b""
    user: bytes | None = None
    password: bytes | None = None
    wait: int = 0
    error_code: bytes | None = None
    # TLS towards the backend, per user (read only with proxy_ssl_auth_header on)
    backend_tls: bytes | None = None
    backend_tls_name: bytes | None = None

    def backend(self, peer: str, names: bool = False) -> tuple[str, int]:
        """Validate Auth-Server/Auth-Port for a success; raise as nginx would. With `names`
        (auth_http_server_names, beyond nginx) a host name is returned as it is, lowercased,
        for the caller to resolve."""
        if not self.server or not self.port:
            raise AuthServerError(f"auth http server {peer} did not send server or port")
        text = self.server.decode("latin-1")
        try:
            addr = _normal_address(text)
        except ValueError:
            if names and is_host_name(self.server):
                addr = text.lower()
            else:
                raise AuthServerError(
                    f'auth http server {peer} sent invalid server address:"{text}"') from None
        port_text = self.port.decode("latin-1")
        port = atoi(self.port)
        if port is None or not 1 <= port <= 65535:
            raise AuthServerError(f'auth http server {peer} sent invalid server port:"{port_text}"')
        return addr, port


INT_MAX = 2**63 - 1  # NGX_MAX_INT_T_VALUE on 64-bit builds


def atoi(value: bytes) -> int | None:
    """ngx_atoi(): ASCII digits only (no sign, no Unicode digits), None past INT_MAX."""
    if not value or not value.isdigit():  # bytes.isdigit() is ASCII-only
        return None
    n = int(value)
    return n if n <= INT_MAX else None


_HOST_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


def is_host_name(value: bytes) -> bool:
    """A name worth a DNS lookup (RFC 1034): labels of 1-63 letters, digits and '-', not
    starting with '-', at most 253 bytes, a letter somewhere (so no IPv4-like garbage)."""
    if not value or len(value) > 253 or not _HOST_BYTES.issuperset(value):
        return False
    labels = value.split(b".")
    return all(0 < len(label) <= 63 and not label.startswith(b"-") for label in labels) \
        and any(chr(b).isalpha() for b in value)


@functools.lru_cache(maxsize=1024)
def _normal_address(text: str) -> str:
    """An IP literal as nginx prints it; cached, as auth servers name few backends. A scope
    id ("fe80::1%eth0") is no address to ngx_inet6_addr(), though Python takes it."""
    if "%" in text:
        raise ValueError(text)
    return str(ipaddress.ip_address(text))


def _skip_status_line(data: bytes, peer: str) -> int | None:
    """Offset of the first header byte, or None when more data is needed."""
    if not data.startswith(b"HTTP/"[: len(data)]):
        return 0  # not a status line: nginx parses headers from byte 0
    if len(data) < 5:
        return None
    lf = data.find(b"\n", 5)
    cr = data.find(b"\r", 5)
    if cr >= 0 and (lf < 0 or cr < lf):
        if cr + 1 == len(data):
            return None
        if data[cr + 1] != 0x0A:
            raise AuthServerError(f"auth http server {peer} sent invalid response")
        return cr + 2
    return None if lf < 0 else lf + 1


_NAME_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


# a header line the byte-by-byte reading below accepts whole: name, optional ':' with spaces
# and a value, then CRLF or LF
_WELL_FORMED_LINE = re.compile(rb"([A-Za-z0-9][A-Za-z0-9-]*)(?:: *([^\r\n]*))?\r?\n")


def _header_lines(data: bytes, pos: int, peer: str):
    """Yield (name, value) exactly as ngx_mail_auth_http_parse_header_line reads them.

    Returns at the empty line ending the block; raises EOFError when it is incomplete.
    """
    n = len(data)
    while True:
        # the common, well-formed line in one step; anything else byte by byte below
        line = _WELL_FORMED_LINE.match(data, pos)
        if line is not None:
            yield line[1], (line[2] or b"").rstrip(b" ")
            pos = line.end()
            continue
        if pos >= n:
            raise EOFError
        bad = AuthServerError(f"auth http server {peer} sent invalid header in response")
        ch = data[pos]
        if ch in (0x0A, 0x0D):  # the empty line
            if ch == 0x0D:
                if pos + 1 >= n:
                    raise EOFError
                if data[pos + 1] != 0x0A:
                    raise bad
            return
        if ch not in _NAME_BYTES:
            raise bad
        i = pos + 1
        while i < n and (data[i] in _NAME_BYTES or data[i] == 0x2D):
            i += 1
        name = data[pos:i]
        if i >= n:
            raise EOFError
        value = b""
        if data[i] == 0x3A:  # ':' then spaces, value, trailing spaces trimmed
            j = i + 1
            while j < n and data[j] == 0x20:
                j += 1
            k = j
            while k < n and data[k] not in (0x0D, 0x0A):
                k += 1
            value = data[j:k].rstrip(b" ")
            i = k
        if i >= n:
            raise EOFError
        if data[i] == 0x0D:
            if i + 1 >= n:
                raise EOFError
            if data[i + 1] != 0x0A:
                raise bad
            i += 1
        elif data[i] != 0x0A:
            raise bad  # any other byte in a header name
        yield name, value
        pos = i + 1


def parse_response(data: bytes, peer: str) -> AuthResponse | None:
    """Decode a reply per nginx; None if the header block is not complete yet."""
    start = _skip_status_line(data, peer)
    if start is None:
        return None
    resp = AuthResponse()
    try:
        for name, value in _header_lines(data, start, peer):
            key = name.lower()
            if key == b"auth-status":
                if value == b"OK":
                    continue
                if value == b"WAIT":
                    resp.wait_status = True
                    continue
                resp.error = value
            elif key == b"auth-server":
                resp.server = value
            elif key == b"auth-port":
                resp.port = value
            elif key == b"auth-user":
                resp.user = value
            elif key == b"auth-pass":
                resp.password = value
            elif key == b"auth-wait":
                wait = atoi(value)
                if wait is not None:
                    resp.wait = wait
            elif key == b"auth-error-code":
                resp.error_code = value
            elif key == b"auth-backend-tls":
                resp.backend_tls = value
            elif key == b"auth-backend-tls-name":
                resp.backend_tls_name = value
    except EOFError:
        return None
    return resp


class ResponseReader:
    """Gathers one reply (at most RESPONSE_LIMIT bytes) and decodes it with parse_response."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.data = b""

    def receive_data(self, chunk: bytes) -> AuthResponse | None:
        self.data = (self.data + chunk)[:RESPONSE_LIMIT]
        resp = parse_response(self.data, self.peer)
        if resp is None and len(self.data) >= RESPONSE_LIMIT:
            raise AuthServerError("")  # nginx's next recv() into a full buffer returns 0
        return resp

    def receive_eof(self) -> AuthResponse:
        raise AuthServerError("")  # EOF before the reply was whole: no log line


def peer_text(conf: AuthHttp) -> str:
    """The auth server as nginx names it in log lines."""
    return conf.text if conf.unix_path else f"{conf.addr}:{conf.port}"


async def query(conf: AuthHttp, request: bytes, timeout: float, reader=None, loop=None):
    """Send one request and read the reply within `timeout` in total (nginx's timers).

    `reader` takes the reply's bytes: receive_data(chunk) returns the result once it has
    one (None for more), receive_eof() the result of an early EOF; either may raise
    AuthServerError. The default reader returns the AuthResponse. Failures of the
    connection itself raise AuthServerError with nginx's log line.

    A Protocol and one timer rather than streams, wait_for() or asyncio.timeout(): no
    StreamReader, StreamWriter or extra Task per request, and with `loop` given no
    get_running_loop() (a getpid() system call each on Python 3.11)."""
    peer = peer_text(conf)
    if reader is None:
        reader = ResponseReader(peer)
    if loop is None:
        loop = asyncio.get_running_loop()
    reply: asyncio.Future = loop.create_future()
    transport = None
    expiry = _Expiry(asyncio.current_task(loop))
    timer = loop.call_later(timeout, expiry.fire)
    try:
        try:
            if conf.unix_path:
                transport, _ = await loop.create_unix_connection(
                    lambda: _AuthExchange(request, reader, reply), conf.unix_path)
            else:
                transport, _ = await loop.create_connection(
                    lambda: _AuthExchange(request, reader, reply), conf.addr, conf.port)
        except OSError as exc:
            if conf.unix_path:  # a unix connect() fails at once, and nginx says so
                raise AuthServerError(
                    f"connect() to {peer} failed {errno_text(exc)}") from None
            # a TCP connect() does not block: nginx learns of the refusal from its
            # first recv()
            raise AuthServerError(f"recv() failed {errno_text(exc)}") from None
        return await reply
    except asyncio.CancelledError:
        if not expiry.fired:
            raise  # the session was closed meanwhile
        expiry.task.uncancel()
        raise AuthServerError(
            f"auth http server {peer} timed out (110: Connection timed out)") from None
    finally:
        timer.cancel()
        if transport is not None:
            transport.close()
        if reply.done() and not reply.cancelled():
            reply.exception()  # retrieved: no "never retrieved" warning after a timeout


class _Expiry:
    """auth_http_timeout: cancels the task that waits for the reply, and says it did."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task) -> None:
        self.task, self.fired = task, False

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()


class _AuthExchange(asyncio.Protocol):
    """One auth request: write it, hand the reply's bytes to the reader."""

    def __init__(self, request: bytes, reader, reply: asyncio.Future) -> None:
        self.request, self.reader, self.reply = request, reader, reply

    def connection_made(self, transport) -> None:
        transport.write(self.request)

    def data_received(self, chunk: bytes) -> None:
        if self.reply.done():
            return
        try:
            result = self.reader.receive_data(chunk)
        except AuthServerError as exc:
            self.reply.set_exception(exc)
            return
        if result is not None:
            self.reply.set_result(result)

    def eof_received(self) -> bool:
        self._gave_up()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, OSError) and not self.reply.done():
            self.reply.set_exception(AuthServerError(f"recv() failed {errno_text(exc)}"))
        self._gave_up()

    def _gave_up(self) -> None:
        # EOF: nginx gives up; the reader says with what
        if not self.reply.done():
            try:
                self.reply.set_result(self.reader.receive_eof())
            except AuthServerError as exc:
                self.reply.set_exception(exc)
