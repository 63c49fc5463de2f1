"""Logging into the POP3 backend for the client (docs/behaviour.md §11.2).

USER then PASS with the session's login and password sent raw; APOP is never used towards
the backend. The backend's final `+OK` line is what the client gets as the answer to its
PASS/APOP/AUTH. A client that logged in with XOAUTH2 or OAUTHBEARER is logged in with AUTH
and the same mechanism: the response after the `+` continuation, the dummy response after
an error challenge.
"""

from __future__ import annotations

from postern.proxy import sasl
from postern.proxy.backend_login import ACCEPT, REJECT, BackendLogin, LoggedIn, Outcome


class Pop3BackendLogin(BackendLogin):
    def __init__(self, login: bytes, password: bytes, proxy_buffer: int,
                 pass_error_message: bool, mechanism: str | None = None) -> None:
        super().__init__(proxy_buffer, pass_error_message)
        self.login = login
        self.password = password
        self.mechanism = mechanism  # "xoauth2" | "oauthbearer" | None: USER/PASS
        self.state = "start"
        self.action = "reading response from upstream"

    def check(self, reply: bytes) -> tuple[int, int]:
        if self.mechanism and self.state in ("authenticate", "passwd"):
            # a continuation (RFC 5034 "+ "); after the response, an error challenge
            if reply.startswith((b"+ ", b"+\r\n")):
                return ACCEPT, 0
            if self.state == "authenticate":
                return REJECT, 0
        # nginx looks at the first three bytes only: "+OKAY" passes, "+ok" does not
        return (ACCEPT if reply.startswith(b"+OK") else REJECT), 0

    def advance(self) -> Outcome:
        if self.mechanism:
            return self._advance_oauth()
        if self.state == "start":
            self.state = "user"
            self.action = "sending user name to upstream"
            return self.send(b"USER " + self.login + b"\r\n")
        if self.state == "user":
            self.state = "passwd"
            self.action = "sending password to upstream"
            return self.send(b"PASS " + self.password + b"\r\n")
        return LoggedIn(bytes(self.buf))

    def _advance_oauth(self) -> Outcome:
        state = self.state
        if state == "start":
            self.state = "authenticate"
            self.action = "sending AUTH command to upstream"
            return self.send(b"AUTH %s\r\n" % self.mechanism.upper().encode())
        if state == "authenticate":
            self.state = "passwd"
            self.action = "sending password to upstream"
            return self.send(sasl.OAUTH_RESPONSES[self.mechanism](self.login, self.password)
                             + b"\r\n")
        if state == "passwd" and not self.buf.startswith(b"+OK"):
            self.state = "error"
            self.action = "sending dummy response to upstream"
            return self.send(sasl.OAUTH_DUMMY[self.mechanism] + b"\r\n")
        return LoggedIn(bytes(self.buf))
