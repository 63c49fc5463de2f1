"""Logging into the IMAP backend for the client (docs/behaviour.md §11.3).

Always synchronising literals, so any byte in a login or password is safe; the client's own
tag is reused so the backend's tagged OK answers the client's LOGIN/AUTHENTICATE. A client
that logged in with XOAUTH2 or OAUTHBEARER is logged in with the same mechanism and the token
(AUTHENTICATE, then the response after the `+`; an error challenge gets the dummy response
and the tagged reply after it is judged).
"""

from __future__ import annotations

from postern.proxy import sasl
from postern.proxy.backend_login import ACCEPT, AGAIN, REJECT, BackendLogin, LoggedIn, Outcome


class ImapBackendLogin(BackendLogin):
    def __init__(self, tag: bytes, login: bytes, password: bytes, proxy_buffer: int,
                 pass_error_message: bool, tolerate_untagged: bool = True,
                 mechanism: str | None = None) -> None:
        super().__init__(proxy_buffer, pass_error_message)
        self.tag = tag
        self.login = login
        self.password = password
        self.tolerate_untagged = tolerate_untagged
        self.mechanism = mechanism  # "xoauth2" | "oauthbearer" | None: LOGIN
        self.state = "start"
        self.action = "reading response from upstream"

    def check(self, reply: bytes) -> tuple[int, int]:
        state = self.state
        if state == "start":
            return (ACCEPT if reply.startswith(b"* OK") else REJECT), 0
        if state in ("login", "user", "authenticate"):
            return (ACCEPT if reply.startswith(b"+") else REJECT), 0
        if state == "passwd" and self.mechanism and reply.startswith(b"+"):
            return ACCEPT, 0  # an OAuth error challenge: answered in advance()
        # passwd: one untagged line (e.g. * CAPABILITY) may precede the tagged reply
        p = 0
        if self.tolerate_untagged and reply.startswith(b"* "):
            end = reply.find(b"\r\n", 2)
            p = end + 2
            if len(reply) - p < 4:
                return AGAIN, p
        if reply.startswith(self.tag, p):
            # nginx's log of a rejected reply starts after a matching tag ("NO ...")
            p += len(self.tag)
            return (ACCEPT if reply.startswith(b"OK", p) else REJECT), p
        return REJECT, p

    def advance(self) -> Outcome:
        if self.mechanism:
            return self._advance_oauth()
        if self.state == "start":
            self.state = "login"
            self.action = "sending LOGIN command to upstream"
            return self.send(b"%sLOGIN {%d}\r\n" % (self.tag, len(self.login)))
        if self.state == "login":
            self.state = "user"
            self.action = "sending user name to upstream"
            return self.send(b"%s {%d}\r\n" % (self.login, len(self.password)))
        if self.state == "user":
            self.state = "passwd"
            self.action = "sending password to upstream"
            return self.send(self.password + b"\r\n")
        return LoggedIn(bytes(self.buf))

    def _advance_oauth(self) -> Outcome:
        state = self.state
        if state == "start":
            self.state = "authenticate"
            self.action = "sending AUTHENTICATE command to upstream"
            name = self.mechanism.upper().encode()
            return self.send(b"%sAUTHENTICATE %s\r\n" % (self.tag, name))
        if state == "authenticate":
            self.state = "passwd"
            self.action = "sending password to upstream"
            return self.send(sasl.OAUTH_RESPONSES[self.mechanism](self.login, self.password)
                             + b"\r\n")
        if state == "passwd" and self.buf.startswith(b"+"):
            self.state = "error"
            self.action = "sending dummy response to upstream"
            return self.send(sasl.OAUTH_DUMMY[self.mechanism] + b"\r\n")
        return LoggedIn(bytes(self.buf))
