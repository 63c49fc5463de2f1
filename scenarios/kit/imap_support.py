"""What the IMAP scenarios share: nginx's reply lines, a greeted connection, LOGIN, and the
exact bytes the auth server and the upstream receive for a login."""

from __future__ import annotations

from postern.scenarios.kit.client import Client

PROTOCOL = "imap"
GREETING = b"* OK IMAP4 ready\r\n"
CAPS = b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS"
INVALID = b"BAD invalid command\r\n"
INTERNAL_ERROR = b"* BAD internal server error\r\n"
LOGGED_IN = b"OK Logged in\r\n"  # the fake upstream's tagged LOGIN reply, relayed as is


def greeted(lab, server: str = "", mail: str = "") -> Client:
    """A connection to a proxy with these directives, its greeting already checked."""
    client = lab.proxy(server=server, mail=mail).connect()
    client.expect(GREETING)
    return client


def login(proxy, user: bytes = b"alice", password: bytes = b"secret", tag: bytes = b"a1",
          extra: bytes = b"") -> Client:
    """Connect, read the greeting and send LOGIN (and `extra` in the same write); the reply
    is the scenario's business."""
    c = proxy.connect()
    c.expect(GREETING)
    c.send(tag + b" LOGIN " + user + b" " + password + b"\r\n" + extra)
    return c


def expect_internal_error(c: Client) -> None:
    c.expect(INTERNAL_ERROR).expect_closed()


def auth_request(user: bytes = b"alice", password: bytes = b"secret", method: bytes = b"plain",
                 attempt: int = 1, salt: bytes = b"", ip: bytes = b"127.0.0.1",
                 tail: bytes = b"") -> bytes:
    """The exact auth_http request nginx sends for an IMAP login; user and password are
    given already %-escaped, a salt with its CRLF, `tail` is extra header lines."""
    return (b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: " + method + b"\r\n"
            b"Auth-User: " + user + b"\r\nAuth-Pass: " + password + b"\r\n"
            + (b"Auth-Salt: " + salt if salt else b"")
            + b"Auth-Protocol: imap\r\nAuth-Login-Attempt: %d\r\n" % attempt
            + b"Client-IP: " + ip + b"\r\n" + tail + b"\r\n")


def backend_login(tag: bytes, user: bytes, password: bytes) -> bytes:
    """What the upstream receives when the proxy logs in for the client: the client's tag
    and synchronising literals, recorded by the fake as one command."""
    return (tag + b" LOGIN {%d}\r\n" % len(user) + user + b" {%d}\r\n" % len(password)
            + password)


def read_tagged(client: Client, tag: bytes) -> bytes:
    """Lines up to and including the one tagged `tag` (after login, in relay)."""
    out = b""
    while True:
        line = client.readline()
        out += line
        if line.startswith(tag + b" "):
            return out
