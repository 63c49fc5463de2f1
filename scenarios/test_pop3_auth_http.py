"""POP3 through every auth_http outcome (docs/behaviour.md §10), on every target, exact bytes.

Each scenario scripts the mock auth server's next reply (lab.auth.push) and checks what the
POP3 client sees, what the auth server was asked and, where nginx words it, the error log.
"""

from __future__ import annotations

import base64
import hashlib
import time

import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit import login_support, pop3_support
from postern.scenarios.kit.pop3_support import (
    GREETING,
    INVALID,
    OK,
    auth_request,
    backend_login,
    expect_internal_error,
    greeted_with_salt,
    logged_in,
    login,
    pop3,
)
from postern.scenarios.kit.real.common import free_port
from postern.scenarios.kit.support import LogWatch, OneShotAuth, auth_peer

# -- success ----------------------------------------------------------------------------------

def test_auth_ok_logs_in(lab):
    """§10.4.3: Auth-Status OK + server/port → backend login; the client's PASS is answered
    with the upstream's `+OK` and the session relays."""
    proxy = pop3(lab)
    log = LogWatch(proxy)
    lab.ok("pop3")
    with login(proxy) as c:
        c.expect(logged_in(lab))
        c.send(b"NOOP\r\n").expect(OK)
    assert [r.raw for r in lab.auth.requests] == [auth_request()]
    line = log.line(f"client logged in, client: 127.0.0.1, server: 127.0.0.1:{proxy.port}, "
                    f'login: "alice", upstream: 127.0.0.1:{lab.pop3.port}')
    assert "[info]" in line, line


def test_http_status_code_and_status_line_are_ignored(lab):
    """§10.3 (QUIRK 10): the status line is skipped unread — a 500 with Auth-Status OK is a
    success — and a reply without a status line is read as headers from its first byte."""
    proxy = pop3(lab)
    lab.ok("pop3", http_status="HTTP/1.0 500 Internal Server Error")
    lab.ok("pop3", http_status=None)
    for _ in range(2):
        with login(proxy) as c:
            c.expect(logged_in(lab))


def test_missing_auth_status_with_server_and_port_is_success(lab):
    """§10.4 note [verified]: Auth-Status is not required; server + port alone log in."""
    proxy = pop3(lab)
    lab.auth.push(Reply(server="127.0.0.1", port=lab.pop3.port))
    with login(proxy) as c:
        c.expect(logged_in(lab))


