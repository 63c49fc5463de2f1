"""Logging into the POP3 backend for the client (docs/behaviour.md §11.2).

USER then PASS with the session's login and password sent raw; APOP is never used towards
the backend. The backend's final `+OK` line is what the client gets as the answer to its
PASS/APOP/AUTH. A client that logged in with XOAUTH2 or OAUTHBEARER is logged in with AUTH
and the same mechanism: the response after the `+` continuation, the dummy response after
an error challenge.

With `proxy_client_identity on`, `XCLIENT ADDR=.. PORT=.. DESTADDR=.. DESTPORT=.. SESSION=..`
goes before USER when the backend's greeting starts `+OK [XCLIENT]`: Dovecot's pop3-login puts
that there for a client in its `login_trusted_networks` (and only then), and its own proxy sends
XCLIENT on that sign alone (pop3-proxy.c), which spares a CAPA round trip and never sends
XCLIENT to a backend that would ignore or refuse it. Without the sign, or when XCLIENT is not
answered `+OK`, a warning is logged and the login goes on.
"""

from __future__ import annotations

from postern.proxy.backend_login import ACCEPT, REJECT, BackendLogin, LoggedIn, Outcome
from postern.proxy.client_identity import ClientIdentity

XCLIENT_SIGN = b"+OK [XCLIENT]"
NOT_SENT = "client identity not sent"
NO_SIGN = f"upstream greeting has no [XCLIENT], {NOT_SENT}"


def xclient_command(identity: ClientIdentity) -> bytes:
    """The fields known for this session. Dovecot splits XCLIENT at spaces and decodes
    nothing, so a value that is not one word of visible ASCII is left out."""
    fields = ((b"ADDR", identity.client_ip), (b"PORT", identity.client_port),
              (b"DESTADDR", identity.local_ip), (b"DESTPORT", identity.local_port),
              (b"SESSION", identity.session_id))
    line = b"XCLIENT"
    for name, value in fields:
        raw = str(value).encode("utf-8") if value is not None else b""
        if raw and all(0x21 <= b <= 0x7E for b in raw):
            line += b" " + name + b"=" + raw
    return line + b"\r\n"


class Pop3BackendLogin(BackendLogin):
    def __init__(self, login: bytes, password: bytes, proxy_buffer: int,
                 pass_error_message: bool, identity: ClientIdentity | None = None,
                 mechanism: str | None = None) -> None:
        super().__init__(proxy_buffer, pass_error_message)
        self.login = login
        self.password = password
        self.identity = identity
        self.mechanism = mechanism  # "xoauth2" | "oauthbearer" | None: USER/PASS
        self.state = "start"
        self.action = "reading response from upstream"

    def check(self, reply: bytes) -> tuple[int, int]:
        if self.state == "xclient":  # any answer: the login goes on (advance() logs a refusal)
            return ACCEPT, 0
        if self.mechanism and self.state in ("authenticate", "passwd"):
            # a continuation (RFC 5034 "+ "); after the response, an error challenge
            if reply.startswith((b"+ ", b"+\r\n")):
                return ACCEPT, 0
            if self.state == "authenticate":
                return REJECT, 0
        # nginx looks at the first three bytes only: "+OKAY" passes, "+ok" does not
        return (ACCEPT if reply.startswith(b"+OK") else REJECT), 0

    def advance(self) -> Outcome:
        if self.mechanism and self.state not in ("start", "xclient"):
            return self._advance_oauth()
        if self.state == "start":
            if self.identity is None:
                return self._user()
            if not self.buf.startswith(XCLIENT_SIGN):
                return self._user(("warn", NO_SIGN))
            self.state = "xclient"
            self.action = "sending XCLIENT to upstream"
            return self.send(xclient_command(self.identity))
        if self.state == "xclient":
            if self.buf.startswith(b"+OK"):
                return self._user()
            shown = bytes(self.buf).split(b"\r\n", 1)[0].decode("latin-1")
            return self._user(("warn", f'upstream rejected XCLIENT, {NOT_SENT}: "{shown}"'))
        if self.state == "user":
            self.state = "passwd"
            self.action = "sending password to upstream"
            return self.send(b"PASS " + self.password + b"\r\n")
        return LoggedIn(bytes(self.buf))

    def _user(self, note: tuple[str, str] | None = None) -> Outcome:
        if self.mechanism:
            self.state = "authenticate"
            self.action = "sending AUTH command to upstream"
            return self.send(b"AUTH %s\r\n" % self.mechanism.upper().encode(), note)
        self.state = "user"
        self.action = "sending user name to upstream"
        return self.send(b"USER " + self.login + b"\r\n", note)

    def _oauth_challenged(self) -> bool:
        """Anything but +OK after the token is the error challenge."""
        return not self.buf.startswith(b"+OK")
