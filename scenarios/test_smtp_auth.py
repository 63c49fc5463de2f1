"""SMTP AUTH through the proxy (RFC 4954, docs/behaviour.md §9.4, §5.5, §10), on every target, exact bytes.

Every SASL form nginx accepts: PLAIN (RFC 4616) with and without an initial response, LOGIN
in both forms, CRAM-MD5 (RFC 2195), EXTERNAL (RFC 4422 App. A) and its quirk; the malformed
ones; the auth_http request each produces; and what the client sees for each auth_http
outcome (success, failure with and without Auth-Wait, Auth-Error-Code, an empty status, an
auth server that hangs up).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit.smtp_support import (  # noqa: F401 -- fixtures
    AUTH_OK,
    EHLO_DEFAULT,
    GREETING,
    INTERNAL_ERROR,
    INVALID,
    INVALID_ARGUMENT,
    NEXT,
    OK,
    PASSWORD,
    UPSTREAM_BYE,
    UPSTREAM_OK,
    USERNAME,
    b64,
    ehlo,
    fresh_smtp_fixture,
    greet,
    plain,
    smtp_request,
)
from postern.scenarios.kit.support import LogWatch

ALL_METHODS = "smtp_auth plain login cram-md5 external;"
XCLIENT_ALICE = b"XCLIENT ADDR=127.0.0.1 LOGIN=alice NAME=[UNAVAILABLE]"


def smtp(lab, server: str = ""):
    return lab.proxy(server=server, protocol="smtp")


def logged_in(lab, c, login: bytes = b"alice", helo: bytes | None = b"client.example") -> None:
    """After `235 2.0.0 OK`: the upstream saw nginx's XCLIENT login and the relay works."""
    c.send(b"NOOP\r\n").expect(UPSTREAM_OK)
    want = [b"EHLO mx.test", b"XCLIENT ADDR=127.0.0.1 LOGIN=" + login + b" NAME=[UNAVAILABLE]"]
    if helo is not None:
        want.append(b"EHLO " + helo)
    assert lab.smtp.command_lines == want + [b"NOOP"]
    c.send(b"QUIT\r\n").expect(UPSTREAM_BYE)


# -- PLAIN -----------------------------------------------------------------------------------

def test_auth_plain_with_initial_response(lab):
    """RFC 4954 §4 + RFC 4616: `AUTH PLAIN <b64>` → auth request (§10.1, method plain,
    Client-Host for SMTP), backend login, `235 2.0.0 OK` from nginx itself."""
    with greet(smtp(lab)) as c:
        ehlo(c)
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(AUTH_OK)
        logged_in(lab, c)
    assert [r.raw for r in lab.auth.requests] == [smtp_request()]


def test_auth_plain_with_empty_challenge(lab):
    """RFC 4954 §4: `AUTH PLAIN` alone → the empty challenge `334 ` (with its space), the
    next line is the PLAIN message."""
    with greet(smtp(lab)) as c:
        ehlo(c)
        c.send(b"AUTH PLAIN\r\n").expect(NEXT)
        c.send(plain() + b"\r\n").expect(AUTH_OK)
        logged_in(lab, c)
    assert [r.raw for r in lab.auth.requests] == [smtp_request()]


def test_auth_plain_ignores_authzid_and_keeps_odd_bytes(lab):
    """RFC 4616 §2: the authorization identity is skipped; spaces and `%` in login and
    password are %-escaped in the request (§10.2), the mechanism name is case-insensitive."""
    # the auth server renames the user: XCLIENT LOGIN= is another scenario's business
    lab.auth.push(Reply.ok("127.0.0.1", lab.smtp.port, user="alice"))
    with greet(smtp(lab)) as c:
        c.send(b"auth plain " + plain(b"us er", b"p%w 1", b"admin") + b"\r\n").expect(AUTH_OK)
    assert [r.raw for r in lab.auth.requests] == [smtp_request(user=b"us%20er",
                                                               password=b"p%25w%201")]


def test_auth_without_helo_is_fine(lab):
    """§9.4: HELO/EHLO is not required before AUTH; nginx then repeats no client HELO to the
    upstream (§11.4)."""
    with greet(smtp(lab)) as c:
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(AUTH_OK)
        logged_in(lab, c, helo=None)


