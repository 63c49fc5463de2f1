"""The IMAP client dialogue before authentication, byte for byte as nginx speaks it.

Theory of operation (docs/behaviour.md §7): one nginx-style command buffer, a resumable parser that
mirrors ngx_mail_imap_parse_command state by state (so its quirks come along: the empty tag
of a line starting with a space, `{0}` eating one byte, the leaking quote flag), and a
handler that mirrors ngx_mail_imap_auth_state. Session-level parser fields (quoted,
backslash, literal length, the stored tag) live on the object, exactly where nginx keeps
them, because several quirks are those fields outliving one command. The stored tag is,
as in nginx, a place in the buffer: once the buffer is reused, newer bytes show through.
"""

from __future__ import annotations

import re

from postern.proxy.client_identity import ClientIdentity
from postern.proxy.conf.settings import IMAP_METHODS, ServerSettings
from postern.proxy.dialogue import (
    AGAIN,
    LITERAL_NEXT,
    PARSE_INVALID,
    PARSED,
    R_DONE,
    R_ERROR,
    R_INVALID,
    R_OK,
    Close,
    Dialogue,
    Send,
)
from postern.proxy.imap.backend_login import ImapBackendLogin

GREETING = b"* OK IMAP4 ready\r\n"
OK = b"OK completed\r\n"
NEXT = b"+ OK\r\n"
INVALID = b"BAD invalid command\r\n"
BYE = b"* BYE\r\n"
INTERNAL_ERROR = b"* BAD internal server error\r\n"
STAR = b"* "

# parser states (ngx_mail_imap_parse_command)
(S_START, S_TAG, S_INVALID, S_SPACES_BEFORE_COMMAND, S_COMMAND, S_SPACES_BEFORE_ARGUMENT,
 S_ARGUMENT, S_BACKSLASH, S_LITERAL, S_NO_SYNC_LITERAL, S_START_LITERAL, S_LITERAL_ARGUMENT,
 S_END_LITERAL, S_ALMOST_DONE) = range(14)

# a tag (printable, no space) and a command word, as "too long command" may show them
_LOGGABLE_START = re.compile(rb"([!-~]+) ([A-Za-z]+)(?=[ \r\n]|$)")
COMMANDS = {b"NOOP", b"LOGIN", b"LOGOUT", b"STARTTLS", b"CAPABILITY", b"AUTHENTICATE"}
TAG_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._")
LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
DIGITS = frozenset(b"0123456789")
CR, LF, SP, DQUOTE, BACKSLASH = 0x0D, 0x0A, 0x20, 0x22, 0x5C


_CAPABILITIES: dict[int, tuple[ServerSettings, tuple[bytes, bytes, bytes]]] = {}


def server_capability_lines(conf: ServerSettings) -> tuple[bytes, bytes, bytes]:
    """capability_lines(), computed once per server rather than once per session."""
    hit = _CAPABILITIES.get(id(conf))
    if hit is None or hit[0] is not conf:  # the id of a reloaded, freed conf may be reused
        hit = _CAPABILITIES[id(conf)] = (conf, capability_lines(conf))
    return hit[1]


def capability_lines(conf: ServerSettings) -> tuple[bytes, bytes, bytes]:
    """(plain, starttls on, starttls only) CAPABILITY lines, built once per server."""
    caps = b"* CAPABILITY" + b"".join(b" " + c.encode() for c in conf.imap_capabilities)
    auth = b"".join(b" AUTH=" + m.upper().encode()
                    for m in IMAP_METHODS if m in conf.imap_auth)
    return (caps + auth + b"\r\n", caps + auth + b" STARTTLS\r\n",
            caps + b" STARTTLS LOGINDISABLED\r\n")


def failure_line(status: bytes, error_code: bytes | None = None, tag: bytes = b"") -> bytes:
    """The line a failed Auth-Status becomes (an empty status is a failure too)."""
    return tag + b"NO " + status + b"\r\n"


