"""What logging into a backend shares across protocols (docs/behaviour.md §11.1), sans-IO.

nginx reads each backend reply into the `proxy_buffer`, judges it only once it holds at
least 4 bytes ending in CRLF, checks the first line (the protocol decides), and empties the
buffer after every command it sends. A protocol subclass supplies `check()` and the next
command; this base keeps the buffer rules and turns a bad reply into the right outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

from postern.proxy import sasl


@dataclass(frozen=True)
class SendToBackend:
    data: bytes
    # (level, message) the driver logs first: a step that failed without failing the login
    note: tuple[str, str] | None = None


@dataclass(frozen=True)
class LoggedIn:
    """Login done: relay starts; `to_client` is written to the client first."""

    to_client: bytes


@dataclass(frozen=True)
class LoginFailed:
    """Close the session after sending `to_client` (None: the internal-error line)."""

    to_client: bytes | None
    log_level: str
    log: str


Outcome = SendToBackend | LoggedIn | LoginFailed | None

AGAIN, ACCEPT, REJECT = range(3)


class BackendLogin:
    """Subclasses implement start() and check()/advance() for their command sequence."""

    action = "reading response from upstream"

    def __init__(self, proxy_buffer: int, pass_error_message: bool) -> None:
        self.size = proxy_buffer
        self.pass_error_message = pass_error_message
        self.buf = bytearray()
        self.backlog = bytearray()

    def receive_data(self, data: bytes) -> Outcome:
        self.backlog += data
        free = self.size - len(self.buf)
        self.buf += self.backlog[:free]
        del self.backlog[:free]
        buf = self.buf
        if len(buf) < 4:
            return None
        if buf[-2:] != b"\r\n":
            if len(buf) >= self.size:
                line = bytes(buf[:-1]).decode("latin-1")
                return LoginFailed(None, "error",
                                   f'upstream sent too long response line: "{line}"')
            return None
        verdict, offset = self.check(bytes(buf))
        if verdict == AGAIN:
            return None
        if verdict == ACCEPT:
            return self.advance()
        shown = bytes(buf[offset:-2]).decode("latin-1")
        if self.pass_error_message:
            return LoginFailed(bytes(buf), "info", f'upstream sent invalid response: "{shown}"')
        return LoginFailed(None, "error", f'upstream sent invalid response: "{shown}"')

    def send(self, line: bytes, note: tuple[str, str] | None = None) -> SendToBackend:
        """A command goes out: the reply buffer starts empty again."""
        self.buf.clear()
        self.backlog.clear()
        return SendToBackend(line, note)

    def check(self, reply: bytes) -> tuple[int, int]:
        """(AGAIN|ACCEPT|REJECT, offset of the line shown in a rejection log)."""
        raise NotImplementedError

    def start(self) -> Outcome:
        """What to do once connected: nothing, the backend speaks first in all three."""
        return None

    def advance(self) -> Outcome:
        raise NotImplementedError

    def _advance_oauth(self) -> Outcome:
        """IMAP and POP3 after AUTHENTICATE/AUTH <mechanism>: the token, then the dummy
        response if the backend answers with an error challenge. The subclass has `login`,
        `password` and `mechanism` and says what an error challenge is."""
        state = self.state
        if state == "authenticate":
            self.state = "passwd"
            self.action = "sending password to upstream"
            return self.send(sasl.OAUTH_RESPONSES[self.mechanism](self.login, self.password)
                             + b"\r\n")
        if state == "passwd" and self._oauth_challenged():
            self.state = "error"
            self.action = "sending dummy response to upstream"
            return self.send(sasl.OAUTH_DUMMY[self.mechanism] + b"\r\n")
        return LoggedIn(bytes(self.buf))

    def _oauth_challenged(self) -> bool:
        raise NotImplementedError
