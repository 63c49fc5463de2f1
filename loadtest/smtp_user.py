"""SmtpUser: a mail client submitting a message over SMTP, with stdlib smtplib.

One session (profile ``submission`` in loadtest/profiles.toml): connect (greeting) -> EHLO
-> [STARTTLS, EHLO] -> AUTH PLAIN or AUTH LOGIN (rotating through what EHLO offers; skipped
when the server offers no AUTH) -> MAIL FROM with SIZE= when offered -> RCPT TO (1-3), sent
in the same write as MAIL FROM when PIPELINING is offered (smtplib does not pipeline: the
commands are written by hand and smtplib reads the replies) -> DATA (a pre-generated Faker
message, --smtp-sizes mix) -> QUIT. Each phase is one locust request (``smtp connect`` ...).
"""

from __future__ import annotations

import smtplib
import sys
from pathlib import Path

from locust import events, tag, task
from locust.runners import MasterRunner

if __package__ in (None, ""):  # loaded by `locust -f loadtest/` as a top-level module
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from postern.loadtest._corpus import DOMAIN, build_corpus
from postern.loadtest._session import MailUser, expect, no_delay, words

HELO_NAME = "loadgen.example.test"
_corpus: dict[tuple[int, str], list[bytes]] = {}


def corpus(seed: int, mix: str) -> list[bytes]:
    """Built once per process and mix, on first use (it takes about a second)."""
    if (seed, mix) not in _corpus:
        _corpus[seed, mix] = build_corpus(seed, mix=mix)
    return _corpus[seed, mix]


def _code(reply: tuple[int, bytes], wanted: tuple[int, ...], what: str) -> None:
    code, text = reply
    expect(code in wanted, f"{what} answered {code} {words(text)}")


@events.test_start.add_listener
def _build_corpus_early(environment, **_) -> None:
    """Before users spawn: building it inside the first user would stall every other
    user of the process for that second, and show up as their latency."""
    cls = environment.user_classes_by_name.get("SmtpUser")
    if cls is None or isinstance(environment.runner, MasterRunner):
        return
    opts = environment.parsed_options
    worker = getattr(environment.runner, "worker_index", 0) or 0
    corpus(opts.seed + worker, opts.smtp_sizes)


class SmtpUser(MailUser):
    weight = 2
    protocol = "smtp"

    def on_start(self) -> None:
        super().on_start()
        worker = getattr(self.environment.runner, "worker_index", 0) or 0
        self.messages = corpus(self.options.seed + worker, self.options.smtp_sizes)

    @tag("smtp")
    @task
    def submit(self) -> None:
        self.run_session(self._run)

    def _run(self, endpoint) -> None:
        s = None
        try:
            with self.step("connect") as st:
                cls = smtplib.SMTP_SSL if endpoint.tls == "implicit" else smtplib.SMTP
                kw = {"context": self.tls_context} if endpoint.tls == "implicit" else {}
                # The constructor reads the greeting: not 220 raises SMTPConnectError.
                s = cls(endpoint.host, endpoint.port, local_hostname=HELO_NAME,
                        timeout=self.timeout, **kw)
                no_delay(s.sock)
            self._ehlo(s)
            if endpoint.tls == "starttls":
                with self.step("starttls"):
                    expect(s.has_extn("starttls"), "STARTTLS is not offered")
                    _code(s.starttls(context=self.tls_context), (220,), "STARTTLS")
                self._ehlo(s)
            self._auth(s)
            message = self.rng.choice(self.messages)
            recipients = [f"rcpt{self.rng.randrange(10_000):04d}@{DOMAIN}"
                          for _ in range(self.rng.randint(1, 3))]
            sender = f"{self.login}@{DOMAIN}" if "@" not in self.login else self.login
            options = [f"SIZE={len(message)}"] if s.has_extn("size") else []
            if s.has_extn("pipelining"):
                with self.step("mail rcpt pipelined"):
                    # RFC 2920: MAIL and every RCPT in one write, then the replies in order
                    mail = f"MAIL FROM:<{sender}>{''.join(' ' + o for o in options)}\r\n"
                    s.send("".join([mail, *(f"RCPT TO:<{r}>\r\n" for r in recipients)]))
                    _code(s.getreply(), (250,), "MAIL FROM")
                    for _ in recipients:
                        _code(s.getreply(), (250, 251), "RCPT TO")
            else:
                with self.step("mail"):
                    _code(s.mail(sender, options), (250,), "MAIL FROM")
                with self.step("rcpt"):
                    for rcpt in recipients:
                        _code(s.rcpt(rcpt), (250, 251), "RCPT TO")
            with self.step("data") as st:
                _code(s.data(message), (250,), "DATA")
                st.size = len(message)
            with self.step("quit"):
                reply = s.quit()
                s = None
                _code(reply, (221,), "QUIT")
        finally:
            if s is not None:
                s.close()

    def _ehlo(self, s: smtplib.SMTP) -> None:
        with self.step("ehlo") as st:
            code, text = s.ehlo()
            _code((code, text), (250,), "EHLO")
            st.size = len(text)

    def _auth(self, s: smtplib.SMTP) -> None:
        offered = s.esmtp_features.get("auth", "").upper().split()
        methods = [m for m in ("PLAIN", "LOGIN") if m in offered]
        if not methods:
            return  # a relay that takes mail without AUTH: nothing to measure here
        method = self.choose(methods)
        with self.step(f"auth {method.lower()}"):
            s.user, s.password = self.login, self.password
            authobject = s.auth_plain if method == "PLAIN" else s.auth_login
            _code(s.auth(method, authobject, initial_response_ok=True), (235,), f"AUTH {method}")
