"""The backend login with TLS below it (proxy_ssl on|starttls), as one sans-IO machine.

It has the backend login machine's interface (start(), receive_data(raw) -> outcome,
`action`) so that the driver runs it the same way: raw backend bytes in, raw bytes to send
out. Inside: [STARTTLS steps in plaintext] -> TLS handshake -> certificate checks -> the
protocol's own login over TLS. After STARTTLS the login starts past the greeting (none comes
after a STARTTLS); with implicit TLS the greeting comes over TLS. Once logged in, `tls`
carries the relay (proxy.relay wraps the backend transport with it).
"""

from __future__ import annotations

from postern.proxy.backend_login import LoginFailed, Outcome, SendToBackend
from postern.proxy.backend_starttls import TlsNow
from postern.proxy.backend_tls import HANDSHAKING, BackendTlsConnection
from postern.proxy.tls import TlsError

READING = "reading response from upstream"


class SecureBackendLogin:
    """`login` (the protocol's backend login machine) over `tls`, after `starttls` steps
    when given; stage: "starttls" -> "handshake" -> "login"."""

    def __init__(self, login, tls: BackendTlsConnection, starttls=None) -> None:
        self.login = login
        self.tls = tls
        self.starttls = starttls
        self.stage = "starttls" if starttls is not None else "handshake"

    @property
    def action(self) -> str:
        """What the last step sent (nginx's log context)."""
        if self.stage == "starttls":
            return self.starttls.action
        if self.stage == "handshake":
            return HANDSHAKING
        return self.login.action

    @property
    def reading_action(self) -> str:
        """The log context while a backend reply is awaited."""
        return HANDSHAKING if self.stage == "handshake" else READING

    def start(self) -> Outcome:
        if self.stage == "handshake":
            return SendToBackend(self.tls.begin())
        return self.starttls.start()

    def receive_data(self, data: bytes) -> Outcome:
        if self.stage == "starttls":
            outcome = self.starttls.receive_data(data)
            if not isinstance(outcome, TlsNow):
                return outcome
            self.stage = "handshake"
            return SendToBackend(self.tls.begin())
        tls = self.tls
        handshaking = self.stage == "handshake"
        try:
            plain = tls.receive(data)
        except TlsError as err:
            func = "SSL_do_handshake()" if handshaking else "SSL_read()"
            return LoginFailed(None, "error", f"{func} failed (SSL: {err})")
        if handshaking:
            if not tls.established:
                return self._flush(None)
            problem = tls.check_peer()
            if problem is not None:
                return LoginFailed(None, "error", problem)
            self.stage = "login"
            if self.starttls is not None:  # no new greeting after STARTTLS
                return self._flush(self.login.advance())
        outcome = self.login.receive_data(plain) if plain else None
        return self._flush(outcome)

    def _flush(self, outcome: Outcome) -> Outcome:
        """A command goes out encrypted, after what OpenSSL has to send itself (Finished,
        key updates); login done or failed leaves those for the relay or the close."""
        if isinstance(outcome, SendToBackend):
            return SendToBackend(self.tls.encrypt(outcome.data))
        if outcome is None:
            out = self.tls.outgoing()
            return SendToBackend(out) if out else None
        return outcome
