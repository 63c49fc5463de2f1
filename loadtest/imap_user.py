"""ImapUser: a mail client checking its INBOX over IMAP, with stdlib imaplib under gevent.

One session: connect (greeting, CAPABILITY) -> [STARTTLS] -> LOGIN or AUTHENTICATE PLAIN
(rotating through what the server offers) -> SELECT INBOX -> SEARCH UNSEEN -> FETCH the
newest headers -> FETCH one or two bodies -> [IDLE, every --imap-idle-every sessions, held
--imap-idle seconds] -> LOGOUT. Each phase is one locust request (``imap connect`` ...).
"""

from __future__ import annotations

import imaplib
import select
import sys
import time
from pathlib import Path

from locust import tag, task

if __package__ in (None, ""):  # loaded by `locust -f loadtest/` as a top-level module
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest._session import MailUser, PhaseFailed, expect, no_delay, words

HEADERS = "(FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)])"
HEADER_WINDOW = 20  # a client refreshing its message list asks for the newest ones


def _size(data) -> int:
    """Payload bytes in an imaplib response list (literals included)."""
    total = 0
    for item in data or ():
        if isinstance(item, tuple):
            total += sum(len(x) for x in item if isinstance(x, bytes))
        elif isinstance(item, bytes):
            total += len(item)
    return total


def _ok(typ: str, data, what: str) -> None:
    expect(typ == "OK", f"{what} answered {typ} {words(data)}".strip())


class ImapUser(MailUser):
    weight = 3
    protocol = "imap"

    @tag("imap")
    @task
    def check_mail(self) -> None:
        endpoint = self.require_endpoint()
        with self.session('imap default'):
            self._run(endpoint)

    def _run(self, endpoint) -> None:
        self.sessions += 1
        every, hold = self.options.imap_idle_every, float(self.options.imap_idle)
        idle = hold > 0 and every > 0 and (self.sessions - 1) % every == 0
        m = None
        try:
            with self.step("connect") as s:
                if endpoint.tls == "implicit":
                    m = imaplib.IMAP4_SSL(endpoint.host, endpoint.port,
                                          ssl_context=self.tls_context, timeout=self.timeout)
                else:
                    m = imaplib.IMAP4(endpoint.host, endpoint.port, timeout=self.timeout)
                no_delay(m.sock)
                s.size = len(m.welcome)
                expect(m.welcome.startswith(b"* OK"), f"greeting {words(m.welcome)!r}")
            if endpoint.tls == "starttls":
                with self.step("starttls"):
                    expect("STARTTLS" in m.capabilities, "STARTTLS is not offered")
                    _ok(*m.starttls(ssl_context=self.tls_context), "STARTTLS")
            self._login(m)
            with self.step("select") as s:
                typ, data = m.select("INBOX")
                _ok(typ, data, "SELECT INBOX")
                exists = int(data[0])
                s.size = _size(data)
            with self.step("search") as s:
                typ, data = m.search(None, "UNSEEN")
                _ok(typ, data, "SEARCH UNSEEN")
                unseen = data[0].split() if data and data[0] else []
                s.size = _size(data)
            if exists:
                with self.step("fetch headers") as s:
                    first = max(1, exists - HEADER_WINDOW + 1)
                    typ, data = m.fetch(f"{first}:{exists}", HEADERS)
                    _ok(typ, data, "FETCH headers")
                    s.size = _size(data)
                with self.step("fetch body") as s:
                    wanted = unseen or [str(exists).encode()]
                    for n in self.rng.sample(wanted, min(len(wanted), self.rng.choice((1, 2)))):
                        typ, data = m.fetch(n.decode(), "(BODY.PEEK[])")
                        _ok(typ, data, "FETCH body")
                        expect(any(isinstance(x, tuple) for x in data), "FETCH body: no literal")
                        s.size += _size(data)
            if idle:
                self._idle(m, hold)
            with self.step("logout") as s:
                typ, data = m.logout()
                m = None
                expect(typ == "BYE", f"LOGOUT answered {typ} {words(data)}")
                s.size = _size(data)
        finally:
            if m is not None:
                m.shutdown()

    def _login(self, m: imaplib.IMAP4) -> None:
        methods = [] if "LOGINDISABLED" in m.capabilities else ["login"]
        if "AUTH=PLAIN" in m.capabilities:
            methods.append("auth plain")
        if not methods:
            with self.step("login"):
                raise PhaseFailed(f"no usable login method in {' '.join(m.capabilities)}")
        method = self.choose(methods)
        with self.step(method):
            if method == "login":
                typ, data = m.login(self.login, self.password)
            else:
                plain = f"\0{self.login}\0{self.password}".encode()
                typ, data = m.authenticate("PLAIN", lambda _challenge: plain)
            _ok(typ, data, method.upper())

    def _idle(self, m: imaplib.IMAP4, hold: float) -> None:
        """IDLE by hand (imaplib has it only from 3.14). The hold is not counted as latency:
        the reported time is entering (IDLE -> "+") plus leaving (DONE -> tagged OK)."""
        with self.step("idle") as s:
            caps = m.capabilities
            if "IDLE" not in caps:  # a proxy's pre-login list may omit the backend's IDLE
                typ, data = m.capability()
                caps = words(data).upper().split() if typ == "OK" else []
            expect("IDLE" in caps, "IDLE is not offered")
            tag_ = m._new_tag()
            m.tagged_commands.pop(tag_, None)  # answered here, not by imaplib's dispatcher
            m.send(tag_ + b" IDLE\r\n")
            while True:
                line = m._get_line()
                s.size += len(line) + 2
                if line.startswith(b"+"):
                    break
                expect(not line.startswith(tag_), f"IDLE refused: {words(line)}")
            held = time.perf_counter()
            deadline = held + hold
            while (left := deadline - time.perf_counter()) > 0:
                readable = m.sock.pending() if hasattr(m.sock, "pending") else 0
                if not readable and not select.select([m.sock], [], [], left)[0]:
                    continue
                line = m._get_line()  # an untagged update (EXISTS, EXPUNGE ...)
                s.size += len(line) + 2
                expect(not line.startswith(tag_), f"IDLE ended by the server: {words(line)}")
            s.pause_clock(time.perf_counter() - held)
            m.send(b"DONE\r\n")
            while not (line := m._get_line()).startswith(tag_):
                s.size += len(line) + 2
            s.size += len(line) + 2
            expect(line[len(tag_):].startswith(b" OK"), f"IDLE ended with {words(line)}")

