"""ImapUser: IMAP clients as real ones behave, with imaplib2 under gevent.

Each user is one client of a profile drawn from the mix (loadtest/profiles.toml: Thunderbird,
iOS/macOS Mail, a fetchmail-like poller; the file says where each command sequence comes
from). Every command of a session is one timed locust request (``imap connect``,
``imap status``, ``imap idle`` ...); the session as a whole goes to the clients' record.

imaplib2 runs a reader thread per connection; under locust's gevent monkey-patching that
thread is a greenlet, so thousands of sessions can sit in IDLE in one process. Its IDLE
(``idle(timeout)``) sends IDLE, waits for the continuation, holds until the server says
something or the timeout passes, then sends DONE: the time reported for ``imap idle`` is
the whole call minus the hold. Where imaplib2 falls short (tests/test_loadtest.py shows
each): IDLE holds are whole seconds; its handler thread sleeps 0.1 s before it reads the
greeting, so ``imap connect`` times only the connection and the session waits that sleep out
untimed; ``enable()`` never releases its state-change lock, so the next command would hang;
it checks ENABLE/IDLE against the pre-login capability list, which behind a proxy is the
proxy's (the list read after login replaces it); it takes no ``ssl.SSLContext`` (its TLS is
set by ``ca_certs`` and ``tls_level``), which is why the lab's CA is passed as a file.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import gevent
import imaplib2
from locust import tag, task

if __package__ in (None, ""):  # loaded by `locust -f loadtest/` as a top-level module
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from postern.loadtest._corpus import DOMAIN
from postern.loadtest._session import MailUser, expect, no_delay, words

HEADERS = "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)])"
HEADER_WINDOW = 20
# imaplib2 prints its last 20 log lines to stderr when a connection it reads from goes away,
# which is every session still in IDLE when a run stops: failures are locust's to report
_QUIET = open(os.devnull, "w")  # noqa: SIM115 - for the process's lifetime
HANDLER_START = 0.12   # imaplib2's handler thread sleeps 0.1 s before it handles anything
CLIENT_ID = {"thunderbird": ("name", "Thunderbird", "version", "115.18.0"),
             "apple_mail": ("name", "iPhone Mail", "version", "21E236", "os", "iOS",
                            "os-version", "17.4.1 (21E236)")}


def _size(data) -> int:
    """Payload bytes in an imaplib2 response list (literals included)."""
    total = 0
    for item in data or ():
        if isinstance(item, tuple):
            total += sum(len(x) for x in item if isinstance(x, bytes))
        elif isinstance(item, (bytes, str)):
            total += len(item)
    return total


def _names(data) -> list[str]:
    """Mailbox names from LIST lines: ``(\\HasNoChildren) "/" "Sent"``."""
    names = []
    for item in data or ():
        line = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        match = re.match(r'\([^)]*\) (?:"[^"]*"|NIL) (.*)$', line)
        if match:
            names.append(match.group(1).strip().strip('"'))
    return names


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ok(typ: str, data, what: str) -> None:
    expect(typ == "OK", f"{what} answered {typ} {words(data)}".strip())


class _Timed(imaplib2.IMAP4):
    """Times ``open`` (TCP connect, and the TLS handshake for IMAP4_SSL)."""

    open_seconds = 0.0

    def open(self, *args, **kw):
        started = time.perf_counter()
        try:
            return super().open(*args, **kw)
        finally:
            self.open_seconds = time.perf_counter() - started


class _TimedSSL(_Timed, imaplib2.IMAP4_SSL):
    pass


class ImapUser(MailUser):
    weight = 3
    protocol = "imap"

    @tag("imap")
    @task
    def client_session(self) -> None:
        endpoint = self.require_endpoint()
        with self.session(self.profile.label):
            m = self._open(endpoint)
            try:
                getattr(self, f"_{self.profile.kind}")(m)
                self._logout(m)
                m = None
            finally:
                if m is not None:
                    m.shutdown()

    # -- the profiles ---------------------------------------------------------------------

    def _thunderbird(self, m: imaplib2.IMAP4) -> None:
        p = self.profile
        self._id(m, "thunderbird")
        self._login(m)
        caps = self._capability(m)
        if "ENABLE" in caps:
            with self.step("enable"):
                try:
                    _ok(*m.enable("CONDSTORE"), "ENABLE")
                finally:
                    # imaplib2 3.6's enable() keeps the lock of a state-changing command,
                    # and every later command waits for it forever: release it here
                    m._release_state_change()
        if "NAMESPACE" in caps:
            with self.step("namespace"):
                _ok(*m.namespace(), "NAMESPACE")
        with self.step("list") as s:
            typ, data = m.list('""', "*")
            _ok(typ, data, "LIST")
            s.size = _size(data)
        folders = [f for f in _names(data) if f.upper() != "INBOX"]
        self.think()
        with self.step("status") as s:  # every folder but the one it selects
            for folder in folders[:int(p.options.get("status_max", 20))]:
                typ, data = m.status(_quote(folder), "(UIDNEXT MESSAGES UNSEEN RECENT)")
                _ok(typ, data, f"STATUS {folder}")
                s.size += _size(data)
        exists = self._select(m)
        with self.step("uid fetch flags") as s:
            if exists:
                typ, data = m.uid("FETCH", "1:*", "(FLAGS)")
                _ok(typ, data, "UID FETCH flags")
                s.size = _size(data)
        if exists:
            self.think()
            self._fetch_headers(m, exists)
        self._idle(m)
        sent = next((f for f in folders if f.lower() in ("sent", "sent items")), None)
        every = int(p.options.get("append_every", 0))
        if sent and every and self.sessions % every == 1 % every:
            self._append(m, _quote(sent))

    def _apple_mail(self, m: imaplib2.IMAP4) -> None:
        self._id(m, "apple_mail")
        self._login(m)
        self._capability(m)
        with self.step("list") as s:
            typ, data = m.list('""', "*")
            _ok(typ, data, "LIST")
            s.size = _size(data)
        exists = self._select(m)
        if exists:
            window = int(self.profile.options.get("window", 50))
            with self.step("uid search") as s:
                typ, data = m.uid("SEARCH", f"{max(1, exists - window + 1)}:*")
                _ok(typ, data, "UID SEARCH")
                s.size = _size(data)
            with self.step("uid fetch flags") as s:
                typ, data = m.uid("FETCH", f"{max(1, exists - window + 1)}:*", "(FLAGS)")
                _ok(typ, data, "UID FETCH flags")
                s.size = _size(data)
            self.think()
            self._fetch_headers(m, exists)
        self._idle(m)

    def _poller(self, m: imaplib2.IMAP4) -> None:
        self._login(m)
        exists = self._select(m)
        with self.step("search") as s:
            typ, data = m.search(None, "UNSEEN")
            _ok(typ, data, "SEARCH UNSEEN")
            unseen = data[0].split() if data and data[0] else []
            s.size = _size(data)
        if exists:
            with self.step("fetch body") as s:
                wanted = unseen[:2] or [str(exists).encode()]
                for n in wanted:
                    typ, data = m.fetch(n.decode(), "(RFC822.SIZE BODY.PEEK[])")
                    _ok(typ, data, "FETCH body")
                    expect(any(isinstance(x, tuple) for x in data), "FETCH body: no literal")
                    s.size += _size(data)

    # -- the commands ---------------------------------------------------------------------

    def _open(self, endpoint) -> imaplib2.IMAP4:
        ca = self.tls_ca_file
        with self.step("connect") as s:
            started = time.perf_counter()
            if endpoint.tls == "implicit":
                m = _TimedSSL(endpoint.host, endpoint.port, ca_certs=ca, timeout=self.timeout,
                              debug_file=_QUIET)
            else:
                m = _Timed(endpoint.host, endpoint.port, timeout=self.timeout,
                           debug_file=_QUIET)
            # imaplib2's handler thread sleeps 0.1 s before it reads the greeting: only the
            # connection (and implicit TLS handshake) is the server's time
            s.pause_clock(time.perf_counter() - started - m.open_seconds)
            no_delay(m.sock)
            welcome = m.welcome if isinstance(m.welcome, bytes) else str(m.welcome).encode()
            s.size = len(welcome)
            expect(welcome.startswith(b"* OK") or m.state == "NONAUTH",
                   f"greeting {words(welcome)!r}")
        # ... and the first command would wait out the rest of that sleep: wait it out here,
        # untimed, so that the login is not billed for the client library's start-up
        gevent.sleep(max(0.0, started + HANDLER_START - time.perf_counter()))
        if endpoint.tls == "starttls":
            with self.step("starttls"):
                expect("STARTTLS" in m.capabilities, "STARTTLS is not offered")
                _ok(*m.starttls(ca_certs=ca), "STARTTLS")
        return m

    def _capability(self, m: imaplib2.IMAP4) -> tuple[str, ...]:
        """What the backend offers: a proxy's pre-login list is its own."""
        with self.step("capability") as s:
            typ, data = m.capability()
            _ok(typ, data, "CAPABILITY")
            s.size = _size(data)
            caps = tuple(words(data).upper().split())
            # imaplib2 checks ENABLE, IDLE ... against the list it read before login, which
            # behind a proxy is the proxy's: the backend's list is the one that counts now
            m.capabilities = caps
            return caps

    def _id(self, m: imaplib2.IMAP4, client: str) -> None:
        if "ID" in m.capabilities:
            with self.step("id") as s:
                typ, data = m.id(*CLIENT_ID[client])
                _ok(typ, data, "ID")
                s.size = _size(data)

    def _login(self, m: imaplib2.IMAP4) -> None:
        caps = m.capabilities
        methods = [] if "LOGINDISABLED" in caps else ["login"]
        if "AUTH=PLAIN" in caps:
            methods.append("auth plain")
        method = self.choose(methods, " ".join(caps))
        with self.step(method):
            if method == "login":
                typ, data = m.login(self.login, self.password)
            else:
                plain = f"\0{self.login}\0{self.password}".encode()
                typ, data = m.authenticate("PLAIN", lambda _challenge: plain)
            _ok(typ, data, method.upper())

    def _select(self, m: imaplib2.IMAP4) -> int:
        with self.step("select") as s:
            typ, data = m.select("INBOX")
            _ok(typ, data, "SELECT INBOX")
            s.size = _size(data)
            return int(data[0]) if data and data[0] else 0

    def _fetch_headers(self, m: imaplib2.IMAP4, exists: int) -> None:
        with self.step("fetch headers") as s:
            first = max(1, exists - HEADER_WINDOW + 1)
            typ, data = m.fetch(f"{first}:{exists}", HEADERS)
            _ok(typ, data, "FETCH headers")
            s.size = _size(data)

    def _idle(self, m: imaplib2.IMAP4) -> None:
        hold = self.hold()
        if hold <= 0:
            return
        hold = max(1, round(hold))  # imaplib2 takes whole seconds only (an int, or it fails)
        with self.step("idle") as s:
            expect("IDLE" in m.capabilities or "IDLE" in self._caps_after_login(m),
                   "IDLE is not offered")
            started = time.perf_counter()
            typ, data = m.idle(timeout=hold)
            # the hold is not latency: what is left is entering IDLE plus DONE's answer
            s.pause_clock(min(hold, time.perf_counter() - started))
            _ok(typ, data, "IDLE")
            s.size = _size(data)

    def _caps_after_login(self, m: imaplib2.IMAP4) -> tuple[str, ...]:
        typ, data = m.capability()
        return tuple(words(data).upper().split()) if typ == "OK" else ()

    def _append(self, m: imaplib2.IMAP4, folder: str) -> None:
        message = (f"From: {self.login}@{DOMAIN}\r\nTo: friend@{DOMAIN}\r\n"
                   f"Subject: sent copy {self.sessions}\r\nMessage-ID: <{self.login}."
                   f"{self.sessions}@{DOMAIN}>\r\n\r\nA copy of a sent message.\r\n").encode()
        with self.step("append") as s:
            typ, data = m.append(folder, r"(\Seen)", None, message)
            _ok(typ, data, f"APPEND {folder}")
            s.size = len(message)

    def _logout(self, m: imaplib2.IMAP4) -> None:
        with self.step("logout") as s:
            typ, data = m.logout()
            expect(typ in ("BYE", "OK"), f"LOGOUT answered {typ} {words(data)}")
            s.size = _size(data)
