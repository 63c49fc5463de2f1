"""Logging into the SMTP backend for the client (docs/behaviour.md §11.4), as ngx_mail_proxy_smtp_handler.

The state names are nginx's: each says what was just sent, and so which reply code it waits
for. Greeting, then our own HELO/EHLO, then XCLIENT (client address, login, host name) and the
client's own HELO/EHLO, then by mode: AUTH PLAIN (proxy_smtp_auth), the stored MAIL and RCPT
(smtp_auth none), or nothing. An authenticated client then gets `235 2.0.0 OK` from us (the
backend's last reply is dropped); a `none` client gets the backend's RCPT reply, whatever it is.
With proxy_smtp_auth, a client that logged in with XOAUTH2 or OAUTHBEARER is logged in with
the same mechanism and the token (an error challenge gets the dummy response).
"""

from __future__ import annotations

import base64

from postern.proxy import sasl
from postern.proxy.backend_login import (
    ACCEPT,
    AGAIN,
    REJECT,
    BackendLogin,
    LoggedIn,
    LoginFailed,
    Outcome,
)

AUTH_OK = b"235 2.0.0 OK\r\n"

# expected reply per state (what nginx just sent)
_EXPECT_220 = {"start"}
_EXPECT_250 = {"helo", "helo_xclient", "helo_from", "helo_auth", "from"}
_EXPECT_2X0 = {"xclient", "xclient_from", "xclient_helo", "xclient_auth"}  # 220 or 250

_XTEXT_SAFE = frozenset(range(0x21, 0x7F)) - {0x2B, 0x3D}


def xtext(value: bytes) -> bytes:
    """RFC 3461 xtext as nginx 1.29.2+ writes XCLIENT LOGIN=: controls, space, '+', '=' and
    bytes >= 0x7F become +XX (uppercase hex)."""
    return b"".join(bytes((b,)) if b in _XTEXT_SAFE else b"+%02X" % b for b in value)


class SmtpBackendLogin(BackendLogin):
    def __init__(self, *, server_name: str, client_ip: str, client_host: str, login: bytes,
                 password: bytes | None, helo: bytes, esmtp: bool, method_none: bool,
                 mail: bytes = b"", rcpt: bytes = b"", xclient: bool = True,
                 proxy_smtp_auth: bool = False, proxy_buffer: int = 4096,
                 pass_error_message: bool = False, mechanism: str | None = None) -> None:
        super().__init__(proxy_buffer, pass_error_message)
        self.server_name = server_name.encode()
        self.client_ip = client_ip
        self.client_host = client_host
        self.login = login
        self.password = password  # None: nginx's "no password" (EXTERNAL without Auth-Pass)
        self.helo = helo
        self.esmtp = esmtp
        self.method_none = method_none
        self.mail = mail
        self.rcpt = rcpt
        self.xclient = xclient
        self.proxy_smtp_auth = proxy_smtp_auth
        self.mechanism = mechanism  # "xoauth2" | "oauthbearer" | None: AUTH PLAIN
        self.state = "start"
        self.action = "reading response from upstream"

    def receive_data(self, data: bytes) -> Outcome:
        self.action = "reading response from upstream"
        return super().receive_data(data)

    def check(self, reply: bytes) -> tuple[int, int]:
        if reply[3] == 0x2D:  # '-': a multi-line reply; wait for its last line
            m = len(reply) - 7  # nginx scans back from last - len(CRLF "200" CRLF)
            while m > 0 and reply[m:m + 2] != b"\r\n":
                m -= 1
            if m <= 0 or reply[m + 5] == 0x2D:
                return AGAIN, 0
        code, state = reply[:3], self.state
        if state in _EXPECT_220:
            ok = code == b"220"
        elif state in _EXPECT_250:
            ok = code == b"250"
        elif state in _EXPECT_2X0:
            ok = code in (b"220", b"250")
        elif state == "auth_plain":
            # 334 after an OAuth response is an error challenge, answered in advance()
            ok = code == b"235" or (code == b"334" and self.mechanism is not None)
        elif state == "auth_error":
            ok = code == b"235"
        else:  # "to": the RCPT reply is relayed whatever it says
            ok = True
        return (ACCEPT if ok else REJECT), 0

    def _next(self, after_helo: str) -> str:
        """Where a HELO/EHLO or XCLIENT step leads: nginx's if-chain per mode."""
        if self.method_none:
            return after_helo + "_from"
        if self.proxy_smtp_auth:
            return after_helo + "_auth"
        return after_helo

    def advance(self) -> Outcome:
        state = self.state
        if state == "start":
            self.action = "sending HELO/EHLO to upstream"
            verb = b"EHLO" if self.esmtp or self.xclient else b"HELO"
            self.state = "helo_xclient" if self.xclient else self._next("helo")
            return self.send(b"%s %s\r\n" % (verb, self.server_name))
        if state == "helo_xclient":
            self.action = "sending XCLIENT to upstream"
            self.state = "xclient_helo" if self.helo else self._next("xclient")
            return self.send(self._xclient_line())
        if state == "xclient_helo":
            self.action = "sending client HELO/EHLO to upstream"
            self.state = self._next("helo")
            verb = b"EHLO" if self.esmtp else b"HELO"
            return self.send(b"%s %s\r\n" % (verb, self.helo))
        if state in ("helo_auth", "xclient_auth"):
            self.action = "sending AUTH to upstream"
            if self.password is None:
                return LoginFailed(None, "error", "no password available")
            self.state = "auth_plain"
            if self.mechanism:
                blob = sasl.OAUTH_RESPONSES[self.mechanism](self.login, self.password)
                return self.send(b"AUTH %s %s\r\n" % (self.mechanism.upper().encode(), blob))
            blob = base64.b64encode(b"\0" + self.login + b"\0" + self.password)
            return self.send(b"AUTH PLAIN " + blob + b"\r\n")
        if state == "auth_plain" and self.buf.startswith(b"334"):
            self.action = "sending dummy response to upstream"
            self.state = "auth_error"
            return self.send(sasl.OAUTH_DUMMY[self.mechanism] + b"\r\n")
        if state in ("helo_from", "xclient_from"):
            self.action = "sending MAIL FROM to upstream"
            self.state = "from"
            return self.send(self.mail + b"\r\n")
        if state == "from":
            self.action = "sending RCPT TO to upstream"
            self.state = "to"
            return self.send(self.rcpt + b"\r\n")
        # helo, xclient, auth_plain, auth_error, to: logged in
        rest = bytes(self.backlog)
        if self.method_none:
            return LoggedIn(bytes(self.buf) + rest)
        return LoggedIn(AUTH_OK + rest)

    def _xclient_line(self) -> bytes:
        addr = self.client_ip.encode()
        if b":" in addr:
            addr = b"IPV6:" + addr
        line = b"XCLIENT ADDR=" + addr
        if self.login and not self.proxy_smtp_auth:
            line += b" LOGIN=" + xtext(self.login)
        return line + b" NAME=" + self.client_host.encode() + b"\r\n"
