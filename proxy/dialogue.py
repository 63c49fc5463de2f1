"""What every protocol's pre-auth dialogue shares: nginx's command buffer and the actions a
dialogue asks its driver to carry out.

A dialogue is sans-IO: the driver feeds it client bytes with receive_data() and pulls
actions with next_action() until it returns None (more input needed). The driver owns the
socket, the timers, TLS and the auth request; the dialogue owns every protocol rule.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from postern.proxy import sasl


@dataclass(frozen=True)
class Send:
    """Write these bytes to the client."""

    data: bytes


@dataclass(frozen=True)
class Close:
    """Close the client connection after everything sent so far."""


@dataclass(frozen=True)
class Log:
    level: str
    message: str


@dataclass(frozen=True)
class Authenticate:
    """Credentials are complete: stop reading and ask the auth server."""


@dataclass(frozen=True)
class StartTls:
    """The STARTTLS reply was sent and buffered input discarded: do the handshake now."""


Action = Send | Close | Log | Authenticate | StartTls


@dataclass
class Credentials:
    """The session's auth fields, as nginx keeps them (login/passwd/auth_method/salt)."""

    login: bytes = b""
    password: bytes | None = None  # None: nginx's "no password" (EXTERNAL, after a salt)
    method: str = "plain"
    salt: bytes | None = None
    attempt: int = 0

    def oauth_method(self) -> str | None:
        """The OAuth mechanism the client logged in with (the backend gets the same)."""
        return self.method if self.method in sasl.OAUTH_METHODS else None


