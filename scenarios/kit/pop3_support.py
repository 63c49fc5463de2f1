"""What the POP3 scenarios share: nginx's reply lines, a greeted connection with or without
the APOP salt, USER/PASS, and the exact bytes the auth server and the upstream receive."""

from __future__ import annotations

import re

from postern.scenarios.kit.client import Client

PROTOCOL = "pop3"
GREETING = b"+OK POP3 ready\r\n"
OK = b"+OK\r\n"
INVALID = b"-ERR invalid command\r\n"
INTERNAL_ERROR = b"-ERR internal server error\r\n"
CAPA_HEAD = b"+OK Capability list follows\r\n"
CAPA = CAPA_HEAD + b"TOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\n.\r\n"
AUTH_LIST = b"+OK methods supported:\r\nPLAIN\r\nLOGIN\r\n.\r\n"
SALTED = "pop3_auth plain apop cram-md5;"
SALT = re.compile(rb"<(\d+)\.(\d+)@mx\.test>")


def pop3(lab, server: str = "", mail: str = ""):
    """The POP3 proxy with these directives (started once per text)."""
    return lab.proxy(server=server, mail=mail, protocol="pop3")


def greeted(lab, server: str = "", mail: str = "") -> Client:
    """A connection whose plain greeting (no salt configured) has been checked."""
    client = pop3(lab, server, mail).connect()
    client.expect(GREETING)
    return client


def greeted_with_salt(lab, server: str = SALTED, mail: str = "") -> tuple[Client, bytes]:
    """A connection to a proxy with apop or cram-md5 enabled: (client, the greeting's salt
    `<R.T@mx.test>`, without its CRLF)."""
    client = pop3(lab, server, mail).connect()
    line = client.readline()
    assert line.startswith(b"+OK POP3 ready <") and line.endswith(b">\r\n"), client.dump()
    salt = line[len(b"+OK POP3 ready "):-2]
    assert SALT.fullmatch(salt), salt
    return client, salt


def login(proxy, user: bytes = b"alice", password: bytes = b"secret") -> Client:
    """Connect, check the greeting, USER (answered +OK) and PASS; the reply to PASS is the
    scenario's business."""
    c = proxy.connect()
    c.expect(GREETING)
    c.send(b"USER " + user + b"\r\n").expect(OK)
    c.send(b"PASS " + password + b"\r\n")
    return c


def expect_internal_error(c: Client) -> None:
    c.expect(INTERNAL_ERROR).expect_closed()


def auth_request(user: bytes = b"alice", password: bytes = b"secret", method: bytes = b"plain",
                 attempt: int = 1, salt: bytes = b"", tail: bytes = b"") -> bytes:
    """The exact auth_http request for a POP3 login; user and password are given already
    %-escaped, the salt without its CRLF (nginx sends Auth-Pass before Auth-Salt)."""
    return (b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: " + method + b"\r\n"
            b"Auth-User: " + user + b"\r\nAuth-Pass: " + password + b"\r\n"
            + (b"Auth-Salt: " + salt + b"\r\n" if salt else b"")
            + b"Auth-Protocol: pop3\r\nAuth-Login-Attempt: %d\r\n" % attempt
            + b"Client-IP: 127.0.0.1\r\n" + tail + b"\r\n")


def logged_in(lab, user: str = "alice") -> bytes:
    """The fake upstream's answer to PASS, relayed to the client as the answer to its own
    PASS/APOP/AUTH."""
    box = lab.pop3.store.mailbox(user, "INBOX")
    return b"+OK Logged in (%d messages)\r\n" % (len(box.entries) if box else 0)


def backend_login(user: bytes = b"alice", password: bytes = b"secret") -> list[bytes]:
    """The lines the upstream receives when the proxy logs in."""
    return [b"USER " + user, b"PASS " + password]
