"""POP3 logins before authentication: USER/PASS, APOP and AUTH with PLAIN, LOGIN, CRAM-MD5 and
EXTERNAL, with the exact auth request and what the upstream receives (docs/behaviour.md §5.5, §8.3, §10.1;
RFC 1939 §7, RFC 1734, RFC 5034, RFC 4616, RFC 2195, RFC 4422).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit.pop3_support import (
    INVALID,
    OK,
    SALTED,
    auth_request,
    backend_login,
    greeted,
    greeted_with_salt,
    logged_in,
)
from postern.scenarios.kit.support import PASS_CHALLENGE, PLAIN_ALICE, USER_CHALLENGE


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def ok_as_alice(lab) -> None:
    """Script a success that rewrites the upstream credentials to alice/secret, so odd client
    credentials still complete a login on the fake upstream (docs/behaviour.md §10.3 Auth-User/Pass)."""
    lab.auth.push(Reply.ok("127.0.0.1", lab.pop3.port, user="alice", password="secret"))


def apop_digest(salt: bytes, password: bytes) -> bytes:
    """RFC 1939 §7 APOP: hex MD5 of the greeting's timestamp followed by the secret."""
    return hashlib.md5(salt + password).hexdigest().encode()


# -- USER / PASS (RFC 1939 §7) ---------------------------------------------------------------

def test_user_pass_login(lab):
    """RFC 1939 §7 USER/PASS: `+OK` for USER, then the auth request (method plain, protocol
    pop3), the upstream login with the same USER/PASS, and the upstream's `+OK` relayed as the
    answer to PASS; afterwards commands go to the upstream."""
    with greeted(lab) as c:
        c.send(b"user alice\r\n").expect(OK)
        c.send(b"pass secret\r\n").expect(logged_in(lab))
        c.send(b"NOOP\r\n").expect(OK)
    assert [r.raw for r in lab.auth.requests] == [auth_request()]
    assert lab.pop3.commands == backend_login() + [b"NOOP"]


def test_user_and_pass_keep_spaces(lab):
    """nginx (docs/behaviour.md §8.2): USER and PASS take the rest of the line as one argument, inner and
    trailing spaces included (leading spaces skipped); the auth request %-escapes the spaces
    (docs/behaviour.md §10.2) and the upstream gets them raw."""
    with greeted(lab) as c:
        c.send(b"USER   us er\r\n").expect(OK)
        c.send(b"PASS p w\r\n").expect(logged_in(lab, "us er"))
    assert [r.raw for r in lab.auth.requests] == [auth_request(b"us%20er", b"p%20w")]
    assert lab.pop3.commands == backend_login(b"us er", b"p w")


def test_trailing_spaces_are_part_of_the_credentials(lab):
    """nginx (docs/behaviour.md §8.2): `PASS x ` keeps its trailing space, and so does USER; both reach the
    auth server escaped (`%20`)."""
    lab.auth.push(Reply.fail("No"))
    with greeted(lab) as c:
        c.send(b"USER alice  \r\n").expect(OK)
        c.send(b"PASS secret \r\n").expect(b"-ERR No\r\n").expect_closed()
    assert [r.raw for r in lab.auth.requests] == [auth_request(b"alice%20%20", b"secret%20")]


def test_pass_with_only_spaces_is_invalid(lab):
    """nginx: PASS needs exactly one argument; spaces alone give none (handler-level
    `-ERR invalid command`), which drops back to the initial state."""
    with greeted(lab) as c:
        c.send(b"USER alice\r\n").expect(OK)
        c.send(b"PASS  \r\n").expect(INVALID)
        c.send(b"PASS secret\r\n").expect(INVALID)
    assert lab.auth.requests == []


