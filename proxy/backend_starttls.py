"""STARTTLS towards the backend (`proxy_ssl starttls`), sans-IO: what the protocols share.

Each protocol's steps (proxy/<protocol>/backend_starttls.py) read whole replies and say what
to send next, until the backend agrees to start TLS (TlsNow). nginx has no such step; the
rules are RFC 3501 §6.2.1, RFC 2595 §4 and RFC 3207. A backend that refuses, or that does not
offer STARTTLS, ends the session with the internal-error line (never a fallback to
plaintext), and so does a backend that sends anything after its go-ahead: those bytes were
never protected and must not reach the login (the STARTTLS injection of CVE-2011-0411).
"""

from __future__ import annotations

from dataclasses import dataclass

from postern.proxy.backend_login import LoginFailed, Outcome, SendToBackend

READING = "reading response from upstream"
SENDING = "sending STARTTLS to upstream"


@dataclass(frozen=True)
class TlsNow:
    """The backend said go ahead: the TLS handshake starts."""


class BackendStartTls:
    """The buffer and the outcomes; a subclass's judge(reply) answers one whole reply."""

    action = READING

    def __init__(self, proxy_buffer: int) -> None:
        self.size = proxy_buffer
        self.buf = bytearray()
        self.state = "start"

    def start(self) -> Outcome:
        return None  # the backend speaks first

    def receive_data(self, data: bytes) -> Outcome | TlsNow:
        self.buf += data
        buf = bytes(self.buf)
        end = self.reply_end(buf)
        if end is None:
            if len(buf) >= self.size:
                shown = buf[:self.size - 1].decode("latin-1")
                return self.fail(f'upstream sent too long response line: "{shown}"')
            return None
        outcome = self.judge(buf[:end])
        if isinstance(outcome, TlsNow) and end < len(buf):
            return self.fail("upstream sent data after its STARTTLS reply")
        self.buf.clear()
        return outcome

    def reply_end(self, buf: bytes) -> int | None:
        """Where the awaited reply ends in `buf` (None: not all there yet): one line here."""
        end = buf.find(b"\r\n")
        return None if end < 0 else end + 2

    def send(self, line: bytes, state: str) -> SendToBackend:
        self.state = state
        verb = line.split(b" ", 1)[0].strip().decode("latin-1")
        self.action = SENDING if state == "starttls" else f"sending {verb} to upstream"
        return SendToBackend(line)

    @staticmethod
    def fail(message: str) -> LoginFailed:
        return LoginFailed(None, "error", message)

    def invalid(self, reply: bytes) -> LoginFailed:
        line = reply.split(b"\r\n", 1)[0].decode("latin-1")
        if self.state == "starttls":
            return self.fail(f'upstream refused STARTTLS: "{line}"')
        return self.fail(f'upstream sent invalid response: "{line}"')

    def judge(self, reply: bytes) -> Outcome | TlsNow:
        raise NotImplementedError
