"""IMAP through every auth_http outcome (docs/behaviour.md §10), on every target, exact bytes.

Each scenario scripts the mock auth server's next reply (lab.auth.push) and checks what the
IMAP client sees, what the auth server was asked and, where nginx words it, the error log.
"""

from __future__ import annotations

import base64
import socket
import time

import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit import imap_support, login_support
from postern.scenarios.kit.client import Client
from postern.scenarios.kit.imap_support import (
    GREETING,
    auth_request,
    expect_internal_error,
    login,
)
from postern.scenarios.kit.real.common import free_port
from postern.scenarios.kit.support import LogWatch, OneShotAuth, auth_peer, upstream_bytes

LOGGED_IN = b"a1 OK Logged in\r\n"  # the fake upstream's tagged LOGIN reply, relayed
SECRET_PASSWORD = b"Never-In-Log-7f3a"


# -- success ------------------------------------------------------------------------------

def test_auth_ok_logs_in_with_the_upstream_reply(lab):
    """§10.4 success: Auth-Status OK + server/port → backend login; the client gets the
    backend's tagged OK for its own tag."""
    proxy = lab.proxy()
    lab.ok()
    with login(proxy) as c:
        c.expect(LOGGED_IN)
        c.send(b"a2 NOOP\r\n").expect(b"a2 OK NOOP completed\r\n")
    assert [r.raw for r in lab.auth.requests] == [auth_request(b"alice", b"secret")]


def test_http_status_code_is_ignored(lab):
    """§10.3 (QUIRK 10): the status line is skipped unread, so a 500 with Auth-Status OK is
    a success."""
    proxy = lab.proxy()
    lab.ok(http_status="HTTP/1.0 500 Internal Server Error")
    with login(proxy) as c:
        c.expect(LOGGED_IN)


def test_reply_without_status_line_is_parsed_as_headers(lab):
    """§10.3: a reply that does not start with "HTTP/" is read as headers from byte 0."""
    proxy = lab.proxy()
    lab.ok(http_status=None)
    with login(proxy) as c:
        c.expect(LOGGED_IN)


def test_missing_auth_status_with_server_and_port_is_success(lab):
    """§10.4 note [verified]: Auth-Status is not required; server + port alone log in."""
    proxy = lab.proxy()
    lab.auth.push(Reply(server="127.0.0.1", port=lab.imap.port))
    with login(proxy) as c:
        c.expect(LOGGED_IN)


def test_trickled_reply_still_works(lab):
    """§10.3: the reply is parsed incrementally; one byte per packet is fine."""
    proxy = lab.proxy()
    lab.ok(trickle=0.002)
    with login(proxy) as c:
        c.expect(LOGGED_IN, timeout=10)


def test_auth_user_and_pass_replace_the_backend_credentials(lab):
    """§10.3 Auth-User/Auth-Pass: the backend LOGIN carries the auth server's login and
    password, not the client's (§11.3 literals show them byte for byte)."""
    proxy = lab.proxy()
    lab.auth.push(Reply.ok("127.0.0.1", lab.imap.port, user="bob", password="hunter2"))
    conn = len(lab.imap.connections)
    with login(proxy, b"alice", b"whatever") as c:
        c.expect(LOGGED_IN)
    assert upstream_bytes(lab.imap, conn) == b"a1 LOGIN {3}\r\nbob {7}\r\nhunter2\r\n"


# -- failure --------------------------------------------------------------------------------

def test_failure_without_wait_answers_and_closes(lab):
    """§10.4.1: a failure status without Auth-Wait → `<tag> NO <text>`, then close."""
    proxy = lab.proxy()
    log = LogWatch(proxy)
    with login(proxy, password=b"wrong") as c:
        c.expect(b"a1 NO Invalid login or password\r\n").expect_closed()
    line = log.line('client login failed: "Invalid login or password" while in http auth '
                    f'state, client: 127.0.0.1, server: 127.0.0.1:{proxy.port}, login: "alice"')
    assert "[info]" in line, line
    assert len(lab.auth.requests) == 1


