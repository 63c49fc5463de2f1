"""A fake SMTP upstream on aiosmtpd, with Postfix's XCLIENT and misbehaviour on cue.

One line in a synchronous test::

    with FakeSmtpServer(users={"alice": "secret"}) as smtp:
        smtplib.SMTP(smtp.host, smtp.port).login("alice", "secret")

or ``await srv.start()`` / ``await srv.stop()`` inside a running loop.

aiosmtpd speaks the protocol (AUTH PLAIN/LOGIN, MAIL/RCPT/DATA); this module adds what a mail
proxy's upstream needs and aiosmtpd lacks: ``XCLIENT`` with Postfix 3.x's reply texts (a
success greets again with 220 and resets the session, as Postfix does), and a record of every
line the clients send (``commands``: each raw line with its line ending, SASL continuation lines
and the exact XCLIENT line included, message bodies not), per connection
``connections[i].transcript`` and accepted mail in ``messages``. ``faults`` (a ``Faults``) may be
changed while the server runs; it is read at each step.

Accepted mail can also go where a mail-catcher (Mailpit, smtp-sink, GreenMail) puts it:
``mail_dir`` keeps every message as ``NNNNN.eml`` with one JSON line per message in
``index.jsonl``; ``deliver(user, raw)`` is called for each recipient that names a login of
``users`` (the whole address, or its local part), e.g. to add it to the fakes' ``MailStore``
INBOX. Other recipients are kept in ``mail_dir`` only.

aiosmtpd traps avoided here: no ``Controller`` (it cannot take port 0 and binds ``::1`` by
default; the server is created on the loop directly, 127.0.0.1 and port 0 by default);
``auth_require_tls=False`` so that AUTH is offered on plaintext; SMTPUTF8 explicitly off so the
EHLO reply is predictable; no HELO required before MAIL (Postfix's default).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import ipaddress
import json
import logging
import re
import ssl
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, Session, syntax
from postern.fakes._runner import (
    add_tls_arguments,
    hostport,
    login_password,
    run_server,
    tls_options,
)
from postern.fakes._sasl import OAUTH_MECHANISMS, decode_oauth
from postern.fakes._server import FakeServer, hang_up
from postern.proxy.sasl import OAUTH_ERROR

log = logging.getLogger("postern.fakes.smtp")

IDENT = "ESMTP FakeSMTP"
XCLIENT_ATTRS = ("NAME", "ADDR", "PROTO", "HELO", "REVERSE_NAME", "PORT", "LOGIN", "DESTADDR",
                 "DESTPORT")
XCLIENT_EHLO = "XCLIENT " + " ".join(XCLIENT_ATTRS)
SPECIAL = ("[UNAVAILABLE]", "[TEMPUNAVAIL]")
LINE_LIMIT = 2048  # Postfix's line_length_limit
REJECT_MAIL = "550 5.7.1 Sender address rejected: Access denied"
REJECT_RCPT = "550 5.1.1 Recipient address rejected: User unknown"
_HEX = frozenset(b"0123456789ABCDEFabcdef")
_HOSTNAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


@dataclass
class Faults:
    """Misbehaviour switches, read at every step so tests may flip them at runtime.

    greeting: ``"default"`` (``220 <hostname> ESMTP FakeSMTP``), ``None`` (accept and say
    nothing) or a raw reply sent instead (``"554 5.3.2 not now"``).
    greeting_delay: seconds before the greeting.
    reject_mail / reject_rcpt: refuse MAIL / RCPT (True: a 550 line; a string: that reply).
    replies: verb -> reply sent instead of handling the command (``{"EHLO": "421 4.3.2 busy"}``,
    multi-line as ``"250-a\\r\\n250 b"``); the key ``"MESSAGE"`` replaces the reply to the end
    of a message. A 421 reply closes the connection afterwards, as RFC 5321 says.
    drop_at: close the connection without replying when this verb arrives (``"MESSAGE"``: after
    a message was received). drop_after_data: the same as ``drop_at="MESSAGE"``.
    reset: every drop is a TCP reset (RST) instead of an orderly close.
    stall_at: stop answering when this verb arrives, keeping the connection open.
    xclient: advertise and accept XCLIENT (False: ``500 ... not recognized`` as aiosmtpd says
    for any unknown command). xclient_authorized: False answers every XCLIENT with
    ``550 5.7.0 Error: insufficient authorization`` (a client not in
    smtpd_authorized_xclient_hosts).
    oauth: also offer XOAUTH2 and OAUTHBEARER (the user's password is its token; a bad one
    gets RFC 7628's error challenge, then 535 after the dummy response), read per connection.
    """

    greeting: str | None = "default"
    greeting_delay: float = 0.0
    reject_mail: bool | str = False
    reject_rcpt: bool | str = False
    replies: dict[str, str] = field(default_factory=dict)
    drop_at: str | None = None
    reset: bool = False
    stall_at: str | None = None
    drop_after_data: bool = False
    xclient: bool = True
    xclient_authorized: bool = True
    oauth: bool = False
    lose_every: int = 0
    alter_every: int = 0
    duplicate_every: int = 0


@dataclass
class StoredMessage:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    login: str | None  # from AUTH or XCLIENT LOGIN=
    helo: str | None
    xclient: dict[str, str]
    peer: Any


def xtext_decode(value: str) -> str:
    """RFC 3461 xtext: +XX is the byte XX (Postfix decodes XCLIENT values this way)."""
    raw = value.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x2B and i + 2 < len(raw) and _HEX.issuperset(raw[i + 1:i + 3]):
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


def _valid_address(value: str) -> bool:
    if value.upper().startswith("IPV6:"):
        value = value[5:]
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _xclient_error(key: str, value: str) -> str | None:
    """Postfix's check of one attribute value (None when it is acceptable)."""
    if value in SPECIAL:
        return None
    if key in ("NAME", "REVERSE_NAME"):
        ok = len(value) <= 255 and bool(_HOSTNAME.fullmatch(value)) and not _valid_address(value)
    elif key in ("ADDR", "DESTADDR"):
        ok = _valid_address(value)
    elif key in ("PORT", "DESTPORT"):
        ok = value.isdigit() and int(value) <= 65535
    elif key == "PROTO":
        ok = value.upper() in ("SMTP", "ESMTP")
    else:
        ok = True
    return None if ok else f"501 5.5.4 Bad {key} syntax: {value}"


def _delivery_fault(f: Faults, n: int, content: bytes) -> tuple[bytes, int]:
    """What the Nth accepted message becomes under the delivery faults: (bytes, copies)."""
    if f.lose_every and n % f.lose_every == 0:
        return content, 0
    if f.alter_every and n % f.alter_every == 0:
        end = content.find(b"\r\n\r\n")
        body = end + 4 if end >= 0 else 0  # the first byte of the body
        if body < len(content):
            changed = b"X" if content[body:body + 1] != b"X" else b"Y"
            content = content[:body] + changed + content[body + 1:]
    if f.duplicate_every and n % f.duplicate_every == 0:
        return content, 2
    return content, 1


class _FakeSession(Session):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.xclient: dict[str, str] = {}

    # aiosmtpd still fills the deprecated login_data, logging a warning each time
    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _Handler:
    """aiosmtpd hooks: the EHLO advertisement and message storage."""

    def __init__(self, server: FakeSmtpServer) -> None:
        self.server = server

    async def handle_EHLO(self, smtp: SmtpConnection, session, envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.server.faults.xclient:
            responses.insert(len(responses) - 1, "250-" + XCLIENT_EHLO)
        return responses

    async def handle_DATA(self, smtp: SmtpConnection, session, envelope) -> str:
        f = self.server.faults
        if f.drop_after_data or f.drop_at == "MESSAGE":
            smtp.drop()
            await asyncio.Event().wait()  # cancelled when the connection is gone
        reply = f.replies.get("MESSAGE")
        if reply is not None:
            return reply
        login = session.auth_data
        if isinstance(login, bytes):
            login = login.decode("utf-8", "replace")
        msg = StoredMessage(envelope.mail_from, list(envelope.rcpt_tos),
                            bytes(envelope.original_content or b""), login, session.host_name,
                            dict(session.xclient), session.peer)
        n = self.server._store(msg)
        self.server._keep(msg)
        return f"250 2.0.0 Ok: queued as FAKE{n:05d}"


class _RecordingReader:
    """The connection's StreamReader, with every line the client sends written down."""

    def __init__(self, reader: asyncio.StreamReader, conn: SmtpConnection) -> None:
        self._reader = reader
        self._conn = conn

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        line = await self._reader.readuntil(separator)
        self._conn._received(line)
        return line

    async def readline(self) -> bytes:
        line = await self._reader.readline()
        self._conn._received(line)
        return line

    async def read(self, n: int = -1) -> bytes:
        data = await self._reader.read(n)
        self._conn._received(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


class SmtpConnection(SMTP):
    """One client connection: aiosmtpd's SMTP plus XCLIENT, recording and faults."""

    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"
    line_length_limit = LINE_LIMIT  # aiosmtpd's 1001/512 would refuse a long XCLIENT line
    command_size_limit = LINE_LIMIT

    def __init__(self, server: FakeSmtpServer, loop: asyncio.AbstractEventLoop) -> None:
        self.fake = server
        self.transcript: list[tuple[str, bytes]] = []
        self.closed = False
        self._greeted = False
        self._in_data = False
        with warnings.catch_warnings():  # "auth_required without TLS" is what a fake wants
            warnings.simplefilter("ignore")
            super().__init__(_Handler(server), hostname=server.hostname, ident=IDENT,
                             enable_SMTPUTF8=False, auth_require_tls=False,
                             auth_required=server.auth_required,
                             authenticator=server._authenticate,
                             auth_exclude_mechanism=[] if server.faults.oauth else
                             list(OAUTH_MECHANISMS),
                             data_size_limit=server.data_size_limit, loop=loop,
                             # STARTTLS fakes require it, as smtpd_tls_security_level=encrypt
                             tls_context=None if server.implicit_tls else server.tls,
                             require_starttls=server.tls is not None
                             and not server.implicit_tls)
        # per connection: aiosmtpd's default dict is a class attribute that EHLO mutates
        self.command_size_limits = collections.defaultdict(lambda: LINE_LIMIT)
        for verb, method in list(self._smtp_methods.items()):
            self._smtp_methods[verb] = self._with_faults(verb, method)

    async def auth_XOAUTH2(self, _, args: list[str]) -> AuthResult:
        return await self._oauth("XOAUTH2", args)

    async def auth_OAUTHBEARER(self, _, args: list[str]) -> AuthResult:
        return await self._oauth("OAUTHBEARER", args)

    async def _oauth(self, mech: str, args: list[str]) -> AuthResult:
        if len(args) == 1:
            answer = await self.challenge_auth("")
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
            response = base64.b64encode(answer)
        else:
            response = args[1].encode()
        try:
            user, token = decode_oauth(mech, response)
        except ValueError:
            await self.push(f"501 5.5.2 Invalid SASL {mech} response")
            return AuthResult(success=False, handled=True)
        data = LoginPassword(user.encode("utf-8", "surrogateescape"), token.encode())
        result = self.fake._authenticate(self, self.session, None, mech, data)
        if not result.success:  # the error challenge; any answer is the dummy response
            await self.push(b"334 " + OAUTH_ERROR)
            await self._reader.readline()
        return result

    # -- plumbing ---------------------------------------------------------------------------
    def _create_session(self) -> Session:
        return _FakeSession(self.loop)

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._handler_coroutine

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.fake._connected(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.closed = True
        self.fake._live.discard(self)
        super().connection_lost(error)

    def _cb_client_connected(self, reader, writer) -> None:
        super()._cb_client_connected(_RecordingReader(reader, self), writer)

    def _received(self, data: bytes) -> None:
        if not data or not self.fake.record:
            return
        self._note("C", data)
        if not self._in_data:
            self.fake._record_command(data)

    def _note(self, direction: str, data: bytes) -> None:
        limit = self.fake.record_limit
        self.transcript.append((direction, data if len(data) <= limit else
                                data[:limit] + b"...[%d bytes]" % len(data)))

    def drop(self) -> None:
        hang_up(self.transport, self.fake.faults.reset)

    async def push(self, status: str | bytes) -> None:
        if not self._greeted:
            self._greeted = True
            greeting = self.fake.faults.greeting
            if greeting not in ("default", None):
                status = greeting
        if self.transport is None or self.transport.is_closing():
            return  # uvloop raises on writes to a closed transport; asyncio drops them
        data = status.encode() if isinstance(status, str) else status
        if self.fake.record:
            self._note("S", data + b"\r\n")
        await super().push(status)
        if data.startswith(b"421"):
            self.drop()

    async def _handle_client(self) -> None:
        f = self.fake.faults
        if f.greeting_delay:
            await asyncio.sleep(f.greeting_delay)
        if f.greeting is None:
            await asyncio.Event().wait()  # silent until the client gives up
        await super()._handle_client()

    async def check_helo_needed(self, helo: str = "HELO") -> bool:
        if not self.fake.helo_required:
            return False  # Postfix's default: smtpd_helo_required = no
        return await super().check_helo_needed(helo)

    def _with_faults(self, verb: str, method):
        async def run(arg):
            f = self.fake.faults
            if f.drop_at == verb:
                self.drop()
                return
            if f.stall_at == verb:  # never answer; the socket stays open
                await asyncio.Event().wait()
            reply = f.replies.get(verb)
            if reply is None and verb == "MAIL" and f.reject_mail:
                reply = f.reject_mail if isinstance(f.reject_mail, str) else REJECT_MAIL
            if reply is None and verb == "RCPT" and f.reject_rcpt:
                reply = f.reject_rcpt if isinstance(f.reject_rcpt, str) else REJECT_RCPT
            if reply is not None:
                await self.push(reply)
                return
            if verb == "DATA":
                self._in_data = True
                try:
                    await method(arg)
                finally:
                    self._in_data = False
                return
            await method(arg)
        return run

    # -- AUTH and ESMTP parameters after HELO, as Postfix takes them ------------------------
    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        await self._as_extended(super().smtp_MAIL, arg)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        await self._as_extended(super().smtp_RCPT, arg)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        await self._as_extended(super().smtp_AUTH, arg)

    async def _as_extended(self, method, arg: str | None) -> None:
        """aiosmtpd refuses AUTH and MAIL/RCPT parameters unless the client said EHLO;
        Postfix does not check, and a proxy sends `AUTH PLAIN` or replays
        `MAIL FROM:<a> SIZE=n` after XCLIENT (which resets the session) or after HELO."""
        session = self.session
        extended = session.extended_smtp
        session.extended_smtp = True
        try:
            await method(arg)
        finally:
            if self.session is session:
                session.extended_smtp = extended

    # -- XCLIENT (Postfix 3.x) ----------------------------------------------------------------
    async def smtp_XCLIENT(self, arg: str | None) -> None:
        f = self.fake.faults
        if not f.xclient:
            await self.push('500 Error: command "XCLIENT" not recognized')
            return
        if self.envelope.mail_from is not None:
            await self.push("503 5.5.1 Error: MAIL transaction in progress")
            return
        if not arg:
            await self.push("501 5.5.4 Syntax: XCLIENT attribute=value...")
            return
        if not f.xclient_authorized:
            await self.push("550 5.7.0 Error: insufficient authorization")
            return
        attrs: dict[str, str] = {}
        for item in arg.split():
            name, eq, raw = item.partition("=")
            if not eq or not raw:
                await self.push("501 5.5.4 Error: attribute=value expected")
                return
            if len(raw) > 255:
                await self.push("501 5.5.4 Error: attribute value too long")
                return
            key = name.upper()
            if key not in XCLIENT_ATTRS:
                await self.push(f"501 5.5.4 Bad XCLIENT attribute name: {name}")
                return
            value = xtext_decode(raw)
            error = _xclient_error(key, value)
            if error:
                await self.push(error)
                return
            attrs[key] = value
        # Postfix forgets the session (HELO, ESMTP, transaction) and greets again
        session = self.session
        session.xclient.update(attrs)
        session.host_name = attrs.get("HELO") if attrs.get("HELO") not in SPECIAL else None
        session.extended_smtp = False
        login = attrs.get("LOGIN")
        if login is not None:
            session.authenticated = login not in SPECIAL
            session.auth_data = login.encode() if session.authenticated else None
        self._set_rset_state()
        self.fake._record_xclient(attrs)
        await self.push(f"220 {self.hostname} {IDENT}")


class FakeSmtpServer(FakeServer):
    """The fake SMTP upstream; see the module docstring. Extra keyword arguments set
    ``Faults`` fields (``FakeSmtpServer(users, reject_rcpt=True)``)."""

    faults_class = Faults
    label = "SMTP line(s)"

    def __init__(self, users: Mapping[str, str] | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, hostname: str = "upstream.test", auth_required: bool = False,
                 helo_required: bool = False, data_size_limit: int = 33554432,
                 faults: Faults | None = None, record: bool = True, record_limit: int = 4096,
                 use_uvloop: bool = True, mail_dir: str | Path | None = None,
                 deliver: Callable[[str, bytes], None] | None = None,
                 tls: ssl.SSLContext | None = None, implicit_tls: bool = False,
                 **fault_args: Any) -> None:
        super().__init__(users, host=host, port=port, faults=faults, record=record,
                         record_limit=record_limit, use_uvloop=use_uvloop,
                         fault_args=fault_args, tls=tls, implicit_tls=implicit_tls)
        self.mail_dir = Path(mail_dir) if mail_dir is not None else None
        self.deliver = deliver
        self.hostname = hostname
        self.auth_required = auth_required
        self.helo_required = helo_required
        self.data_size_limit = data_size_limit
        self.messages: list[StoredMessage] = []
        self.xclients: list[dict[str, str]] = []
        self.auth_attempts: list[tuple[str, str, bool]] = []  # (mechanism, login, success)
        self.accepted = 0  # messages answered 250, for the delivery faults' counting

    def connection(self) -> SmtpConnection:
        return SmtpConnection(self, asyncio.get_running_loop())

    # -- records ----------------------------------------------------------------------------
    def _record_xclient(self, attrs: dict[str, str]) -> None:
        if self.record:
            self.xclients.append(dict(attrs))

    def _store(self, msg: StoredMessage) -> int:
        self._append_record(self.messages, msg)  # kept also when record=False: the result
        return len(self.messages)

    def recipient_user(self, address: str) -> str | None:
        """The login a recipient address delivers to: the whole address, else its local
        part, when that is one of ``users``."""
        address = address.strip().strip("<>")
        if address in self.users:
            return address
        local = address.rpartition("@")[0] if "@" in address else address
        return local if local in self.users else None

    def _keep(self, msg: StoredMessage) -> None:
        """Deliver to known users and write the .eml (see the module docstring)."""
        self.accepted += 1
        content, copies = _delivery_fault(self.faults, self.accepted, msg.content)
        delivered = []
        for rcpt in msg.rcpt_tos:
            user = self.recipient_user(rcpt)
            if user is not None and self.deliver is not None and user not in delivered:
                for _ in range(copies):
                    self.deliver(user, content)
                delivered.append(user)
        if self.mail_dir is None:
            return
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.stem) for p in self.mail_dir.glob("*.eml") if p.stem.isdigit()]
        path = self.mail_dir / f"{max(numbers, default=0) + 1:05d}.eml"
        path.write_bytes(msg.content)
        entry = {"file": path.name, "mail_from": msg.mail_from, "rcpt_to": msg.rcpt_tos,
                 "delivered_to": delivered, "login": msg.login, "size": len(msg.content)}
        with open(self.mail_dir / "index.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
        log.info("message from <%s> to %s kept as %s%s", msg.mail_from,
                 ", ".join(f"<{r}>" for r in msg.rcpt_tos), path,
                 f"; in the INBOX of {', '.join(delivered)}" if delivered else
                 "; no recipient is a known user, not delivered")

    def _authenticate(self, smtp, session, envelope, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace")
        ok = login in self.users and self.users[login].encode() == data.password
        if self.record:
            self.auth_attempts.append((mechanism, login, ok))
        # handled=False: aiosmtpd then answers a failure with its 535 line itself
        return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)

    @property
    def command_lines(self) -> list[bytes]:
        """``commands`` without their line endings."""
        return [c.rstrip(b"\r\n") for c in self.commands]

    def wait_messages(self, n: int, timeout: float = 5.0) -> list[StoredMessage]:
        return self._wait_records(self.messages, n, timeout, f"{n} message(s)")

    def clear(self) -> None:
        super().clear()
        self.messages.clear()
        self.xclients.clear()
        self.auth_attempts.clear()
        self.accepted = 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="postern fake-smtp",
                                description="Fake SMTP upstream with XCLIENT.")
    p.add_argument("--listen", type=hostport, default=("127.0.0.1", 2525), metavar="HOST:PORT")
    p.add_argument("--user", type=login_password, action="append", default=[],
                   metavar="LOGIN:PASSWORD")
    p.add_argument("--hostname", default="upstream.test", help="name in greeting and EHLO")
    p.add_argument("--auth-required", action="store_true", help="MAIL needs AUTH or XCLIENT")
    p.add_argument("--helo-required", action="store_true")
    p.add_argument("--greeting", help="raw greeting line instead of the default")
    p.add_argument("--no-greeting", action="store_true")
    p.add_argument("--greeting-delay", type=float, default=0.0)
    p.add_argument("--reject-mail", nargs="?", const=True, default=False, metavar="REPLY")
    p.add_argument("--reject-rcpt", nargs="?", const=True, default=False, metavar="REPLY")
    p.add_argument("--reply", action="append", default=[], metavar="VERB=REPLY",
                   help='e.g. --reply "EHLO=421 4.3.2 busy" (VERB MESSAGE: end of data)')
    p.add_argument("--drop-at", metavar="VERB")
    p.add_argument("--drop-after-data", action="store_true")
    p.add_argument("--mail-dir", metavar="DIR",
                   help="keep every accepted message there as NNNNN.eml (index: index.jsonl)")
    p.add_argument("--no-xclient", action="store_true")
    p.add_argument("--xclient-unauthorized", action="store_true")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_tls_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    # aiosmtpd logs every command line at INFO, AUTH blobs included: keep its chatter out
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    replies = {}
    for item in args.reply:
        verb, sep, reply = item.partition("=")
        if not sep:
            build_parser().error(f"--reply wants VERB=REPLY, got {item!r}")
        replies[verb.upper()] = reply
    greeting: str | None = "default"
    if args.no_greeting:
        greeting = None
    elif args.greeting:
        greeting = args.greeting
    server = FakeSmtpServer(dict(args.user), host=args.listen[0], port=args.listen[1],
                            hostname=args.hostname, auth_required=args.auth_required,
                            helo_required=args.helo_required, record=False,
                            use_uvloop=not args.no_uvloop, greeting=greeting,
                            greeting_delay=args.greeting_delay, reject_mail=args.reject_mail,
                            reject_rcpt=args.reject_rcpt, replies=replies,
                            drop_at=args.drop_at.upper() if args.drop_at else None,
                            drop_after_data=args.drop_after_data, xclient=not args.no_xclient,
                            xclient_authorized=not args.xclient_unauthorized,
                            mail_dir=args.mail_dir, **tls_options(args))
    run_server(server, lambda: f"smtp listening on {server.host}:{server.port}",
               not args.no_uvloop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
