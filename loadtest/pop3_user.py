"""Pop3User: a mail client that leaves mail on the server, with stdlib poplib.

One session (profile ``leave_on_server`` in loadtest/profiles.toml): connect (greeting) ->
CAPA -> [STLS, CAPA] -> USER/PASS or AUTH PLAIN (rotating through what CAPA offers) -> STAT
-> UIDL -> RETR of the messages whose UIDL this client has not seen (at most two a session)
-> QUIT. With --pop3-expunge it deletes what it read (DELE), as a client that does not
leave mail on the server. Each phase is one locust request (``pop3 connect`` ...).
"""

from __future__ import annotations

import base64
import poplib
import sys
from pathlib import Path

from locust import tag, task

if __package__ in (None, ""):  # loaded by `locust -f loadtest/` as a top-level module
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from postern.loadtest._session import MailUser, expect, no_delay, words


def _ok(resp: bytes, what: str) -> None:
    expect(resp.startswith(b"+OK"), f"{what} answered {words(resp)}")


class Pop3User(MailUser):
    weight = 1
    protocol = "pop3"

    def on_start(self) -> None:
        super().on_start()
        self.seen_uidls: set[str] = set()   # what "leave on server" remembers

    @tag("pop3")
    @task
    def download(self) -> None:
        self.run_session(self._run)

    def _run(self, endpoint) -> None:
        p = None
        try:
            with self.step("connect") as s:
                if endpoint.tls == "implicit":
                    p = poplib.POP3_SSL(endpoint.host, endpoint.port, context=self.tls_context,
                                        timeout=self.timeout)
                else:
                    p = poplib.POP3(endpoint.host, endpoint.port, timeout=self.timeout)
                no_delay(p.sock)
                s.size = len(p.welcome)
            caps = self._capa(p)
            if endpoint.tls == "starttls":
                with self.step("stls"):
                    expect("STLS" in caps, "STLS is not offered")
                    _ok(p.stls(self.tls_context), "STLS")
                caps = self._capa(p)
            self._login(p, caps)
            with self.step("stat"):
                count, _octets = p.stat()
            with self.step("uidl") as s:
                resp, listing, octets = p.uidl()
                _ok(resp, "UIDL")
                expect(len(listing) == count, f"UIDL shows {len(listing)} of STAT's {count}")
                s.size = octets
            new = []
            for line in listing:
                number, _, uid = line.decode("latin-1").partition(" ")
                if uid not in self.seen_uidls:
                    new.append((int(number), uid))
            if new:
                with self.step("retr") as s:
                    for number, uid in new[:2]:
                        resp, _lines, octets = p.retr(number)
                        _ok(resp, "RETR")
                        s.size += octets
                        self.seen_uidls.add(uid)
                if self.options.pop3_expunge:
                    with self.step("dele"):
                        for number, _ in new[:2]:
                            _ok(p.dele(number), "DELE")
            with self.step("quit") as s:
                resp = p.quit()
                p = None
                _ok(resp, "QUIT")
                s.size = len(resp)
        finally:
            if p is not None:
                p.close()

    def _capa(self, p: poplib.POP3) -> dict:
        with self.step("capa") as s:
            try:
                caps = p.capa()
            except poplib.error_proto as exc:
                # CAPA is optional (RFC 2449): the server's -ERR (bytes) means "assume USER
                # only"; poplib's own '-ERR EOF' (str) is a dead connection, a failure.
                first = exc.args[0] if exc.args else ""
                if not (isinstance(first, bytes) and first.startswith(b"-ERR")):
                    raise
                return {"USER": []}
            s.size = sum(len(k) + sum(len(v) + 1 for v in vs) + 2 for k, vs in caps.items())
            return caps

    def _login(self, p: poplib.POP3, caps: dict) -> None:
        methods = ["login"] if "USER" in caps else []
        if "PLAIN" in [m.upper() for m in caps.get("SASL", [])]:
            methods.append("auth plain")
        method = self.choose(methods, f"CAPA {' '.join(caps)}")
        with self.step(method):
            if method == "login":
                _ok(p.user(self.login), "USER")
                _ok(p.pass_(self.password), "PASS")
            else:
                plain = base64.b64encode(f"\0{self.login}\0{self.password}".encode()).decode()
                _ok(p._shortcmd(f"AUTH PLAIN {plain}"), "AUTH PLAIN")