def test_failure_with_auth_wait_zero_closes(lab):
    """§16 QUIRK 12: `Auth-Wait: 0` on a failure is the same as none: answer and close."""
    proxy = lab.proxy()
    lab.auth.push(Reply.fail("Go away", wait=0))
    with login(proxy) as c:
        c.expect(b"a1 NO Go away\r\n").expect_closed()


def test_failure_with_wait_keeps_the_session(lab):
    """§10.4.1 [verified]: with `Auth-Wait: 1` the NO comes after ~1 s, a pipelined command
    is then answered, the session continues and the next attempt says Auth-Login-Attempt 2."""
    proxy = lab.proxy()
    lab.auth.push(Reply.fail("Try again", wait=1))
    with proxy.connect() as c:
        c.expect(GREETING)
        start = time.monotonic()
        c.send(b"a1 LOGIN alice wrong\r\na2 NOOP\r\n")
        c.expect(b"a1 NO Try again\r\n")
        waited = time.monotonic() - start
        c.expect(b"a2 OK completed\r\n")
        assert 0.8 <= waited <= 4.0, waited
        c.send(b"a3 LOGIN alice secret\r\n").expect(b"a3 OK Logged in\r\n")
    assert [r.raw for r in lab.auth.requests] == [
        auth_request(b"alice", b"wrong", attempt=1), auth_request(b"alice", b"secret", attempt=2)]


def test_empty_auth_status_is_a_failure_for_imap(lab):
    """§10.4 QUIRK: an empty Auth-Status is a failure with empty text for IMAP (SMTP differs):
    `a1 NO ` CRLF, then close."""
    proxy = lab.proxy()
    lab.auth.push(Reply(status="", server="127.0.0.1", port=lab.imap.port))
    with login(proxy) as c:
        c.expect(b"a1 NO \r\n").expect_closed()


def test_failure_then_ok_header_stays_a_failure(lab):
    """§10.3: the last occurrence wins per field, and a later `Auth-Status: OK` does not
    clear an earlier error."""
    proxy = lab.proxy()
    lab.auth.push(Reply(status="Denied", server="127.0.0.1", port=lab.imap.port,
                        headers=["Auth-Status: OK"]))
    with login(proxy) as c:
        c.expect(b"a1 NO Denied\r\n").expect_closed()


# -- WAIT -----------------------------------------------------------------------------------

def test_wait_repeats_the_same_request_after_the_delay(lab):
    """§10.4.2: `Auth-Status: WAIT` + `Auth-Wait: 1` → the same request (same attempt
    number) again after ~1 s, then the login proceeds."""
    proxy = lab.proxy()
    lab.auth.push(Reply.retry(wait=1))
    with login(proxy) as c:
        c.expect(LOGGED_IN, timeout=6)
    first, second = lab.auth.requests
    assert first.raw == second.raw == auth_request(b"alice", b"secret")
    assert 0.8 <= second.received_at - first.received_at <= 4.0


def test_zero_delay_wait_is_sticky(lab):
    """§10.4.2 QUIRK 11 [verified]: after a zero-delay WAIT every reply counts as WAIT until
    one carries a non-zero Auth-Wait: WAIT, OK, OK, OK, OK+Auth-Wait 1, OK → six requests."""
    proxy = lab.proxy()
    ok = Reply.ok("127.0.0.1", lab.imap.port)
    lab.auth.push(Reply.retry(), ok, ok, ok, Reply.ok("127.0.0.1", lab.imap.port, wait=1), ok)
    with login(proxy) as c:
        c.expect(LOGGED_IN, timeout=6)
    assert len(lab.auth.requests) == 6
    assert {r.raw for r in lab.auth.requests} == {auth_request(b"alice", b"secret")}


