"""What the SMTP scenarios share: nginx's reply lines, SASL blobs, the expected auth request,
a fresh fake upstream per scenario, and a throwaway certificate for STARTTLS.

The fake upstream (lab.smtp, FakeSmtpServer) is shared by the whole run; the autouse
`fresh_smtp` fixture (active in every module that imports `fresh_smtp_fixture`) forgets what
earlier scenarios left in its records, so `lab.smtp.command_lines` and `lab.smtp.xclients` are
this scenario's own.
"""

from __future__ import annotations

import base64

import pytest
from postern.scenarios.kit.client import Client
from postern.scenarios.kit.tls_support import throwaway_certificate

GREETING = b"220 mx.test ESMTP ready\r\n"
HELO_REPLY = b"250 mx.test\r\n"
EHLO_DEFAULT = b"250-mx.test\r\n250 AUTH PLAIN LOGIN\r\n"
OK = b"250 2.0.0 OK\r\n"
BYE = b"221 2.0.0 Bye\r\n"
AUTH_OK = b"235 2.0.0 OK\r\n"
START_TLS = b"220 2.0.0 Start TLS\r\n"
NEXT = b"334 \r\n"
USERNAME = b"334 VXNlcm5hbWU6\r\n"
PASSWORD = b"334 UGFzc3dvcmQ6\r\n"
INVALID = b"500 5.5.1 Invalid command\r\n"
INVALID_ARGUMENT = b"501 5.5.4 Invalid argument\r\n"
AUTH_REQUIRED = b"530 5.7.1 Authentication required\r\n"
BAD_SEQUENCE = b"503 5.5.1 Bad sequence of commands\r\n"
PIPELINING = b"503 5.5.0 Improper use of SMTP command pipelining\r\n"
INTERNAL_ERROR = b"451 4.3.2 Internal server error\r\n"

# the fake upstream's own replies (aiosmtpd), relayed once logged in
UPSTREAM_OK = b"250 OK\r\n"
UPSTREAM_BYE = b"221 Bye\r\n"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def plain(login: bytes = b"alice", password: bytes = b"secret", authzid: bytes = b"") -> bytes:
    """An RFC 4616 PLAIN message, base64-encoded."""
    return b64(authzid + b"\0" + login + b"\0" + password)


def greet(proxy, timeout: float = 5.0) -> Client:
    """A connection that has read the greeting."""
    c = proxy.connect(timeout=timeout)
    c.expect(GREETING)
    return c


def ehlo(c: Client, name: bytes = b"client.example", reply: bytes = EHLO_DEFAULT) -> Client:
    return c.send(b"EHLO " + name + b"\r\n").expect(reply)


def read_reply(c: Client) -> bytes:
    """One whole SMTP reply (all continuation lines)."""
    out = b""
    while True:
        line = c.readline()
        out += line
        if len(line) < 4 or line[3:4] != b"-":
            return out


def smtp_request(method: bytes = b"plain", user: bytes = b"alice", password: bytes = b"secret",
                 attempt: int = 1, host: bytes = b"[UNAVAILABLE]", salt: bytes = b"",
                 tail: bytes = b"") -> bytes:
    """The auth_http request nginx sends for an SMTP client on 127.0.0.1 (docs/behaviour.md §10.1)."""
    return (b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: " + method + b"\r\n"
            b"Auth-User: " + user + b"\r\nAuth-Pass: " + password + b"\r\n" + salt +
            b"Auth-Protocol: smtp\r\nAuth-Login-Attempt: %d\r\n" % attempt +
            b"Client-IP: 127.0.0.1\r\nClient-Host: " + host + b"\r\n" + tail + b"\r\n")


def none_request(helo: bytes, mail: bytes, rcpt: bytes, attempt: int = 1,
                 host: bytes = b"[UNAVAILABLE]", tail: bytes = b"") -> bytes:
    """The request of an unauthenticated (`smtp_auth none`) sender (docs/behaviour.md §10.1, §18)."""
    return smtp_request(b"none", b"", b"", attempt, host, tail=b"Auth-SMTP-Helo: " + helo +
                        b"\r\nAuth-SMTP-From: " + mail + b"\r\nAuth-SMTP-To: " + rcpt +
                        b"\r\n" + tail)


def upstream_lines(lab, n: int, timeout: float = 5.0) -> list[bytes]:
    """The first `n` lines the fake upstream received (waiting for them), without CRLF."""
    lab.smtp.wait_commands(n, timeout)
    return lab.smtp.command_lines


def upstream_bytes(lab, conn_index: int = 0) -> bytes:
    """Every byte the fake upstream received on one of this scenario's connections."""
    conn = lab.smtp.connections[conn_index]
    return b"".join(data for who, data in conn.transcript if who == "C")


@pytest.fixture(autouse=True, name="fresh_smtp")
def fresh_smtp_fixture(lab):
    """Forget the fake upstream's records of earlier scenarios (lab resets only some)."""
    lab.smtp.clear()
    yield


# -- TLS ----------------------------------------------------------------------------------

@pytest.fixture(scope="session", name="tls_directives")
def tls_directives_fixture(tmp_path_factory) -> str:
    """`ssl_certificate ...; ssl_certificate_key ...;` for a throwaway certificate (both targets
    read the same files)."""
    cert, key = throwaway_certificate(tmp_path_factory, "smtp-tls")
    return f"ssl_certificate {cert};\nssl_certificate_key {key};"

