"""limit_conn, limit_req and limit_auth (Postern's own, README "Limits across workers").

Proxies with the same directives are shared between scenarios, and a zone keeps its counts
as long as its proxy runs: each scenario names zones of its own.
"""

from __future__ import annotations

import contextlib
import re
import time

import pytest
from postern.scenarios.kit.imap_support import GREETING, LOGGED_IN, greeted, login
from postern.scenarios.kit.support import LogWatch, wait_until

pytestmark = pytest.mark.postern_only("nginx's mail module has no limit_conn, limit_req or "
                                      "limit_auth")

LIMITED = b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
BLOCKED = b"NO Temporary authentication failure\r\n"


def _greeted_or_refused(proxy) -> bool:
    """Whether a new session gets its greeting (True) or the refusal (False)."""
    with proxy.connect() as c:
        line = c.readline()
        assert line in (GREETING, LIMITED), line
        return line == GREETING


def test_limit_conn_by_address(lab):
    """limit_conn: the sessions of one address beyond the number are refused with an
    untagged BYE and an nginx-style error-log line; a session that ends frees its place."""
    proxy = lab.proxy(mail="limit_conn_zone $binary_remote_addr zone=conn1:1m;",
                      server="limit_conn conn1 2;")
    log = LogWatch(proxy)
    first, second = greeted(lab, "limit_conn conn1 2;",
                            "limit_conn_zone $binary_remote_addr zone=conn1:1m;"), \
        proxy.connect().expect(GREETING)
    with first, second:
        with proxy.connect() as third:
            third.expect(LIMITED).expect_closed()
        line = log.line('limiting connections by zone "conn1"')
        assert "[error]" in line and "client: 127.0.0.1, server: " in line
    wait_until(lambda: _greeted_or_refused(proxy), what="a place freed by closed sessions")
    assert lab.auth.requests == []


def test_limit_conn_log_level(lab):
    """limit_conn_log_level: the refusal line's level."""
    proxy = lab.proxy(mail="limit_conn_zone $remote_addr zone=conn2:1m;",
                      server="limit_conn conn2 1; limit_conn_log_level info;")
    log = LogWatch(proxy)
    with proxy.connect() as held:
        held.expect(GREETING)
        with proxy.connect() as c:
            c.expect(LIMITED).expect_closed()
        assert "[info]" in log.line('limiting connections by zone "conn2"')


def test_limit_req_burst_nodelay(lab):
    """limit_req burst=1 nodelay: at 1r/m the first two sessions are greeted at once, the
    third is refused and logged with its excess, as nginx's limit_req logs it."""
    proxy = lab.proxy(mail="limit_req_zone $binary_remote_addr zone=req1:1m rate=1r/m;",
                      server="limit_req zone=req1 burst=1 nodelay;")
    log = LogWatch(proxy)
    for _ in range(2):
        with proxy.connect() as c:
            c.expect(GREETING)
    with proxy.connect() as c:
        c.expect(LIMITED).expect_closed()
    line = log.line('by zone "req1"')
    assert re.search(r'limiting requests, excess: 1\.9\d\d by zone "req1" while sending '
                     r"client greeting line, client: 127\.0\.0\.1, server: ", line), line


def test_limit_req_burst_delays_the_greeting(lab):
    """limit_req burst without nodelay: a session within the burst waits for its turn (its
    greeting comes 1/rate later per request of excess), logged one level below
    limit_req_log_level."""
    proxy = lab.proxy(mail="limit_req_zone $binary_remote_addr zone=req2:1m rate=4r/s;",
                      server="limit_req zone=req2 burst=2;")
    log = LogWatch(proxy)
    start = time.monotonic()
    with proxy.connect() as a, proxy.connect() as b, proxy.connect() as c:
        a.expect(GREETING)
        c.expect(GREETING)
        assert time.monotonic() - start >= 0.45  # excess 2 at 4r/s: half a second
        b.expect(GREETING)
        b.send(b"a1 NOOP\r\n").expect(b"a1 OK completed\r\n")
    line = log.line("delaying request, excess: 1.9")
    assert "[warn]" in line and 'by zone "req2"' in line


