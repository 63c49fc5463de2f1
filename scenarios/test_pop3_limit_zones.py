"""limit_conn and limit_auth for POP3 (Postern's own, README "Limits across workers")."""

from __future__ import annotations

import pytest
from postern.scenarios.kit.pop3_support import GREETING, pop3

pytestmark = pytest.mark.postern_only("nginx's mail module has no limit_conn or limit_auth")


def test_limit_conn_refuses_with_err(lab):
    """limit_conn: POP3's refusal is an -ERR with RFC 3206's SYS/TEMP code, then close."""
    proxy = pop3(lab, "limit_conn pconn 1;", "limit_conn_zone $binary_remote_addr zone=pconn:1m;")
    with proxy.connect() as held:
        held.expect(GREETING)
        with proxy.connect() as c:
            c.expect(b"-ERR [SYS/TEMP] Too many connections, try again later\r\n")
            c.expect_closed()


def test_limit_auth_blocked_login(lab):
    """limit_auth: a blocked address's USER/PASS gets POP3's failure line without an auth
    request; the dialogue goes on."""
    proxy = pop3(lab, "limit_auth zone=pauth;",
                 "limit_auth_zone $remote_addr zone=pauth:1m failures=1 block=1h;")
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b"USER alice\r\n").expect(b"+OK\r\n")
        c.send(b"PASS wrong\r\n").expect(b"-ERR Invalid login or password\r\n").expect_closed()
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b"USER alice\r\n").expect(b"+OK\r\n")
        c.send(b"PASS secret\r\n").expect(b"-ERR Temporary authentication failure\r\n")
        c.send(b"NOOP\r\n").expect(b"+OK\r\n")
    assert len(lab.auth.requests) == 1
