"""A fake POP3 upstream (RFC 1939, CAPA from RFC 2449, AUTH PLAIN from RFC 5034) with
misbehaviour on cue.

One line in a synchronous test::

    with FakePop3Server(users={"alice": "secret"}) as pop:
        poplib.POP3(pop.host, pop.port).user("alice")

or ``await srv.start()`` / ``await srv.stop()`` inside a running loop. The maildrop is the
user's INBOX from ``fakes.mailbox.MailStore`` (seeded, reproducible; a store may be shared with
``FakeImapServer``). Every line the clients send is recorded in ``commands`` (raw, without the
line end; SASL responses included) and per connection in ``connections[i].transcript``
(``record=False`` keeps nothing, for long load runs). ``faults`` (a ``Faults``) may be changed
while the server runs; it is read at each step.

USER and PASS take everything after the first space as the argument, so what a proxy sends is
what is checked (logins and passwords with spaces work). Sessions do not lock the maildrop:
load tests may log the same user in many times at once.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from postern.fakes._runner import mailbox_upstream_parser, run_mailbox_upstream
from postern.fakes._sasl import OAUTH_MECHANISMS, decode_oauth, decode_plain
from postern.fakes._server import LineConnection, LineFaults, MailboxServer
from postern.fakes.mailbox import Entry, Message
from postern.proxy.sasl import OAUTH_ERROR

log = logging.getLogger("postern.fakes.pop3")

DEFAULT_CAPABILITIES = ("TOP", "USER", "UIDL", "RESP-CODES", "PIPELINING", "SASL PLAIN")
MAX_LINE = 65536
_TIMESTAMP = re.compile(rb"<[^<>@\s]*@[^<>\s]*>")
_counter = itertools.count(1)


@dataclass
class Faults(LineFaults):
    """Misbehaviour switches: LineFaults' (greeting_delay, drop_after_login, drop_after,
    reset, stall, stall_after) and these.

    greeting: ``"default"`` (``+OK Fake POP3 ready <timestamp>``), ``None`` (say nothing) or
    raw bytes (``b"-ERR busy"`` closes after sending; CRLF added when missing). APOP works
    only when the greeting carries a ``<...@...>`` timestamp.
    reject_user / reject_pass: ``-ERR`` for every USER / every PASS, APOP and AUTH (a string
    sets the text after ``-ERR ``).
    offer_xclient: behave as Dovecot's pop3-login towards a client in its
    login_trusted_networks: the default greeting starts ``+OK [XCLIENT]`` and ``XCLIENT
    NAME=value ...`` is answered ``+OK Updated`` (without it XCLIENT is an unknown command).
    reject_xclient: ``-ERR`` for XCLIENT even when offered (a string sets the text).
    """

    greeting: bytes | str | None = "default"
    reject_user: bool | str = False
    reject_pass: bool | str = False
    offer_xclient: bool = False
    reject_xclient: bool | str = False


class _Usage(Exception):
    """A command's arguments were wrong: the text of the -ERR reply."""


def dot_stuffed(chunks: Iterable[bytes | memoryview]) -> Iterator[bytes]:
    """RFC 1939 byte-stuffing over chunk boundaries: a line starting with '.' gets another."""
    prev = b"\r\n"  # the message start is a line start
    for chunk in chunks:
        data = bytes(chunk)
        if not data:
            continue
        out = data.replace(b"\r\n.", b"\r\n..")
        if data[:1] == b"." and prev.endswith(b"\r\n"):
            out = b"." + out
        elif data[:2] == b"\n." and prev.endswith(b"\r"):
            out = b"\n." + out[1:]
        prev = (prev + data)[-2:]
        yield out
    if prev != b"\r\n":  # the terminator must start a line
        yield b"\r\n"


def top_chunks(msg: Message, lines: int) -> Iterator[bytes | memoryview]:
    """The header block (with its empty line) and the first ``lines`` lines of the body."""
    yield from msg.chunks(0, msg.header_size)
    remaining = lines
    if remaining <= 0:
        return
    for chunk in msg.chunks(msg.header_size):
        data, start = bytes(chunk), 0
        while remaining:
            lf = data.find(b"\n", start)
            if lf < 0:
                break
            remaining, start = remaining - 1, lf + 1
        if not remaining:
            yield data[:start]
            return
        yield data


