"""Helpers every scenario family shares: the new part of a proxy's error log, one-connection
servers scripted byte by byte, waiting for a condition, and the lenient read of a reply that
a reset may cut short; the SASL bytes the IMAP and POP3 dialogues share."""

from __future__ import annotations

import base64
import socket
import threading
import time

from postern.scenarios.kit.client import Client

PLAIN_ALICE = base64.b64encode(b"\0alice\0secret")  # AGFsaWNlAHNlY3JldA==
# the LOGIN mechanism's challenges, the same in IMAP and POP3 (nginx's "+ " prefix)
USER_CHALLENGE = b"+ VXNlcm5hbWU6\r\n"  # base64("Username:")
PASS_CHALLENGE = b"+ UGFzc3dvcmQ6\r\n"  # base64("Password:")


class LogWatch:
    """The part of a proxy's error log written after this point (proxies are shared)."""

    def __init__(self, proxy) -> None:
        self.proxy = proxy
        self.mark = len(proxy.error_log())

    def text(self) -> str:
        return self.proxy.error_log()[self.mark:]

    def wait_for(self, needle: str, timeout: float = 3.0) -> str:
        deadline = time.monotonic() + timeout
        while needle not in (text := self.text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in the error log:\n{text}")
            time.sleep(0.05)
        return text

    def line(self, needle: str, timeout: float = 3.0) -> str:
        """The first new log line containing `needle` (waiting for it)."""
        text = self.wait_for(needle, timeout)
        return next(line for line in text.splitlines() if needle in line)


def wait_until(check, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def auth_peer(lab) -> str:
    """The mock auth server as the error log names it."""
    return f"127.0.0.1:{lab.auth.port}"


def upstream_bytes(backend, conn_index: int) -> bytes:
    """Every byte a fake upstream (lab.imap, lab.pop3, lab.smtp) received on one of its
    connections."""
    conn = backend.connections[conn_index]
    return b"".join(data for who, data in conn.transcript if who == "C")


def expect_prefix_then_close(client: Client, expected: bytes, at_least: bytes) -> bytes:
    """The server closes after sending a prefix of `expected` that starts with `at_least`
    (never empty: something must arrive).

    nginx closes with the client's input unread, so the kernel resets the connection and
    replies still queued on the server's side may be lost: with pipelined commands nginx 1.22
    delivers the first reply and not always the rest, while a single reply written just
    before the close arrives. Returns what arrived."""
    assert at_least and expected.startswith(at_least)
    got = client.read_all()  # AssertionError if the server does not close
    assert expected.startswith(got) and got.startswith(at_least), (
        f"expected a prefix of {expected!r} starting with {at_least!r}, got {got!r}\n"
        f"{client.dump()}")
    return got


class OneConnectionServer:
    """A listener on a free port that serves exactly one connection in a thread, with
    10-second timeouts; `serve(conn)` is the subclass's script."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.listener.settimeout(10)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        finally:
            self.listener.close()
        conn.settimeout(10)
        with conn:
            try:
                self.serve(conn)
            except OSError:
                pass
            self.finished()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def finished(self) -> None:
        """Called once the script is over and before the connection closes."""


class OneShotAuth(OneConnectionServer):
    """An auth server for one request that sends `reply` in one write, waits `linger`
    seconds and closes (the mock closes right after its reply)."""

    def __init__(self, reply: bytes, linger: float) -> None:
        self.reply, self.linger = reply, linger
        self.request = b""
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        while not self.request.endswith(b"\r\n\r\n"):
            data = conn.recv(4096)
            if not data:
                return
            self.request += data
        conn.sendall(self.reply)
        time.sleep(self.linger)


class ScriptedBackend(OneConnectionServer):
    """A one-connection upstream that follows a script and records what it receives.

    Steps: ("send", bytes), ("recv", n) to read exactly n bytes, ("sleep", seconds),
    ("close",). After the script the connection stays open until the proxy closes it.
    """

    def __init__(self, *steps: tuple) -> None:
        self.steps = steps
        self.received = b""
        self.closed_by_peer = threading.Event()
        self.closed_here = False
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        for step in self.steps:
            if step[0] == "send":
                conn.sendall(step[1])
            elif step[0] == "recv":
                while len(self.received) < step[1]:
                    data = conn.recv(step[1] - len(self.received))
                    if not data:
                        raise ConnectionError
                    self.received += data
            elif step[0] == "sleep":
                time.sleep(step[1])
            elif step[0] == "close":
                self.closed_here = True
                return
        while data := conn.recv(65536):
            self.received += data

    def finished(self) -> None:
        if not self.closed_here:
            self.closed_by_peer.set()

    def join(self) -> bytes:
        self.thread.join(10)
        return self.received