def test_auth_plain_empty_login_reaches_the_auth_server(lab):
    """§5.5: PLAIN with an empty authentication identity is well-formed; the auth server
    judges it (`Auth-User: ` empty)."""
    with greet(smtp(lab)) as c:
        c.send(b"AUTH PLAIN " + plain(b"", b"pw") + b"\r\n")
        c.expect(b"535 5.7.0 Invalid login or password\r\n").expect_closed()
    assert [r.raw for r in lab.auth.requests] == [smtp_request(user=b"", password=b"pw")]


# -- LOGIN -----------------------------------------------------------------------------------

def test_auth_login_two_challenges(lab):
    """RFC 4954 §4 with the LOGIN mechanism: `334 VXNlcm5hbWU6` (Username:), then
    `334 UGFzc3dvcmQ6` (Password:); method plain in the request."""
    with greet(smtp(lab)) as c:
        ehlo(c)
        c.send(b"AUTH LOGIN\r\n").expect(USERNAME)
        c.send(b64(b"alice") + b"\r\n").expect(PASSWORD)
        c.send(b64(b"secret") + b"\r\n").expect(AUTH_OK)
        logged_in(lab, c)
    assert [r.raw for r in lab.auth.requests] == [smtp_request()]


def test_auth_login_with_user_name(lab):
    """[MS-XLOGIN] `AUTH LOGIN <b64 user>` (nginx 0.7.34): straight to the password
    challenge."""
    with greet(smtp(lab)) as c:
        ehlo(c)
        c.send(b"AUTH LOGIN " + b64(b"alice") + b"\r\n").expect(PASSWORD)
        c.send(b64(b"secret") + b"\r\n").expect(AUTH_OK)
        logged_in(lab, c)


@pytest.mark.parametrize("methods", ["cram-md5", "external", "none"])
def test_plain_and_login_are_always_accepted(lab, methods):
    """§2.6 (documented): AUTH PLAIN and AUTH LOGIN work whatever smtp_auth lists."""
    with greet(smtp(lab, f"smtp_auth {methods};")) as c:
        c.send(b"AUTH LOGIN\r\n").expect(USERNAME)
        c.send(b64(b"alice") + b"\r\n").expect(PASSWORD)
        c.send(b64(b"secret") + b"\r\n").expect(AUTH_OK)


# -- CRAM-MD5 --------------------------------------------------------------------------------

def cram_md5_challenge(c) -> bytes:
    line = c.readline()
    assert line.startswith(b"334 ") and line.endswith(b"\r\n"), line
    salt = base64.b64decode(line[4:-2])
    assert re.fullmatch(rb"<\d+\.\d+@mx\.test>", salt), salt
    return salt


def test_auth_cram_md5(lab):
    """RFC 2195 / §5.5: `334 <b64 of <R.T@server_name>>`; the answer's digest goes to the auth
    server as Auth-Pass with the salt in Auth-Salt (§10.1), method cram-md5; the auth server
    returns the password and the login proceeds."""
    with greet(smtp(lab, ALL_METHODS)) as c:
        c.send(b"EHLO x\r\n").expect(b"250-mx.test\r\n250 AUTH PLAIN LOGIN CRAM-MD5 EXTERNAL\r\n")
        c.send(b"AUTH CRAM-MD5\r\n")
        salt = cram_md5_challenge(c)
        digest = hmac.new(b"secret", salt, hashlib.md5).hexdigest().encode()
        c.send(b64(b"alice " + digest) + b"\r\n").expect(AUTH_OK)
        logged_in(lab, c, helo=b"x")
    assert [r.raw for r in lab.auth.requests] == [
        smtp_request(b"cram-md5", b"alice", digest, salt=b"Auth-Salt: " + salt + b"\r\n")]


