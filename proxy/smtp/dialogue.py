"""The SMTP client dialogue before authentication, byte for byte as nginx speaks it.

Theory of operation (docs/behaviour.md §9, §5, §6): one nginx-style command buffer; a resumable parser that
mirrors ngx_mail_smtp_parse_command state by state (4-letter verbs and STARTTLS, at most 11
space-separated arguments, CRLF or bare LF; after an AUTH line the next line is read as one bare
SASL argument); and a handler that mirrors ngx_mail_smtp_auth_state. Session fields (HELO
argument, ESMTP flag, the stored MAIL and RCPT command texts) live on the object, where nginx
keeps them, because several quirks are those fields outliving a command: the ESMTP flag survives
STARTTLS, a failed `none` authentication keeps MAIL/RCPT.
"""

from __future__ import annotations

import re

from postern.proxy import sasl
from postern.proxy.conf.settings import SMTP_METHODS, ServerSettings
from postern.proxy.dialogue import (
    R_DONE,
    R_INVALID,
    R_OK,
    Action,
    Close,
    Log,
    Send,
)
from postern.proxy.per_server import per_server
from postern.proxy.smtp.backend_login import SmtpBackendLogin
from postern.proxy.untagged import (
    S_START,
    UntaggedDialogue,
)

OK = b"250 2.0.0 OK\r\n"
BYE = b"221 2.0.0 Bye\r\n"
START_TLS = b"220 2.0.0 Start TLS\r\n"
INVALID = b"500 5.5.1 Invalid command\r\n"
INVALID_PIPELINING = b"503 5.5.0 Improper use of SMTP command pipelining\r\n"
INVALID_ARGUMENT = b"501 5.5.4 Invalid argument\r\n"
AUTH_REQUIRED = b"530 5.7.1 Authentication required\r\n"
BAD_SEQUENCE = b"503 5.5.1 Bad sequence of commands\r\n"
INTERNAL_ERROR = b"451 4.3.2 Internal server error\r\n"
DEFAULT_ERROR_CODE = b"535 5.7.0"
OAUTH_ERROR_CODE = b"535 5.7.8"  # RFC 4954 §6 "credentials invalid", RFC 7628 §3.2.3's example

UNAVAILABLE = "[UNAVAILABLE]"
TEMPUNAVAIL = "[TEMPUNAVAIL]"


VERBS = frozenset({b"HELO", b"EHLO", b"QUIT", b"AUTH", b"NOOP", b"MAIL", b"RSET", b"RCPT",
                   b"VRFY", b"EXPN", b"HELP"})
MAX_ARGS = 11

_VERB_LINE = re.compile(rb"[ \t]*([A-Za-z]+)(?:(?=[\r\n]|$)| +([A-Za-z0-9-]+)?)")
_SHOWN_VERBS = frozenset({b"HELO", b"EHLO", b"MAIL", b"RCPT", b"RSET", b"NOOP", b"QUIT",
                          b"DATA", b"VRFY", b"EXPN", b"HELP", b"STARTTLS"})
_MECHANISMS = frozenset({b"PLAIN", b"LOGIN", b"CRAM-MD5", b"EXTERNAL", b"XOAUTH2",
                         b"OAUTHBEARER"})
_FIRST_WORD = re.compile(rb"[A-Za-z]+")


@per_server
def ehlo_replies(conf: ServerSettings) -> tuple[bytes, bytes, bytes]:
    """(plain, starttls on, starttls only) EHLO replies, built once per server (docs/behaviour.md §9.5)."""
    lines = [conf.server_name.encode()] + [c.encode() for c in conf.smtp_capabilities]
    methods = [m.upper().encode() for m in SMTP_METHODS
               if m in conf.smtp_auth and m != "none"]
    auth = [b"AUTH" + b"".join(b" " + m for m in methods)] if methods else []

    def block(items: list[bytes]) -> bytes:
        return b"".join(b"250-%s\r\n" % i for i in items[:-1]) + b"250 %s\r\n" % items[-1]

    return block(lines + auth), block(lines + auth + [b"STARTTLS"]), block(lines + [b"STARTTLS"])


