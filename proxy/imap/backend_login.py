"""Logging into the IMAP backend for the client (docs/behaviour.md §11.3).

Always synchronising literals, so any byte in a login or password is safe; the client's own
tag is reused so the backend's tagged OK answers the client's LOGIN/AUTHENTICATE. A client
that logged in with XOAUTH2 or OAUTHBEARER is logged in with the same mechanism and the token
(AUTHENTICATE, then the response after the `+`; an error challenge gets the dummy response
and the tagged reply after it is judged).

With `proxy_client_identity on` an `ID` command (RFC 2971) with the client's address goes
first, in the x-originating-ip / x-connected-ip / x-session-ext-id form Dovecot trusts from its
`login_trusted_networks`. Its untagged and tagged replies are read and dropped; a NO or BAD is
logged and the login goes on, as Dovecot's own proxy does (imap-proxy.c).
"""

from __future__ import annotations

from postern.proxy.backend_login import (
    ACCEPT,
    AGAIN,
    REJECT,
    BackendLogin,
    LoggedIn,
    LoginFailed,
    Outcome,
)
from postern.proxy.client_identity import ClientIdentity

ID_TAG = b"I"  # the ID command's own tag (Dovecot's proxy uses the same)


def quoted(value: str | int) -> bytes:
    """An IMAP string for ID (RFC 3501 quoted, `\\` and `"` escaped). A value that a quoted
    string cannot carry (CR, LF, NUL, 8-bit) is NIL: a literal would cost a round trip."""
    raw = str(value).encode("utf-8")
    if any(b in (0x00, 0x0A, 0x0D) or b > 0x7F for b in raw):
        return b"NIL"
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def id_command(identity: ClientIdentity) -> bytes:
    """`I ID (...)`: the fields known for this session, in Dovecot's names."""
    fields = (("x-originating-ip", identity.client_ip),
              ("x-originating-port", identity.client_port),
              ("x-connected-ip", identity.local_ip),
              ("x-connected-port", identity.local_port),
              ("x-session-ext-id", identity.session_id))
    pairs = [quoted(name) + b" " + quoted(value) for name, value in fields if value is not None]
    return ID_TAG + b" ID (" + b" ".join(pairs) + b")\r\n"


class ImapBackendLogin(BackendLogin):
    def __init__(self, tag: bytes, login: bytes, password: bytes, proxy_buffer: int,
                 pass_error_message: bool, tolerate_untagged: bool = True,
                 identity: ClientIdentity | None = None,
                 mechanism: str | None = None) -> None:
        super().__init__(proxy_buffer, pass_error_message)
        self.identity = identity
        self.tag = tag
        self.login = login
        self.password = password
        self.tolerate_untagged = tolerate_untagged
        self.mechanism = mechanism  # "xoauth2" | "oauthbearer" | None: LOGIN
        self.state = "start"
        self.action = "reading response from upstream"

    def receive_data(self, data: bytes) -> Outcome:
        if self.state != "id":
            return super().receive_data(data)
        # ID's reply: any number of untagged lines (`* ID ...`) are dropped one by one, so
        # that they never fill the buffer; the tagged line decides nothing
        self.backlog += data
        while (end := self.backlog.find(b"\r\n")) >= 0:
            line = bytes(self.backlog[:end])
            del self.backlog[:end + 2]
            if line.startswith(ID_TAG + b" "):
                return self._login(line[len(ID_TAG) + 1:])
        if len(self.backlog) >= self.size:
            line = bytes(self.backlog[:self.size - 1]).decode("latin-1")
            return LoginFailed(None, "error", f'upstream sent too long response line: "{line}"')
        return None

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
        if self.mechanism and self.state != "start":
            return self._advance_oauth()
        if self.state == "start":
            if self.identity is not None:
                self.state = "id"
                self.action = "sending ID command to upstream"
                return self.send(id_command(self.identity))
            return self._login()
        if self.state == "login":
            self.state = "user"
            self.action = "sending user name to upstream"
            return self.send(b"%s {%d}\r\n" % (self.login, len(self.password)))
        if self.state == "user":
            self.state = "passwd"
            self.action = "sending password to upstream"
            return self.send(self.password + b"\r\n")
        return LoggedIn(bytes(self.buf))

    def _login(self, id_reply: bytes | None = None) -> Outcome:
        note = None
        if id_reply is not None and id_reply[:2].upper() != b"OK":
            shown = id_reply.decode("latin-1")
            note = ("warn", f'upstream rejected ID, client identity not sent: "{shown}"')
        if self.mechanism:
            self.state = "authenticate"
            self.action = "sending AUTHENTICATE command to upstream"
            name = self.mechanism.upper().encode()
            return self.send(b"%sAUTHENTICATE %s\r\n" % (self.tag, name), note)
        self.state = "login"
        self.action = "sending LOGIN command to upstream"
        return self.send(b"%sLOGIN {%d}\r\n" % (self.tag, len(self.login)), note)

    def _oauth_challenged(self) -> bool:
        """A continuation after the token is the error challenge."""
        return self.buf.startswith(b"+")