class Pop3Connection(LineConnection):
    """One client connection: lines answered in order."""

    log = log

    def __init__(self, server: FakePop3Server) -> None:
        super().__init__(server)
        self.timestamp = b"<%d.%d.%d@%s>" % (os.getpid(), next(_counter), int(time.time()),
                                              server.hostname.encode())
        self.pending_user: str | None = None
        self.user: str | None = None  # set once in the TRANSACTION state
        self.maildrop: list[Entry] = []
        self.deleted: set[int] = set()  # message numbers marked by DELE
        self._partial = bytearray()
        self._greeting = b""
        self.xclient: dict[str, str] | None = None  # the fields of the last accepted XCLIENT

    def feed(self, data: bytes) -> list[bytes]:
        self._partial += data
        lines = []
        while (lf := self._partial.find(b"\n")) >= 0:
            line = bytes(self._partial[:lf]).removesuffix(b"\r")
            del self._partial[:lf + 1]
            self.server._record_command(line)
            lines.append(line)
        if len(self._partial) > MAX_LINE:
            self._partial.clear()
            self.line(b"-ERR Line too long")
            self.close()
        return lines

    async def _multiline(self, first: str, chunks: Iterable[bytes | memoryview]) -> None:
        """A +OK line, the dot-stuffed data in chunks (with backpressure), and the '.'."""
        self.line(first)
        await self.write_chunks(dot_stuffed(chunks))
        self.line(b".")

    async def greet(self) -> None:
        greeting = self.server.faults.greeting
        if greeting is None:
            return
        if greeting == "default":
            sign = b"[XCLIENT] " if self.server.faults.offer_xclient else b""
            greeting = b"+OK " + sign + b"Fake POP3 ready " + self.timestamp
        self._greeting = greeting.encode() if isinstance(greeting, str) else greeting
        self.line(self._greeting)
        if self._greeting[:4].upper() == b"-ERR":
            self.close()

    async def handle(self, line: bytes) -> None:
        if self.stalled():
            return
        verb, _, rest = line.partition(b" ")
        name = verb.decode("ascii", "replace").upper()
        spec = _COMMANDS.get(name)
        if spec is None:
            self.line(f"-ERR Unknown command: {name[:32]}")
        elif (spec[0] == "auth" and self.user is not None) or \
                (spec[0] == "trans" and self.user is None):
            self.line(f"-ERR {name} not valid in this state")
        else:
            try:
                await spec[1](self, rest)
            except _Usage as exc:
                self.line(f"-ERR {exc}")
        self.drop_if_counted_out()

    # -- any state --------------------------------------------------------------------------

    async def cmd_capa(self, rest: bytes) -> None:
        self.line("+OK Capability list follows")
        for cap in self.server.capabilities:
            self.line(cap)
        if self.starttls_offered:
            self.line("STLS")
        self.line(".")

    async def cmd_stls(self, rest: bytes) -> None:
        """RFC 2595 §4, when the fake has a TLS context; it then logs in over TLS only."""
        if not self.starttls_offered:
            self.line("-ERR STLS not available")
            return
        self.line("+OK Begin TLS negotiation now")
        await self.start_tls()

    async def cmd_noop(self, rest: bytes) -> None:
        self.line("+OK")

    async def cmd_quit(self, rest: bytes) -> None:
        removed = 0
        if self.user is not None and self.deleted:  # the UPDATE state
            gone = {id(self.maildrop[n - 1]) for n in self.deleted}
            box = self.server.store.mailbox(self.user, "INBOX")
            if box is not None:
                before = len(box.entries)
                box.entries[:] = [e for e in box.entries if id(e) not in gone]
                removed = before - len(box.entries)
        self.line(f"+OK Logging out ({removed} messages deleted)" if removed
                  else "+OK Logging out")
        self.close()

    # -- AUTHORIZATION ----------------------------------------------------------------------

    async def cmd_xclient(self, rest: bytes) -> None:
        """Dovecot's pop3-login XCLIENT: space-separated NAME=value, nothing decoded."""
        f = self.server.faults
        if not f.offer_xclient:
            self.line("-ERR Unknown command: XCLIENT")
            return
        if f.reject_xclient:
            self._reject(f.reject_xclient, "Invalid parameters")
            return
        fields = [word.partition(b"=") for word in rest.split(b" ") if word]
        if any(not sep for _, sep, _ in fields):
            raise _Usage("Invalid parameters")
        self.xclient = {k.decode("ascii", "replace").upper(): v.decode("utf-8", "replace")
                        for k, _, v in fields}
        self.line("+OK Updated")

    def _reject(self, fault: bool | str, default: str) -> None:
        self.line("-ERR " + (fault if isinstance(fault, str) else default))

    async def cmd_user(self, rest: bytes) -> None:
        f = self.server.faults
        self.pending_user = None
        if self.starttls_offered:
            self.line("-ERR [AUTH] Plaintext authentication disallowed on non-secure "
                      "connections.")
            return
        if f.reject_user:
            self._reject(f.reject_user, "[AUTH] User rejected")
            return
        self.pending_user = rest.decode("utf-8", "surrogateescape")
        self.line("+OK")

    async def cmd_pass(self, rest: bytes) -> None:
        user, self.pending_user = self.pending_user, None
        if user is None:
            raise _Usage("No user name given (USER first)")
        password = rest.decode("utf-8", "surrogateescape")
        await self._login(user, self.server.users.get(user) == password)

    async def cmd_apop(self, rest: bytes) -> None:
        args = rest.split()
        stamp = _TIMESTAMP.search(self._greeting)
        if stamp is None:
            raise _Usage("APOP not available (no timestamp in the greeting)")
        if len(args) != 2:
            raise _Usage("APOP takes a user name and a digest")
        user = args[0].decode("utf-8", "surrogateescape")
        password = self.server.users.get(user)
        good = password is not None and hashlib.md5(
            stamp.group() + password.encode("utf-8", "surrogateescape")).hexdigest().encode() \
            == args[1].lower()
        await self._login(user, good)

    async def cmd_auth(self, rest: bytes) -> None:
        args = rest.split()
        if not args:
            self.line("+OK")
            self.line("PLAIN")
            self.line(".")
            return
        mech = args[0].upper().decode("ascii", "replace")
        if (mech != "PLAIN" and mech not in OAUTH_MECHANISMS) or len(args) > 2:
            raise _Usage("Unsupported authentication mechanism")
        if len(args) == 2:
            response = args[1]
        else:
            self.line("+ ")
            response = await self.next_unit()
        if response == b"*":
            raise _Usage("Authentication cancelled")
        if mech in OAUTH_MECHANISMS:
            await self._auth_oauth(mech, response)
            return
        try:
            authz, user, password = decode_plain(response)
        except ValueError:
            raise _Usage("Invalid SASL PLAIN response") from None
        name = user.decode("utf-8", "surrogateescape")
        if authz and authz != user:
            raise _Usage("[AUTH] Proxy authorization not allowed")
        await self._login(name, self.server.users.get(name) ==
                          password.decode("utf-8", "surrogateescape"))

    async def _auth_oauth(self, mech: str, response: bytes) -> None:
        """XOAUTH2 / OAUTHBEARER with the user's password as its token; a bad token gets
        RFC 7628's error challenge, then -ERR after the client's dummy response."""
        try:
            user, token = decode_oauth(mech, response)
        except ValueError:
            raise _Usage(f"Invalid SASL {mech} response") from None
        if self.server.users.get(user) != token:
            self.line(b"+ " + OAUTH_ERROR)
            await self.next_unit()
        await self._login(user, self.server.users.get(user) == token)

    async def _login(self, user: str, good: bool) -> None:
        f = self.server.faults
        if f.reject_pass or not good:
            self._reject(f.reject_pass, "[AUTH] Authentication failed.")
            return
        box = self.server.store.mailbox(user, "INBOX")
        self.user = user
        self.maildrop = list(box.entries) if box is not None else []
        self.deleted = set()
        self.line(f"+OK Logged in ({len(self.maildrop)} messages)")
        if f.drop_after_login:
            self.close()

    # -- TRANSACTION ------------------------------------------------------------------------

    def _live(self) -> list[tuple[int, Entry]]:
        return [(n, e) for n, e in enumerate(self.maildrop, 1) if n not in self.deleted]

    def _message(self, arg: bytes) -> tuple[int, Entry]:
        if not arg.isdigit():
            raise _Usage("Invalid message number")
        n = int(arg)
        if not 1 <= n <= len(self.maildrop):
            raise _Usage("No such message")
        if n in self.deleted:
            raise _Usage("Message is deleted")
        return n, self.maildrop[n - 1]

    def uid(self, entry: Entry) -> str:
        box = self.server.store.mailbox(self.user or "", "INBOX")
        return f"{box.uidvalidity if box is not None else 0}.{entry.uid}"

    async def cmd_stat(self, rest: bytes) -> None:
        live = self._live()
        self.line(f"+OK {len(live)} {sum(e.message.size for _, e in live)}")

    async def cmd_list(self, rest: bytes) -> None:
        self._scan(rest, lambda e: e.message.size, lambda live: (
            f"+OK {len(live)} messages ({sum(e.message.size for _, e in live)} octets)"))

    async def cmd_uidl(self, rest: bytes) -> None:
        self._scan(rest, self.uid, lambda live: "+OK")

    def _scan(self, rest: bytes, value: Callable[[Entry], object],
              head: Callable[[list[tuple[int, Entry]]], str]) -> None:
        """LIST and UIDL (RFC 1939): one message's `n value` after +OK, or a head line and
        one `n value` line per live message."""
        args = rest.split()
        if args:
            n, entry = self._message(args[0])
            self.line(f"+OK {n} {value(entry)}")
            return
        live = self._live()
        self.line(head(live))
        self.send(b"".join(f"{n} {value(e)}\r\n".encode() for n, e in live) + b".\r\n")

    async def cmd_retr(self, rest: bytes) -> None:
        args = rest.split()
        if len(args) != 1:
            raise _Usage("RETR takes a message number")
        _, entry = self._message(args[0])
        msg = entry.message
        await self._multiline(f"+OK {msg.size} octets", msg.chunks())

    async def cmd_top(self, rest: bytes) -> None:
        args = rest.split()
        if len(args) != 2 or not args[1].isdigit():
            raise _Usage("TOP takes a message number and a line count")
        _, entry = self._message(args[0])
        await self._multiline("+OK", top_chunks(entry.message, int(args[1])))

    async def cmd_dele(self, rest: bytes) -> None:
        args = rest.split()
        if len(args) != 1:
            raise _Usage("DELE takes a message number")
        n, _ = self._message(args[0])
        self.deleted.add(n)
        self.line(f"+OK Message {n} deleted")

    async def cmd_rset(self, rest: bytes) -> None:
        self.deleted.clear()
        live = self._live()
        self.line(f"+OK {len(live)} messages ({sum(e.message.size for _, e in live)} octets)")