def test_failure_during_sticky_wait_repeats_the_request(lab):
    """§10.4.2 QUIRK 11: while the zero-delay WAIT sticks, a failure with Auth-Wait 1 is
    not reported: nginx sleeps 1 s, clears the flag and asks again (same attempt)."""
    proxy = lab.proxy()
    lab.auth.push(Reply.retry(), Reply.fail("Not yet", wait=1))
    with login(proxy) as c:
        c.expect(LOGGED_IN, timeout=6)
    first, second, third = lab.auth.requests
    assert first.raw == second.raw == third.raw == auth_request(b"alice", b"secret")
    assert 0.8 <= third.received_at - second.received_at <= 4.0


# -- malformed or missing replies: internal error ---------------------------------------------

def test_invalid_header_name_is_an_internal_error(lab):
    """§10.3 + §18 [verified]: `Auth_Status` (underscore) → "sent invalid header in
    response" → `* BAD internal server error`, close."""
    reply = Reply(headers=["Auth_Status: OK"], server="127.0.0.1", port=lab.imap.port)
    line = login_support.auth_reply_is_an_internal_error(
        lab, imap_support, reply, "auth http server {auth} sent invalid header in response while in "
        "http auth state, client: 127.0.0.1")
    assert "[error]" in line, line


def test_header_block_over_1024_bytes_is_an_internal_error(lab):
    """§10.3 (QUIRK 13): the whole header block must fit nginx's 1024-byte buffer; the next
    read after the buffer is full (0 bytes) counts as EOF → internal error.

    The auth server keeps the connection open a moment after its reply: nginx notices the
    overflow only on a later read event, so when the reply and the close are both already
    queued at its last read, nginx 1.22 waits for auth_http_timeout (seen in its debug log)."""
    reply = Reply.ok("127.0.0.1", lab.imap.port, oversize=1100).render()
    auth = OneShotAuth(reply, linger=0.3)
    proxy = lab.proxy(server=f"auth_http 127.0.0.1:{auth.port}/auth;")
    with login(proxy) as c:
        expect_internal_error(c)
    assert auth.request == auth_request(b"alice", b"secret")


def test_header_block_just_under_1024_bytes_works(lab):
    """§10.3: the limit is the buffer, so a 1000-byte header block still logs in."""
    proxy = lab.proxy()
    lab.ok(oversize=1000)
    with login(proxy) as c:
        c.expect(LOGGED_IN)


def test_auth_http_timeout_is_an_internal_error(lab):
    """§10.6: the reply must arrive within auth_http_timeout (1 s here; it comes after 3 s)."""
    line = login_support.auth_timeout_is_an_internal_error(lab, imap_support)
    assert "[error]" in line, line


def test_auth_server_down_is_an_internal_error(lab):
    """§10.6: connecting to the auth server fails (nothing listens) → internal error."""
    login_support.auth_reply_is_an_internal_error(
        lab, imap_support, None, "recv() failed (111: Connection refused) while in http auth state, "
        'client: 127.0.0.1, server: 127.0.0.1:{proxy.port}, login: "alice"',
        server=f"auth_http 127.0.0.1:{free_port()}/auth;")


def test_auth_server_closing_without_reply_is_an_internal_error(lab):
    """§10.6 + §18 [verified]: premature EOF from the auth server → internal error; nginx
    logs no error line for it."""
    proxy = lab.proxy()
    log = LogWatch(proxy)
    lab.auth.push(Reply.hang_up())
    with login(proxy) as c:
        expect_internal_error(c)
    time.sleep(0.2)
    assert "[error]" not in log.wait_for("connected to"), log.text()


def test_truncated_reply_is_an_internal_error(lab):
    """§10.6: EOF inside the header block (no empty line yet) → internal error.

    The close comes a moment after the data: nginx 1.22 (epoll) misses an EOF that is
    already queued behind the last bytes it reads and then waits for auth_http_timeout."""
    reply = Reply.ok("127.0.0.1", lab.imap.port).render()[:30]
    auth = OneShotAuth(reply, linger=0.3)
    proxy = lab.proxy(server=f"auth_http 127.0.0.1:{auth.port}/auth;")
    with login(proxy) as c:
        expect_internal_error(c)