def test_auth_http_headers_come_last_in_order(lab):
    """§2.2 + §10.1: auth_http_header lines are appended verbatim after the built-in
    headers, in configuration order, for POP3 as for every protocol."""
    proxy = pop3(lab, 'auth_http_header X-Auth-Key "s3cr3t value";\n'
                      "auth_http_header X-Second two;")
    with login(proxy) as c:
        c.expect(logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [
        auth_request(tail=b"X-Auth-Key: s3cr3t value\r\nX-Second: two\r\n")]


# -- failure -----------------------------------------------------------------------------------

def test_failure_without_wait_answers_and_closes(lab):
    """§10.4.1: a failure status without Auth-Wait → `-ERR <Auth-Status text>`, then close;
    nginx logs `client login failed` at info level."""
    proxy = pop3(lab)
    log = LogWatch(proxy)
    with login(proxy, password=b"wrong") as c:
        c.expect(b"-ERR Invalid login or password\r\n").expect_closed()
    line = log.line('client login failed: "Invalid login or password" while in http auth '
                    f'state, client: 127.0.0.1, server: 127.0.0.1:{proxy.port}, login: "alice"')
    assert "[info]" in line, line
    assert [r.raw for r in lab.auth.requests] == [auth_request(password=b"wrong")]
    assert lab.pop3.commands == []


def test_failure_text_is_sent_verbatim(lab):
    """§3 auth failure `-ERR <text>`: inner spaces and RFC 2449 §8 response codes in the
    Auth-Status text reach the client as they are."""
    proxy = pop3(lab)
    lab.auth.push(Reply.fail("[AUTH] Locked  out  for now"))
    with login(proxy) as c:
        c.expect(b"-ERR [AUTH] Locked  out  for now\r\n").expect_closed()


def test_failure_with_auth_wait_zero_closes(lab):
    """§16 QUIRK 12: `Auth-Wait: 0` on a failure is the same as none: answer and close."""
    proxy = pop3(lab)
    lab.auth.push(Reply.fail("Go away", wait=0))
    with login(proxy) as c:
        c.expect(b"-ERR Go away\r\n").expect_closed()


def test_failure_with_wait_continues_and_user_must_be_repeated(lab):
    """§10.4.1: with `Auth-Wait: 1` the `-ERR` comes after ~1 s and the session continues in
    the initial state: a pipelined NOOP is answered, a pipelined PASS is refused (USER must be
    repeated, docs/behaviour.md §8.3); the next login says Auth-Login-Attempt 2."""
    proxy = pop3(lab)
    lab.auth.push(Reply.fail("Try again", wait=1))
    with proxy.connect() as c:
        c.expect(GREETING)
        start = time.monotonic()
        c.send(b"USER alice\r\nPASS wrong\r\nNOOP\r\nPASS secret\r\n")
        c.expect(OK + b"-ERR Try again\r\n")
        waited = time.monotonic() - start
        c.expect(OK + INVALID)
        assert 0.8 <= waited <= 4.0, waited
        c.send(b"USER alice\r\nPASS secret\r\n").expect(OK + logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [
        auth_request(password=b"wrong"), auth_request(attempt=2)]
    assert lab.pop3.commands == backend_login()


def test_waited_apop_failure_resets_the_method_to_plain(lab):
    """§6 + §10.4.1: after a waited failure the auth method is plain again — a following
    USER/PASS login is sent as method plain without Auth-Salt, attempt 2."""
    c, salt = greeted_with_salt(lab, "pop3_auth plain apop;")
    lab.auth.push(Reply.fail("Bad digest", wait=1))
    with c:
        c.send(b"APOP alice " + b"0" * 32 + b"\r\n").expect(b"-ERR Bad digest\r\n", timeout=5)
        c.send(b"USER alice\r\n").expect(OK)
        c.send(b"PASS secret\r\n").expect(logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [
        auth_request(password=b"0" * 32, method=b"apop", salt=salt),
        auth_request(attempt=2)]


def test_repeated_apop_after_a_waited_failure(lab):
    """§10.4.1 + §15 (1.29.7 password clearing): a second APOP in the same session carries
    the same salt, attempt 2, and logs in with the auth server's plaintext Auth-Pass."""
    c, salt = greeted_with_salt(lab, "pop3_auth plain apop;")
    lab.auth.push(Reply.fail("Bad digest", wait=1))
    good = hashlib.md5(salt + b"secret").hexdigest().encode()
    with c:
        c.send(b"APOP alice " + b"0" * 32 + b"\r\n").expect(b"-ERR Bad digest\r\n", timeout=5)
        c.send(b"APOP alice " + good + b"\r\n").expect(logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [
        auth_request(password=b"0" * 32, method=b"apop", salt=salt),
        auth_request(password=good, method=b"apop", salt=salt, attempt=2)]
    assert lab.pop3.commands == backend_login()


def test_external_after_a_waited_failure_keeps_the_old_password(lab):
    """nginx: EXTERNAL sets the login only (ngx_mail_auth_external never touches the
    password), and a waited failure does not clear credentials (§10.4.1), so after a failed
    USER/PASS an `AUTH EXTERNAL <ir>` carries the old password as Auth-Pass — and, as it is a
    password nginx has, the upstream login uses it when the auth server sends none."""
    proxy = pop3(lab)
    lab.auth.push(Reply.fail("Try again", wait=1), Reply.ok("127.0.0.1", lab.pop3.port))
    with login(proxy, password=b"secret") as c:
        c.expect(b"-ERR Try again\r\n", timeout=5)
        c.send(b"AUTH EXTERNAL " + base64.b64encode(b"alice") + b"\r\n")
        c.expect(logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [
        auth_request(), auth_request(password=b"secret", method=b"external", attempt=2)]
    assert lab.pop3.commands == backend_login()


@pytest.mark.nginx_min("1.29.1", "Auth-Salt only for apop and cram-md5 (CVE-2025-53859 fix)")
def test_external_sends_no_salt_even_when_the_greeting_had_one(lab):
    """§10.1 + §15 (1.29.1): Auth-Salt goes only with methods apop and cram-md5; an EXTERNAL
    login on a server whose greeting carried a salt sends none (before 1.29.1 every method but
    plain sent it)."""
    c, _ = greeted_with_salt(lab, "pop3_auth plain apop;")
    lab.auth.push(Reply.fail("No"))
    with c:
        c.send(b"AUTH EXTERNAL " + base64.b64encode(b"alice") + b"\r\n")
        c.expect(b"-ERR No\r\n").expect_closed()
    assert [r.raw for r in lab.auth.requests] == [auth_request(password=b"", method=b"external")]


def test_empty_auth_status_is_a_failure(lab):
    """§10.4 QUIRK: an empty Auth-Status is a failure with empty text for POP3 (SMTP
    differs): `-ERR ` CRLF, then close."""
    proxy = pop3(lab)
    lab.auth.push(Reply(status="", server="127.0.0.1", port=lab.pop3.port))
    with login(proxy) as c:
        c.expect(b"-ERR \r\n").expect_closed()


def test_failure_then_ok_header_stays_a_failure(lab):
    """§10.3: the last occurrence wins per field, and a later `Auth-Status: OK` does not
    clear an earlier error."""
    proxy = pop3(lab)
    lab.auth.push(Reply(status="Denied", server="127.0.0.1", port=lab.pop3.port,
                        headers=["Auth-Status: OK"]))
    with login(proxy) as c:
        c.expect(b"-ERR Denied\r\n").expect_closed()


def test_failure_text_is_trimmed(lab):
    """§10.3: leading and trailing spaces of a header value are dropped, inner ones kept, so
    `Auth-Status:   spaced  out  ` becomes `-ERR spaced  out`."""
    proxy = pop3(lab)
    lab.auth.push(Reply.fail("  spaced  out  "))
    with login(proxy) as c:
        c.expect(b"-ERR spaced  out\r\n").expect_closed()


@pytest.mark.parametrize("wait", ["soon", "-1"])
def test_auth_wait_that_is_no_number_closes(lab, wait):
    """§10.3: a non-numeric Auth-Wait is ignored, so the failure closes the connection as
    without Auth-Wait (§16 QUIRK 12) instead of letting the session go on."""
    proxy = pop3(lab)
    lab.auth.push(Reply.fail("Go away", wait=wait))
    with login(proxy) as c:
        c.expect(b"-ERR Go away\r\n").expect_closed()


def test_timeout_is_rearmed_after_a_waited_failure(lab):
    """§5.4 + §10.4.1: the pre-auth deadline stops while the auth server is asked and starts
    afresh (full `timeout`) when a waited failure is answered: with `timeout 2s` and a login at
    1.2 s failing after a 1 s wait, the client may still talk, and is closed silently about
    2 s after the `-ERR`."""
    proxy = pop3(lab, "timeout 2s;")
    lab.auth.push(Reply.fail("Try again", wait=1))
    with proxy.connect() as c:
        c.expect(GREETING)
        time.sleep(1.2)
        c.send(b"USER alice\r\nPASS wrong\r\n").expect(OK + b"-ERR Try again\r\n")
        answered = time.monotonic()
        time.sleep(0.8)  # 3 s after the greeting: past the first deadline
        c.send(b"NOOP\r\n").expect(OK)
        c.expect_closed(timeout=5)
        assert 1.5 <= time.monotonic() - answered <= 4.0


# -- WAIT ----------------------------------------------------------------------------------------

def test_wait_repeats_the_same_request(lab):
    """§10.4.2: `Auth-Status: WAIT` + `Auth-Wait: 1` → the same request (same attempt number)
    again after ~1 s, then the login proceeds; the client sees only the final `+OK`."""
    proxy = pop3(lab)
    lab.auth.push(Reply.retry(wait=1))
    with login(proxy) as c:
        c.expect(logged_in(lab), timeout=6)
    first, second = lab.auth.requests
    assert first.raw == second.raw == auth_request()
    assert 0.8 <= second.received_at - first.received_at <= 4.0


def test_wait_retry_carries_what_the_auth_server_sent(lab):
    """§10.3 + §10.4.2: Auth-User and Auth-Pass are taken as soon as they are read, even from
    a WAIT reply, so the repeated request carries them; the upstream then gets the last
    values (here the final OK's Auth-User)."""
    proxy = pop3(lab)
    lab.auth.push(Reply.retry(wait=1, user="bob", password="changed"),
                  Reply.ok("127.0.0.1", lab.pop3.port, user="alice", password="secret"))
    with login(proxy) as c:
        c.expect(logged_in(lab), timeout=6)
    assert [r.raw for r in lab.auth.requests] == [auth_request(),
                                                  auth_request(b"bob", b"changed")]
    assert lab.pop3.commands == backend_login()


def test_apop_wait_retry_has_an_empty_auth_pass(lab):
    """§10.1 + §10.4.2: once Auth-Salt went out nginx has forgotten the digest, so the repeat
    of an APOP request after WAIT carries `Auth-Pass: ` empty and the same salt; the login
    proceeds with the Auth-Pass of the final reply."""
    c, salt = greeted_with_salt(lab, "pop3_auth plain apop;")
    lab.auth.push(Reply.retry(wait=1), Reply.ok("127.0.0.1", lab.pop3.port, password="secret"))
    with c:
        c.send(b"APOP alice " + b"0" * 32 + b"\r\n").expect(logged_in(lab), timeout=6)
    assert [r.raw for r in lab.auth.requests] == [
        auth_request(password=b"0" * 32, method=b"apop", salt=salt),
        auth_request(password=b"", method=b"apop", salt=salt)]
    assert lab.pop3.commands == backend_login()


def test_zero_delay_wait_is_sticky(lab):
    """§10.4.2 QUIRK 11 [verified]: after a zero-delay WAIT every reply counts as WAIT until
    one carries a non-zero Auth-Wait: WAIT, OK, OK, OK+Auth-Wait 1, OK → five requests."""
    proxy = pop3(lab)
    ok = Reply.ok("127.0.0.1", lab.pop3.port)
    lab.auth.push(Reply.retry(), ok, ok, Reply.ok("127.0.0.1", lab.pop3.port, wait=1), ok)
    with login(proxy) as c:
        c.expect(logged_in(lab), timeout=6)
    assert [r.raw for r in lab.auth.requests] == [auth_request()] * 5


def test_auth_user_and_pass_values_are_used_raw(lab):
    """§10.3: Auth-User and Auth-Pass go to the upstream as they are — inner spaces kept, and
    no %-unescaping (only the request escapes): `secret%20` is not `secret `."""
    proxy = pop3(lab)
    lab.auth.push(Reply.ok("127.0.0.1", lab.pop3.port, user="us er", password="p w"),
                  Reply.ok("127.0.0.1", lab.pop3.port, password="secret%20"))
    with login(proxy, b"x", b"y") as c:
        c.expect(logged_in(lab, "us er"))
    with login(proxy) as c:
        expect_internal_error(c)  # the upstream refused `PASS secret%20`
    assert lab.pop3.commands == backend_login(b"us er", b"p w") + backend_login(b"alice",
                                                                                  b"secret%20")


def test_empty_auth_pass_header_is_a_password(lab):
    """§10.4.3: an empty `Auth-Pass:` header still counts as sent, so an APOP login is not
    "did not send password": the upstream gets `PASS ` with nothing after it."""
    c, _ = greeted_with_salt(lab, "pop3_auth plain apop;")
    lab.auth.push(Reply.ok("127.0.0.1", lab.pop3.port, headers=["Auth-Pass:"]))
    with c:
        c.send(b"APOP alice " + b"0" * 32 + b"\r\n")
        expect_internal_error(c)  # the upstream refused the empty password
    assert lab.pop3.commands == [b"USER alice", b"PASS "]


# -- internal errors -----------------------------------------------------------------------------

def test_auth_server_down_is_an_internal_error(lab):
    """§10.6: connecting to the auth server fails → `-ERR internal server error`, close."""
    login_support.auth_reply_is_an_internal_error(
        lab, pop3_support, None, "recv() failed (111: Connection refused) while in http auth state, "
        'client: 127.0.0.1, server: 127.0.0.1:{proxy.port}, login: "alice"',
        server=f"auth_http 127.0.0.1:{free_port()}/auth;")


def test_auth_server_closing_without_reply_is_an_internal_error(lab):
    """§10.6: premature EOF from the auth server → internal error."""
    proxy = pop3(lab)
    lab.auth.push(Reply.hang_up())
    with login(proxy) as c:
        expect_internal_error(c)


def test_invalid_header_name_is_an_internal_error(lab):
    """§18 capture [verified]: header name `Auth_Status` (POP3, after `+OK` for USER) →
    "sent invalid header in response" → `-ERR internal server error`, close."""
    reply = Reply(headers=["Auth_Status: OK"], server="127.0.0.1", port=lab.pop3.port)
    line = login_support.auth_reply_is_an_internal_error(
        lab, pop3_support, reply, "auth http server {auth} sent invalid header in response while in "
        "http auth state, client: 127.0.0.1")
    assert "[error]" in line, line


def test_auth_http_timeout_is_an_internal_error(lab):
    """§10.6: the reply must arrive within auth_http_timeout (1 s here; it comes after 3 s)."""
    line = login_support.auth_timeout_is_an_internal_error(lab, pop3_support)
    assert "[error]" in line, line


def test_header_block_over_1024_bytes_is_an_internal_error(lab):
    """§10.3 (QUIRK 13): the header block must fit nginx's 1024-byte buffer (the auth server
    lingers a moment after its reply, see the IMAP twin of this scenario)."""
    auth = OneShotAuth(Reply.ok("127.0.0.1", lab.pop3.port, oversize=1100).render(), 0.3)
    proxy = pop3(lab, f"auth_http 127.0.0.1:{auth.port}/auth;")
    with login(proxy) as c:
        expect_internal_error(c)
    assert auth.request == auth_request()


def test_auth_server_hostname_is_an_internal_error(lab):
    """§10.3 (QUIRK 16): Auth-Server must be a literal IP; a host name is "sent invalid
    server address" → internal error."""
    login_support.auth_reply_is_an_internal_error(
        lab, pop3_support, Reply.ok("localhost", lab.pop3.port),
        'auth http server {auth} sent invalid server address:"localhost"')


@pytest.mark.parametrize("port", ["0", "65536", "11o"])
def test_bad_auth_port_is_an_internal_error(lab, port):
    """§10.3: Auth-Port must be decimal 1-65535, else "sent invalid server port"."""
    login_support.auth_reply_is_an_internal_error(
        lab, pop3_support, Reply.ok("127.0.0.1", port),
        f'auth http server {{auth}} sent invalid server port:"{port}"')


def test_ok_without_server_is_an_internal_error(lab):
    """§10.4.3: success needs Auth-Server and Auth-Port ("did not send server or port")."""
    login_support.auth_reply_is_an_internal_error(
        lab, pop3_support, Reply(status="OK", port=lab.pop3.port),
        "auth http server {auth} did not send server or port")


def test_apop_success_without_auth_pass_is_an_internal_error(lab):
    """§10.1 + §10.4.3: once Auth-Salt is sent nginx forgets the client's digest, so an APOP
    success without Auth-Pass is "did not send password" → internal error."""
    c, salt = greeted_with_salt(lab, "pop3_auth plain apop;")
    proxy = pop3(lab, "pop3_auth plain apop;")
    log = LogWatch(proxy)
    lab.ok("pop3")
    with c:
        c.send(b"APOP alice " + b"0" * 32 + b"\r\n")
        expect_internal_error(c)
    assert lab.auth.requests[0].raw == auth_request(password=b"0" * 32, method=b"apop",
                                                    salt=salt)
    log.wait_for(f"auth http server {auth_peer(lab)} did not send password")
    assert lab.pop3.commands == []


def test_cram_md5_success_without_auth_pass_is_an_internal_error(lab):
    """§10.4.3: a CRAM-MD5 success without Auth-Pass → "did not send password" → internal
    error (RFC 2195 digests cannot be replayed to the upstream)."""
    c, salt = greeted_with_salt(lab, "pop3_auth plain cram-md5;")
    lab.ok("pop3")
    with c:
        c.send(b"AUTH CRAM-MD5\r\n").expect(b"+ " + base64.b64encode(salt) + b"\r\n")
        c.send(base64.b64encode(b"alice " + b"0" * 32) + b"\r\n")
        expect_internal_error(c)
    req = lab.auth.requests[0]
    assert (req.header("Auth-Method"), req.header("Auth-Salt")) == ("cram-md5", salt.decode())


def test_external_success_without_auth_pass_is_an_internal_error(lab):
    """§10.4.3 + §8.3 QUIRK: `AUTH EXTERNAL <ir>` sends an empty Auth-Pass; a success without
    Auth-Pass leaves no password for the upstream PASS → internal error."""
    proxy = pop3(lab)
    lab.ok("pop3")
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b"AUTH EXTERNAL " + base64.b64encode(b"alice") + b"\r\n")
        expect_internal_error(c)
    assert lab.auth.requests[0].raw == auth_request(password=b"", method=b"external")