def loggable(data: bytes) -> str:
    """Client bytes for a log line: CR/LF shown as '_' (as nginx does). Shown are only lines
    that cannot carry a credential: a known verb other than AUTH with its arguments, and of
    an AUTH line the verb and a known mechanism name. At the first other line (a SASL blob,
    a line of unknown shape) " ..." stands for the rest."""
    shown = []
    for line in data.splitlines(keepends=True):
        found = _VERB_LINE.match(line)
        verb = found.group(1).upper() if found else b""
        if verb in _SHOWN_VERBS:
            shown.append(line)
            continue
        if verb == b"AUTH":
            mech = found.group(2)
            known = mech is not None and mech.upper() in _MECHANISMS
            shown.append(line[:found.end(2) if known else found.end(1)] + b" ...")
        else:
            shown.append(b"..." if not shown else b" ...")
        break
    text = b"".join(shown)
    return text.decode("latin-1").replace("\r", "_").replace("\n", "_")


def failure_line(status: bytes, error_code: bytes | None = None,
                 tag: bytes = b"") -> bytes | None:
    """The failure line; None for an empty Auth-Status, which nginx's SMTP does not treat as
    a failure (ngx_mail_auth_http_process_headers looks for a backend instead)."""
    if not status:
        return None
    return (error_code or DEFAULT_ERROR_CODE) + b" " + status + b"\r\n"


