"""The benchmark's load generator: lean IMAP, POP3 and SMTP clients, run in the benchmark's
own process.

Session and idle-session load uses asyncio Protocols (on uvloop): streams would cost the
generator more CPU per session than the proxies it measures (measured on uvloop: about 1.6x
the CPU per connection of a Protocol). The single large FETCH uses a blocking socket with one
reused 1 MiB buffer, which is the cheapest way for Python to swallow bytes.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter

RECV_SIZE = 1 << 20


class SessionError(Exception):
    """The server answered, but not with what a healthy session gets."""


def _line_end(buf: bytearray) -> int | None:
    i = buf.find(b"\r\n")
    return None if i < 0 else i + 2


def _tagged_end(prefix: bytes, buf: bytearray) -> int | None:
    """End of the line that starts with ``prefix`` (a tag and a space), untagged lines before
    it included."""
    if buf.startswith(prefix):
        start = 0
    else:
        start = buf.find(b"\n" + prefix)
        if start < 0:
            return None
        start += 1
    end = buf.find(b"\r\n", start)
    return None if end < 0 else end + 2


def tagged_line(reply: bytes) -> bytes:
    """The last line of a reply (the tagged one), without CRLF."""
    body = reply[:-2]
    return body[body.rfind(b"\n") + 1:]


def expect_ok(reply: bytes, tag: bytes, step: str) -> None:
    line = tagged_line(reply)
    if not line.startswith(tag + b" OK"):
        raise SessionError(f"{step}: {line[:80].decode('latin-1')}")


class _Conn(asyncio.Protocol):
    """A client connection that can wait for a line or a tagged reply."""

    __slots__ = ("_fut", "_want", "buf", "closed", "loop", "transport")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buf = bytearray()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._want: Callable[[bytearray], int | None] | None = None
        self._fut: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self._fut is not None:
            self._wake()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self._fut is not None:
            self._wake()

    def _wake(self) -> None:
        fut, want = self._fut, self._want
        assert fut is not None and want is not None
        end = want(self.buf)
        if end is None and not self.closed.done():
            return
        self._fut = self._want = None
        if fut.done():
            return
        if end is None:
            fut.set_exception(ConnectionError("connection closed by the server"))
        else:
            fut.set_result(end)

    async def _until(self, want: Callable[[bytearray], int | None]) -> bytes:
        end = want(self.buf)
        if end is None:
            if self.closed.done():
                raise ConnectionError("connection closed by the server")
            self._want, self._fut = want, self.loop.create_future()
            end = await self._fut
        out = bytes(self.buf[:end])
        del self.buf[:end]
        return out

    def line(self):
        return self._until(_line_end)

    def tagged(self, tag: bytes):
        prefix = tag + b" "
        return self._until(lambda buf: _tagged_end(prefix, buf))

    def smtp_reply(self):
        return self._until(_smtp_reply_end)


def login_command(tag: bytes, user: str, password: str) -> bytes:
    return b"%s LOGIN %s %s\r\n" % (tag, user.encode(), password.encode())


def _smtp_reply_end(buf: bytearray) -> int | None:
    """End of a complete SMTP reply (its last line has a space after the code)."""
    start = 0
    while (end := buf.find(b"\r\n", start)) >= 0:
        if buf[start + 3:start + 4] != b"-":
            return end + 2
        start = end + 2
    return None


def _expect(reply: bytes, prefix: bytes, step: str) -> None:
    if not reply.startswith(prefix):
        raise SessionError(f"{step}: {reply[:80].decode('latin-1').rstrip()}")


class Dialect:
    """One protocol's session: greeting, login (timed: the step that makes the proxy ask
    auth_http) and logout, after which the server closes the connection."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password

    async def greeting(self, conn: _Conn) -> None:
        await conn.line()

    async def login(self, transport: asyncio.Transport, conn: _Conn) -> float:
        raise NotImplementedError

    async def logout(self, transport: asyncio.Transport, conn: _Conn) -> None:
        raise NotImplementedError


class ImapDialect(Dialect):
    """LOGIN, LOGOUT."""

    def __init__(self, user: str, password: str) -> None:
        super().__init__(user, password)
        self.command = login_command(b"a1", user, password)

    async def login(self, transport: asyncio.Transport, conn: _Conn) -> float:
        start = perf_counter()
        transport.write(self.command)
        reply = await conn.tagged(b"a1")
        latency = perf_counter() - start
        expect_ok(reply, b"a1", "LOGIN")
        return latency

    async def logout(self, transport: asyncio.Transport, conn: _Conn) -> None:
        transport.write(b"a2 LOGOUT\r\n")
        expect_ok(await conn.tagged(b"a2"), b"a2", "LOGOUT")