def test_auth_server_hostname_is_an_internal_error(lab):
    """§10.3 + §18 [verified] (QUIRK 16): Auth-Server must be a literal IP; a host name is
    "sent invalid server address" → internal error."""
    login_support.auth_reply_is_an_internal_error(
        lab, imap_support, Reply.ok("localhost", lab.imap.port),
        'auth http server {auth} sent invalid server address:"localhost"')


@pytest.mark.parametrize("port", ["0", "65536", "14x3"])
def test_bad_auth_port_is_an_internal_error(lab, port):
    """§10.3: Auth-Port must be decimal 1-65535, else "sent invalid server port"."""
    login_support.auth_reply_is_an_internal_error(
        lab, imap_support, Reply.ok("127.0.0.1", port),
        f'auth http server {{auth}} sent invalid server port:"{port}"')


def test_ok_without_server_is_an_internal_error(lab):
    """§10.4.3: success needs Auth-Server and Auth-Port ("did not send server or port")."""
    login_support.auth_reply_is_an_internal_error(
        lab, imap_support, Reply(status="OK", port=lab.imap.port),
        "auth http server {auth} did not send server or port")


def test_cram_md5_success_without_auth_pass_is_an_internal_error(lab):
    """§10.4.3: after the salt is sent nginx has no password; a CRAM-MD5 success without
    Auth-Pass is "did not send password" → internal error."""
    proxy = lab.proxy(server="imap_auth plain cram-md5;")
    log = LogWatch(proxy)
    lab.auth.push(Reply.ok("127.0.0.1", lab.imap.port))
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b"a1 AUTHENTICATE CRAM-MD5\r\n")
        challenge = c.readline()
        assert challenge.startswith(b"+ ") and challenge.endswith(b"\r\n"), challenge
        salt = base64.b64decode(challenge[2:-2])
        assert salt.startswith(b"<") and salt.endswith(b"@mx.test>"), salt
        c.send(base64.b64encode(b"alice " + b"0" * 32) + b"\r\n")
        expect_internal_error(c)
    req = lab.auth.requests[0]
    assert req.header("Auth-Method") == "cram-md5"
    assert req.header("Auth-Salt") == salt.decode()
    log.wait_for(f"auth http server {auth_peer(lab)} did not send password")


def test_external_success_without_auth_pass_is_an_internal_error(lab):
    """§10.4.3 + §7.6 QUIRK: `AUTHENTICATE EXTERNAL <ir>` is accepted with external not
    enabled, sends an empty Auth-Pass, and a success without Auth-Pass is an internal error."""
    proxy = lab.proxy()
    lab.auth.push(Reply.ok("127.0.0.1", lab.imap.port))
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b"a1 AUTHENTICATE EXTERNAL " + base64.b64encode(b"alice") + b"\r\n")
        expect_internal_error(c)
    req = lab.auth.requests[0]
    assert (req.header("Auth-Method"), req.header("Auth-User"), req.header("Auth-Pass")) == \
        ("external", "alice", "")


def test_external_success_with_auth_pass_logs_in(lab):
    """§10.4.3: with Auth-Pass the EXTERNAL login proceeds using that password."""
    proxy = lab.proxy()
    lab.ok(password="secret")
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b"a1 AUTHENTICATE EXTERNAL " + base64.b64encode(b"alice") + b"\r\n")
        c.expect(LOGGED_IN)


# -- the request ----------------------------------------------------------------------------

