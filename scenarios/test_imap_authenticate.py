"""IMAP AUTHENTICATE before authentication: PLAIN, LOGIN, CRAM-MD5 and EXTERNAL, their enabled
and disabled forms, malformed data and nginx's quirks (docs/behaviour.md §5.5, §7.6; RFC 3501 §6.2.2,
RFC 4422, RFC 4616, RFC 2195).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from postern.scenarios.kit.imap_support import (
    INVALID,
    LOGGED_IN,
    auth_request,
    backend_login,
    greeted,
)
from postern.scenarios.kit.support import PASS_CHALLENGE, PLAIN_ALICE, USER_CHALLENGE


def test_plain_with_initial_response(lab):
    """RFC 4616 PLAIN with an initial response (RFC 4959 SASL-IR style): one line, the login
    goes to auth_http as method plain and upstream as LOGIN with the command's tag."""
    with greeted(lab) as c:
        c.send(b"a1 AUTHENTICATE PLAIN " + PLAIN_ALICE + b"\r\n").expect(b"a1 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request()]
    assert lab.imap.commands == [backend_login(b"a1", b"alice", b"secret")]


def test_plain_two_steps(lab):
    """RFC 3501 §6.2.2 / RFC 4616: without an initial response the server sends the empty
    continuation `+ ` and takes the next line as the response; the mechanism name is
    case-insensitive (RFC 4422 §3.1)."""
    with greeted(lab) as c:
        c.send(b"a1 authenticate plain\r\n").expect(b"+ \r\n")
        c.expect_silence(0.2)
        c.send(PLAIN_ALICE + b"\r\n").expect(b"a1 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request()]


def test_plain_authzid_ignored_and_lenient_base64(lab):
    """RFC 4616 §2: the authzid is not used (nginx drops it); nginx's base64 decoder accepts a
    response without padding and stops at the first `=` (docs/behaviour.md §5.5)."""
    blob = base64.b64encode(b"admin\0alice\0secret").rstrip(b"=")
    with greeted(lab) as c:
        c.send(b"a1 AUTHENTICATE PLAIN " + blob + b"\r\n").expect(b"a1 " + LOGGED_IN)
    padded = base64.b64encode(b"x\0bob\0hunter2")
    assert padded.endswith(b"==")
    with greeted(lab) as c:
        c.send(b"b1 AUTHENTICATE PLAIN\r\n").expect(b"+ \r\n")
        c.send(padded + b"garbage!\r\n").expect(b"b1 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [
        auth_request(), auth_request(user=b"bob", password=b"hunter2")]


def test_plain_malformed_blob(lab):
    """RFC 4616 §2 message syntax: a decoded response without the NUL separators is refused
    with a tagged BAD, back to the initial state (docs/behaviour.md §5.5)."""
    with greeted(lab) as c:
        c.send(b"a1 AUTHENTICATE PLAIN " + base64.b64encode(b"alice secret") + b"\r\n")
        c.expect(b"a1 " + INVALID)
        c.send(b"a2 AUTHENTICATE PLAIN\r\n").expect(b"+ \r\n")
        c.send(base64.b64encode(b"\0alice") + b"\r\n").expect(b"a2 " + INVALID)
        c.send(b"a3 NOOP\r\n").expect(b"a3 OK completed\r\n")
    assert lab.auth.requests == []


def test_sasl_response_line_is_a_bare_argument(lab):
    """RFC 3501 §6.2.2: a SASL response line is base64 alone, not an IMAP string — nginx reads
    it up to the first space (trailing words ignored), and quotes are data, so a quoted
    response is invalid base64 (docs/behaviour.md §7.6)."""
    with greeted(lab) as c:
        c.send(b"a1 AUTHENTICATE PLAIN\r\n").expect(b"+ \r\n")
        c.send(b'"' + PLAIN_ALICE + b'"\r\n').expect(b"a1 " + INVALID)
        c.send(b"a2 AUTHENTICATE LOGIN\r\n").expect(USER_CHALLENGE)
        c.send(base64.b64encode(b"alice") + b" ignored words\r\n").expect(PASS_CHALLENGE)
        c.send(base64.b64encode(b"secret") + b"\r\n").expect(b"a2 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request()]


def test_authenticate_arguments_as_strings(lab):
    """RFC 3501 §6.2.2 / §4.3: the command's own arguments are IMAP strings — a quoted mechanism
    and initial response, or a mechanism sent as a literal (with its `+ OK`), work alike."""
    with greeted(lab) as c:
        c.send(b'a1 AUTHENTICATE "PLAIN" "' + PLAIN_ALICE + b'"\r\n').expect(b"a1 " + LOGGED_IN)
    with greeted(lab) as c:
        c.send(b"b1 AUTHENTICATE {5}\r\n").expect(b"+ OK\r\n")
        c.send(b"PLAIN\r\n").expect(b"+ \r\n")
        c.send(PLAIN_ALICE + b"\r\n").expect(b"b1 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request(), auth_request()]


def test_login_mechanism_two_challenges(lab):
    """nginx AUTH LOGIN (draft-murchison-sasl-login): `+ VXNlcm5hbWU6` ("Username:"), then
    `+ UGFzc3dvcmQ6` ("Password:"); always accepted even when imap_auth lacks login."""
    with greeted(lab) as c:
        c.send(b"a1 AUTHENTICATE LOGIN\r\n").expect(USER_CHALLENGE)
        c.send(base64.b64encode(b"alice") + b"\r\n").expect(PASS_CHALLENGE)
        c.send(base64.b64encode(b"secret") + b"\r\n").expect(b"a1 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request()]
    assert lab.imap.commands == [backend_login(b"a1", b"alice", b"secret")]


def test_login_mechanism_with_initial_username(lab):
    """nginx: `AUTHENTICATE LOGIN <b64 user>` (the MS form) skips the Username: challenge."""
    with greeted(lab, "imap_auth login;") as c:
        c.send(b"a1 AUTHENTICATE login " + base64.b64encode(b"bob") + b"\r\n")
        c.expect(PASS_CHALLENGE)
        c.send(base64.b64encode(b"hunter2") + b"\r\n").expect(b"a1 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request(user=b"bob",
                                                               password=b"hunter2")]
    assert lab.imap.commands == [backend_login(b"a1", b"bob", b"hunter2")]


def test_login_mechanism_bad_username_is_untagged(lab):
    """nginx QUIRK (docs/behaviour.md §7.6): bad base64 answering the Username: challenge gets an untagged
    `BAD invalid command` (no tag, no `* `); the session is back in the initial state."""
    with greeted(lab) as c:
        c.send(b"a1 AUTHENTICATE LOGIN\r\n").expect(USER_CHALLENGE)
        c.send(b"!!!\r\n").expect(INVALID)
        c.send(b"a2 NOOP\r\n").expect(b"a2 OK completed\r\n")
        c.send(b"a3 AUTHENTICATE LOGIN\r\n").expect(USER_CHALLENGE)
        c.send(base64.b64encode(b"alice") + b"\r\n").expect(PASS_CHALLENGE)
        c.send(b"%%%\r\n").expect(b"a3 " + INVALID)  # the password step is tagged
    assert lab.auth.requests == []


def test_bad_base64_and_cancel(lab):
    """RFC 3501 §6.2.2 / RFC 4422 §3.5: a `*` line cancels an exchange; nginx answers it like
    any invalid base64 — the command's tagged BAD — and returns to the initial state."""
    with greeted(lab) as c:
        c.send(b"a1 AUTHENTICATE PLAIN\r\n").expect(b"+ \r\n")
        c.send(b"*\r\n").expect(b"a1 " + INVALID)
        c.send(b"a2 AUTHENTICATE PLAIN AGFsaWNl*AHNlY3JldA==\r\n").expect(b"a2 " + INVALID)
        c.send(b"a3 AUTHENTICATE PLAIN Q\r\n").expect(b"a3 " + INVALID)  # length 1 mod 4
        c.send(b"a4 NOOP\r\n").expect(b"a4 OK completed\r\n")
    assert lab.auth.requests == []


def test_unknown_mechanism_and_bad_argument_counts(lab):
    """RFC 3501 §6.2.2: an unsupported mechanism is refused (nginx: tagged BAD); so are
    AUTHENTICATE without a mechanism and PLAIN/LOGIN with an extra argument."""
    with greeted(lab) as c:
        c.send(b"a1 AUTHENTICATE\r\n").expect(b"a1 " + INVALID)
        c.send(b"a2 AUTHENTICATE DIGEST-MD5\r\n").expect(b"a2 " + INVALID)
        c.send(b"a3 AUTHENTICATE PLAIN " + PLAIN_ALICE + b" x\r\n").expect(b"a3 " + INVALID)
        c.send(b"a4 AUTHENTICATE LOGIN YQ== YQ==\r\n").expect(b"a4 " + INVALID)
        c.send(b"a5 NOOP\r\n").expect(b"a5 OK completed\r\n")
    assert lab.auth.requests == []


def test_cram_md5_enabled(lab):
    """RFC 2195 CRAM-MD5: the challenge decodes to `<R.T@server_name>`; the response is
    `user hex(HMAC-MD5(password, challenge))`; the auth request carries method cram-md5, the
    digest as Auth-Pass and the challenge as Auth-Salt (docs/behaviour.md §10.1), and the upstream login
    uses the Auth-Pass the auth server returns."""
    with greeted(lab, "imap_auth plain cram-md5;") as c:
        c.send(b"a1 AUTHENTICATE CRAM-MD5\r\n")
        line = c.readline()
        assert line.startswith(b"+ ") and line.endswith(b"\r\n"), c.dump()
        challenge = base64.b64decode(line[2:-2], validate=True)
        assert re.fullmatch(rb"<\d+\.\d+@mx\.test>", challenge), challenge
        digest = hmac.new(b"secret", challenge, hashlib.md5).hexdigest().encode()
        c.send(base64.b64encode(b"alice " + digest) + b"\r\n").expect(b"a1 " + LOGGED_IN)
    [req] = lab.auth.requests
    assert req.raw == auth_request(method=b"cram-md5", password=digest,
                                   salt=challenge + b"\r\n")
    assert lab.imap.commands == [backend_login(b"a1", b"alice", b"secret")]


def test_cram_md5_disabled_or_malformed(lab):
    """nginx: CRAM-MD5 is refused unless imap_auth enables it, and refused with an argument;
    a response whose digest is not 32 bytes after the first space is a tagged BAD (RFC 2195
    §2 response form)."""
    with greeted(lab) as c:
        c.send(b"a1 AUTHENTICATE CRAM-MD5\r\n").expect(b"a1 " + INVALID)
    with greeted(lab, "imap_auth plain cram-md5;") as c:
        c.send(b"b1 AUTHENTICATE CRAM-MD5 " + base64.b64encode(b"alice " + b"0" * 32)
               + b"\r\n").expect(b"b1 " + INVALID)
        c.send(b"b2 AUTHENTICATE CRAM-MD5\r\n")
        assert c.readline().startswith(b"+ PD")  # base64 of "<"
        c.send(base64.b64encode(b"alice 0123") + b"\r\n").expect(b"b2 " + INVALID)
        c.send(b"b3 NOOP\r\n").expect(b"b3 OK completed\r\n")
    assert lab.auth.requests == []


def test_cram_md5_salt_kept_for_the_session(lab):
    """nginx: the CRAM-MD5 salt is created on the first AUTHENTICATE CRAM-MD5 and kept for the
    whole session, so a second exchange shows the same challenge (docs/behaviour.md §5.5)."""
    with greeted(lab, "imap_auth plain cram-md5;") as c:
        c.send(b"a1 AUTHENTICATE CRAM-MD5\r\n")
        first = c.readline()
        c.send(b"*\r\n").expect(b"a1 " + INVALID)
        c.send(b"a2 AUTHENTICATE CRAM-MD5\r\n").expect(first)


def test_external_enabled(lab):
    """RFC 4422 Appendix A EXTERNAL: nginx asks for the identity with `+ VXNlcm5hbWU6`, then
    sends method external with an empty Auth-Pass; the auth server supplies the password."""
    with greeted(lab, "imap_auth external;") as c:
        c.send(b"a1 AUTHENTICATE EXTERNAL\r\n").expect(USER_CHALLENGE)
        c.send(base64.b64encode(b"alice") + b"\r\n").expect(b"a1 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request(method=b"external",
                                                               password=b"")]
    assert lab.imap.commands == [backend_login(b"a1", b"alice", b"secret")]


def test_external_disabled(lab):
    """nginx (1.11.9): the challenge form of EXTERNAL is refused unless imap_auth enables it."""
    with greeted(lab) as c:
        c.send(b"a1 AUTHENTICATE EXTERNAL\r\n").expect(b"a1 " + INVALID)
        c.send(b"a2 NOOP\r\n").expect(b"a2 OK completed\r\n")
    assert lab.auth.requests == []


def test_external_initial_response_even_when_disabled(lab):
    """nginx QUIRK (docs/behaviour.md §7.6): `AUTHENTICATE EXTERNAL <b64>` is accepted although external is
    not in imap_auth (only the challenge form checks it)."""
    with greeted(lab) as c:
        c.send(b"a1 AUTHENTICATE EXTERNAL " + base64.b64encode(b"alice") + b"\r\n")
        c.expect(b"a1 " + LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [auth_request(method=b"external",
                                                               password=b"")]
    assert lab.imap.commands == [backend_login(b"a1", b"alice", b"secret")]
