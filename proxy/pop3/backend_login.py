"""Logging into the POP3 backend for the client (docs/behaviour.md §11.2).

USER then PASS with the session's login and password sent raw; APOP is never used towards
the backend. The backend's final `+OK` line is what the client gets as the answer to its
PASS/APOP/AUTH.
"""

from __future__ import annotations

from postern.proxy.backend_login import ACCEPT, REJECT, BackendLogin, LoggedIn, Outcome


class Pop3BackendLogin(BackendLogin):
    def __init__(self, login: bytes, password: bytes, proxy_buffer: int,
                 pass_error_message: bool) -> None:
        super().__init__(proxy_buffer, pass_error_message)
        self.login = login
        self.password = password
        self.state = "start"
        self.action = "reading response from upstream"

    def check(self, reply: bytes) -> tuple[int, int]:
        # nginx looks at the first three bytes only: "+OKAY" passes, "+ok" does not
        return (ACCEPT if reply.startswith(b"+OK") else REJECT), 0

    def advance(self) -> Outcome:
        if self.state == "start":
            self.state = "user"
            self.action = "sending user name to upstream"
            return self.send(b"USER " + self.login + b"\r\n")
        if self.state == "user":
            self.state = "passwd"
            self.action = "sending password to upstream"
            return self.send(b"PASS " + self.password + b"\r\n")
        return LoggedIn(bytes(self.buf))
