"""What the fake upstreams share: the server (users, faults, records, start and stop) and,
for the line-oriented ones (IMAP, POP3), the connection loop.

A fake is a ``FakeServer`` subclass that names its ``Faults`` dataclass, a ``label`` for its
records and a ``connection()`` factory (an asyncio Protocol). The IMAP and POP3 connections
are ``LineConnection`` subclasses that plug in three things: ``feed`` (received bytes ->
units: command lines, literals), ``greet`` and ``handle`` (one unit). The SMTP fake's
connection is aiosmtpd's ``SMTP``, which has its own loop; it shares the server half only.

TLS: ``tls`` (an ``ssl.SSLContext``) makes a fake offer STARTTLS (IMAP STARTTLS, POP3 STLS,
SMTP STARTTLS), or with ``implicit_tls=True`` speak TLS from the first byte.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from postern.fakes._runner import BackgroundServer
from postern.fakes.mailbox import DEFAULT_COUNTS, MailStore

_WRITE_HIGH = 1 << 20


def hang_up(transport, reset: bool = False) -> None:
    """Close a fake's connection: a FIN, or with `reset` an RST (SO_LINGER 0) as a crashed
    or firewalled server would."""
    if transport is None:
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()
    else:
        transport.close()


class ConnectionClosed(Exception):
    """The peer went away while a fake was writing to it."""


class FakeServer(BackgroundServer):
    """A fake upstream: its users, ``faults`` (read at every step, so tests may change them
    while it runs), what clients sent (``commands``, ``connections[i].transcript``;
    ``record=False`` keeps nothing, for long load runs), start and stop."""

    faults_class: type
    label = "command(s)"  # what wait_commands waits for, in its timeout message

    def __init__(self, users: Mapping[str, str] | None, *, host: str, port: int,
                 faults: Any, record: bool, record_limit: int, use_uvloop: bool,
                 fault_args: Mapping[str, Any], tls: ssl.SSLContext | None = None,
                 implicit_tls: bool = False) -> None:
        if implicit_tls and tls is None:
            raise ValueError("implicit_tls needs a tls context")
        self.tls, self.implicit_tls = tls, implicit_tls
        self.users: dict[str, str] = dict(users or {})
        self.host, self.port = host, port
        self.faults = faults or self.faults_class()
        known = {f.name for f in fields(self.faults_class)}
        for name, value in fault_args.items():
            if name not in known:
                raise TypeError(f"unknown fault {name!r}")
            setattr(self.faults, name, value)
        self.record, self.record_limit = record, record_limit
        self.use_uvloop = use_uvloop
        self.commands: list[bytes] = []
        self.connections: list[Any] = []
        self._live: set[Any] = set()
        self._server: asyncio.AbstractServer | None = None

    def connection(self) -> asyncio.Protocol:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    # -- records ----------------------------------------------------------------------------
    def _record_command(self, raw: bytes) -> None:
        if self.record:
            self._append_record(self.commands, raw)

    def _connected(self, conn: Any) -> None:
        self._live.add(conn)
        if self.record:
            self.connections.append(conn)

    def wait_commands(self, n: int, timeout: float = 5.0) -> list[bytes]:
        """Block until at least ``n`` commands arrived (over all connections)."""
        return self._wait_records(self.commands, n, timeout, f"{n} {self.label}")

    async def async_wait_commands(self, n: int, timeout: float = 5.0) -> list[bytes]:
        return await self._async_wait_records(self.commands, n, timeout, f"{n} {self.label}")

    def clear(self) -> None:
        """Forget what was recorded (between tests sharing one server)."""
        self.commands.clear()
        self.connections.clear()

    def reset(self) -> None:
        """Default faults and empty records, for the next test sharing this server."""
        self.faults = self.faults_class()
        self.clear()

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.connection, self.host, self.port,
                                                backlog=1024,
                                                ssl=self.tls if self.implicit_tls else None)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        live = list(self._live)
        tasks = [c.task for c in live if c.task is not None]
        for conn in live:
            # a transport already closing is left to finish (Python 3.11.2's TLS transport
            # fails on an abort() after its second close())
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None


class LineOutput:
    """Output for a fake's connection: recorded writes, CRLF lines, flow control.

    The connection sets self.server (a FakeServer), self.transport, self.closed,
    self.transcript and self._writable (an asyncio.Event).
    """

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _note(self, direction: str, data: bytes) -> None:
        if not self.server.record:
            return
        limit = self.server.record_limit
        self.transcript.append((direction, data if len(data) <= limit else
                                data[:limit] + b"...[%d bytes]" % len(data)))

    def send(self, data: bytes) -> None:
        # uvloop raises on writes to a closed transport; asyncio drops them.
        if self.transport is None or self.closed or self.transport.is_closing():
            return
        self._note("S", data)
        self.transport.write(data)

    def line(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.send(data if data.endswith(b"\n") else data + b"\r\n")

    async def write_chunks(self, chunks: Iterable[bytes | memoryview]) -> None:
        """Message data in chunks, waiting whenever the client reads slower than we write;
        the transcript notes only its size."""
        total = 0
        for chunk in chunks:
            if self.transport is None or self.closed or self.transport.is_closing():
                raise ConnectionClosed
            self.transport.write(chunk)
            total += len(chunk)
            if not self._writable.is_set():
                await self.drain()
        self._note("S", b"[%d octets of message data]" % total)

    async def drain(self) -> None:
        await self._writable.wait()
        if self.closed:
            raise ConnectionClosed

    def close(self) -> None:
        hang_up(self.transport, self.server.faults.reset)


@dataclass
class LineFaults:
    """The misbehaviour switches LineConnection reads; the IMAP and POP3 fakes' Faults add
    their own (read at every step, so tests may flip them at runtime).

    greeting_delay: seconds before the greeting.
    drop_after_login / drop_after: close after the login's OK / after N commands.
    reset: every drop is a TCP reset (RST) instead of an orderly close.
    stall / stall_after: stop answering (from now / after N commands), keep the socket open.
    """

    greeting_delay: float = 0.0
    drop_after_login: bool = False
    drop_after: int | None = None
    reset: bool = False
    stall: bool = False
    stall_after: int | None = None


class LineConnection(LineOutput, asyncio.Protocol):
    """One client of a line-oriented fake: ``feed`` cuts what arrives into units, a queue
    hands them in order to one task that greets (after ``faults.greeting_delay``) and then
    ``handle``s each unit. A bug in a handler drops that client, never the server."""

    log = logging.getLogger("postern.fakes")

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.transcript: list[tuple[str, bytes]] = []
        self.peer: Any = None
        self.closed = False
        self.count = 0  # units handled (for the faults that count commands)
        self._writable = asyncio.Event()
        self._writable.set()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None

    # -- what a protocol plugs in -----------------------------------------------------------
    def feed(self, data: bytes) -> Iterable[Any]:  # pragma: no cover - by subclasses
        raise NotImplementedError

    async def greet(self) -> None:  # pragma: no cover - by subclasses
        raise NotImplementedError

    async def handle(self, unit: Any) -> None:  # pragma: no cover - by subclasses
        raise NotImplementedError

    # -- transport callbacks ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.set_write_buffer_limits(high=_WRITE_HIGH)
        self.peer = transport.get_extra_info("peername")
        self.server._connected(self)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def data_received(self, data: bytes) -> None:
        self._note("C", data)
        for unit in self.feed(data):
            self.queue.put_nowait(unit)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server._live.discard(self)
        self.queue.put_nowait(None)
        self._writable.set()

    # -- the loop ---------------------------------------------------------------------------
    async def next_unit(self) -> Any:
        unit = await self.queue.get()
        if unit is None:
            raise ConnectionClosed
        return unit

    async def _run(self) -> None:
        try:
            delay = self.server.faults.greeting_delay
            if delay:
                await asyncio.sleep(delay)
            await self.greet()
            while not self.closed:
                await self.handle(await self.next_unit())
                await self.drain()
        except (ConnectionClosed, asyncio.CancelledError):
            pass
        except Exception:  # a fake must survive its own bugs: report, drop the client
            self.log.exception("fake connection failed")
            self.close()

    @property
    def starttls_offered(self) -> bool:
        """A STARTTLS-capable fake on a connection still in plaintext."""
        return self.server.tls is not None and not self.server.implicit_tls and \
            self.transport is not None and self.transport.get_extra_info("sslcontext") is None

    async def start_tls(self) -> None:
        """After the go-ahead line: the handshake, then the same loop over TLS."""
        loop = asyncio.get_running_loop()
        self.transport = await loop.start_tls(self.transport, self, self.server.tls,
                                              server_side=True)

    def stalled(self) -> bool:
        """Counts this unit; True when the faults say to stop answering from here on."""
        f = self.server.faults
        self.count += 1
        return f.stall or (f.stall_after is not None and self.count > f.stall_after)

    def drop_if_counted_out(self) -> None:
        drop_after = self.server.faults.drop_after
        if drop_after is not None and self.count >= drop_after:
            self.close()


class MailboxServer(FakeServer):
    """A fake that serves mail from a ``MailStore`` (IMAP, POP3): its own seeded one, or
    ``store`` shared with another fake."""

    default_capabilities: tuple[str, ...] = ()

    def __init__(self, users: Mapping[str, str] | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, store: MailStore | None = None, seed: int = 1,
                 counts: Mapping[str, int] = DEFAULT_COUNTS, shared_content: bool = False,
                 large_message: int | None = None, capabilities: Sequence[str] | None = None,
                 hostname: str = "fake.test", faults: Any = None, record: bool = True,
                 record_limit: int = 4096, use_uvloop: bool = True,
                 tls: ssl.SSLContext | None = None, implicit_tls: bool = False,
                 **fault_args: Any) -> None:
        super().__init__(users, host=host, port=port, faults=faults, record=record,
                         record_limit=record_limit, use_uvloop=use_uvloop,
                         fault_args=fault_args, tls=tls, implicit_tls=implicit_tls)
        self.store = store or MailStore(seed, counts, shared=shared_content,
                                        large_message=large_message)
        self.capabilities = list(self.default_capabilities if capabilities is None
                                 else capabilities)
        self.hostname = hostname