class Pop3Dialect(Dialect):
    """USER and PASS, timed together (the login exchange), then QUIT."""

    async def login(self, transport: asyncio.Transport, conn: _Conn) -> float:
        start = perf_counter()
        transport.write(b"USER %s\r\n" % self.user.encode())
        _expect(await conn.line(), b"+OK", "USER")
        transport.write(b"PASS %s\r\n" % self.password.encode())
        reply = await conn.line()
        latency = perf_counter() - start
        _expect(reply, b"+OK", "PASS")
        return latency

    async def logout(self, transport: asyncio.Transport, conn: _Conn) -> None:
        transport.write(b"QUIT\r\n")
        _expect(await conn.line(), b"+OK", "QUIT")


class SmtpDialect(Dialect):
    """EHLO (untimed), AUTH PLAIN with an initial response (timed), QUIT."""

    def __init__(self, user: str, password: str) -> None:
        super().__init__(user, password)
        token = base64.b64encode(b"\0%s\0%s" % (user.encode(), password.encode()))
        self.auth = b"AUTH PLAIN %s\r\n" % token

    async def greeting(self, conn: _Conn) -> None:
        _expect(await conn.smtp_reply(), b"220", "greeting")

    async def login(self, transport: asyncio.Transport, conn: _Conn) -> float:
        transport.write(b"EHLO bench.client\r\n")
        _expect(await conn.smtp_reply(), b"250", "EHLO")
        start = perf_counter()
        transport.write(self.auth)
        reply = await conn.smtp_reply()
        latency = perf_counter() - start
        _expect(reply, b"235", "AUTH")
        return latency

    async def logout(self, transport: asyncio.Transport, conn: _Conn) -> None:
        transport.write(b"QUIT\r\n")
        _expect(await conn.smtp_reply(), b"221", "QUIT")


DIALECTS: dict[str, type[Dialect]] = {"imap": ImapDialect, "pop3": Pop3Dialect,
                                      "smtp": SmtpDialect}


