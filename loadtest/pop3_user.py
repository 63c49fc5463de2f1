"""Pop3User: a mail client downloading its maildrop over POP3, with stdlib poplib.

One session: connect (greeting) -> CAPA -> [STLS, CAPA] -> USER/PASS or AUTH PLAIN
(rotating through what CAPA offers) -> STAT -> LIST -> RETR one or two messages -> DELE
one -> RSET (unless --pop3-expunge, so a long run never empties the maildrops) -> QUIT.
Each phase is one locust request (``pop3 connect`` ...).
"""

from __future__ import annotations

import base64
import poplib
import sys
from pathlib import Path

from locust import tag, task

if __package__ in (None, ""):  # loaded by `locust -f loadtest/` as a top-level module
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest._session import MailUser, PhaseFailed, expect, no_delay, words


def _ok(resp: bytes, what: str) -> None:
    expect(resp.startswith(b"+OK"), f"{what} answered {words(resp)}")


class Pop3User(MailUser):
    weight = 1
    protocol = "pop3"

    @tag("pop3")
    @task
    def download(self) -> None:
        endpoint = self.require_endpoint()
        with self.session('pop3 default'):
            self._run(endpoint)

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
            with self.step("list") as s:
                resp, listing, octets = p.list()
                _ok(resp, "LIST")
                expect(len(listing) == count, f"LIST shows {len(listing)} of STAT's {count}")
                s.size = octets
            if count:
                with self.step("retr") as s:
                    picks = min(count, self.rng.choice((1, 2)))
                    for n in self.rng.sample(range(1, count + 1), picks):
                        resp, _lines, octets = p.retr(n)
                        _ok(resp, "RETR")
                        s.size += octets
                with self.step("dele"):
                    _ok(p.dele(self.rng.randint(1, count)), "DELE")
                if not self.options.pop3_expunge:
                    with self.step("rset"):
                        _ok(p.rset(), "RSET")
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
        if not methods:
            with self.step("login"):
                raise PhaseFailed(f"no usable login method in CAPA {' '.join(caps)}")
        method = self.choose(methods)
        with self.step(method):
            if method == "login":
                _ok(p.user(self.login), "USER")
                _ok(p.pass_(self.password), "PASS")
            else:
                plain = base64.b64encode(f"\0{self.login}\0{self.password}".encode()).decode()
                _ok(p._shortcmd(f"AUTH PLAIN {plain}"), "AUTH PLAIN")
