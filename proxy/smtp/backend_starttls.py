"""SMTP STARTTLS towards the backend (RFC 3207): the greeting, EHLO, `STARTTLS`, its 220.

The EHLO reply must list STARTTLS; after the handshake the login starts again with its own
EHLO/HELO (RFC 3207 §4.2: the client forgets what it knew).
"""

from __future__ import annotations

from postern.proxy.backend_starttls import BackendStartTls, TlsNow


class SmtpBackendStartTls(BackendStartTls):
    def __init__(self, proxy_buffer: int, server_name: str) -> None:
        super().__init__(proxy_buffer)
        self.server_name = server_name.encode()

    def reply_end(self, buf: bytes) -> int | None:
        start = 0
        while (end := buf.find(b"\r\n", start)) >= 0:
            if buf[start + 3:start + 4] != b"-":  # a multi-line reply ends with "<code> "
                return end + 2
            start = end + 2
        return None

    def judge(self, reply: bytes):
        code = reply[:3]
        if self.state == "start":
            if code != b"220":
                return self.invalid(reply)
            return self.send(b"EHLO " + self.server_name + b"\r\n", "ehlo")
        if self.state == "ehlo":
            if code != b"250":
                return self.invalid(reply)
            keywords = {line[4:].split(b" ", 1)[0].upper() for line in reply.split(b"\r\n")}
            if b"STARTTLS" not in keywords:
                return self.fail("upstream does not offer STARTTLS")
            return self.send(b"STARTTLS\r\n", "starttls")
        if code != b"220":
            return self.invalid(reply)
        return TlsNow()
