"""A scriptable mock of an nginx ``auth_http`` server (HTTP/1.0 over asyncio, loopback).

One line in a synchronous test::

    imap = ("127.0.0.1", 1143)
    with MockAuthServer(users={"alice": User("secret", backends={"imap": imap})}) as auth:
        auth.url            # "http://127.0.0.1:PORT/auth"
        auth.wait_requests(1)[0].header("Auth-User")

or ``await srv.start()`` / ``await srv.stop()`` inside a running loop.

Every request is recorded byte for byte. The answer comes, in order of precedence, from the
global ``script`` queue, the ``handler`` callable, the user's ``by_attempt`` / ``replies``
scripts, or the default decision (credentials checked per Auth-Method, see docs/behaviour.md §10;
for ``xoauth2`` and ``oauthbearer`` Auth-Pass is a bearer token, looked up in the user's
``tokens`` or the server's ``tokens`` table).
A ``Reply`` describes both what to say and how to say it (delay, trickle, drop, ...);
``faults`` (a ``Faults``) misdelivers every answer, or every Nth, whatever decided it.
``fakes.script`` loads all of this from a TOML file; ``fakes.auth.cli`` is the command
line (``postern auth-mock``, ``python -m postern.fakes.auth``).
Passwords never appear in what this module logs or prints.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import re
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from postern.fakes._runner import BackgroundServer

log = logging.getLogger("postern.fakes.auth")

Backend = tuple[str, int]
DEFAULT_FAIL = "Invalid login or password"
MASK = "***"
OAUTH_METHODS = ("xoauth2", "oauthbearer")
_CONTENT = ("status", "server", "port", "user", "password", "wait", "error_code")
_DELIVERY = ("http_status", "body", "eol", "delay", "trickle", "drop", "close_early", "raw",
             "oversize", "stall")


@dataclass
class Reply:
    """One scripted answer. ``None`` content fields are left out of the reply.

    Delivery: ``delay`` seconds before answering; ``trickle`` seconds between single bytes;
    ``drop`` closes without answering; ``close_early`` sends only N bytes (True: half) then
    closes; ``raw`` is sent verbatim instead of a generated reply; ``oversize`` pads the header
    block with an ``X-Padding`` line to exactly N bytes (True: 1100, past nginx's 1024-byte
    buffer); ``stall`` reads the request and then never answers (until the client closes).
    ``decide=True`` takes the content from the default decision and this reply's
    non-None content fields, extra headers and delivery options on top. ``fill_backend``: an
    OK without ``server``/``port`` gets the user's (or the default) backend for the request's
    protocol.
    """

    status: str | None = None
    server: str | None = None
    port: int | str | None = None
    user: str | None = None
    password: str | None = None
    wait: int | str | None = None
    error_code: str | None = None
    headers: list[str] = field(default_factory=list)
    http_status: str | None = "HTTP/1.0 200 OK"
    body: bytes = b""
    eol: str = "\r\n"
    delay: float = 0.0
    trickle: float | None = None
    drop: bool = False
    close_early: int | bool | None = None
    raw: bytes | None = None
    oversize: int | bool = False
    decide: bool = False
    stall: bool = False
    fill_backend: bool = False

    @classmethod
    def ok(cls, server: str, port: int | str, **kw: Any) -> Reply:
        return cls(status="OK", server=server, port=port, **kw)

    @classmethod
    def fail(cls, text: str = DEFAULT_FAIL, wait: int | str | None = None, **kw: Any) -> Reply:
        return cls(status=text, wait=wait, **kw)

    @classmethod
    def retry(cls, wait: int | str | None = None, **kw: Any) -> Reply:
        """``Auth-Status: WAIT``: nginx repeats the same request after ``wait`` seconds."""
        return cls(status="WAIT", wait=wait, **kw)

    @classmethod
    def default(cls, **kw: Any) -> Reply:
        """The normal decision, delivered with the given tweaks (e.g. ``delay=2``)."""
        return cls(decide=True, **kw)

    @classmethod
    def verbatim(cls, raw: bytes, **kw: Any) -> Reply:
        return cls(raw=raw, **kw)

    @classmethod
    def hang_up(cls, delay: float = 0.0) -> Reply:
        return cls(drop=True, delay=delay)

    def render(self) -> bytes:
        """The bytes this reply puts on the wire (before close_early truncation)."""
        if self.raw is not None:
            return self.raw
        eol = self.eol
        lines = [] if self.http_status is None else [self.http_status]
        for name, value in (("Auth-Status", self.status), ("Auth-Server", self.server),
                            ("Auth-Port", self.port), ("Auth-User", self.user),
                            ("Auth-Pass", self.password), ("Auth-Wait", self.wait),
                            ("Auth-Error-Code", self.error_code)):
            if value is not None:
                lines.append(f"{name}: {value}")
        lines.extend(self.headers)
        if self.oversize:
            target = 1100 if self.oversize is True else int(self.oversize)
            used = sum(len(line.encode()) + len(eol) for line in lines) + len(eol)
            pad = target - used - len("X-Padding: ") - len(eol)
            if used < target:
                if pad < 0:
                    raise ValueError(f"cannot pad a {used}-byte header block to {target} bytes")
                lines.insert(1 if self.http_status is not None else 0, "X-Padding: " + "x" * pad)
        return "".join(line + eol for line in lines).encode() + eol.encode() + self.body


def _merge(base: Reply, over: Reply) -> Reply:
    content = {f: getattr(over, f) for f in _CONTENT if getattr(over, f) is not None}
    delivery = {f: getattr(over, f) for f in _DELIVERY}
    return dataclasses.replace(base, **content, **delivery, headers=base.headers + over.headers,
                               decide=False)


@dataclass
class User:
    """A login known to the mock. ``replies`` are consumed in arrival order; ``by_attempt``
    answers by Auth-Login-Attempt (checked first); ``backend_user``/``backend_password`` are
    returned as Auth-User/Auth-Pass rewrites on success."""

    password: str
    backends: dict[str, Backend] = field(default_factory=dict)
    replies: list[Reply] = field(default_factory=list)
    by_attempt: dict[int, Reply] = field(default_factory=dict)
    backend_user: str | None = None
    backend_password: str | None = None
    tokens: list[str] = field(default_factory=list)  # bearer tokens (xoauth2, oauthbearer)


@dataclass
class Faults:
    """Delivery misbehaviour of the auth server itself, applied on top of every answer (or
    every ``every``-th request, counted from 1; only those of ``protocols`` when given). A
    reply's own delivery options win over these. Fields as in ``Reply``."""

    delay: float = 0.0
    trickle: float | None = None
    drop: bool = False
    close_early: int | bool | None = None
    stall: bool = False
    oversize: int | bool = False
    every: int = 1
    protocols: list[str] | None = None
    close_after: int = 0  # keep-alive: close a connection after N replies, unannounced

    def applies(self, n: int, protocol: str) -> bool:
        return n % max(1, self.every) == 0 and (self.protocols is None
                                                or protocol in self.protocols)

    def apply(self, reply: Reply) -> Reply:
        blank = Reply()
        changes = {name: getattr(self, name) for name in
                   ("delay", "trickle", "drop", "close_early", "stall", "oversize")
                   if getattr(reply, name) == getattr(blank, name)}
        return dataclasses.replace(reply, **changes)


