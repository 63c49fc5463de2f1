"""A raw client that reads like the conversation it checks, and keeps the transcript.

    c = proxy.connect("imap")
    c.expect(b"* OK IMAP4 ready\\r\\n")
    c.send(b"a1 NOOP\\r\\n").expect(b"a1 OK completed\\r\\n")
    c.expect_closed()

Every byte sent and received is kept in `transcript` (C:/S: lines) so a failure, or the
differential runner, can show the whole exchange.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Self

DEFAULT_TIMEOUT = 5.0


class Closed(AssertionError):
    """The peer closed the connection while more bytes were expected."""



def is_unclean_eof(err: BaseException) -> bool:
    """Whether a TLS read error is the peer ending TCP without close_notify. Python 3.11.2
    (Debian 12) reports it as a plain SSLError, later builds as SSLEOFError."""
    return isinstance(err, ssl.SSLEOFError) or (
        isinstance(err, ssl.SSLError) and err.reason == "UNEXPECTED_EOF_WHILE_READING")


def tls_client_context(cafile: str | None = None) -> ssl.SSLContext:
    """A client context that behaves alike on every Python build: without a CA it verifies
    nothing (the point is the proxy's behaviour). OP_IGNORE_UNEXPECTED_EOF is cleared because
    some builds (Debian's 3.11.2) set it by default, and then an EOF without close_notify
    reads as a clean end: scenarios must tell the two apart."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    if cafile is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile)
    return ctx

class Client:
    def __init__(self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT,
                 source: str | None = None) -> None:
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None)
        self.timeout = timeout
        self.buffer = b""
        self.transcript: list[tuple[str, bytes]] = []
        self.eof = False

    # -- sending ---------------------------------------------------------------------------
    def send(self, data: bytes) -> Client:
        self.transcript.append(("C", data))
        self.sock.sendall(data)
        return self

    def starttls(self, context: ssl.SSLContext | None = None,
                 server_hostname: str | None = None) -> Client:
        if context is None:
            context = tls_client_context()
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        self.transcript.append(("C", b"<TLS handshake>"))
        return self

    def half_close(self) -> Client:
        self.sock.shutdown(socket.SHUT_WR)
        return self

    # -- receiving -------------------------------------------------------------------------
    def _recv(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.transcript.append(("S", data))
        self.buffer += data
        return True

    def read(self, n: int, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buffer) < n:
            if self.eof or not self._recv(deadline):
                raise Closed(f"closed after {self.buffer!r}, wanted {n} bytes")
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def readline(self, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self.buffer:
            if self.eof or not self._recv(deadline):
                raise Closed(f"closed after {self.buffer!r} while reading a line")
        i = self.buffer.index(b"\n") + 1
        out, self.buffer = self.buffer[:i], self.buffer[i:]
        return out

    def expect(self, data: bytes, timeout: float | None = None) -> Client:
        """The next bytes from the server are exactly `data`."""
        try:
            got = self.read(len(data), timeout)
        except Closed:
            got, self.buffer = self.buffer, b""
            raise AssertionError(f"expected {data!r}, got {got!r} then EOF\n{self.dump()}")
        except TimeoutError:
            got, self.buffer = self.buffer, b""
            raise AssertionError(f"expected {data!r}, got {got!r} then silence\n{self.dump()}")
        assert got == data, f"expected {data!r}, got {got!r}\n{self.dump()}"
        return self

    def read_all(self, timeout: float | None = None) -> bytes:
        """Everything until the server closes (AssertionError if it does not)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while not self.eof and self._recv(deadline):
                pass
        except TimeoutError:
            raise AssertionError(f"server did not close\n{self.dump()}") from None
        out, self.buffer = self.buffer, b""
        return out

    def expect_closed(self, timeout: float | None = None, lenient: bool = False) -> Client:
        """The server closes with nothing more to say. `lenient` tolerates an RST that
        swallowed bytes (nginx closing with unread input, docs/behaviour.md §5.1)."""
        rest = self.read_all(timeout)
        if not lenient:
            assert rest == b"", f"expected close, got {rest!r}\n{self.dump()}"
        return self

    def expect_silence(self, seconds: float) -> Client:
        """Nothing arrives and the connection stays open for `seconds`."""
        deadline = time.monotonic() + seconds
        try:
            while self._recv(deadline):
                pass
        except TimeoutError:
            pass
        assert not self.eof and not self.buffer, f"unexpected {self.buffer!r}\n{self.dump()}"
        return self

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def dump(self) -> str:
        lines = []
        for who, data in self.transcript:
            for line in data.splitlines(keepends=True) or [data]:
                lines.append(f"{who}: {line!r}")
        return "\n".join(lines)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
