"""IMAP STARTTLS towards the backend (RFC 3501 §6.2.1): the greeting, `STARTTLS`, its tagged OK.

A greeting that lists its capabilities without STARTTLS is refused at once; untagged lines
before the tagged reply are skipped.
"""

from __future__ import annotations

from postern.proxy.backend_starttls import BackendStartTls, TlsNow

TAG = b"s1"


class ImapBackendStartTls(BackendStartTls):
    def reply_end(self, buf: bytes) -> int | None:
        if self.state == "start":
            return super().reply_end(buf)
        start = 0
        while (end := buf.find(b"\r\n", start)) >= 0:  # untagged lines, then the tagged one
            if buf.startswith(TAG + b" ", start):
                return end + 2
            start = end + 2
        return None

    def judge(self, reply: bytes):
        if self.state == "start":
            if not reply.startswith(b"* OK"):
                return self.invalid(reply)
            first = reply.split(b"\r\n", 1)[0]
            if b"[CAPABILITY " in first.upper() and b" STARTTLS" not in first.upper():
                return self.fail("upstream does not offer STARTTLS: "
                                 f'"{first.decode("latin-1")}"')
            return self.send(TAG + b" STARTTLS\r\n", "starttls")
        tagged = next(line for line in reply.split(b"\r\n") if line.startswith(TAG + b" "))
        if tagged[len(TAG) + 1:len(TAG) + 3].upper() != b"OK":
            return self.invalid(tagged)
        return TlsNow()
