"""limit_conn and limit_auth for SMTP (Postern's own, README "Limits across workers")."""

from __future__ import annotations

import pytest
from postern.scenarios.kit.smtp_support import GREETING, ehlo, plain

pytestmark = pytest.mark.postern_only("nginx's mail module has no limit_conn or limit_auth")


def test_limit_conn_refuses_with_421(lab):
    """limit_conn: SMTP's refusal is 421 with RFC 3463's 4.7.0, instead of the greeting."""
    proxy = lab.proxy(server="limit_conn sconn 1;", protocol="smtp",
                      mail="limit_conn_zone $binary_remote_addr zone=sconn:1m;")
    with proxy.connect() as held:
        held.expect(GREETING)
        with proxy.connect() as c:
            c.expect(b"421 4.7.0 Too many connections, try again later\r\n").expect_closed()


def test_limit_auth_blocked_login(lab):
    """limit_auth: a blocked address's AUTH gets RFC 4954's temporary failure (454 4.7.0)
    without an auth request; the dialogue goes on."""
    proxy = lab.proxy(server="limit_auth zone=sauth;", protocol="smtp",
                      mail="limit_auth_zone $binary_remote_addr zone=sauth:1m failures=1 "
                           "block=1h;")
    with proxy.connect() as c:
        c.expect(GREETING)
        ehlo(c)
        c.send(b"AUTH PLAIN " + plain(password=b"wrong") + b"\r\n")
        c.expect(b"535 5.7.0 Invalid login or password\r\n").expect_closed()
    with proxy.connect() as c:
        c.expect(GREETING)
        ehlo(c)
        c.send(b"AUTH PLAIN " + plain() + b"\r\n")
        c.expect(b"454 4.7.0 Temporary authentication failure\r\n")
        c.send(b"NOOP\r\n").expect(b"250 2.0.0 OK\r\n")
    assert len(lab.auth.requests) == 1
