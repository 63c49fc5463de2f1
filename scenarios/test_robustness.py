"""What auth servers really send, on every target: replies that once stranded a session
(a Unicode digit as Auth-Port, an Auth-Wait past ngx_atoi's range) and a WAIT without
Auth-Wait, which nginx repeats for ever and Postern bounds (README: differences)."""

from __future__ import annotations

import time

import pytest
from postern.fakes.auth import Reply

GREETING = b"* OK IMAP4 ready\r\n"
INTERNAL_ERROR = b"* BAD internal server error\r\n"


def _login(proxy, tag: bytes = b"a1"):
    c = proxy.connect()
    c.expect(GREETING)
    c.send(tag + b" LOGIN alice secret\r\n")
    return c


def test_unicode_digit_as_auth_port_is_an_invalid_port(lab):
    """nginx: `Auth-Port: ²` (0xB2: str.isdigit() is true, int() fails) is not a number to
    ngx_atoi: the internal-error reply, nginx's log line, the connection closed."""
    proxy = lab.proxy()
    mark = len(proxy.error_log())
    lab.auth.push(Reply.verbatim(b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n"
                                 b"Auth-Server: 127.0.0.1\r\nAuth-Port: \xb2\r\n\r\n"))
    with _login(proxy) as c:
        c.expect(INTERNAL_ERROR).expect_closed()
    deadline = time.monotonic() + 3
    while "sent invalid server port" not in proxy.error_log()[mark:]:
        assert time.monotonic() < deadline, proxy.error_log()[mark:]
        time.sleep(0.05)


def test_auth_wait_past_the_integer_range_is_ignored(lab):
    """nginx: ngx_atoi() refuses a value past NGX_MAX_INT_T_VALUE: the Auth-Wait is ignored, so the
    failure is answered and the connection closed at once (no endless sleep)."""
    proxy = lab.proxy()
    lab.auth.push(Reply.fail("Go away", wait="99999999999999999999"))
    started = time.monotonic()
    with _login(proxy) as c:
        c.expect(b"a1 NO Go away\r\n", timeout=3).expect_closed(timeout=3)
    assert time.monotonic() - started < 3


def _postern_only(lab) -> None:
    if lab.target != "postern":
        pytest.skip("nginx repeats a WAIT without Auth-Wait for ever (README: differences)")


def test_wait_without_auth_wait_is_bounded(lab):
    """nginx: a WAIT without Auth-Wait is repeated at once for ever; Postern: a few repeats at once (as nginx), then one a second, and
    after `timeout` the internal-error reply and an error line naming the auth server."""
    _postern_only(lab)
    proxy = lab.proxy(server="timeout 2s;")
    lab.auth.push(*[Reply.retry() for _ in range(40)])
    mark = len(proxy.error_log())
    with _login(proxy) as c:
        c.expect(INTERNAL_ERROR, timeout=8).expect_closed()
    assert 10 <= len(lab.auth.requests) <= 16, len(lab.auth.requests)
    assert f"auth http server 127.0.0.1:{lab.auth.port} kept answering WAIT without " \
           "Auth-Wait" in proxy.error_log()[mark:]


def test_wait_repeats_stop_when_the_client_leaves(lab):
    """nginx: WAIT repeats go on after the client left; Postern: the client hangs up while WAIT repeats run: the repeats stop within a second."""
    _postern_only(lab)
    proxy = lab.proxy(server="timeout 60s;")
    lab.auth.push(*[Reply.retry() for _ in range(100)])
    c = _login(proxy)
    time.sleep(0.3)
    c.close()
    time.sleep(1.5)
    seen = len(lab.auth.requests)
    time.sleep(1.5)
    assert len(lab.auth.requests) == seen
    assert seen <= 14


def test_auth_wait_notices_the_client_leaving(lab):
    """nginx: a long Auth-Wait is slept out (nginx sleeps it out with the socket in CLOSE_WAIT): Postern polls
    for the hang-up and ends the session; a later reply is never asked for."""
    _postern_only(lab)
    proxy = lab.proxy()
    lab.auth.push(Reply.retry(wait=3600))
    c = _login(proxy)
    time.sleep(0.3)
    c.close()
    time.sleep(1.5)
    assert len(lab.auth.requests) == 1
    assert _close_wait(proxy.port) == 0


def _close_wait(port: int) -> int:
    """Connections to `port` the proxy has not closed after the client did."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "08" and int(local.rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def test_auth_server_with_a_scope_id_is_refused_at_once(lab):
    """nginx: ngx_inet6_addr() takes no scope id, so `Auth-Server: fe80::1%eth0` is an
    invalid server address: the internal-error reply at once, no connection attempt."""
    proxy = lab.proxy()
    mark = len(proxy.error_log())
    lab.auth.push(Reply.ok("fe80::1%eth0", lab.imap.port))
    started = time.monotonic()
    with _login(proxy) as c:
        c.expect(INTERNAL_ERROR, timeout=3).expect_closed(timeout=3)
    assert time.monotonic() - started < 2
    deadline = time.monotonic() + 3
    while 'sent invalid server address:"fe80::1%eth0"' not in proxy.error_log()[mark:]:
        assert time.monotonic() < deadline, proxy.error_log()[mark:]
        time.sleep(0.05)