class CommandBuffer:
    """nginx's per-session client buffer: fixed size, rewound only when fully consumed.

    Bytes the client sent beyond the free space wait in `backlog`, as they would in the
    kernel's socket buffer, so "too long command" and the pipelining quirks of docs/behaviour.md §5.1
    come out exactly as nginx produces them.
    """

    __slots__ = ("backlog", "data", "pos", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.data = bytearray()
        self.pos = 0
        self.backlog = bytearray()

    def feed(self, data: bytes) -> None:
        self.backlog += data

    def fill(self) -> None:
        """Move backlog into free space, as a recv() of (end - last) bytes would."""
        free = self.size - len(self.data)
        if free > 0 and self.backlog:
            self.data += self.backlog[:free]
            del self.backlog[:free]

    @property
    def full(self) -> bool:
        return len(self.data) >= self.size

    def rewind_if_consumed(self) -> None:
        if self.pos >= len(self.data):
            self.data.clear()
            self.pos = 0

    def discard(self) -> None:
        """STARTTLS: forget all plaintext read so far (CVE-2014-3556)."""
        self.data.clear()
        self.pos = 0
        self.backlog.clear()

    def take_all(self) -> bytes:
        """Unparsed client bytes, handed to the backend once the relay starts."""
        rest = bytes(self.data[self.pos:]) + bytes(self.backlog)
        self.discard()
        return rest

    def has_input(self) -> bool:
        return self.pos < len(self.data) or bool(self.backlog)


_OAUTH = {b"XOAUTH2": "xoauth2", b"OAUTHBEARER": "oauthbearer"}
_OAUTH_DECODE = {"xoauth2": sasl.xoauth2, "oauthbearer": sasl.oauthbearer}

# What a protocol parser returns for one attempt at the buffer.
AGAIN, PARSED, PARSE_INVALID, LITERAL_NEXT = range(4)
# What a protocol's handler decides for one command (R_ERROR: IMAP only).
R_OK, R_DONE, R_INVALID, R_ERROR = range(4)


class Dialogue:
    """The driver interface and nginx's read-one-command loop (ngx_mail_read_command),
    shared by the IMAP, POP3 and SMTP machines. A protocol supplies _parse(), _handle(rc)
    and _loggable_start(); everything here is identical for the three."""

    protocol: str
    internal_error: bytes
    sasl_prefix: bytes  # what starts a SASL challenge line: b"+ " or b"334 "

    def __init__(self, conf, tls: bool, buffer_size: int) -> None:
        self.conf = conf
        self.tls = tls
        self.buffer = CommandBuffer(buffer_size)
        self.creds = Credentials()
        self.errors = 0
        self.quit = False
        self.mail_state = "start"
        self._actions: deque[Action] = deque()
        self._paused = False  # waiting for the driver (auth, TLS handshake, close)
        self._starttls = False
        self._failure_pending = b""  # the failure line an OAuth error challenge holds back
        self._close_after_failure = False
        # the parser's current command, its arguments and where they start in the buffer
        self.command = b""
        self.args: list[bytes] = []
        self._cmd_start = 0
        self._arg_start = 0

    @classmethod
    def open(cls, conf, tls: bool, client_host: str, log_info: bool) -> Dialogue:
        """The driver's constructor; the client's host name and the log level matter to SMTP only."""
        return cls(conf, tls=tls)

    def receive_data(self, data: bytes) -> None:
        self.buffer.feed(data)

    def next_action(self) -> Action | None:
        while not self._actions:
            if self._paused or not self._step():
                return None
        return self._actions.popleft()

    def auth_failed(self, error_line: bytes, close: bool = False) -> None:
        """After an Auth-Wait delay: answer the failed attempt and go back to the start,
        with the method reset to plain (nginx's auth sleep handler). An OAuth mechanism
        first sends RFC 7628's error challenge and answers the client's dummy response
        with the line (then closes, with `close`: a failure without Auth-Wait)."""
        oauth = self.failure_needs_reply()
        self.mail_state = "start"
        self.creds.method = "plain"
        self._paused = False
        if oauth:
            self.mail_state = "oauth_error"
            self._failure_pending = error_line
            self._close_after_failure = close
            self._read_sasl_line()
            self._actions.append(Send(self.sasl_prefix + sasl.OAUTH_ERROR + b"\r\n"))
            return
        self._actions.append(Send(error_line))

    def failure_needs_reply(self) -> bool:
        """Whether a failed attempt's line waits for the client's answer to an error
        challenge (RFC 7628 §3.2.2) instead of going out at once."""
        return self.creds.oauth_method() is not None

    def _read_sasl_line(self) -> None:
        """Make the parser read the next line as bare SASL data."""
        raise NotImplementedError

    def tls_started(self) -> None:
        self.tls = True
        self._paused = False

    def pending_input(self) -> bytes:
        return self.buffer.take_all()

    def _starttls_only(self) -> bool:
        return not self.tls and self.conf.ssl.starttls == "only"

    def _start_auth(self) -> None:
        """ngx_mail_auth: the buffer is rewound if consumed, the read timer stops."""
        self.args = []
        self.state = 0  # every parser's start state
        self.buffer.rewind_if_consumed()
        self.creds.attempt += 1
        self._actions.append(Authenticate())
        self._paused = True

    def _auth_parse(self, args: list[bytes], enabled: frozenset[str]) -> tuple[int, bytes]:
        """ngx_mail_auth_parse and the first step of the mechanism it names, for an AUTH or
        AUTHENTICATE command with at least one argument; `enabled` is the server's
        *_auth set. Returns (rc, challenge line); the line matters only with R_OK."""
        mech, n = args[0].upper(), len(args)
        creds = self.creds
        prefix = self.sasl_prefix
        try:
            if mech == b"LOGIN" and n == 1:
                self.mail_state = "login_username"
                return R_OK, prefix + sasl.USERNAME_CHALLENGE + b"\r\n"
            if mech == b"LOGIN" and n == 2:  # MS "AUTH LOGIN with user name"
                creds.login = sasl.login_username(args[1])
                self.mail_state = "login_password"
                return R_OK, prefix + sasl.PASSWORD_CHALLENGE + b"\r\n"
            if mech == b"PLAIN" and n == 1:
                self.mail_state = "plain"
                return R_OK, prefix + b"\r\n"
            if mech == b"PLAIN" and n == 2:
                creds.login, creds.password = sasl.plain(args[1])
                return R_DONE, b""
            if mech == b"CRAM-MD5" and n == 1:
                if "cram-md5" not in enabled:
                    return R_INVALID, b""
                if creds.salt is None:  # POP3 made it with the greeting
                    creds.salt = sasl.make_salt(self.conf.server_name)
                self.mail_state = "cram_md5"
                return R_OK, sasl.cram_md5_challenge(prefix, creds.salt)
            if mech == b"EXTERNAL" and n == 1:
                if "external" not in enabled:
                    return R_INVALID, b""
                self.mail_state = "external"
                return R_OK, prefix + sasl.USERNAME_CHALLENGE + b"\r\n"
            oauth = _OAUTH.get(mech)
            if oauth is not None:
                # Postern's: offered only when listed, in the challenge and the SASL-IR form
                if oauth not in enabled or n > 2:
                    return R_INVALID, b""
                if n == 1:
                    self.mail_state = oauth
                    return R_OK, prefix + b"\r\n"
                creds.login, creds.password = _OAUTH_DECODE[oauth](args[1])
                creds.method = oauth
                return R_DONE, b""
            if mech == b"EXTERNAL" and n == 2:
                # QUIRK: nginx checks `external` only for the challenge form
                # (docs/behaviour.md §7.6, §8.3, §9.4)
                creds.login = sasl.external(args[1])
                creds.method = "external"
                return R_DONE, b""
        except sasl.SaslError as err:
            self._actions.append(Log("info", err.log))
        return R_INVALID, b""

    def _sasl_step(self, arg: bytes) -> tuple[int, bytes]:
        """One client line of a SASL exchange, in the state _auth_parse left
        (ngx_mail_auth_login_username, _plain, _cram_md5, _external). Returns (rc, the
        password challenge line); the line matters only with R_OK."""
        state = self.mail_state
        creds = self.creds
        try:
            if state == "login_username":
                creds.login = sasl.login_username(arg)
                self.mail_state = "login_password"
                return R_OK, self.sasl_prefix + sasl.PASSWORD_CHALLENGE + b"\r\n"
            if state == "login_password":
                creds.password = sasl.login_password(arg)
            elif state == "plain":
                creds.login, creds.password = sasl.plain(arg)
            elif state == "cram_md5":
                creds.login, creds.password = sasl.cram_md5(arg)
                creds.method = "cram-md5"
            elif state == "external":
                # ngx_mail_auth_external sets the login only: a password kept from an
                # earlier, waited-out attempt stays and goes out as Auth-Pass (and to the
                # backend)
                creds.login = sasl.external(arg)
                creds.method = "external"
            elif state in _OAUTH_DECODE:
                creds.login, creds.password = _OAUTH_DECODE[state](arg)
                creds.method = state
            elif state == "oauth_error":
                # RFC 7628 §3.2.3: whatever the client answers the error challenge with,
                # the exchange fails now
                self.mail_state = "start"
                self.state = 0  # every parser's start state
                self.quit = self._close_after_failure
                return R_OK, self._failure_pending
        except sasl.SaslError as err:
            self._actions.append(Log("info", err.log))
            return R_INVALID, b""
        return R_DONE, b""

    def _after_reply(self) -> None:
        """The end of every handler: close after QUIT or too many errors, or hand over to
        the TLS handshake once the STARTTLS reply is queued."""
        if self.quit:
            self._actions.append(Close())
            self._paused = True
        elif self._starttls:
            self._starttls = False
            self.buffer.discard()  # CVE-2014-3556: pipelined plaintext never reaches TLS
            self._actions.append(StartTls())
            self._paused = True

    def _step(self) -> bool:
        """Parse and handle at most one command; False when more input is needed."""
        buf = self.buffer
        buf.fill()
        if buf.pos >= len(buf.data):
            return False
        rc = self._parse()
        if rc == AGAIN:
            if not buf.full:
                return False
            self._actions.append(Log("info", "client sent too long command "
                                     f'"{self._loggable_start()}"'))
            self.quit = True
            rc = PARSE_INVALID
        elif rc == PARSE_INVALID:
            self.errors += 1
            if self.errors >= max(self.conf.max_errors, 1):
                self._actions.append(Log("info", "client sent too many invalid commands"))
                self.quit = True
        self._handle(rc)
        return True

    def _parse(self) -> int:
        raise NotImplementedError

    def _handle(self, rc: int) -> None:
        raise NotImplementedError

    def _loggable_start(self) -> str:
        raise NotImplementedError