def test_limit_req_delayed_session_keeps_what_the_client_sent(lab):
    """limit_req delay: a command sent while the greeting waits is read after it, as any
    command sent before the greeting."""
    proxy = lab.proxy(mail="limit_req_zone $binary_remote_addr zone=req4:1m rate=5r/s;",
                      server="limit_req zone=req4 burst=1;")
    with proxy.connect() as a, proxy.connect() as b:
        a.expect(GREETING)
        b.send(b"a1 NOOP\r\n")
        b.expect(GREETING).expect(b"a1 OK completed\r\n")


def test_limit_req_by_login_delays_the_auth_request(lab):
    """limit_req keyed by $login: login attempts of one login within the burst wait before
    the auth server is asked; beyond it the session is refused."""
    proxy = lab.proxy(mail="limit_req_zone $login zone=req3:1m rate=1r/m;",
                      server="limit_req zone=req3 burst=1 delay=0;")
    log = LogWatch(proxy)
    with login(proxy, password=b"wrong") as c:
        c.expect(b"a1 NO Invalid login or password\r\n").expect_closed()
    with login(proxy, password=b"wrong") as c:
        log.wait_for('delaying request, excess: 0.9')
        assert len(lab.auth.requests) == 1  # asked only once the delay (~1 minute) is over
    with login(proxy) as c:
        c.expect(LIMITED).expect_closed()
    assert len(lab.auth.requests) == 1


def test_limit_auth_blocks_without_asking_the_auth_server(lab):
    """limit_auth: after `failures` failed logins in the window the address is blocked; a
    login then gets the protocol's failure reply without an auth request, and the dialogue
    goes on."""
    mail = "limit_auth_zone $binary_remote_addr zone=auth1:1m failures=2 block=1h;"
    proxy = lab.proxy(mail=mail, server="limit_auth zone=auth1;")
    log = LogWatch(proxy)
    for _ in range(2):
        with login(proxy, password=b"wrong") as c:
            c.expect(b"a1 NO Invalid login or password\r\n").expect_closed()
    assert len(lab.auth.requests) == 2
    assert "[error]" in log.line('limiting authentication by zone "auth1": 2 failures, '
                                 "blocked for 3600s")
    with login(proxy) as c:
        c.expect(b"a1 " + BLOCKED)
        c.send(b"a2 NOOP\r\n").expect(b"a2 OK completed\r\n")
    assert len(lab.auth.requests) == 2
    assert 'limiting authentication by zone "auth1", blocked for' in log.text()


def test_limit_auth_by_login_leaves_other_logins_alone(lab):
    """limit_auth keyed by $login: a blocked login does not block another one."""
    mail = "limit_auth_zone $login zone=auth2:1m failures=1 block=1h;"
    proxy = lab.proxy(mail=mail, server="limit_auth zone=auth2;")
    with login(proxy, user=b"mallory", password=b"wrong") as c:
        c.expect(b"a1 NO Invalid login or password\r\n").expect_closed()
    with login(proxy, user=b"mallory") as c:
        c.expect(b"a1 " + BLOCKED)
    assert len(lab.auth.requests) == 1
    lab.ok()
    with login(proxy) as c:
        c.expect(b"a1 " + LOGGED_IN)
    assert len(lab.auth.requests) == 2


def test_limit_conn_by_login(lab):
    """limit_conn keyed by $login counts sessions from the login on: a second session of
    the same login is refused with BYE (its auth server is not asked), and the place is
    free again once the first ends."""
    proxy = lab.proxy(mail="limit_conn_zone $login zone=conn3:1m;",
                      server="limit_conn conn3 1;")
    lab.ok()
    with login(proxy) as first:
        first.expect(b"a1 " + LOGGED_IN)
        with login(proxy) as second:
            second.expect(LIMITED).expect_closed()
        assert len(lab.auth.requests) == 1
    def _logs_in() -> bool:
        lab.ok()
        with login(proxy) as c, contextlib.suppress(AssertionError):
            return c.readline() == b"a1 " + LOGGED_IN
        return False

    wait_until(_logs_in, what="the login's place freed")