def test_cram_md5_salt_is_kept_for_the_session(lab):
    """§5.5: SMTP makes the salt on the first AUTH CRAM-MD5 and keeps it; a malformed answer
    (digest not 32 bytes) is `500 5.5.1 Invalid command`, and the next challenge repeats the
    same salt."""
    with greet(smtp(lab, ALL_METHODS)) as c:
        c.send(b"AUTH CRAM-MD5\r\n")
        first = cram_md5_challenge(c)
        c.send(b64(b"alice 0123") + b"\r\n").expect(INVALID)
        c.send(b"AUTH CRAM-MD5\r\n")
        assert cram_md5_challenge(c) == first
        c.send(b64(b"alice-without-space") + b"\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)
    assert lab.auth.requests == []


def test_cram_md5_disabled_is_invalid(lab):
    """§9.4: AUTH CRAM-MD5 when smtp_auth does not list it → `500 5.5.1 Invalid command`,
    handler-level (not counted)."""
    with greet(smtp(lab, "max_errors 1;")) as c:
        for _ in range(3):
            c.send(b"AUTH CRAM-MD5\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)


def test_cram_md5_with_an_argument_is_invalid(lab):
    """RFC 2195 has no initial response; nginx refuses `AUTH CRAM-MD5 <x>`."""
    with greet(smtp(lab, ALL_METHODS)) as c:
        c.send(b"AUTH CRAM-MD5 " + b64(b"alice " + b"0" * 32) + b"\r\n").expect(INVALID)


# -- EXTERNAL --------------------------------------------------------------------------------

def test_auth_external_challenge(lab):
    """RFC 4422 App. A / §9.4: with external enabled, `AUTH EXTERNAL` → `334 VXNlcm5hbWU6`;
    the answer is the login, Auth-Method external with an empty Auth-Pass."""
    with greet(smtp(lab, ALL_METHODS)) as c:
        c.send(b"EHLO client.example\r\n")
        c.readline(), c.readline()
        c.send(b"AUTH EXTERNAL\r\n").expect(USERNAME)
        c.send(b64(b"alice") + b"\r\n").expect(AUTH_OK)
        logged_in(lab, c)
    assert [r.raw for r in lab.auth.requests] == [smtp_request(b"external", b"alice", b"")]


def test_auth_external_disabled_without_initial_response(lab):
    """§9.4 (nginx 1.11.9): the challenge form of EXTERNAL needs `external` in smtp_auth."""
    with greet(smtp(lab)) as c:
        c.send(b"AUTH EXTERNAL\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)


def test_auth_external_initial_response_accepted_even_when_disabled(lab):
    """§9.4 QUIRK: `AUTH EXTERNAL <b64>` is accepted although smtp_auth does not list
    external (the enable check covers only the challenge form)."""
    with greet(smtp(lab)) as c:
        c.send(b"AUTH EXTERNAL " + b64(b"alice") + b"\r\n").expect(AUTH_OK)
        logged_in(lab, c, helo=None)
    assert [r.raw for r in lab.auth.requests] == [smtp_request(b"external", b"alice", b"")]


# -- malformed AUTH --------------------------------------------------------------------------

def test_auth_without_arguments_is_501(lab):
    """§9.4: `AUTH` alone → `501 5.5.4 Invalid argument` (a normal reply)."""
    with greet(smtp(lab, "max_errors 1;")) as c:
        for _ in range(3):
            c.send(b"AUTH\r\n").expect(INVALID_ARGUMENT)
        c.send(b"NOOP\r\n").expect(OK)


@pytest.mark.parametrize("line", [
    b"AUTH PLAIN !!!!",                       # not base64
    b"AUTH PLAIN =",                          # decodes to nothing: no NUL, no login
    b"AUTH PLAIN QUJDR",                      # length 1 mod 4
    b"AUTH PLAIN " + b64(b"alice"),           # no NUL at all
    b"AUTH PLAIN " + b64(b"\0alice"),         # no second NUL: no password
    b"AUTH LOGIN !!!!",                       # bad user name in the MS form
    b"AUTH EXTERNAL !!!!",
    b"AUTH DIGEST-MD5",                       # unknown mechanism
    b"AUTH GSSAPI " + b64(b"x"),
    b"AUTH PLAIN " + plain() + b" extra",     # too many arguments
    b"AUTH LOGIN a b",
])
def test_malformed_auth_is_invalid_but_not_counted(lab, line):
    """§5.5, §5.3: bad base64, malformed PLAIN, unknown mechanisms and extra arguments →
    `500 5.5.1 Invalid command`, handler-level: max_errors 1 is not reached, no auth request
    is made."""
    proxy = smtp(lab, "max_errors 1;")
    with greet(proxy) as c:
        c.send(line + b"\r\n").expect(INVALID)
        c.send(line + b"\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)
    assert lab.auth.requests == []


def test_bad_base64_is_logged_without_the_blob(lab):
    """§14: `client sent invalid base64 encoding in AUTH PLAIN command` at info level."""
    proxy = smtp(lab)
    log = LogWatch(proxy)
    with greet(proxy) as c:
        c.send(b"AUTH PLAIN !!!!\r\n").expect(INVALID)
    log.wait_for("client sent invalid base64 encoding in AUTH PLAIN command")


@pytest.mark.parametrize("dialogue", [
    *(pytest.param([(b"AUTH PLAIN\r\n", NEXT), (answer + b"\r\n", INVALID), (b"NOOP\r\n", OK)],
                   id=f"plain-{answer.decode()}")
      for answer in (b"*", b"QUIT", b"!!!!", b"bm9udWw=")),
    pytest.param([(b"AUTH LOGIN\r\n", USERNAME), (b"QUIT\r\n", PASSWORD), (b"*\r\n", INVALID),
                  (b"AUTH LOGIN\r\n", USERNAME), (b"!!!!\r\n", INVALID),
                  (b"EHLO x\r\n", EHLO_DEFAULT)], id="login-user-name"),
])
def test_bad_sasl_answer_ends_the_exchange(lab, dialogue):
    """RFC 4954 §4 (`*` cancels) / §9.4: during an exchange every line is SASL data; a cancel,
    a command (QUIT is not obeyed: it is base64 without a NUL), bad base64 or a PLAIN message
    without NULs → `500 5.5.1 Invalid command` and back to the start, with no auth request.
    In AUTH LOGIN the user name line is taken as base64 whatever it says: `QUIT` is a
    (strange) user name."""
    with greet(smtp(lab)) as c:
        for line, reply in dialogue:
            c.send(line).expect(reply)
    assert lab.auth.requests == []


def test_sasl_line_takes_its_first_word(lab):
    """§7.6/§9.4: an answer line inside an exchange is split at spaces like a command and only
    its first word is the SASL data; the rest is ignored."""
    with greet(smtp(lab)) as c:
        c.send(b"AUTH PLAIN\r\n").expect(NEXT)
        c.send(plain() + b" trailing words\r\n").expect(AUTH_OK)
    assert [r.raw for r in lab.auth.requests] == [smtp_request()]


def test_auth_login_with_empty_lines(lab):
    """RFC 4954 §4 / §5.5: empty answers decode to an empty user name and password; the
    auth server gets them (`Auth-User: `, `Auth-Pass: `) and refuses."""
    with greet(smtp(lab)) as c:
        c.send(b"AUTH LOGIN\r\n").expect(USERNAME)
        c.send(b"\r\n").expect(PASSWORD)
        c.send(b"\r\n").expect(b"535 5.7.0 Invalid login or password\r\n").expect_closed()
    assert [r.raw for r in lab.auth.requests] == [smtp_request(user=b"", password=b"")]


def test_pipelined_auth_after_invalid_command(lab):
    """RFC 2920 / nginx-tests mail_smtp.t: AUTH PLAIN with a pipelined MAIL FROM; the MAIL
    is forwarded to the upstream after the login and answered by it."""
    with greet(smtp(lab)) as c:
        c.send(b"EHLO client.example\r\nAUTH PLAIN " + plain() +
               b"\r\nMAIL FROM:<alice@example.test> SIZE=100\r\n")
        c.expect(EHLO_DEFAULT + AUTH_OK + UPSTREAM_OK)
    assert lab.smtp.command_lines == [b"EHLO mx.test", XCLIENT_ALICE, b"EHLO client.example",
                                      b"MAIL FROM:<alice@example.test> SIZE=100"]


# -- auth_http outcomes ------------------------------------------------------------------------

def test_failure_is_535_and_close(lab):
    """RFC 4954 §6 / §10.4: a failure without Auth-Wait → `535 5.7.0 <Auth-Status text>`,
    then close; logged as `client login failed`."""
    proxy = smtp(lab)
    log = LogWatch(proxy)
    with greet(proxy) as c:
        c.send(b"AUTH PLAIN " + plain(password=b"wrong") + b"\r\n")
        c.expect(b"535 5.7.0 Invalid login or password\r\n").expect_closed()
    log.wait_for('client login failed: "Invalid login or password"')
    assert lab.smtp.command_lines == []


def test_auth_error_code_replaces_535(lab):
    """§10.3, §18: `Auth-Error-Code: 451 4.3.0` with `Auth-Status: Try later` →
    `451 4.3.0 Try later` and EOF."""
    lab.auth.push(Reply.fail("Try later", error_code="451 4.3.0"))
    with greet(smtp(lab)) as c:
        c.send(b"AUTH PLAIN " + plain() + b"\r\n")
        c.expect(b"451 4.3.0 Try later\r\n").expect_closed()


def test_auth_wait_keeps_the_session(lab):
    """§10.4: with `Auth-Wait: 1` the failure line comes after about a second, the session
    returns to its start (a pipelined NOOP is answered next) and the next AUTH is attempt 2."""
    lab.auth.push(Reply.fail("Try again", wait=1))
    with greet(smtp(lab), timeout=10) as c:
        start = time.monotonic()
        c.send(b"AUTH PLAIN " + plain(password=b"wrong") + b"\r\nNOOP\r\n")
        c.expect(b"535 5.7.0 Try again\r\n" + OK, timeout=8)
        assert 0.8 <= time.monotonic() - start <= 6
        c.send(b"AUTH LOGIN\r\n").expect(USERNAME)
        c.send(b64(b"alice") + b"\r\n").expect(PASSWORD)
        c.send(b64(b"secret") + b"\r\n").expect(AUTH_OK)
    assert [r.raw for r in lab.auth.requests] == [smtp_request(password=b"wrong"),
                                                  smtp_request(attempt=2)]


def test_auth_wait_with_error_code(lab):
    """§10.3/§10.4: Auth-Error-Code applies to a waited failure too; the session goes on."""
    lab.auth.push(Reply.fail("Slow down", wait=1, error_code="454 4.7.0"))
    with greet(smtp(lab), timeout=10) as c:
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(b"454 4.7.0 Slow down\r\n", timeout=8)
        c.send(b"NOOP\r\n").expect(OK)


def test_empty_auth_status_is_not_a_failure(lab):
    """§10.4 QUIRK [verified]: for SMTP an empty Auth-Status is not a failure; with server
    and port the login goes ahead."""
    lab.auth.push(Reply(status="", server="127.0.0.1", port=lab.smtp.port))
    with greet(smtp(lab)) as c:
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(AUTH_OK)
        c.send(b"NOOP\r\n").expect(UPSTREAM_OK)


def test_retry_then_ok(lab):
    """§10.4 WAIT: `Auth-Status: WAIT` with Auth-Wait 1 repeats the same request (same
    attempt number), then the OK logs in."""
    lab.auth.push(Reply.retry(wait=1), Reply.ok("127.0.0.1", lab.smtp.port))
    with greet(smtp(lab), timeout=10) as c:
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(AUTH_OK, timeout=8)
    assert [r.raw for r in lab.auth.requests] == [smtp_request()] * 2


def test_auth_server_hang_up_is_internal_error(lab):
    """§10.6, §18: an auth server closing without a reply → `451 4.3.2 Internal server
    error`, close."""
    lab.auth.push(Reply.hang_up())
    with greet(smtp(lab)) as c:
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(INTERNAL_ERROR).expect_closed()


def test_ok_without_server_is_internal_error(lab):
    """§10.4: success needs Auth-Server and Auth-Port, else `did not send server or port`."""
    proxy = smtp(lab)
    log = LogWatch(proxy)
    lab.auth.push(Reply(status="OK"))
    with greet(proxy) as c:
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(INTERNAL_ERROR).expect_closed()
    log.wait_for("did not send server or port")


def test_auth_pass_override_is_not_needed_for_smtp(lab):
    """§10.4: SMTP needs no password after EXTERNAL (only proxy_smtp_auth would): Auth-OK
    without Auth-Pass logs in."""
    lab.auth.push(Reply.ok("127.0.0.1", lab.smtp.port))
    with greet(smtp(lab, ALL_METHODS)) as c:
        c.send(b"AUTH EXTERNAL " + b64(b"alice") + b"\r\n").expect(AUTH_OK)
        c.send(b"NOOP\r\n").expect(UPSTREAM_OK)


def test_greeting_is_not_repeated_after_auth(lab):
    """§11.6: after 235 the client talks to the upstream directly; nginx's own greeting is
    not sent again and the upstream's greeting is swallowed."""
    with smtp(lab).connect() as c:
        c.send(b"AUTH PLAIN " + plain() + b"\r\n")
        c.expect(GREETING + AUTH_OK)
        c.expect_silence(0.2)
