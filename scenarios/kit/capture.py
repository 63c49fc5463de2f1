"""Every Client a scenario opens, kept with a clock reading per transcript entry.

The grammar check, the differential comparison and the JSON results all look at the
connections of one scenario after it ran. Scenarios create clients freely (`proxy.connect()`,
`Client(...)` with a source address, helpers), so the recorder wraps `Client.__init__` for
the run instead of asking every scenario to register them; `expect_closed(lenient=True)`
is noted too, since an RST may then have swallowed the last reply (docs/behaviour.md §5.1), and so is a
connection reset seen while reading (the same loss, wherever the scenario read).
"""

from __future__ import annotations

import socket
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from postern.scenarios.kit.client import Client


class TimedTranscript(list):
    """A Client transcript that also notes when each entry was appended (time.time(), the
    clock the mock auth server stamps its requests with)."""

    def __init__(self, items=()) -> None:
        super().__init__(items)
        now = time.time()
        self.times = [now] * len(self)

    def append(self, item) -> None:
        super().append(item)
        self.times.append(time.time())

    def timed(self) -> list[tuple[str, bytes, float]]:
        return [(who, data, t) for (who, data), t in zip(self, self.times)]


_RESET: weakref.WeakSet = weakref.WeakSet()


class _ResetNotingSocket(socket.socket):
    """The client's plain socket, noting a reset whichever call meets it first (a sender
    thread's send() may take the error a reader's recv() would have seen). The class is
    swapped in; the layout is the same."""

    __slots__ = ()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        with _noting(self, ConnectionResetError):
            return super().recv(bufsize, flags)

    def send(self, data, flags: int = 0) -> int:
        with _noting(self, ConnectionResetError, BrokenPipeError):
            return super().send(data, flags)

    def sendall(self, data, flags: int = 0) -> None:
        with _noting(self, ConnectionResetError, BrokenPipeError):
            return super().sendall(data, flags)


@contextmanager
def _noting(sock: socket.socket, *resets: type[OSError]) -> Iterator[None]:
    """Note the socket as reset when one of these errors goes through."""
    try:
        yield
    except resets:
        _RESET.add(sock)
        raise


@dataclass
class Connection:
    client: Client
    port: int
    opened: float
    raw: socket.socket | None = field(default=None, repr=False)

    @property
    def reset(self) -> bool:
        return self.raw is not None and self.raw in _RESET

    @property
    def transcript(self) -> TimedTranscript:
        return self.client.transcript

    @property
    def lenient(self) -> bool:
        return getattr(self.client, "lenient_close", False)

    @property
    def eof(self) -> bool:
        return self.client.eof


class Recorder:
    """Collects the connections of the scenario that is running (begin/end around it)."""

    def __init__(self) -> None:
        self.current: list[Connection] | None = None
        self._saved: tuple | None = None

    def install(self) -> None:
        if self._saved is not None:
            return
        init, expect_closed = Client.__init__, Client.expect_closed
        recorder = self

        def __init__(client, host, port, *args, **kwargs):
            init(client, host, port, *args, **kwargs)
            client.transcript = TimedTranscript(client.transcript)
            raw = client.sock
            if type(raw) is socket.socket:
                raw.__class__ = _ResetNotingSocket
            if recorder.current is not None:
                recorder.current.append(Connection(client, int(port), time.time(), raw))

        def lenient_aware(client, timeout=None, lenient=False):
            if lenient:
                client.lenient_close = True
            return expect_closed(client, timeout, lenient)

        self._saved = (init, expect_closed)
        Client.__init__ = __init__
        Client.expect_closed = lenient_aware

    def uninstall(self) -> None:
        if self._saved is not None:
            Client.__init__, Client.expect_closed = self._saved
            self._saved = None

    def begin(self) -> list[Connection]:
        self.current = []
        return self.current

    def end(self) -> list[Connection]:
        done, self.current = self.current or [], None
        return done
