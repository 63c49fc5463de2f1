"""One tiny threaded HTTP server for the zoo: read a request head, ask the zoo function,
write its reply as the function says. Port 0, so tests never collide."""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self


@dataclass
class Request:
    raw: bytes
    headers: dict[str, str]  # lower-case name -> value as sent (still %XX-escaped)

    def h(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    @property
    def method(self) -> str:
        return self.h("Auth-Method")

    @property
    def protocol(self) -> str:
        return self.h("Auth-Protocol")

    @property
    def attempt(self) -> int:
        return int(self.h("Auth-Login-Attempt", "1") or 1)

    @property
    def user(self) -> str:
        """Auth-User decoded once, as a correct server decodes it."""
        return _decode(self.h("Auth-User"))

    @property
    def password(self) -> str:
        return _decode(self.h("Auth-Pass"))


def _decode(value: str) -> str:
    raw = urllib.parse.unquote_to_bytes(value.encode("latin-1"))  # bytes as nginx sent them
    return raw.decode("utf-8", "surrogateescape")


@dataclass
class Raw:
    """A reply with socket behaviour."""

    data: bytes = b""
    delay: float = 0.0  # before the first byte
    segment: int = 0  # write this many bytes at a time (0: all at once)
    gap: float = 0.0  # between segments
    keep_open: bool = False  # do not close after writing (HTTP/1.1 keep-alive)
    hang: bool = False  # write nothing and keep the connection open


Handler = Callable[[Request], "bytes | Raw"]


class Serving:
    """Serve ``handler`` on 127.0.0.1:<free port> until closed."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/auth"
        self.stop = threading.Event()
        self.lock = threading.Lock()  # zoo servers keep state (lockout, caches)
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            headers = {}
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            try:
                with self.lock:
                    reply = self.handler(Request(data, headers))
            except Exception:  # noqa: BLE001 -- a crashing server: the framework's bare 500
                reply = b"HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
            if isinstance(reply, bytes):
                reply = Raw(reply)
            self._write(conn, reply)
        except OSError:
            pass
        finally:
            conn.close()

    def _write(self, conn: socket.socket, r: Raw) -> None:
        if r.delay:
            self.stop.wait(r.delay)
        if r.hang:
            self.stop.wait(30)
            return
        step = r.segment or len(r.data) or 1
        for i in range(0, len(r.data), step):
            conn.sendall(r.data[i:i + step])
            if r.gap:
                time.sleep(r.gap)
        if r.keep_open:
            conn.settimeout(30)
            try:
                while not self.stop.is_set() and conn.recv(4096):
                    pass
            except OSError:
                pass
