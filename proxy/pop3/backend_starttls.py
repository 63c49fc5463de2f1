"""POP3 STLS towards the backend (RFC 2595 §4): the greeting, `STLS`, its `+OK`."""

from __future__ import annotations

from postern.proxy.backend_starttls import BackendStartTls, TlsNow


class Pop3BackendStartTls(BackendStartTls):
    def judge(self, reply: bytes):
        if not reply.startswith(b"+OK"):
            return self.invalid(reply)
        if self.state == "start":
            return self.send(b"STLS\r\n", "starttls")
        return TlsNow()