def test_credentials_escaping_in_the_auth_request(lab):
    """nginx (docs/behaviour.md §10.2): `%`, space and control bytes are %XX-escaped with uppercase hex;
    `+`, `"`, `\\` and bytes >= 0x80 go as they are."""
    ok_as_alice(lab)
    with greeted(lab) as c:
        c.send(b'USER a%b+"\\\xc3\xa9\r\n').expect(OK)
        c.send(b"PASS x\x01y%\r\n").expect(logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [
        auth_request(b'a%25b+"\\\xc3\xa9', b"x%01y%25")]
    assert lab.pop3.commands == backend_login()


def test_no_auth_salt_for_plain_even_with_apop_enabled(lab):
    """nginx (docs/behaviour.md §10.1): Auth-Salt never goes with method plain — before 1.29.1 every other
    method sent it, since then only apop and cram-md5 do — so a USER/PASS login has no salt
    even when the greeting carried one, and the upstream gets the client's password."""
    c, _ = greeted_with_salt(lab, SALTED)
    with c:
        c.send(b"USER alice\r\n").expect(OK)
        c.send(b"PASS secret\r\n").expect(logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [auth_request()]
    assert lab.pop3.commands == backend_login()


# -- APOP (RFC 1939 §7) ----------------------------------------------------------------------

def test_apop_login(lab):
    """RFC 1939 §7 APOP name digest: the auth request has method apop, the digest as Auth-Pass
    and the greeting's salt as Auth-Salt (after Auth-Pass); the mock checks
    md5(salt + password) and returns the plaintext Auth-Pass, which the upstream gets with
    USER/PASS (nginx never uses APOP upstream, docs/behaviour.md §11.2)."""
    c, salt = greeted_with_salt(lab, "pop3_auth plain apop;")
    digest = apop_digest(salt, b"secret")
    with c:
        c.send(b"APOP alice " + digest + b"\r\n").expect(logged_in(lab))
        c.send(b"NOOP\r\n").expect(OK)
    [req] = lab.auth.requests
    assert req.raw == auth_request(password=digest, method=b"apop", salt=salt)
    assert req.decision.password == "secret"
    assert lab.pop3.commands == backend_login() + [b"NOOP"]


def test_apop_wrong_digest_fails(lab):
    """RFC 1939 §7: a wrong digest is refused by the auth server; nginx answers
    `-ERR <Auth-Status>` and closes (docs/behaviour.md §10.4)."""
    c, salt = greeted_with_salt(lab, "pop3_auth plain apop;")
    with c:
        c.send(b"APOP alice " + apop_digest(salt, b"wrong") + b"\r\n")
        c.expect(b"-ERR Invalid login or password\r\n").expect_closed()
    assert lab.auth.requests[0].header("Auth-Salt") == salt.decode()
    assert lab.pop3.commands == []


def test_apop_disabled(lab):
    """nginx: APOP is refused unless pop3_auth enables it (handler level, not counted); the
    default greeting has no timestamp for it anyway (RFC 1939 §7)."""
    with greeted(lab, "max_errors 1;") as c:
        c.send(b"APOP alice " + b"0" * 32 + b"\r\n").expect(INVALID)
        c.send(b"APOP alice " + b"0" * 32 + b"\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)
    assert lab.auth.requests == []


def test_apop_argument_count(lab):
    """nginx: APOP needs exactly two arguments; the digest is not checked for form (any
    second word goes to the auth server as Auth-Pass)."""
    c, salt = greeted_with_salt(lab, "pop3_auth apop;")
    lab.auth.push(Reply.fail("Bad digest"))
    with c:
        c.send(b"APOP alice\r\n").expect(INVALID)
        c.send(b"APOP alice a b\r\n").expect(INVALID)
        c.send(b"APOP alice short\r\n").expect(b"-ERR Bad digest\r\n").expect_closed()
    assert [r.raw for r in lab.auth.requests] == [
        auth_request(password=b"short", method=b"apop", salt=salt)]


# -- AUTH PLAIN (RFC 4616, RFC 5034) ---------------------------------------------------------

def test_auth_plain_with_initial_response(lab):
    """RFC 5034 §4 AUTH with an initial response, RFC 4616 PLAIN: one line logs in; the auth
    request says method plain."""
    with greeted(lab) as c:
        c.send(b"AUTH PLAIN " + PLAIN_ALICE + b"\r\n").expect(logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [auth_request()]
    assert lab.pop3.commands == backend_login()


def test_auth_plain_two_steps(lab):
    """RFC 5034 §4: without an initial response the server sends the empty challenge `+ `
    and takes the next line as the response; the mechanism name is case-insensitive
    (RFC 4422 §3.1); the authzid is ignored (RFC 4616 §2) and padding is optional."""
    blob = b64(b"admin\0bob\0hunter2").rstrip(b"=")
    with greeted(lab) as c:
        c.send(b"auth plain\r\n").expect(b"+ \r\n")
        c.expect_silence(0.2)
        c.send(blob + b"\r\n").expect(logged_in(lab, "bob"))
    assert [r.raw for r in lab.auth.requests] == [auth_request(b"bob", b"hunter2")]
    assert lab.pop3.commands == backend_login(b"bob", b"hunter2")


def test_auth_plain_malformed(lab):
    """RFC 4616 §2 message syntax: without the NUL separators the response is refused with
    `-ERR invalid command` and the exchange ends (handler level, not counted)."""
    with greeted(lab, "max_errors 1;") as c:
        c.send(b"AUTH PLAIN " + b64(b"alice secret") + b"\r\n").expect(INVALID)
        c.send(b"AUTH PLAIN\r\n").expect(b"+ \r\n")
        c.send(b64(b"\0alice") + b"\r\n").expect(INVALID)
        c.send(b"AUTH PLAIN " + PLAIN_ALICE + b" extra\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)
    assert lab.auth.requests == []


@pytest.mark.parametrize("extra,dialogue", [
    ("max_errors 1;", [
        (b"AUTH PLAIN\r\n", b"+ \r\n"),
        (b"*\r\n", INVALID),
        (b"AUTH PLAIN AGFsaWNl*AHNlY3JldA==\r\n", INVALID),
        (b"AUTH PLAIN Q\r\n", INVALID),
        (b"AUTH LOGIN\r\n", USER_CHALLENGE),
        (b"!!!!\r\n", INVALID),
    ]),
    ("", [
        (b"AUTH LOGIN\r\n", USER_CHALLENGE),
        (b64(b"alice") + b"\r\n", PASS_CHALLENGE),
        (b"%%%\r\n", INVALID),
        (b"AUTH LOGIN !x\r\n", INVALID),
        (b"AUTH LOGIN YQ== YQ==\r\n", INVALID),
    ]),
], ids=["bad-base64-and-cancel", "auth-login-bad-password-step"])
def test_bad_base64_cancel_and_bad_login_steps(lab, extra, dialogue):
    """RFC 5034 §4 / RFC 4422 §3.5: a `*` line cancels; nginx answers it like any invalid
    base64 — `-ERR invalid command` — and is back in the initial state; a length of 1 mod 4
    and a non-alphabet byte before `=` are invalid too (docs/behaviour.md §5.5). nginx: so is
    invalid base64 answering AUTH LOGIN's Password: challenge, or an invalid initial user."""
    with greeted(lab, extra) as c:
        for line, reply in dialogue:
            c.send(line).expect(reply)
        c.send(b"NOOP\r\n").expect(OK)
    assert lab.auth.requests == []


def test_sasl_response_is_read_up_to_the_first_space(lab):
    """nginx: during an AUTH exchange the next line is a bare argument; words after the first
    space are ignored, and anything after the first `=` too (docs/behaviour.md §5.5)."""
    with greeted(lab) as c:
        c.send(b"AUTH PLAIN\r\n").expect(b"+ \r\n")
        c.send(PLAIN_ALICE + b"junk! more words\r\n").expect(logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [auth_request()]


# -- AUTH LOGIN ------------------------------------------------------------------------------

def test_auth_login_two_challenges(lab):
    """nginx AUTH LOGIN (draft-murchison-sasl-login): `+ VXNlcm5hbWU6` ("Username:"), then
    `+ UGFzc3dvcmQ6` ("Password:"), then the login; method plain in the auth request."""
    with greeted(lab) as c:
        c.send(b"AUTH LOGIN\r\n").expect(USER_CHALLENGE)
        c.send(b64(b"alice") + b"\r\n").expect(PASS_CHALLENGE)
        c.send(b64(b"secret") + b"\r\n").expect(logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [auth_request()]
    assert lab.pop3.commands == backend_login()


def test_auth_login_with_initial_username(lab):
    """nginx: `AUTH LOGIN <b64 user>` (the MS form) skips the Username: challenge; LOGIN is
    accepted even when pop3_auth does not list plain."""
    c, _ = greeted_with_salt(lab, "pop3_auth apop;")
    with c:
        c.send(b"AUTH login " + b64(b"us er") + b"\r\n").expect(PASS_CHALLENGE)
        c.send(b64(b"p w") + b"\r\n").expect(logged_in(lab, "us er"))
    assert [r.raw for r in lab.auth.requests] == [auth_request(b"us%20er", b"p%20w")]
    assert lab.pop3.commands == backend_login(b"us er", b"p w")


def test_unknown_mechanism(lab):
    """RFC 5034 §4: an unsupported mechanism is refused (nginx: `-ERR invalid command`, not
    counted), DIGEST-MD5, GSSAPI and XOAUTH2 included."""
    with greeted(lab, "max_errors 1;") as c:
        for mech in (b"DIGEST-MD5", b"GSSAPI", b"XOAUTH2", b"PLAINX"):
            c.send(b"AUTH " + mech + b"\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)


# -- AUTH CRAM-MD5 (RFC 2195) ----------------------------------------------------------------

def test_auth_cram_md5(lab):
    """RFC 2195: the challenge is base64 of the greeting's salt `<R.T@mx.test>`; the response
    `user hex(HMAC-MD5(password, challenge))` goes to auth_http as method cram-md5 with the
    digest as Auth-Pass and the salt as Auth-Salt; the upstream gets the Auth-Pass returned."""
    c, salt = greeted_with_salt(lab, SALTED)
    with c:
        c.send(b"AUTH CRAM-MD5\r\n").expect(b"+ " + b64(salt) + b"\r\n")
        digest = hmac.new(b"secret", salt, hashlib.md5).hexdigest().encode()
        c.send(b64(b"alice " + digest) + b"\r\n").expect(logged_in(lab))
    [req] = lab.auth.requests
    assert req.raw == auth_request(password=digest, method=b"cram-md5", salt=salt)
    assert lab.pop3.commands == backend_login()


def test_auth_cram_md5_disabled_or_malformed(lab):
    """nginx: CRAM-MD5 is refused unless enabled and refused with an initial response; a
    response whose digest is not 32 bytes after the first space is invalid (RFC 2195 §2)."""
    with greeted(lab) as c:
        c.send(b"AUTH CRAM-MD5\r\n").expect(INVALID)
    c, salt = greeted_with_salt(lab, "pop3_auth cram-md5;")
    with c:
        c.send(b"AUTH CRAM-MD5 " + b64(b"alice " + b"0" * 32) + b"\r\n").expect(INVALID)
        c.send(b"AUTH CRAM-MD5\r\n").expect(b"+ " + b64(salt) + b"\r\n")
        c.send(b64(b"alice 0123") + b"\r\n").expect(INVALID)
        c.send(b"AUTH CRAM-MD5\r\n").expect(b"+ " + b64(salt) + b"\r\n")  # the same salt
        c.send(b"NOOP\r\n").expect(INVALID)  # any line is the response, then invalid
        c.send(b"NOOP\r\n").expect(OK)
    assert lab.auth.requests == []


# -- AUTH EXTERNAL (RFC 4422 Appendix A) -----------------------------------------------------

def test_auth_external_enabled(lab):
    """RFC 4422 Appendix A EXTERNAL: nginx asks with `+ VXNlcm5hbWU6`, then sends method
    external with an empty Auth-Pass; the auth server supplies the password for the upstream."""
    with greeted(lab, "pop3_auth external;") as c:
        c.send(b"AUTH EXTERNAL\r\n").expect(USER_CHALLENGE)
        c.send(b64(b"alice") + b"\r\n").expect(logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [auth_request(password=b"", method=b"external")]
    assert lab.pop3.commands == backend_login()


def test_auth_external_disabled(lab):
    """nginx (1.11.9): the challenge form of EXTERNAL is refused unless pop3_auth enables it."""
    with greeted(lab, "max_errors 1;") as c:
        c.send(b"AUTH EXTERNAL\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)
    assert lab.auth.requests == []


def test_auth_external_initial_response_even_when_disabled(lab):
    """nginx QUIRK (docs/behaviour.md §8.3): `AUTH EXTERNAL <b64>` is accepted although external is not in
    pop3_auth (only the challenge form checks it)."""
    with greeted(lab) as c:
        c.send(b"AUTH EXTERNAL " + b64(b"alice") + b"\r\n").expect(logged_in(lab))
    assert [r.raw for r in lab.auth.requests] == [auth_request(password=b"", method=b"external")]
    assert lab.pop3.commands == backend_login()