class SmtpDialogue(UntaggedDialogue):
    protocol = "smtp"
    internal_error = INTERNAL_ERROR
    failure_line = staticmethod(failure_line)
    invalid_reply = INVALID
    commands = VERBS | {b"STARTTLS"}
    max_args = MAX_ARGS
    sasl_prefix = b"334 "

    def __init__(self, conf: ServerSettings, tls: bool = False,
                 client_host: str = UNAVAILABLE, log_info: bool | None = None) -> None:
        super().__init__(conf, tls, conf.smtp_client_buffer)
        self.client_host = client_host  # Client-Host / XCLIENT NAME (docs/behaviour.md §4.5)
        # whether the session's error log takes info lines: nginx's rejection logging then
        # rewrites the buffer (see _mail); unknown here means the server's own error_log
        # decides, else info is assumed (as a mail proxy's log is usually run)
        if log_info is None:
            log_info = not conf.error_logs or any(
                t.level in ("info", "debug") for t in conf.error_logs)
        self.log_info = log_info
        self._ehlo = ehlo_replies(conf)
        self._helo_reply = b"250 %s\r\n" % conf.server_name.encode()
        # nginx session fields
        self.helo = b""
        self.esmtp = False
        self.smtp_from = b""  # the whole MAIL command text (none mode)
        self.smtp_to = b""  # the whole RCPT command text
        self.state = S_START
        self._arg_end = 0

    @classmethod
    def open(cls, conf: ServerSettings, tls: bool, client_host: str,
             log_info: bool) -> SmtpDialogue:
        return cls(conf, tls=tls, client_host=client_host, log_info=log_info)

    # -- driver interface -------------------------------------------------------------
    def greeting(self) -> bytes:
        return b"220 %s ESMTP ready\r\n" % self.conf.server_name.encode()

    def reject_early(self, data: bytes) -> list[Action]:
        """Data arrived during smtp_greeting_delay: nginx refuses the client (docs/behaviour.md §9.2)."""
        self.quit = self._paused = True
        seen = data[:self.conf.smtp_client_buffer]
        return [Log("info", f'client was rejected before greeting: "{loggable(seen)}"'),
                Send(INVALID_PIPELINING), Close()]

    def auth_failure(self, resp) -> bytes | None:
        code = resp.error_code
        if code is None and self.creds.method in sasl.OAUTH_METHODS:
            code = OAUTH_ERROR_CODE
        return failure_line(resp.error, code)

    def auth_failed(self, error_line: bytes, close: bool = False) -> None:
        """After an Auth-Wait delay: answer and go back to the start. The stored MAIL/RCPT
        stay (docs/behaviour.md §9.4): a new MAIL gets 503, a new RCPT asks again with the old MAIL."""
        super().auth_failed(error_line, close)

    def auth_request_extra(self, req) -> None:
        """Fill the SMTP-only fields of a proxy.auth_http.AuthRequest."""
        req.client_host = self.client_host
        if req.method == "none":
            req.smtp_helo, req.smtp_from, req.smtp_to = self.helo, self.smtp_from, self.smtp_to

    def backend_login(self, conf: ServerSettings, client_ip: str,
                      identity: object = None) -> SmtpBackendLogin:
        # `identity` (proxy_client_identity) is for IMAP and POP3: SMTP has XCLIENT already
        creds = self.creds
        return SmtpBackendLogin(
            server_name=conf.server_name, client_ip=client_ip, client_host=self.client_host,
            login=creds.login, password=creds.password, helo=self.helo, esmtp=self.esmtp,
            method_none=creds.method == "none", mail=self.smtp_from, rcpt=self.smtp_to,
            xclient=conf.xclient, proxy_smtp_auth=conf.proxy_smtp_auth,
            proxy_buffer=conf.proxy_buffer, pass_error_message=conf.proxy_pass_error_message,
            mechanism=creds.oauth_method())

    # -- one command ---------------------------------------------------------------------
    def _loggable_start(self) -> str:
        # nginx logs the whole buffer here; only a leading verb is shown, so that a long AUTH
        # or SASL line never puts a password into the log.
        data = bytes(self.buffer.data)
        word = _FIRST_WORD.match(data)
        if word is None or word.group().upper() not in VERBS | {b"STARTTLS"}:
            return "..."
        return word.group().decode() + " ..."

    def _dispatch(self) -> tuple[int, bytes]:
        """ngx_mail_smtp_auth_state's switch: returns (rc, reply)."""
        state = self.mail_state
        if state == "start":
            cmd = self.command
            if cmd == b"HELO" or cmd == b"EHLO":
                return self._helo()
            if cmd == b"AUTH":
                return self._auth()
            if cmd == b"QUIT":
                self.quit = True
                return R_OK, BYE
            if cmd == b"MAIL":
                return self._mail()
            if cmd == b"RCPT":
                return self._rcpt()
            if cmd == b"RSET":
                self.smtp_from = self.smtp_to = b""
                return R_OK, OK
            if cmd == b"NOOP":
                return R_OK, OK
            if cmd == b"STARTTLS":
                return self._starttls_command()
            return R_INVALID, OK  # VRFY, EXPN, HELP: handler-level, not counted
        return self._sasl_step(self.args[0] if self.args else b"")

    def _helo(self) -> tuple[int, bytes]:
        if len(self.args) != 1:
            return R_OK, INVALID_ARGUMENT
        self.helo = self.args[0]
        self.smtp_from = self.smtp_to = b""
        if self.command == b"HELO":
            return R_OK, self._helo_reply  # a HELO after EHLO keeps the ESMTP flag, as nginx
        self.esmtp = True
        plain, on, only = self._ehlo
        if not self.tls and self.conf.ssl.starttls == "on":
            return R_OK, on
        if not self.tls and self.conf.ssl.starttls == "only":
            return R_OK, only
        return R_OK, plain

    def _auth(self) -> tuple[int, bytes]:
        """ngx_mail_smtp_auth + ngx_mail_auth_parse."""
        args = self.args
        if self._starttls_only():
            return R_INVALID, OK
        if not args:
            self.state = S_START
            return R_OK, INVALID_ARGUMENT
        return self._auth_parse(args, self.conf.smtp_auth)

    def _command_text(self) -> bytes:
        """From the verb to the end of the last argument, original case and spacing."""
        return bytes(self.buffer.data[self._cmd_start:self._arg_end])

    def _mail(self) -> tuple[int, bytes]:
        if "none" not in self.conf.smtp_auth:
            # nginx logs its whole buffer; the command line alone says the same without
            # risking earlier pipelined SASL lines in the log
            data = self.buffer.data
            line = bytes(data[self._cmd_start:self.buffer.pos])
            self._actions.append(Log("info", f'client was rejected: "{loggable(line)}"'))
            if self.log_info:
                # QUIRK: ngx_mail_smtp_log_rejected_command turns every CR and LF of the
                # buffer into '_' in place, so commands pipelined behind this MAIL lose
                # their line ends and wait for the client's next one
                data[:] = data.replace(b"\r", b"_").replace(b"\n", b"_")
            return R_OK, AUTH_REQUIRED
        if self.smtp_from:
            return R_OK, BAD_SEQUENCE
        if not self.args:
            return R_OK, INVALID_ARGUMENT
        self.smtp_from = self._command_text()
        # CVE-2025-53859: stale credentials never go out with Auth-Method: none
        self.creds.login, self.creds.password = b"", None
        return R_OK, OK

    def _rcpt(self) -> tuple[int, bytes]:
        if not self.smtp_from:
            return R_OK, BAD_SEQUENCE
        if not self.args:
            return R_OK, INVALID_ARGUMENT
        self.smtp_to = self._command_text()
        self.creds.method = "none"
        return R_DONE, OK

    def _starttls_command(self) -> tuple[int, bytes]:
        if self.tls or self.conf.ssl.starttls not in ("on", "only"):
            return R_INVALID, OK
        # RFC 3207: forget what the client said before; the ESMTP flag stays (nginx QUIRK)
        self.helo = self.smtp_from = self.smtp_to = b""
        self._starttls = True  # the buffer is discarded once the reply is queued
        return R_OK, START_TLS
