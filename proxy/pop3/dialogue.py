"""The POP3 client dialogue before authentication, byte for byte as nginx speaks it.

Theory of operation (docs/behaviour.md §8): one fixed 128-byte nginx-style command buffer (there is no
pop3_client_buffer), a resumable parser that mirrors ngx_mail_pop3_parse_command state by
state, and a handler that mirrors ngx_mail_pop3_auth_state. Two session states matter:
`start` and `user` (after USER); anything but PASS/CAPA/NOOP/QUIT in `user` is an error
that also drops back to `start`, so USER must be repeated. While an AUTH exchange runs, the
parser is left in its argument state and reads the next line as bare SASL data.

The replies and rules that make POP3 differ from IMAP: no tags, a salt in the greeting when
apop or cram-md5 is enabled, USER/PASS taking the rest of the line as one argument, and the
buffer being small enough that pipelining quickly hits "too long" (no compaction, §5.1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from postern.proxy import sasl
from postern.proxy.client_identity import ClientIdentity
from postern.proxy.conf.settings import ServerSettings
from postern.proxy.dialogue import (
    R_DONE,
    R_INVALID,
    R_OK,
)
from postern.proxy.per_server import per_server
from postern.proxy.pop3.backend_login import Pop3BackendLogin
from postern.proxy.untagged import (
    S_START,
    UntaggedDialogue,
)

if TYPE_CHECKING:
    from postern.proxy.auth_http import AuthResponse

BUFFER_SIZE = 128  # fixed in nginx (ngx_mail_pop3_init_protocol)
# an OAuth response carries a bearer token, often 1-3 KB: with an OAuth method listed the
# buffer is the size of nginx's other client buffers' largest common setting
OAUTH_BUFFER_SIZE = 8192

GREETING = b"+OK POP3 ready"
OK = b"+OK\r\n"
INVALID = b"-ERR invalid command\r\n"
INTERNAL_ERROR = b"-ERR internal server error\r\n"

COMMANDS = frozenset((b"USER", b"PASS", b"APOP", b"QUIT", b"CAPA", b"AUTH", b"NOOP", b"STLS"))

# SASL names in nginx's bit order; `plain` enables LOGIN too, APOP is never listed
SASL_NAMES = (("plain", b"PLAIN"), ("plain", b"LOGIN"), ("cram-md5", b"CRAM-MD5"),
              ("external", b"EXTERNAL"), ("xoauth2", b"XOAUTH2"),
              ("oauthbearer", b"OAUTHBEARER"))


@per_server
def capability_replies(conf: ServerSettings) -> tuple[bytes, bytes, bytes, bytes]:
    """(CAPA plain, CAPA starttls on, CAPA starttls only, AUTH listing), built per server.

    The SASL line is there even when no mechanism is enabled (a bare `SASL`); the
    starttls-only list drops `USER` (case-insensitively) and has no SASL line at all.
    """
    head = b"+OK Capability list follows\r\n"
    caps = [c.encode() for c in conf.pop3_capabilities]
    names = [name for method, name in SASL_NAMES if method in conf.pop3_auth]
    body = b"".join(c + b"\r\n" for c in caps) + b" ".join([b"SASL", *names]) + b"\r\n"
    only = b"".join(c + b"\r\n" for c in caps if c.upper() != b"USER")
    listing = b"+OK methods supported:\r\n" + b"".join(n + b"\r\n" for n in names) + b".\r\n"
    return (head + body + b".\r\n", head + body + b"STLS\r\n.\r\n",
            head + only + b"STLS\r\n.\r\n", listing)


def failure_line(status: bytes, error_code: bytes | None = None, tag: bytes = b"") -> bytes:
    """The line a failed Auth-Status becomes (an empty status is a failure too)."""
    return b"-ERR " + status + b"\r\n"


class Pop3Dialogue(UntaggedDialogue):
    protocol = "pop3"
    internal_error = INTERNAL_ERROR
    failure_line = staticmethod(failure_line)
    invalid_reply = INVALID
    commands = COMMANDS
    max_args = 3
    spaced_commands = (b"USER", b"PASS")  # the rest of the line is one argument
    sasl_prefix = b"+ "

    def __init__(self, conf: ServerSettings, tls: bool = False) -> None:
        oauth = not conf.pop3_auth.isdisjoint(sasl.OAUTH_METHODS)
        super().__init__(conf, tls, OAUTH_BUFFER_SIZE if oauth else BUFFER_SIZE)
        self._replies = capability_replies(conf)
        # nginx session fields
        self.state = S_START

    # -- driver interface -------------------------------------------------------------
    def greeting(self) -> bytes:
        """The greeting; the APOP/CRAM-MD5 salt is made now, as nginx's init_session does."""
        if not {"apop", "cram-md5"} & self.conf.pop3_auth:
            return GREETING + b"\r\n"
        if self.creds.salt is None:
            self.creds.salt = sasl.make_salt(self.conf.server_name)
        return GREETING + b" " + self.creds.salt

    def auth_failure(self, resp: AuthResponse) -> bytes:
        return failure_line(resp.error, resp.error_code)

    def backend_login(self, conf: ServerSettings, client_ip: str | None = None,
                      identity: ClientIdentity | None = None) -> Pop3BackendLogin:
        return Pop3BackendLogin(self.creds.login, self.creds.password or b"",
                                conf.proxy_buffer, conf.proxy_pass_error_message,
                                identity=identity, mechanism=self.creds.oauth_method())

    # -- one command ---------------------------------------------------------------------
    def _loggable_start(self) -> str:
        # nginx logs the whole buffer; a POP3 line that overflows 128 bytes is nearly always
        # PASS, APOP or an AUTH blob, so only a known verb is shown, never what follows it.
        data = bytes(self.buffer.data[:5])
        if data[:4].upper() in COMMANDS and data[4:5] in (b" ", b"\r", b"\n"):
            return data[:4].decode("ascii") + " ..."
        return "..."

    def _dispatch(self) -> tuple[int, bytes]:
        """ngx_mail_pop3_auth_state's switch: returns (rc, reply)."""
        state, cmd = self.mail_state, self.command
        if state == "start":
            if cmd == b"USER":
                return self._user(), OK
            if cmd == b"CAPA":
                return R_OK, self._capa(stls=True)
            if cmd == b"APOP":
                return self._apop(), OK
            if cmd == b"AUTH":
                return self._auth()
            if cmd == b"QUIT":
                self.quit = True
                return R_OK, OK
            if cmd == b"NOOP":
                return R_OK, OK
            if cmd == b"STLS":
                self._starttls = not self.tls and self.conf.ssl.starttls in ("on", "only")
                return (R_OK if self._starttls else R_INVALID), OK
            return R_INVALID, OK  # PASS before USER
        if state == "user":
            if cmd == b"PASS":
                if len(self.args) != 1:
                    return R_INVALID, OK
                self.creds.password = self.args[0]
                return R_DONE, OK
            if cmd == b"CAPA":
                return R_OK, self._capa(stls=False)  # never STLS once USER was given
            if cmd == b"QUIT":
                self.quit = True
                return R_OK, OK
            if cmd == b"NOOP":
                return R_OK, OK
            return R_INVALID, OK
        return self._sasl_step(self.args[0] if self.args else b"")

    def _capa(self, stls: bool) -> bytes:
        plain, on, only, _ = self._replies
        if stls and not self.tls and self.conf.ssl.starttls == "on":
            return on
        if stls and not self.tls and self.conf.ssl.starttls == "only":
            return only
        return plain

    def _user(self) -> int:
        if self._starttls_only() or len(self.args) != 1:
            return R_INVALID
        self.creds.login = self.args[0]
        self.mail_state = "user"
        return R_OK

    def _apop(self) -> int:
        if self._starttls_only() or len(self.args) != 2 or "apop" not in self.conf.pop3_auth:
            return R_INVALID
        self.creds.login, self.creds.password = self.args[0], self.args[1]
        self.creds.method = "apop"
        return R_DONE

    def _auth(self) -> tuple[int, bytes]:
        """ngx_mail_pop3_auth + ngx_mail_auth_parse."""
        args = self.args
        if self._starttls_only():
            return R_INVALID, OK
        if not args:
            self.state = S_START  # a listing, not an exchange
            return R_OK, self._replies[3]
        return self._auth_parse(args, self.conf.pop3_auth)