def client_context() -> ssl.SSLContext:
    """The bench's TLS client: no certificate check (both proxies present the same
    throw-away certificate), the defaults otherwise."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _connect_and_login(loop: asyncio.AbstractEventLoop, host: str, port: int,
                             dialect: Dialect, tls: str | None = None,
                             context: ssl.SSLContext | None = None,
                             ) -> tuple[asyncio.Transport, _Conn, float]:
    """``tls``: None (plaintext), "implicit" (a TLS port) or "starttls" (IMAP's STARTTLS
    after the greeting)."""
    implicit = context if tls == "implicit" else None
    transport, conn = await loop.create_connection(lambda: _Conn(loop), host, port,
                                                   ssl=implicit)
    try:
        await dialect.greeting(conn)
        if tls == "starttls":
            transport.write(b"s STARTTLS\r\n")
            expect_ok(await conn.tagged(b"s"), b"s", "STARTTLS")
            transport = await loop.start_tls(transport, conn, context)
            conn.transport = transport
        latency = await dialect.login(transport, conn)
    except BaseException:
        transport.abort()
        raise
    return transport, conn, latency


async def _one_session(loop: asyncio.AbstractEventLoop, host: str, port: int,
                       dialect: Dialect, tls: str | None = None,
                       context: ssl.SSLContext | None = None) -> float:
    transport, conn, latency = await _connect_and_login(loop, host, port, dialect, tls, context)
    try:
        await dialect.logout(transport, conn)
        await conn.closed  # the server ends the session, as after a real logout
    finally:
        transport.close()
    return latency


@dataclass
class SessionStats:
    sessions: int = 0
    errors: int = 0
    seconds: float = 0.0
    login_latencies: list[float] = field(default_factory=list)
    error_kinds: Counter = field(default_factory=Counter)

    def note_error(self, exc: BaseException) -> None:
        self.errors += 1
        self.error_kinds[f"{type(exc).__name__}: {exc}"[:120]] += 1


async def run_sessions(host: str, port: int, *, clients: int, duration: float, user: str,
                       password: str, protocol: str = "imap", tls: str | None = None,
                       timeout: float = 10.0) -> SessionStats:
    """``clients`` loops of connect, greeting, login, logout in ``protocol``, until
    ``duration`` is over (sessions under way then are finished and counted); ``tls`` as
    for _connect_and_login (every session a full handshake: the client keeps no session)."""
    loop = asyncio.get_running_loop()
    context = client_context() if tls else None
    stats = SessionStats()
    dialect = DIALECTS[protocol](user, password)
    deadline = loop.time() + duration

    async def client() -> None:
        while loop.time() < deadline:
            try:
                async with asyncio.timeout(timeout):
                    latency = await _one_session(loop, host, port, dialect, tls, context)
            except (OSError, TimeoutError, SessionError) as exc:
                stats.note_error(exc)
                await asyncio.sleep(0.01)  # a refusing target must not turn this into a spin
                continue
            stats.sessions += 1
            stats.login_latencies.append(latency)

    start = perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    stats.seconds = perf_counter() - start
    return stats


@dataclass
class IdleSessions:
    transports: list[asyncio.Transport] = field(default_factory=list)
    stats: SessionStats = field(default_factory=SessionStats)

    def close(self) -> None:
        for transport in self.transports:
            transport.abort()
        self.transports.clear()


async def open_idle(host: str, port: int, count: int, *, user: str, password: str,
                    concurrency: int = 100, timeout: float = 30.0,
                    tls: str | None = None) -> IdleSessions:
    """Open ``count`` logged-in sessions and leave them open (errors are counted, not
    retried)."""
    loop = asyncio.get_running_loop()
    context = client_context() if tls else None
    idle = IdleSessions()
    dialect = ImapDialect(user, password)
    todo = iter(range(count))

    async def opener() -> None:
        for _ in todo:
            try:
                async with asyncio.timeout(timeout):
                    transport, _, latency = await _connect_and_login(
                        loop, host, port, dialect, tls, context)
            except (OSError, TimeoutError, SessionError) as exc:
                idle.stats.note_error(exc)
                continue
            idle.transports.append(transport)
            idle.stats.sessions += 1
            idle.stats.login_latencies.append(latency)

    start = perf_counter()
    await asyncio.gather(*(opener() for _ in range(min(concurrency, count))))
    idle.stats.seconds = perf_counter() - start
    return idle


# -- the large FETCH (blocking) ---------------------------------------------------------------

class _Reader:
    """Line and tagged-reply reading over a blocking socket, plus a counting skip."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.chunk = bytearray(RECV_SIZE)

    def _recv(self) -> int:
        n = self.sock.recv_into(self.chunk)
        if n == 0:
            raise ConnectionError("connection closed by the server")
        return n

    def until(self, want: Callable[[bytearray], int | None]) -> bytes:
        while (end := want(self.buf)) is None:
            n = self._recv()
            self.buf += memoryview(self.chunk)[:n]
        out = bytes(self.buf[:end])
        del self.buf[:end]
        return out

    def line(self) -> bytes:
        return self.until(_line_end)

    def tagged(self, tag: bytes) -> bytes:
        prefix = tag + b" "
        return self.until(lambda buf: _tagged_end(prefix, buf))

    def skip(self, size: int) -> None:
        """Consume ``size`` bytes without keeping them."""
        taken = min(size, len(self.buf))
        del self.buf[:taken]
        size -= taken
        while size > 0:
            n = self._recv()
            if n > size:
                self.buf += memoryview(self.chunk)[size:n]
            size -= min(n, size)


@dataclass
class FetchResult:
    bytes: int
    seconds: float


def fetch_largest(host: str, port: int, *, user: str, password: str,
                  timeout: float = 300.0, tls: bool = False) -> FetchResult:
    """Log in, select INBOX and FETCH the last message's BODY[] (the large one), timing the
    FETCH from the command to its tagged OK; ``tls``: over an implicit-TLS port."""
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            (client_context().wrap_socket(raw) if tls else raw) as sock:
        reader = _Reader(sock)
        reader.line()
        sock.sendall(login_command(b"a1", user, password))
        expect_ok(reader.tagged(b"a1"), b"a1", "LOGIN")
        sock.sendall(b"a2 SELECT INBOX\r\n")
        reply = reader.tagged(b"a2")
        expect_ok(reply, b"a2", "SELECT")
        exists = re.search(rb"\* (\d+) EXISTS", reply)
        if exists is None:
            raise SessionError("SELECT: no EXISTS")
        sock.sendall(b"a3 FETCH %s BODY[]\r\n" % exists.group(1))
        start = perf_counter()
        head = reader.line()
        literal = re.search(rb"\{(\d+)\}\r\n$", head)
        if literal is None:
            raise SessionError(f"FETCH: {head[:80].decode('latin-1')}")
        size = int(literal.group(1))
        reader.skip(size)
        expect_ok(reader.tagged(b"a3"), b"a3", "FETCH")
        seconds = perf_counter() - start
        sock.sendall(b"a4 LOGOUT\r\n")
        reader.tagged(b"a4")
    return FetchResult(size, seconds)