_C = Pop3Connection
# state: "any", "auth" (AUTHORIZATION only) or "trans" (TRANSACTION only)
_COMMANDS = {
    "CAPA": ("any", _C.cmd_capa), "NOOP": ("any", _C.cmd_noop), "QUIT": ("any", _C.cmd_quit),
    "STLS": ("auth", _C.cmd_stls), "USER": ("auth", _C.cmd_user), "PASS": ("auth", _C.cmd_pass),
    "APOP": ("auth", _C.cmd_apop), "AUTH": ("auth", _C.cmd_auth),
    "XCLIENT": ("auth", _C.cmd_xclient),
    "STAT": ("trans", _C.cmd_stat), "LIST": ("trans", _C.cmd_list),
    "UIDL": ("trans", _C.cmd_uidl), "RETR": ("trans", _C.cmd_retr),
    "TOP": ("trans", _C.cmd_top), "DELE": ("trans", _C.cmd_dele),
    "RSET": ("trans", _C.cmd_rset),
}


class FakePop3Server(MailboxServer):
    """The fake POP3 upstream; see the module docstring. Extra keyword arguments set
    ``Faults`` fields (``FakePop3Server(users, reject_pass="[AUTH] no")``)."""

    faults_class = Faults
    label = "POP3 command(s)"

    default_capabilities = DEFAULT_CAPABILITIES

    def connection(self) -> Pop3Connection:
        return Pop3Connection(self)

    def deliver(self, user: str, message: Message | bytes) -> None:
        """Add a message to the user's INBOX; sessions already logged in do not see it."""
        loop = self._thread_loop
        if loop is not None and threading.current_thread() is not self._thread:
            loop.call_soon_threadsafe(self.store.add, user, "INBOX", message)
        else:
            self.store.add(user, "INBOX", message)


def build_parser() -> argparse.ArgumentParser:
    p = mailbox_upstream_parser("pop3", 1110, "maildrop")
    p.add_argument("--reject-user", nargs="?", const=True, default=False, metavar="TEXT")
    p.add_argument("--reject-pass", nargs="?", const=True, default=False, metavar="TEXT")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_mailbox_upstream(FakePop3Server, args, "pop3", reject_user=args.reject_user,
                                reject_pass=args.reject_pass)


if __name__ == "__main__":
    sys.exit(main())