def test_auth_http_headers_come_last_in_order(lab):
    """§2.2 + §10.1: every auth_http_header line is appended verbatim after the built-in
    headers, in configuration order."""
    proxy = lab.proxy(server='auth_http_header X-Auth-Key "s3cr3t value";\n'
                             "auth_http_header X-Second two;")
    lab.ok()
    with login(proxy) as c:
        c.expect(LOGGED_IN)
    assert lab.auth.requests[0].raw == auth_request(
        b"alice", b"secret", tail=b"X-Auth-Key: s3cr3t value\r\nX-Second: two\r\n")


def test_quoted_strings_are_unescaped_then_percent_escaped(lab):
    """§10.2 + §18 capture [verified]: `"us er%\\"x" "p\\\\w"` → Auth-User us%20er%25"x,
    Auth-Pass p\\w (only controls, space and % are escaped)."""
    proxy = lab.proxy()
    lab.auth.push(Reply.fail("No"))
    with login(proxy, b'"us er%\\"x"', b'"p\\\\w"') as c:
        c.expect(b"a1 NO No\r\n").expect_closed()
    assert lab.auth.requests[0].raw == auth_request(b'us%20er%25"x', b"p\\w")


def test_literal_credentials_escape_controls_only(lab):
    """§10.2: a login literal with CR, LF, TAB, space and % is %XX-escaped (uppercase hex);
    `+`, `"`, DEL and bytes >= 0x80 are sent as they are."""
    proxy = lab.proxy()
    lab.auth.push(Reply.fail("No"))
    user = b"a b\r\n%c\t"
    password = b'+"\x7f\xc3\xa9'
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b"a1 LOGIN {%d}\r\n" % len(user)).expect(b"+ OK\r\n")
        c.send(user + b" {%d}\r\n" % len(password)).expect(b"+ OK\r\n")
        c.send(password + b"\r\n")
        c.expect(b"a1 NO No\r\n").expect_closed()
    assert lab.auth.requests[0].raw == auth_request(b"a%20b%0D%0A%25c%09", password)


def test_client_ip_is_the_peer_address(lab):
    """§10.1 Client-IP: the client's address without port (a client bound to 127.0.0.2)."""
    proxy = lab.proxy()
    lab.ok()
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))
    sock.settimeout(5)
    sock.connect((proxy.host, proxy.port))
    c = Client.__new__(Client)
    c.sock, c.timeout, c.buffer, c.transcript, c.eof = sock, 5.0, b"", [], False
    with c:
        c.expect(GREETING)
        c.send(b"a1 LOGIN alice secret\r\n").expect(LOGGED_IN)
    assert lab.auth.requests[0].raw == auth_request(b"alice", b"secret", ip=b"127.0.0.2")


# -- logs -----------------------------------------------------------------------------------

def test_passwords_never_reach_the_error_log(lab):
    """House rule + §14: failed, waited, rewritten and rejected logins log the login but
    never the password (nor an Auth-Pass from the auth server)."""
    proxy = lab.proxy()
    pass_on = lab.proxy(server="proxy_pass_error_message on;")
    log, log_on = LogWatch(proxy), LogWatch(pass_on)
    with login(proxy, password=SECRET_PASSWORD) as c:  # plain failure
        c.expect(b"a1 NO Invalid login or password\r\n").expect_closed()
    lab.auth.push(Reply(headers=["Auth_Pass: x"]))  # invalid header
    with login(proxy, password=SECRET_PASSWORD) as c:
        expect_internal_error(c)
    lab.ok(password=SECRET_PASSWORD.decode())  # backend refuses the rewritten password
    with login(pass_on, password=SECRET_PASSWORD) as c:
        c.expect(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n").expect_closed()
    lab.ok()
    with login(proxy, b'"al ice"', SECRET_PASSWORD) as c:  # OK towards a refusing upstream
        expect_internal_error(c)
    log.wait_for('login: "al ice"')
    log_on.wait_for("upstream sent invalid response")
    for text in (log.text(), log_on.text()):
        assert SECRET_PASSWORD.decode() not in text, text
