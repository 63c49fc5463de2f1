"""A fake IMAP4rev1 upstream (asyncio Protocol, uvloop-friendly) with misbehaviour on cue.

One line in a synchronous test::

    with FakeImapServer(users={"alice": "secret"}) as imap:
        imaplib.IMAP4(imap.host, imap.port).login("alice", "secret")

or ``await srv.start()`` / ``await srv.stop()`` inside a running loop. Mail comes from
``fakes.mailbox.MailStore`` (seeded, reproducible). Everything the clients send is recorded
in ``commands`` (raw, literals included) and per connection in ``connections[i].transcript``
(``record=False`` keeps nothing, for long load runs).
``faults`` (a ``Faults``) may be changed while the server runs; it is read at each step.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from postern.fakes._runner import mailbox_upstream_parser, run_mailbox_upstream
from postern.fakes._sasl import OAUTH_MECHANISMS, decode_oauth, decode_plain
from postern.fakes._server import LineConnection, LineFaults, MailboxServer
from postern.fakes.imap_proto import (
    CommandReader,
    ParseError,
    Token,
    Unit,
    fetch_items,
    in_set,
    parse_seqset,
    quote,
    render_fetch,
    search_predicate,
    text,
    tokenize,
)
from postern.fakes.mailbox import Entry, Mailbox, Message, StoredMessage
from postern.proxy.sasl import OAUTH_ERROR

log = logging.getLogger("postern.fakes.imap")

DEFAULT_CAPABILITIES = ("IMAP4rev1", "LITERAL+", "SASL-IR", "AUTH=PLAIN", "IDLE")
# What the desktop and phone clients of the load profiles look for (loadtest/profiles.toml):
# the commands are always understood, a client only sends them when they are advertised.
CLIENT_CAPABILITIES = (*DEFAULT_CAPABILITIES, "ID", "ENABLE", "NAMESPACE", "UIDPLUS")
SERVER_ID = '("name" "postern-fake-imap" "vendor" "postern")'
SYSTEM_FLAGS = "\\Answered \\Flagged \\Deleted \\Seen \\Draft"


@dataclass
class Faults(LineFaults):
    """Misbehaviour switches: LineFaults' (greeting_delay, drop_after_login, drop_after,
    reset, stall, stall_after) and these.

    greeting: ``"default"`` (``* OK [CAPABILITY ...] ...``), ``None`` (say nothing) or raw
    bytes (``b"* PREAUTH ..."``, ``b"* BYE ..."``; CRLF added when missing).
    reject_login: tagged NO for every LOGIN/AUTHENTICATE (a string sets the NO text).
    bad_login_reply: raw bytes sent instead of the tagged login reply; ``{tag}`` is replaced.
    login_untagged: lines sent before the tagged OK of a successful login.
    no_continuation: answer a synchronising literal with a tagged NO (a string sets the text).
    chatter: after a successful login, send an untagged ``* OK still here <n>`` every so many
    seconds, whatever the client does (a backend that keeps a silent client busy).
    reject_id: tagged NO for every ID (a string sets the NO text), as a backend that does
    not take the client's identity from this proxy.
    """

    greeting: bytes | str | None = "default"
    reject_login: bool | str = False
    bad_login_reply: bytes | None = None
    login_untagged: list[bytes] = field(default_factory=list)
    no_continuation: bool | str = False
    chatter: float | None = None
    reject_id: bool | str = False


class ImapConnection(LineConnection):
    """One client connection: the command reader cuts units (commands with their literals),
    answered in order."""

    log = log

    def __init__(self, server: FakeImapServer) -> None:
        super().__init__(server)
        self.reader = CommandReader()
        self.user: str | None = None
        self.selected: Mailbox | None = None
        self.readonly = False
        self.idling = False
        self._known_exists = 0
        self._chatter: asyncio.Task[None] | None = None
        # the fields of the client's last ID (RFC 2971), NIL values as None
        self.client_id: dict[str, str | None] | None = None

    def feed(self, data: bytes) -> list[Unit]:
        self.reader.reject_sync_literals = bool(self.server.faults.no_continuation)
        units = self.reader.feed(data)
        for unit in units:
            if unit.kind != "continue":
                self.server._record_command(unit.raw)
        return units

    def connection_lost(self, exc: Exception | None) -> None:
        if self._chatter is not None:
            self._chatter.cancel()
        super().connection_lost(exc)

    async def greet(self) -> None:
        greeting = self.server.faults.greeting
        if greeting is None:
            return
        if greeting == "default":
            greeting = f"* OK [CAPABILITY {self.capability}] Fake IMAP4rev1 ready"
        self.line(greeting)
        first = greeting.encode() if isinstance(greeting, str) else greeting
        if first[:5].upper() == b"* BYE":
            self.close()
        elif first[:9].upper() == b"* PREAUTH":
            self.user = next(iter(self.server.users), "user")

    async def handle(self, unit: Unit) -> None:
        f = self.server.faults
        if unit.kind == "continue":
            if not f.stall:
                self.line("+ Ready for literal data")
            return
        if self.stalled():
            return
        if unit.kind == "rejected":
            reason = f.no_continuation if isinstance(f.no_continuation, str) else \
                "Literals are not accepted here"
            self.line(f"{unit.tag} NO {reason}")
        elif unit.raw:
            await self._dispatch(unit)
        self.drop_if_counted_out()

    async def _dispatch(self, unit: Unit) -> None:
        tag = unit.raw.split(b" ", 1)[0].decode("utf-8", "replace")
        try:
            tokens = tokenize(unit.segments)
        except ParseError as exc:
            self.line(f"{tag} BAD {exc}")
            return
        if len(tokens) < 2 or not isinstance(tokens[1], str):
            self.line(f"{tag} BAD Missing command")
            return
        name, args = tokens[1].upper(), tokens[2:]
        uid = name == "UID"
        if uid:
            if not args:
                self.line(f"{tag} BAD Missing UID command")
                return
            name, args = text(args[0]).upper(), args[1:]
            if name not in ("FETCH", "SEARCH", "STORE"):
                self.line(f"{tag} BAD Unknown UID command")
                return
        spec = _COMMANDS.get(name)
        if spec is None:
            self.line(f"{tag} BAD Unknown command {name}")
            return
        state, handler = spec
        if ((state == "nonauth" and self.user is not None)
                or (state in ("auth", "selected") and self.user is None)
                or (state == "selected" and self.selected is None)):
            self.line(f"{tag} BAD {name} not valid in this state")
            return
        try:
            if name in _UID_CAPABLE:
                await handler(self, tag, args, uid)
            else:
                await handler(self, tag, args)
        except (ParseError, IndexError, KeyError, ValueError) as exc:
            self.line(f"{tag} BAD Invalid arguments: {exc}")

    # -- any state --------------------------------------------------------------------------

    async def cmd_capability(self, tag: str, args: list[Token]) -> None:
        self.line(f"* CAPABILITY {self.capability}")
        self.line(f"{tag} OK CAPABILITY completed")

    @property
    def capability(self) -> str:
        extra = " STARTTLS LOGINDISABLED" if self.starttls_offered else ""
        return self.server.capability + extra

    async def cmd_starttls(self, tag: str, args: list[Token]) -> None:
        """RFC 3501 §6.2.1, when the fake has a TLS context."""
        if not self.starttls_offered:
            self.line(f"{tag} BAD STARTTLS not available")
            return
        self.line(f"{tag} OK Begin TLS negotiation now")
        await self.start_tls()

    async def cmd_noop(self, tag: str, args: list[Token]) -> None:
        self._report_exists()
        self.line(f"{tag} OK NOOP completed")

    async def cmd_id(self, tag: str, args: list[Token]) -> None:
        """RFC 2971: the client's NIL or (field value ...) list; the server says who it is."""
        if len(args) != 1 or not (args[0] is None or isinstance(args[0], list)
                                  or text(args[0]).upper() == "NIL"):
            raise ParseError("ID takes NIL or a parenthesised list")
        fields_ = args[0] if isinstance(args[0], list) else []
        if len(fields_) % 2:
            raise ParseError("ID fields come in pairs")
        reject = self.server.faults.reject_id
        if reject:
            self.line(f"{tag} NO {reject if isinstance(reject, str) else 'ID not accepted'}")
            return
        # the tokenizer does not tell atom NIL from "NIL"; both are None here
        values = [None if isinstance(v, str) and v.upper() == "NIL" else text(v)
                  for v in fields_]
        self.client_id = dict(zip(values[::2], values[1::2], strict=True))
        self.line(f"* ID {SERVER_ID}")
        self.line(f"{tag} OK ID completed")

    async def cmd_logout(self, tag: str, args: list[Token]) -> None:
        self.line("* BYE Logging out")
        self.line(f"{tag} OK LOGOUT completed")
        self.close()

    # -- not authenticated ----------------------------------------------------------------

    def _plaintext_refused(self, tag: str) -> bool:
        """LOGINDISABLED (RFC 3501 §6.2.3): a STARTTLS fake logs in over TLS only."""
        if self.starttls_offered:
            self.line(f"{tag} NO [PRIVACYREQUIRED] Plaintext authentication disallowed")
            return True
        return False

    async def cmd_login(self, tag: str, args: list[Token]) -> None:
        if self._plaintext_refused(tag):
            return
        if len(args) != 2:
            raise ParseError("LOGIN takes a user name and a password")
        await self._login(tag, text(args[0]), text(args[1]))

    async def cmd_authenticate(self, tag: str, args: list[Token]) -> None:
        if self._plaintext_refused(tag):
            return
        mech = text(args[0]).upper() if args else ""
        if mech in OAUTH_MECHANISMS:
            await self._authenticate_oauth(tag, mech, args)
            return
        if mech != "PLAIN":
            self.line(f"{tag} NO Unsupported authentication mechanism")
            return
        if len(args) > 1:
            response = text(args[1]).encode()
        else:
            self.line("+ ")
            response = (await self.next_unit()).raw
        if response == b"*":
            self.line(f"{tag} BAD Authentication cancelled")
            return
        try:
            authz, user, password = decode_plain(response)
        except ValueError:
            self.line(f"{tag} BAD Invalid SASL PLAIN response")
            return
        if authz and authz != user:
            self.line(f"{tag} NO [AUTHORIZATIONFAILED] Proxy authorization not allowed")
            return
        await self._login(tag, user.decode("utf-8", "surrogateescape"),
                          password.decode("utf-8", "surrogateescape"))

    async def _authenticate_oauth(self, tag: str, mech: str, args: list[Token]) -> None:
        """XOAUTH2 / OAUTHBEARER with the user's password as its token; a bad token gets
        RFC 7628's error challenge, then NO after the client's dummy response."""
        if len(args) > 1:
            response = text(args[1]).encode()
        else:
            self.line("+ ")
            response = (await self.next_unit()).raw
        try:
            user, token = decode_oauth(mech, response)
        except ValueError:
            self.line(f"{tag} BAD Invalid SASL {mech} response")
            return
        if self.server.users.get(user) != token:
            self.line(b"+ " + OAUTH_ERROR)
            await self.next_unit()
            self.line(f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed.")
            return
        await self._login(tag, user, token)

    async def _login(self, tag: str, user: str, password: str) -> None:
        f = self.server.faults
        ok = self.server.users.get(user) == password and not f.reject_login
        if f.bad_login_reply is not None:
            reply = f.bad_login_reply.replace(b"{tag}", tag.encode())
            if ok and reply.upper().startswith(tag.encode().upper() + b" OK"):
                self._logged_in(user)
            self.line(reply)
        elif not ok:
            reason = f.reject_login if isinstance(f.reject_login, str) else \
                "[AUTHENTICATIONFAILED] Authentication failed."
            self.line(f"{tag} NO {reason}")
            return
        else:
            self._logged_in(user)
            for line in f.login_untagged:
                self.line(line)
            self.line(f"{tag} OK Logged in")
        if ok and f.drop_after_login:
            self.close()

    def _logged_in(self, user: str) -> None:
        self.user = user
        self.server.store.mailboxes(user)  # generate now, not inside a later command
        every = self.server.faults.chatter
        if every and self._chatter is None:
            self._chatter = asyncio.get_running_loop().create_task(self._chat(every))

    async def _chat(self, every: float) -> None:
        count = 0
        while not self.closed:
            await asyncio.sleep(every)
            count += 1
            self.line(f"* OK still here {count}")

    # -- authenticated ----------------------------------------------------------------------

    def _mailbox(self, name: str) -> Mailbox | None:
        assert self.user is not None
        return self.server.store.mailbox(self.user, name)

    async def cmd_select(self, tag: str, args: list[Token], readonly: bool = False) -> None:
        box = self._mailbox(text(args[0]))
        self.selected = None
        if box is None:
            self.line(f"{tag} NO [NONEXISTENT] Mailbox doesn't exist")
            return
        self.selected, self.readonly = box, readonly
        self._known_exists = len(box)
        self.line(f"* FLAGS ({SYSTEM_FLAGS})")
        self.line(f"* OK [PERMANENTFLAGS ({SYSTEM_FLAGS} \\*)] Flags permitted.")
        self.line(f"* {len(box)} EXISTS")
        self.line("* 0 RECENT")
        first_unseen = next((i for i, e in enumerate(box.entries, 1)
                             if "\\Seen" not in e.flags), None)
        if first_unseen:
            self.line(f"* OK [UNSEEN {first_unseen}] First unseen.")
        self.line(f"* OK [UIDVALIDITY {box.uidvalidity}] UIDs valid")
        self.line(f"* OK [UIDNEXT {box.uidnext}] Predicted next UID")
        mode, cmd = ("READ-ONLY", "EXAMINE") if readonly else ("READ-WRITE", "SELECT")
        self.line(f"{tag} OK [{mode}] {cmd} completed")

    async def cmd_examine(self, tag: str, args: list[Token]) -> None:
        await self.cmd_select(tag, args, readonly=True)

    async def cmd_list(self, tag: str, args: list[Token], verb: str = "LIST") -> None:
        reference, pattern = text(args[0]), text(args[1])
        if not pattern:
            self.line(f'* {verb} (\\Noselect) "/" ""')
        else:
            rx = re.escape(reference + pattern).replace(r"\*", ".*").replace("%", "[^/]*")
            assert self.user is not None
            for name in self.server.store.mailboxes(self.user):
                if re.fullmatch(rx, name, re.IGNORECASE if name == "INBOX" else 0):
                    self.line(f'* {verb} (\\HasNoChildren) "/" ' + quote(name).decode())
        self.line(f"{tag} OK {verb} completed")

    async def cmd_lsub(self, tag: str, args: list[Token]) -> None:
        await self.cmd_list(tag, args, "LSUB")

    async def cmd_status(self, tag: str, args: list[Token]) -> None:
        name, items = text(args[0]), args[1]
        box = self._mailbox(name)
        if box is None:
            self.line(f"{tag} NO [NONEXISTENT] Mailbox doesn't exist")
            return
        values = {"MESSAGES": len(box), "RECENT": 0, "UIDNEXT": box.uidnext,
                  "UIDVALIDITY": box.uidvalidity, "UNSEEN": box.unseen}
        wanted = [text(i).upper() for i in (items if isinstance(items, list) else [items])]
        out = " ".join(f"{w} {values[w]}" for w in wanted)  # KeyError → BAD below
        self.line(f"* STATUS {quote(name).decode()} ({out})")
        self.line(f"{tag} OK STATUS completed")

    async def cmd_enable(self, tag: str, args: list[Token]) -> None:
        """RFC 5161: nothing here changes behaviour, so nothing is reported enabled (a
        server ignores extensions it does not support)."""
        if not args:
            raise ParseError("ENABLE needs a capability")
        self.line("* ENABLED")
        self.line(f"{tag} OK ENABLE completed")

    async def cmd_namespace(self, tag: str, args: list[Token]) -> None:
        """RFC 2342: one personal namespace, "/" as the hierarchy separator (as LIST says)."""
        self.line('* NAMESPACE (("" "/")) NIL NIL')
        self.line(f"{tag} OK NAMESPACE completed")

    async def cmd_append(self, tag: str, args: list[Token]) -> None:
        box = self._mailbox(text(args[0]))
        data = args[-1]
        if not isinstance(data, bytes):
            raise ParseError("APPEND needs a literal")
        if box is None:
            self.line(f"{tag} NO [TRYCREATE] Mailbox doesn't exist")
            return
        flags = next((a for a in args[1:-1] if isinstance(a, list)), [])
        box.append(StoredMessage(data), {text(x) for x in flags})
        if box is self.selected:
            self._report_exists()
        self.line(f"{tag} OK APPEND completed")

    async def cmd_idle(self, tag: str, args: list[Token]) -> None:
        self._report_exists()
        self.line("+ idling")
        self.idling = True
        try:
            done = (await self.next_unit()).raw
        finally:
            self.idling = False
        self.line(f"{tag} OK IDLE terminated" if done.upper() == b"DONE"
                  else f"{tag} BAD Expected DONE")

    def _report_exists(self) -> None:
        if self.selected is not None and len(self.selected) != self._known_exists:
            self._known_exists = len(self.selected)
            self.line(f"* {self._known_exists} EXISTS")

    # -- selected -------------------------------------------------------------------------

    def _matching(self, spec: str, uid: bool) -> list[tuple[int, Entry]]:
        assert self.selected is not None
        entries = self.selected.entries
        largest = (entries[-1].uid if entries else 0) if uid else len(entries)
        ranges = parse_seqset(spec, largest)
        return [(seq, e) for seq, e in enumerate(entries, 1)
                if in_set(e.uid if uid else seq, ranges)]

    async def cmd_fetch(self, tag: str, args: list[Token], uid: bool = False) -> None:
        items = fetch_items(args[1:])
        for seq, entry in self._matching(text(args[0]), uid):
            parts = render_fetch(entry, items, uid, self.readonly)
            small: list[bytes] = [b"* %d FETCH (" % seq]
            for part in parts:
                if isinstance(part, tuple) and part[2] - part[1] > 65536:
                    self.send(b"".join(small))
                    small = []
                    await self.write_chunks(part[0].chunks(part[1], part[2]))
                else:
                    small.append(part[0].read(part[1], part[2]) if isinstance(part, tuple)
                                 else part)
            small.append(b")\r\n")
            self.send(b"".join(small))
            await self.drain()
        self.line(f"{tag} OK {'UID ' if uid else ''}FETCH completed")

    async def cmd_store(self, tag: str, args: list[Token], uid: bool = False) -> None:
        mode = text(args[1]).upper()
        flags = {text(f) for a in args[2:] for f in (a if isinstance(a, list) else [a])}
        if mode.removesuffix(".SILENT") not in ("FLAGS", "+FLAGS", "-FLAGS"):
            raise ParseError(f"unknown STORE item {mode}")
        if self.readonly:
            self.line(f"{tag} NO Mailbox is read-only")
            return
        for seq, entry in self._matching(text(args[0]), uid):
            if mode.startswith("+"):
                entry.flags |= flags
            elif mode.startswith("-"):
                entry.flags -= flags
            else:
                entry.flags = set(flags)
            if not mode.endswith(".SILENT"):
                uid_part = f"UID {entry.uid} " if uid else ""
                self.line(f"* {seq} FETCH ({uid_part}FLAGS ({' '.join(sorted(entry.flags))}))")
        self.line(f"{tag} OK STORE completed")

    async def cmd_search(self, tag: str, args: list[Token], uid: bool = False) -> None:
        assert self.selected is not None
        entries = self.selected.entries
        pred = search_predicate(args or ["ALL"], len(entries),
                                entries[-1].uid if entries else 0)
        hits = [str(e.uid if uid else seq) for seq, e in enumerate(entries, 1) if pred(seq, e)]
        self.line(" ".join(["* SEARCH", *hits]))
        self.line(f"{tag} OK SEARCH completed")

    async def cmd_expunge(self, tag: str, args: list[Token]) -> None:
        assert self.selected is not None
        if not self.readonly:
            for seq in self.selected.expunge():
                self.line(f"* {seq} EXPUNGE")
            self._known_exists = len(self.selected)
        self.line(f"{tag} OK EXPUNGE completed")

    async def cmd_close(self, tag: str, args: list[Token], expunge: bool = True) -> None:
        assert self.selected is not None
        if expunge and not self.readonly:
            self.selected.expunge()
        self.selected = None
        self.line(f"{tag} OK {'CLOSE' if expunge else 'UNSELECT'} completed")

    async def cmd_unselect(self, tag: str, args: list[Token]) -> None:
        await self.cmd_close(tag, args, expunge=False)

    async def cmd_check(self, tag: str, args: list[Token]) -> None:
        self.line(f"{tag} OK CHECK completed")


_UID_CAPABLE = {"FETCH", "SEARCH", "STORE"}
_C = ImapConnection
_COMMANDS = {
    "CAPABILITY": ("any", _C.cmd_capability), "NOOP": ("any", _C.cmd_noop),
    "STARTTLS": ("nonauth", _C.cmd_starttls),
    "LOGOUT": ("any", _C.cmd_logout), "ID": ("any", _C.cmd_id),
    "LOGIN": ("nonauth", _C.cmd_login), "ENABLE": ("auth", _C.cmd_enable),
    "NAMESPACE": ("auth", _C.cmd_namespace),
    "AUTHENTICATE": ("nonauth", _C.cmd_authenticate), "SELECT": ("auth", _C.cmd_select),
    "EXAMINE": ("auth", _C.cmd_examine), "LIST": ("auth", _C.cmd_list),
    "LSUB": ("auth", _C.cmd_lsub), "STATUS": ("auth", _C.cmd_status),
    "APPEND": ("auth", _C.cmd_append), "IDLE": ("auth", _C.cmd_idle),
    "FETCH": ("selected", _C.cmd_fetch), "STORE": ("selected", _C.cmd_store),
    "SEARCH": ("selected", _C.cmd_search), "EXPUNGE": ("selected", _C.cmd_expunge),
    "CLOSE": ("selected", _C.cmd_close), "UNSELECT": ("selected", _C.cmd_unselect),
    "CHECK": ("selected", _C.cmd_check),
}


class FakeImapServer(MailboxServer):
    """The fake IMAP upstream; see the module docstring. Extra keyword arguments set
    ``Faults`` fields (``FakeImapServer(users, reject_login=True)``)."""

    faults_class = Faults
    label = "IMAP command(s)"

    default_capabilities = DEFAULT_CAPABILITIES

    def connection(self) -> ImapConnection:
        return ImapConnection(self)

    @property
    def capability(self) -> str:
        return " ".join(self.capabilities)

    def deliver(self, user: str, mailbox: str, message: Message | bytes,
                flags: tuple[str, ...] = ()) -> None:
        """Add a message; idling clients with that mailbox selected see ``* N EXISTS``."""
        def add() -> None:
            self.store.add(user, mailbox, message, flags)
            for conn in self._live:
                if conn.idling and conn.user == user and conn.selected is not None \
                        and conn.selected.name == mailbox:
                    conn._report_exists()
        loop = self._thread_loop
        if loop is not None and threading.current_thread() is not self._thread:
            loop.call_soon_threadsafe(add)
        else:
            add()


def build_parser() -> argparse.ArgumentParser:
    p = mailbox_upstream_parser("imap", 1143, "INBOX")
    p.add_argument("--reject-login", nargs="?", const=True, default=False, metavar="TEXT")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_mailbox_upstream(FakeImapServer, args, "imap", reject_login=args.reject_login)


if __name__ == "__main__":
    sys.exit(main())
