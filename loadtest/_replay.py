"""Replaying a ``record_sessions`` recording (proxy/recorder.py) against any target.

Each recorded session is played as it was shaped: the same verbs in the same order, each
after its recorded think time (times ``time_scale``; the time the previous reply took is
taken off), with what the recording left out made up: the lab's login and password where
the recording says ``{"login": n}`` / ``{"secret": n}`` / ``{"sasl": n}`` (PLAIN and LOGIN
answers built from them), ``x`` strings of the recorded lengths for other text, a message
of the recorded size for an APPEND literal or a DATA body, ``LOGIN@example.test`` for
addresses. Replies are read as each protocol frames them (tagged IMAP completions and
literals, POP3 multi-line answers, SMTP continuation lines); STARTTLS/STLS upgrade the
connection. A made-up mailbox name may well get NO: the replay reproduces load and order,
not outcomes, and says what each command was answered.

No locust here: ``replay_session`` is a plain blocking client (gevent makes it cooperative
under locust; loadtest/replay_user.py) that the tests and scenarios call directly.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

DOMAIN = "example.test"
_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


def load(path: str | Path) -> list[dict]:
    """The sessions of a recording, in order (lines that are not sessions are skipped)."""
    sessions = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("protocol") in ("imap", "pop3", "smtp"):
            sessions.append(record)
    return sessions


@dataclass
class Answer:
    """One replayed command: its verb, the seconds its reply took, and how it ended."""

    verb: str
    seconds: float
    status: str   # "OK", "NO", "BAD", "+OK", "-ERR", "250", ... ; "" when not read


class Conn:
    """A socket with line reads, upgradable to TLS."""

    def __init__(self, host: str, port: int, timeout: float, ctx: ssl.SSLContext | None,
                 implicit: bool) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ctx, self.host = ctx, host
        if implicit:
            self.starttls()
        self.buf = b""

    def starttls(self) -> None:
        ctx = self.ctx or _no_verify()
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.host)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _no_verify() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def message(size: int) -> bytes:
    """A message of exactly ``size`` bytes (a header and filler lines, CRLF-ended)."""
    head = b"Subject: replayed\r\n\r\n"
    if size < len(head) + 2:
        return (b"x" * max(0, size - 2) + b"\r\n")[:size]
    n = size - len(head) - 2
    body = ((b"r" * 76 + b"\r\n") * (n // 78 + 1))[:n]
    if body.endswith(b"\r"):  # no bare CR before the final CRLF
        body = body[:-1] + b"r"
    return head + body + b"\r\n"


class Synth:
    """What the recording left out, made up from one account."""

    def __init__(self, login: str, password: str) -> None:
        self.login, self.password = login, password
        self.address = login if "@" in login else f"{login}@{DOMAIN}"
        self.mechanism = ""
        self.sasl_step = 0

    def arg(self, shape, quote: bool) -> tuple[bytes, bytes | None]:
        """(text, literal) for one argument shape; literal: bytes sent after a {n}."""
        if isinstance(shape, str):
            return shape.encode(), None
        if "login" in shape:
            return self._string(self.login, quote), None
        if "secret" in shape:
            return self._string(self.password, quote), None
        if "sasl" in shape:
            return self.sasl(), None
        if "lit" in shape:
            return b"{%d}" % shape["lit"], message(shape["lit"])
        if "addr" in shape:
            return f"{shape.get('pre', '')}<{self.address}>".encode(), None
        if "q" in shape:
            return b'"' + b"x" * shape["q"] + b'"', None
        return b"x" * max(1, int(shape.get("a", 1))), None

    def sasl(self) -> bytes:
        """The next answer of the current SASL exchange."""
        step, self.sasl_step = self.sasl_step, self.sasl_step + 1
        if self.mechanism == "LOGIN":
            text = self.login if step == 0 else self.password
        else:
            text = f"\0{self.login}\0{self.password}"
        return base64.b64encode(text.encode())

    @staticmethod
    def _string(text: str, quote: bool) -> bytes:
        if not quote:
            return text.encode()
        return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


Sleep = Callable[[float], None]


def replay_session(session: dict, host: str, port: int, login: str, password: str, *,
                   tls: str = "off", ctx: ssl.SSLContext | None = None, timeout: float = 30.0,
                   time_scale: float = 1.0, sleep: Sleep = time.sleep,
                   on_answer: Callable[[Answer], None] | None = None) -> list[Answer]:
    """Play one recorded session; returns (and hands ``on_answer``) each command's answer.
    A connection that breaks raises (ConnectionError, OSError, TimeoutError)."""
    player = _PLAYERS[session["protocol"]](Synth(login, password))
    conn = Conn(host, port, timeout, ctx, tls == "implicit")
    answers: list[Answer] = []
    try:
        player.greeting(conn)
        spent = 0.0
        for entry in session.get("commands", []):
            wait = float(entry.get("t", 0.0)) * time_scale - spent
            if wait > 0:
                sleep(wait)
            started = time.perf_counter()
            result = player.play(conn, entry)
            spent = time.perf_counter() - started
            if result is not None:
                answer = Answer(result[0], spent, result[1])
                answers.append(answer)
                if on_answer is not None:
                    on_answer(answer)
    finally:
        conn.close()
    return answers


class _Imap:
    def __init__(self, synth: Synth) -> None:
        self.synth = synth
        self.tags = (f"r{n:04d}" for n in range(1, 10**6))
        self.tag = ""
        self.verb = ""

    def greeting(self, conn: Conn) -> None:
        conn.line()

    def play(self, conn: Conn, entry: dict) -> tuple[str, str] | None:
        if "sasl" in entry:
            conn.send(self.synth.sasl() + b"\r\n")
            return self.verb + " (sasl)", self._answer(conn)
        if "verb" not in entry:
            return None  # a line that was no command: nothing to replay
        verb = entry["verb"]
        if verb == "DONE":
            conn.send(b"DONE\r\n")
            return "DONE", self._answer(conn)
        self.tag, self.verb = next(self.tags), verb
        args = entry.get("args", [])
        if verb == "AUTHENTICATE":
            self.synth.mechanism, self.synth.sasl_step = str(args[0]) if args else "", 0
        line = f"{self.tag} {verb}".encode()
        for shape in args:
            text, literal = self.synth.arg(shape, quote=True)
            line += b" " + text
            if literal is not None:  # synchronizing: the server must say "+" first
                conn.send(line + b"\r\n")
                status = self._answer(conn)
                if status != "+":
                    return verb, status
                conn.send(literal)
                line = b""
        conn.send(line + b"\r\n")
        status = self._answer(conn)
        if verb == "STARTTLS" and status == "OK":
            conn.starttls()
        return verb, status

    def _answer(self, conn: Conn) -> str:
        """Read up to the tagged completion (or a continuation); its status word."""
        while True:
            line = conn.line()
            while _LITERAL.search(line):
                size = int(_LITERAL.search(line).group(1))
                conn.read(size)
                line = conn.line()
            if line.startswith(b"+"):
                return "+"
            if line.startswith(self.tag.encode() + b" "):
                return line.split(b" ", 2)[1].decode("latin-1").upper()


class _Pop3:
    MULTILINE = frozenset({"CAPA", "RETR", "TOP"})

    def __init__(self, synth: Synth) -> None:
        self.synth = synth
        self.verb = ""

    def greeting(self, conn: Conn) -> None:
        conn.line()

    def play(self, conn: Conn, entry: dict) -> tuple[str, str] | None:
        if "sasl" in entry:
            conn.send(self.synth.sasl() + b"\r\n")
            return self.verb + " (sasl)", self._status(conn.line())
        if "verb" not in entry:
            return None
        verb = self.verb = entry["verb"]
        args = entry.get("args", [])
        if verb == "AUTH":
            self.synth.mechanism, self.synth.sasl_step = str(args[0]) if args else "", 0
        line = " ".join([verb] + [self.synth.arg(a, quote=False)[0].decode("latin-1")
                                  for a in args])
        conn.send(line.encode() + b"\r\n")
        reply = conn.line()
        status = self._status(reply)
        multi = verb in self.MULTILINE or (verb in ("LIST", "UIDL") and not args)
        if status == "+OK" and multi:
            while conn.line() not in (b".\r\n", b".\n"):
                pass
        if verb == "STLS" and status == "+OK":
            conn.starttls()
        return verb, status

    @staticmethod
    def _status(line: bytes) -> str:
        return line.split(b" ", 1)[0].strip().decode("latin-1")


class _Smtp:
    def __init__(self, synth: Synth) -> None:
        self.synth = synth
        self.verb = ""

    def greeting(self, conn: Conn) -> None:
        self._reply(conn)

    def play(self, conn: Conn, entry: dict) -> tuple[str, str] | None:
        if "sasl" in entry:
            conn.send(self.synth.sasl() + b"\r\n")
            return self.verb + " (sasl)", self._reply(conn)
        if "body" in entry:
            conn.send(message(int(entry["body"])) + b".\r\n")
            return "DATA (body)", self._reply(conn)
        if "verb" not in entry:
            return None
        verb = self.verb = entry["verb"]
        args = entry.get("args", [])
        if verb == "AUTH":
            self.synth.mechanism, self.synth.sasl_step = str(args[0]) if args else "", 0
        line = " ".join([verb] + [self.synth.arg(a, quote=False)[0].decode("latin-1")
                                  for a in args])
        conn.send(line.encode() + b"\r\n")
        status = self._reply(conn)
        if verb == "STARTTLS" and status == "220":
            conn.starttls()
        return verb, status

    @staticmethod
    def _reply(conn: Conn) -> str:
        while True:
            line = conn.line()
            if line[3:4] != b"-":
                return line[:3].decode("latin-1")


_PLAYERS = {"imap": _Imap, "pop3": _Pop3, "smtp": _Smtp}


def verbs(session: dict) -> list[str]:
    """The command verbs of a recorded session, in order (what a replay must repeat)."""
    return [c["verb"] for c in session.get("commands", []) if "verb" in c]


def cycle(sessions: list[dict]) -> Iterator[dict]:
    while sessions:
        yield from sessions