_ESCAPED = re.compile(rb"%([0-9A-Fa-f]{2})")


def unescape(value: str) -> str:
    """Undo nginx's Auth-User/Auth-Pass escaping (%XX); other bytes pass through."""
    raw = value.encode("utf-8", "surrogateescape")
    return _ESCAPED.sub(lambda m: bytes([int(m.group(1), 16)]), raw).decode("utf-8",
                                                                              "surrogateescape")


@dataclass(repr=False)
class AuthRequest:
    """One request as received. ``headers`` keeps order, names and values exactly as sent."""

    raw: bytes
    method: str
    uri: str
    version: str
    headers: list[tuple[str, str]]
    peer: Any = None
    received_at: float = 0.0
    reply: bytes = b""
    decision: Reply | None = None

    @classmethod
    def parse(cls, raw: bytes, peer: Any = None) -> AuthRequest:
        text = raw.decode("utf-8", "surrogateescape")
        lines = re.split(r"\r?\n", text)
        parts = lines[0].split(" ")
        method, uri, version = (parts + ["", "", ""])[:3]
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name, value.lstrip(" ")))
        return cls(raw, method, uri, version, headers, peer, time.time())

    def header(self, name: str, default: str | None = None) -> str | None:
        """The last value of a header, name matched case-insensitively."""
        for n, v in reversed(self.headers):
            if n.lower() == name.lower():
                return v
        return default

    @property
    def auth_method(self) -> str:
        return (self.header("Auth-Method") or "").lower()

    @property
    def protocol(self) -> str:
        return (self.header("Auth-Protocol") or "").lower()

    @property
    def user(self) -> str:
        return unescape(self.header("Auth-User") or "")

    @property
    def password(self) -> str:
        return unescape(self.header("Auth-Pass") or "")

    @property
    def salt(self) -> str:
        return self.header("Auth-Salt") or ""

    @property
    def attempt(self) -> int:
        try:
            return int(self.header("Auth-Login-Attempt") or 1)
        except ValueError:
            return 1

    def masked_headers(self) -> list[tuple[str, str]]:
        return [(n, MASK if n.lower() == "auth-pass" and v else v) for n, v in self.headers]

    def to_json(self) -> dict[str, Any]:
        status = self.decision.status if self.decision and self.decision.raw is None else None
        peer = f"{self.peer[0]}:{self.peer[1]}" if isinstance(self.peer, tuple) else self.peer
        return {"time": round(self.received_at, 6), "peer": peer, "method": self.method,
                "uri": self.uri, "version": self.version, "headers": self.masked_headers(),
                "status": status}

    def __repr__(self) -> str:
        return (f"AuthRequest({self.method} {self.uri} headers={self.masked_headers()!r})")