class ImapDialogue(Dialogue):
    protocol = "imap"
    internal_error = INTERNAL_ERROR
    failure_line = staticmethod(failure_line)
    sasl_prefix = b"+ "

    def __init__(self, conf: ServerSettings, tls: bool = False) -> None:
        super().__init__(conf, tls, conf.imap_client_buffer)
        self._capabilities = server_capability_lines(conf)
        # nginx session fields
        self.tag = b""  # the tag as parsed; its bytes live in the buffer at _tag_pos
        self._tag_pos = 0
        self.state = S_START
        self.quoted = False
        self.backslash = False
        self.literal_len = 0
        self.no_sync_literal = False
        self._tag_start = 0

    # -- driver interface -------------------------------------------------------------
    def greeting(self) -> bytes:
        return GREETING

    def auth_failure(self, resp) -> bytes:
        return failure_line(resp.error, resp.error_code, self._stored_tag())

    def backend_login(self, conf: ServerSettings, client_ip: str | None = None,
                      identity: ClientIdentity | None = None) -> ImapBackendLogin:
        return ImapBackendLogin(self._stored_tag(), self.creds.login,
                                self.creds.password or b"", conf.proxy_buffer,
                                conf.proxy_pass_error_message, identity=identity,
                                mechanism=self.creds.oauth_method())

    # -- one command ---------------------------------------------------------------------
    def _loggable_start(self) -> str:
        # nginx logs the whole buffer here. Only what cannot be a credential is shown: a tag
        # followed by a known command, never an argument, and nothing at all in the middle
        # of a SASL exchange or when the line does not have that shape.
        if self.mail_state != "start":
            return "..."
        data = bytes(self.buffer.data[:64])
        found = _LOGGABLE_START.match(data)
        if found is None or found.group(2).upper() not in COMMANDS:
            return "..."
        more = len(self.buffer.data) > found.end() and self.buffer.data[found.end()] != 0x0D
        return found.group().decode("ascii") + (" ..." if more else "")

    def _read_sasl_line(self) -> None:
        self.command = b"AUTHENTICATE"
        self.state = S_ARGUMENT
        self._arg_start = self.buffer.pos

    def _stored_tag(self) -> bytes:
        """nginx keeps the tag as a pointer and length into the buffer. The buffer is rewound
        when an auth request starts, so after a failure with Auth-Wait a line that is
        invalid before its own tag completes is answered with whatever bytes now sit at the
        old tag's place: new ones where the buffer refilled, the old tag beyond that."""
        start = self._tag_pos
        live = bytes(self.buffer.data[start:start + len(self.tag)])
        return live + self.tag[len(live):]

    def _handle(self, rc: int) -> None:
        tag = True
        text = b""
        out = OK
        if rc == PARSED:
            hrc, text, out, tag = self._dispatch()
        elif rc == LITERAL_NEXT:
            hrc, tag, out = R_OK, False, NEXT
        else:
            hrc = R_INVALID
        if hrc == R_DONE:
            self._start_auth()
            return
        if hrc == R_ERROR:
            self._actions.extend((Send(INTERNAL_ERROR), Close()))
            self._paused = True
            return
        if hrc == R_INVALID:
            self.state = S_START
            out = INVALID
            self.mail_state = "start"
        if rc != LITERAL_NEXT:
            self.args = []
        if tag:
            out = text + (self._stored_tag() if self.tag else STAR) + out
        self._actions.append(Send(out))
        if self.state == S_START:
            self.buffer.rewind_if_consumed()
            self.tag = b""
        self._after_reply()

    def _dispatch(self) -> tuple[int, bytes, bytes, bool]:
        """ngx_mail_imap_auth_state's switch: returns (rc, untagged text, out, tagged)."""
        state = self.mail_state
        if state == "start":
            cmd = self.command
            if cmd == b"LOGIN":
                return self._login(), b"", OK, True
            if cmd == b"AUTHENTICATE":
                rc, out = self._authenticate()
                return rc, b"", out, rc != R_OK
            if cmd == b"CAPABILITY":
                plain, on, only = self._capabilities
                text = plain
                if not self.tls and self.conf.ssl.starttls == "on":
                    text = on
                elif not self.tls and self.conf.ssl.starttls == "only":
                    text = only
                return R_OK, text, OK, True
            if cmd == b"LOGOUT":
                self.quit = True
                return R_OK, BYE, OK, True
            if cmd == b"NOOP":
                return R_OK, b"", OK, True
            if cmd == b"STARTTLS":
                self._starttls = not self.tls and self.conf.ssl.starttls in ("on", "only")
                return (R_OK if self._starttls else R_INVALID), b"", OK, True
            return R_INVALID, b"", OK, True
        rc, out = self._sasl_step(self.args[0] if self.args else b"")
        # the password challenge and a bad user name are answered untagged; a held-back
        # failure line (OAuth) carries its tag already
        return rc, b"", out, state not in ("login_username", "oauth_error")

    def _login(self) -> int:
        if self._starttls_only() or len(self.args) != 2 or not self.args[0]:
            return R_INVALID
        self.creds.login, self.creds.password = self.args[0], self.args[1]
        return R_DONE

    def _authenticate(self) -> tuple[int, bytes]:
        """ngx_mail_imap_authenticate + ngx_mail_auth_parse."""
        args = self.args
        if self._starttls_only() or not args:
            return R_INVALID, OK
        return self._auth_parse(args, self.conf.imap_auth)

    # -- the parser ----------------------------------------------------------------------
    def _parse(self) -> int:
        """Resume ngx_mail_imap_parse_command at buffer.pos."""
        buf = self.buffer
        data = buf.data
        last = len(data)
        p = buf.pos
        state = self.state
        while p < last:
            ch = data[p]
            if state == S_START or state == S_TAG:
                if state == S_START:
                    self._tag_start = p
                    state = S_TAG
                if ch == SP:
                    self.tag = bytes(data[self._tag_start:p + 1])
                    self._tag_pos = self._tag_start
                    state = S_SPACES_BEFORE_COMMAND
                elif ch not in TAG_BYTES or p - self._tag_start > 31:
                    return self._invalid(p)
            elif state == S_SPACES_BEFORE_COMMAND:
                if ch == SP:
                    pass
                elif ch == CR or ch == LF:
                    return self._invalid(p)
                else:
                    self._cmd_start = p
                    state = S_COMMAND
            elif state == S_COMMAND:
                if ch == SP or ch == CR or ch == LF:
                    cmd = bytes(data[self._cmd_start:p]).upper()
                    if cmd not in COMMANDS:
                        return self._invalid(p)
                    self.command = cmd
                    if ch == SP:
                        state = S_SPACES_BEFORE_ARGUMENT
                    elif ch == CR:
                        state = S_ALMOST_DONE
                    else:
                        return self._done(p)
                elif ch not in LETTERS:
                    return self._invalid(p)
            elif state == S_SPACES_BEFORE_ARGUMENT:
                if ch == SP:
                    pass
                elif ch == CR:
                    state = S_ALMOST_DONE
                elif ch == LF:
                    return self._done(p)
                elif len(self.args) > 2:
                    return self._invalid(p)
                elif ch == DQUOTE:
                    self.quoted = True
                    self._arg_start = p + 1
                    state = S_ARGUMENT
                elif ch == 0x7B:  # '{'
                    state = S_LITERAL
                else:
                    self._arg_start = p
                    state = S_ARGUMENT
            elif state == S_ARGUMENT:
                if (ch == SP and self.quoted) or (ch == DQUOTE and not self.quoted):
                    pass
                elif ch == DQUOTE or ch == SP or ch == CR or ch == LF:
                    if ch == DQUOTE:
                        self.quoted = False
                    arg = bytes(data[self._arg_start:p])
                    if self.backslash:  # unescape this argument only (never a literal)
                        arg = _unescape(arg)
                        self.backslash = False
                    self.args.append(arg)
                    if ch == CR:
                        state = S_ALMOST_DONE
                    elif ch == LF:
                        return self._done(p)
                    else:
                        state = S_SPACES_BEFORE_ARGUMENT
                elif ch == BACKSLASH and self.quoted:
                    self.backslash = True
                    state = S_BACKSLASH
            elif state == S_BACKSLASH:
                if ch == CR or ch == LF:
                    return self._invalid(p)
                state = S_ARGUMENT
            elif state == S_LITERAL:
                if ch in DIGITS:
                    self.literal_len = self.literal_len * 10 + ch - 0x30
                elif ch == 0x7D:  # '}'
                    state = S_START_LITERAL
                elif ch == 0x2B:  # '+'
                    state = S_NO_SYNC_LITERAL
                else:
                    return self._invalid(p)
            elif state == S_NO_SYNC_LITERAL:
                if ch != 0x7D:
                    return self._invalid(p)
                self.no_sync_literal = True
                state = S_START_LITERAL
            elif state == S_START_LITERAL:
                if ch == CR:
                    pass
                elif ch == LF:
                    buf.pos = p + 1
                    self._arg_start = p + 1
                    if not self.no_sync_literal:
                        self.state = S_LITERAL_ARGUMENT
                        return LITERAL_NEXT
                    self.no_sync_literal = False
                    state = S_LITERAL_ARGUMENT
                else:
                    return self._invalid(p)
            elif state == S_LITERAL_ARGUMENT:
                # the literal's bytes are taken in one slice; `{0}` still takes one byte
                need = max(self.literal_len, 1)
                take = min(need, last - p)
                self.literal_len = need - take
                p += take
                if self.literal_len:
                    break
                self.args.append(bytes(data[self._arg_start:p]))
                state = S_END_LITERAL
                continue
            elif state == S_END_LITERAL:
                if ch == SP:
                    state = S_SPACES_BEFORE_ARGUMENT
                elif ch == CR:
                    state = S_ALMOST_DONE
                elif ch == LF:
                    return self._done(p)
                else:
                    return self._invalid(p)
            elif state == S_ALMOST_DONE:
                if ch != LF:
                    return self._invalid(p)
                return self._done(p)
            elif state == S_INVALID:
                return self._invalid(p)
            p += 1
        buf.pos = p
        self.state = state
        return AGAIN

    def _done(self, p: int) -> int:
        self.buffer.pos = p + 1
        # inside AUTHENTICATE the next line is read as a bare argument (no tag, no command)
        self.state = S_ARGUMENT if self.command == b"AUTHENTICATE" else S_START
        self._arg_start = p + 1
        return PARSED

    def _invalid(self, p: int) -> int:
        """Skip the rest of the line; a `{n+}` announcement on it forces a close."""
        self.state = S_INVALID
        self.quoted = self.backslash = self.no_sync_literal = False
        self.literal_len = 0
        buf = self.buffer
        data = buf.data
        lf = data.find(b"\n", p)
        if lf < 0:
            buf.pos = len(data)
            return AGAIN
        self.state = S_START
        buf.pos = lf + 1
        end = lf - 1 if lf >= 1 and data[lf - 1] == CR else lf
        if lf > 4 and data[end - 2:end] == b"+}":
            self.quit = True
        return PARSE_INVALID


def _unescape(arg: bytes) -> bytes:
    """nginx's quoted-string unescape: `\\x` -> `x`, done on the one quoted argument that had
    a backslash, when it ends."""
    out = bytearray()
    i, n = 0, len(arg)
    while i < n:
        ch = arg[i]
        i += 1
        if ch == BACKSLASH and i < n:
            ch = arg[i]
            i += 1
        out.append(ch)
    return bytes(out)