class MockAuthServer(BackgroundServer):
    """The mock auth_http server; see the module docstring."""

    def __init__(self, users: Mapping[str, User | str] | None = None, *,
                 host: str = "127.0.0.1", port: int = 0, uri_path: str = "/auth",
                 backends: Mapping[str, Backend] | None = None, fail_wait: int = 0,
                 fail_wait_attempts: int = 0, fail_message: str = DEFAULT_FAIL, smtp_error_code: str | None = None,
                 always_send_pass: bool = False, script: Iterable[Reply] = (),
                 handler: Callable[[AuthRequest], Reply | None] | None = None,
                 faults: Faults | None = None, tokens: Mapping[str, str] | None = None,
                 requests_log: str | Path | None = None, record: bool = True,
                 use_uvloop: bool = True, keepalive: bool = False,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.users: dict[str, User] = {}
        for login, user in (users or {}).items():
            self.users[login] = User(user) if isinstance(user, str) else user
        self.host, self.port, self.uri_path = host, port, uri_path
        self.backends: dict[str, Backend] = dict(backends or {})
        self.fail_wait, self.fail_message = fail_wait, fail_message
        # nginx's advice: Auth-Wait lets a client retry on the same connection; stop sending
        # it after some attempts so the proxy closes the connection (0: never stop)
        self.fail_wait_attempts = fail_wait_attempts
        self.smtp_error_code = smtp_error_code
        self.always_send_pass = always_send_pass
        # bearer token -> login, besides each user's own tokens: an OAUTHBEARER client may
        # leave the user out, the token then names it (and goes back as Auth-User)
        self.tokens: dict[str, str] = dict(tokens or {})
        self.script: deque[Reply] = deque(script)
        self.handler = handler
        self.faults = faults or Faults()
        self.served = 0  # requests answered so far (Faults.every counts these)
        self.requests: list[AuthRequest] = []
        self.record = record  # False: keep nothing in memory (long load runs)
        self.requests_log = requests_log
        self.use_uvloop = use_uvloop
        # beyond nginx's client: HTTP/1.1 requests kept alive (replies get Content-Length),
        # HTTPS with this context
        self.keepalive = keepalive
        self.ssl_context = ssl_context
        self.connections = 0  # connections accepted so far
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._log_file: IO[str] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}{self.uri_path}"

    def add_user(self, login: str, password: str, **kw: Any) -> User:
        user = self.users[login] = User(password, **kw)
        return user

    def push(self, *replies: Reply) -> None:
        """Queue replies that answer the next requests, whoever they are for."""
        self.script.extend(replies)

    def clear(self) -> None:
        self.requests.clear()
        self.script.clear()

    def wait_requests(self, n: int, timeout: float = 5.0) -> list[AuthRequest]:
        """Block until at least ``n`` requests arrived; returns them all."""
        return self._wait_records(self.requests, n, timeout, f"{n} auth request(s)")

    async def async_wait_requests(self, n: int, timeout: float = 5.0) -> list[AuthRequest]:
        return await self._async_wait_records(self.requests, n, timeout,
                                              f"{n} auth request(s)")

    async def start(self) -> None:
        self._open_log()
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  limit=1 << 16, backlog=1024,
                                                  ssl=self.ssl_context)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]

    def _open_log(self) -> None:
        if self.requests_log and self._log_file is None:
            self._log_file = open(self.requests_log, "a", encoding="utf-8")  # noqa: SIM115

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    # -- deciding -------------------------------------------------------------------------

    def decide(self, req: AuthRequest) -> Reply:
        reply = None
        if self.script:
            reply = self.script.popleft()
        elif self.handler is not None:
            reply = self.handler(req)
        if reply is None and (user := self.users.get(req.user)) is not None:
            reply = user.by_attempt.get(req.attempt)
            if reply is None and user.replies:
                reply = user.replies.pop(0)
        if reply is None:
            return self.default_reply(req)
        if reply.decide:
            return _merge(self.default_reply(req), reply)
        if reply.fill_backend and reply.server is None and reply.port is None:
            backend = self.backend_for(req)
            if backend is not None:
                reply = dataclasses.replace(reply, server=backend[0], port=backend[1])
        return reply

    def backend_for(self, req: AuthRequest) -> Backend | None:
        """The backend the default decision would name for this request's user and protocol."""
        user = self.users.get(req.user)
        backend = user.backends.get(req.protocol) if user is not None else None
        return backend or self.backends.get(req.protocol)

    def default_reply(self, req: AuthRequest) -> Reply:
        """The unscripted decision: check the credentials, answer with the user's backend."""
        method, proto = req.auth_method, req.protocol
        if method == "none":  # SMTP MAIL/RCPT without authentication
            backend = self.backends.get("smtp")
            return Reply.ok(*backend) if backend else self._failure(req)
        login = req.user
        if method in OAUTH_METHODS:
            login = self._token_login(req)
        user = self.users.get(login) if login is not None else None
        if user is None or not _credentials_ok(method, user.password, req):
            return self._failure(req)
        backend = user.backends.get(proto) or self.backends.get(proto)
        if backend is None:
            return self._failure(req, f"No {proto or 'unknown'} backend for this user")
        reply = Reply.ok(*backend, user=user.backend_user)
        if reply.user is None and login != req.user:
            reply.user = login  # the login the token names, for the backend
        if (method in ("apop", "cram-md5", "external") or self.always_send_pass
                or user.backend_password is not None):
            reply.password = user.backend_password or user.password
        return reply

    def _token_login(self, req: AuthRequest) -> str | None:
        """Whose bearer token this is: a user's own, or the token table's (which must agree
        with Auth-User when the client named a user); None for an unknown token."""
        token = req.password
        named = self.tokens.get(token)
        if named is not None:
            return named if req.user in ("", named) else None
        user = self.users.get(req.user)
        if user is not None and token and token in user.tokens:
            return req.user
        return None

    def _failure(self, req: AuthRequest, text: str | None = None) -> Reply:
        wait = self.fail_wait or None
        if self.fail_wait_attempts and req.attempt > self.fail_wait_attempts:
            wait = None
        return Reply.fail(text or self.fail_message, wait=wait,
                          error_code=self.smtp_error_code if req.protocol == "smtp" else None)

    # -- serving --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            answered = 0
            while await self._answer(reader, writer):
                answered += 1
                if self.faults.close_after and answered >= self.faults.close_after:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request and its reply; True when the connection stays open for another."""
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return False
        req = AuthRequest.parse(raw, writer.get_extra_info("peername"))
        try:
            reply = self.decide(req)
        except Exception:  # a broken handler or Reply must not kill the server
            log.exception("auth decision failed")
            reply = Reply(http_status="HTTP/1.0 500 Internal Server Error")
        self.served += 1
        if self.faults != _NO_FAULTS and self.faults.applies(self.served, req.protocol):
            reply = self.faults.apply(reply)
        keep = self._keeps_alive(req, reply)
        if keep:
            status = (reply.http_status or "HTTP/1.1 200 OK").replace("HTTP/1.0", "HTTP/1.1")
            framed = any(h.lower().startswith(("content-length:", "transfer-encoding:"))
                         for h in reply.headers)
            reply = dataclasses.replace(reply, http_status=status, headers=[
                *reply.headers, *([] if framed else [f"Content-Length: {len(reply.body)}"])])
        try:
            data = reply.render()
        except Exception:
            log.exception("auth reply failed")
            reply = Reply(http_status="HTTP/1.0 500 Internal Server Error")
            data, keep = reply.render(), False
        cut = _cut(len(data), reply.close_early)
        req.decision, req.reply = reply, b"" if reply.drop else data[:cut]
        self._record(req)
        if reply.stall:  # hold the connection until the client gives up
            while await reader.read(65536):
                pass
            return False
        await self._deliver(writer, reply, req.reply)
        return keep

    def _keeps_alive(self, req: AuthRequest, reply: Reply) -> bool:
        if not self.keepalive or req.version != "HTTP/1.1":
            return False
        if (req.header("Connection") or "").lower() == "close":
            return False
        return not (reply.drop or reply.stall or reply.raw is not None
                    or reply.close_early not in (None, False))

    def _record(self, req: AuthRequest) -> None:
        reply = req.decision
        outcome = ("drop" if reply and reply.drop else "stall" if reply and reply.stall else
                   "raw" if reply and reply.raw is not None else reply.status if reply else None)
        log.info("%s %s user=%r attempt=%s -> %s", req.protocol or "-", req.auth_method or "-",
                 req.user, req.header("Auth-Login-Attempt"), outcome)
        if self._log_file:
            entry = req.to_json()
            try:
                line = json.dumps(entry, ensure_ascii=False)
                line.encode()
            except UnicodeEncodeError:  # bytes that are not UTF-8: \udcXX escapes round-trip
                line = json.dumps(entry)
            self._log_file.write(line + "\n")
            self._log_file.flush()
        if self.record:
            self._append_record(self.requests, req)

    @staticmethod
    async def _deliver(writer: asyncio.StreamWriter, reply: Reply, data: bytes) -> None:
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.drop or writer.is_closing():
            return
        if reply.trickle:
            for i in range(len(data)):
                if writer.is_closing():  # the client gave up (uvloop raises on writes)
                    return
                writer.write(data[i:i + 1])
                await writer.drain()
                await asyncio.sleep(reply.trickle)
        else:
            writer.write(data)
            await writer.drain()


def _cut(length: int, close_early: int | bool | None) -> int:
    if close_early is None or close_early is False:
        return length
    return length // 2 if close_early is True else min(int(close_early), length)


_NO_FAULTS = Faults()


def _credentials_ok(method: str, password: str, req: AuthRequest) -> bool:
    salt = req.salt.rstrip("\r\n")
    if method in ("plain", "login"):
        return req.password == password
    if method == "apop":
        digest = hashlib.md5((salt + password).encode()).hexdigest()
        return hmac.compare_digest(req.password.lower().encode(), digest.encode())
    if method == "cram-md5":
        digest = hmac.new(password.encode(), salt.encode(), hashlib.md5).hexdigest()
        return hmac.compare_digest(req.password.lower().encode(), digest.encode())
    if method in OAUTH_METHODS:
        return True  # the token was checked when its user was looked up (_token_login)
    return method == "external"
