"""`smtp_auth none`: unauthenticated senders relayed by MAIL/RCPT (docs/behaviour.md §9.4, §10.1, §11.4,
§18), on every target, exact bytes.

The RCPT TO completes the "credentials": nginx asks the auth server with Auth-Method none and
the Auth-SMTP-* headers, replays HELO/MAIL/RCPT to the upstream (after XCLIENT), relays the
upstream's RCPT reply whatever it is (RFC 5321 §3.3) and stays in relay mode. Also the
CVE-2025-53859 class: credentials half-entered through AUTH must never reach the auth server
with Auth-Method none.
"""

from __future__ import annotations

import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit.smtp_support import (  # noqa: F401 -- fixtures
    BAD_SEQUENCE,
    HELO_REPLY,
    INTERNAL_ERROR,
    INVALID,
    OK,
    PASSWORD,
    UPSTREAM_OK,
    USERNAME,
    b64,
    fresh_smtp_fixture,
    greet,
    none_request,
)

NONE = "smtp_auth plain login none;"
XCLIENT_NONE = b"XCLIENT ADDR=127.0.0.1 NAME=[UNAVAILABLE]"
RCPT_REJECTED = "550 rcpt rejected by backend"


def smtp(lab, server: str = NONE):
    return lab.proxy(server=server, protocol="smtp")


def accept(lab, **kw) -> None:
    """The auth server lets the unauthenticated sender through to the fake upstream."""
    lab.auth.push(Reply.ok("127.0.0.1", lab.smtp.port, **kw))


# -- the spec's capture ---------------------------------------------------------------------

def test_capture_none_mode_with_xclient(lab):
    """§18 capture (xclient on, resolver off): HELO me, `MAIL FROM:<a@b>  SIZE=10` (two
    spaces kept), RCPT TO:<c@d> → the request's Auth-SMTP-* tail, the upstream sequence
    EHLO/XCLIENT/HELO me/MAIL/RCPT, and the upstream's 550 RCPT reply relayed; the session
    stays in relay mode (RFC 5321 §3.3: a failed RCPT does not end the transaction)."""
    lab.smtp.faults.reject_rcpt = RCPT_REJECTED
    accept(lab)
    with greet(smtp(lab)) as c:
        c.send(b"HELO me\r\n").expect(HELO_REPLY)
        c.send(b"MAIL FROM:<a@b>  SIZE=10\r\n").expect(OK)
        c.send(b"RCPT TO:<c@d>\r\n").expect(RCPT_REJECTED.encode() + b"\r\n")
        c.send(b"RCPT TO:<e@f>\r\n").expect(RCPT_REJECTED.encode() + b"\r\n")
    assert [r.raw for r in lab.auth.requests] == [
        none_request(b"me", b"MAIL FROM:<a@b>  SIZE=10", b"RCPT TO:<c@d>")]
    assert lab.smtp.command_lines == [b"EHLO mx.test", XCLIENT_NONE, b"HELO me",
                                      b"MAIL FROM:<a@b>  SIZE=10", b"RCPT TO:<c@d>",
                                      b"RCPT TO:<e@f>"]


def test_none_mode_message_reaches_the_upstream(lab):
    """RFC 5321 §3.3: after the relayed RCPT reply the client speaks to the upstream: DATA,
    the message and QUIT go straight through; the upstream saw the client address through
    XCLIENT and the client's EHLO."""
    accept(lab)
    with greet(smtp(lab)) as c:
        c.send(b"EHLO client.example\r\n")
        while c.readline()[3:4] == b"-":
            pass
        c.send(b"MAIL FROM:<a@example.test>\r\n").expect(OK)
        c.send(b"RCPT TO:<b@example.test>\r\n").expect(UPSTREAM_OK)
        c.send(b"DATA\r\n").expect(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        c.send(b"Subject: none mode\r\n\r\nhello\r\n.\r\n").expect(b"250 2.0.0 Ok: queued as ")
        c.readline()
        c.send(b"QUIT\r\n").expect(b"221 Bye\r\n").expect_closed()
    [msg] = lab.smtp.messages
    assert (msg.mail_from, msg.rcpt_tos) == ("a@example.test", ["b@example.test"])
    assert msg.xclient == {"ADDR": "127.0.0.1", "NAME": "[UNAVAILABLE]"}
    assert lab.smtp.command_lines[:5] == [b"EHLO mx.test", XCLIENT_NONE, b"EHLO client.example",
                                          b"MAIL FROM:<a@example.test>",
                                          b"RCPT TO:<b@example.test>"]


@pytest.mark.parametrize("mail,rcpt,stored_mail,stored_rcpt", [
    (b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>", b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>"),
    (b"mail   from:<A@B>   BODY=8BITMIME   ", b"Rcpt To:<C@D>  ",
     b"mail   from:<A@B>   BODY=8BITMIME", b"Rcpt To:<C@D>"),
], ids=["plain", "case-and-spacing-kept"])
def test_none_mode_without_helo(lab, mail, rcpt, stored_mail, stored_rcpt):
    """§10.1: Auth-SMTP-Helo is empty when the client never said HELO/EHLO, and nginx repeats
    no HELO after XCLIENT (§11.4). §9.4: the stored MAIL and RCPT text runs from the verb to
    the end of the last argument, in the client's case, inner spacing kept, trailing spaces
    dropped."""
    accept(lab)
    with greet(smtp(lab)) as c:
        c.send(mail + b"\r\n").expect(OK)
        c.send(rcpt + b"\r\n").expect(UPSTREAM_OK)
    assert [r.raw for r in lab.auth.requests] == [none_request(b"", stored_mail, stored_rcpt)]
    assert lab.smtp.command_lines == [b"EHLO mx.test", XCLIENT_NONE, stored_mail, stored_rcpt]


@pytest.mark.parametrize("verb", [b"HELO", b"EHLO"])
def test_none_mode_without_xclient_uses_the_clients_verb(lab, verb):
    """§11.4 table (xclient off, none): HELO or EHLO by the client's choice, with nginx's own
    name, then MAIL and RCPT; no XCLIENT."""
    accept(lab)
    with greet(smtp(lab, NONE + "\nxclient off;")) as c:
        c.send(verb + b" me\r\n")
        while c.readline()[3:4] == b"-":
            pass
        c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n").expect(OK + UPSTREAM_OK)
    assert lab.smtp.command_lines == [verb + b" mx.test", b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>"]


def test_pipelined_mail_rcpt_rset(lab):
    """RFC 2920 / nginx-tests mail_smtp.t: MAIL, RCPT and RSET in one packet → OK from nginx,
    the upstream's RCPT reply, and RSET answered by the upstream (forwarded after login)."""
    accept(lab)
    with greet(smtp(lab)) as c:
        c.send(b"MAIL FROM:<a@b> SIZE=100\r\nRCPT TO:<c@d>\r\nRSET\r\n")
        c.expect(OK + UPSTREAM_OK + UPSTREAM_OK)
    assert lab.smtp.command_lines[-1] == b"RSET"


# -- failures -------------------------------------------------------------------------------

def test_none_mode_failure_closes(lab):
    """§10.4: a refused sender gets `535 5.7.0 <text>` (or Auth-Error-Code) and EOF."""
    lab.auth.push(Reply.fail("Relaying denied", error_code="554 5.7.1"))
    with greet(smtp(lab)) as c:
        c.send(b"MAIL FROM:<a@b>\r\n").expect(OK)
        c.send(b"RCPT TO:<c@d>\r\n").expect(b"554 5.7.1 Relaying denied\r\n").expect_closed()
    assert lab.smtp.command_lines == []


def test_none_mode_waited_failure_keeps_mail_and_rcpt(lab):
    """§9.4 QUIRK [verified]: after a waited failure the stored MAIL stays: a new MAIL → 503,
    a new RCPT asks again at once, still with the old MAIL text, as attempt 2."""
    lab.auth.push(Reply.fail("Not now", wait=1), Reply.ok("127.0.0.1", lab.smtp.port))
    with greet(smtp(lab), timeout=10) as c:
        c.send(b"HELO me\r\n").expect(HELO_REPLY)
        c.send(b"MAIL FROM:<old@b>\r\n").expect(OK)
        c.send(b"RCPT TO:<c@d>\r\n").expect(b"535 5.7.0 Not now\r\n", timeout=8)
        c.send(b"MAIL FROM:<new@b>\r\n").expect(BAD_SEQUENCE)
        c.send(b"RCPT TO:<e@f>\r\n").expect(UPSTREAM_OK)
    assert [r.raw for r in lab.auth.requests] == [
        none_request(b"me", b"MAIL FROM:<old@b>", b"RCPT TO:<c@d>"),
        none_request(b"me", b"MAIL FROM:<old@b>", b"RCPT TO:<e@f>", attempt=2)]
    assert lab.smtp.command_lines[-2:] == [b"MAIL FROM:<old@b>", b"RCPT TO:<e@f>"]


def test_upstream_refusing_mail_is_an_internal_error(lab):
    """§11.4: the replayed MAIL must get 250; anything else ends the login: with
    proxy_pass_error_message off the client gets `451 4.3.2 Internal server error`."""
    lab.smtp.faults.reject_mail = True
    accept(lab)
    with greet(smtp(lab)) as c:
        c.send(b"MAIL FROM:<a@b>\r\n").expect(OK)
        c.send(b"RCPT TO:<c@d>\r\n").expect(INTERNAL_ERROR).expect_closed()


def test_upstream_refusing_mail_passed_through(lab):
    """§11.1: with proxy_pass_error_message on the upstream's own MAIL reply is relayed, then
    close."""
    lab.smtp.faults.reject_mail = "550 5.7.1 Sender address rejected: Access denied"
    accept(lab)
    with greet(smtp(lab, NONE + "\nproxy_pass_error_message on;")) as c:
        c.send(b"MAIL FROM:<a@b>\r\n").expect(OK)
        c.send(b"RCPT TO:<c@d>\r\n")
        c.expect(b"550 5.7.1 Sender address rejected: Access denied\r\n").expect_closed()


def test_auth_user_from_the_auth_server_goes_into_xclient(lab):
    """§11.4: LOGIN= is sent whenever a login is known; in none mode the only source is an
    Auth-User header from the auth server."""
    accept(lab, user="relay-user")
    with greet(smtp(lab)) as c:
        c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n").expect(OK + UPSTREAM_OK)
    assert lab.smtp.command_lines[1] == \
        b"XCLIENT ADDR=127.0.0.1 LOGIN=relay-user NAME=[UNAVAILABLE]"


def test_auth_still_works_in_none_mode(lab):
    """§9.4: `none` adds MAIL/RCPT without authentication; AUTH keeps working."""
    with greet(smtp(lab)) as c:
        c.send(b"AUTH PLAIN " + b64(b"\0alice\0secret") + b"\r\n")
        c.expect(b"235 2.0.0 OK\r\n")
    assert lab.auth.requests[0].auth_method == "plain"


# -- CVE-2025-53859 ---------------------------------------------------------------------------

def cve_requests(lab, c, rcpt: bytes = b"RCPT TO:<c@d>") -> None:
    c.send(b"MAIL FROM:<a@b>\r\n").expect(OK)
    c.send(rcpt + b"\r\n").expect(UPSTREAM_OK)
    [req] = lab.auth.requests
    assert req.raw == none_request(b"x", b"MAIL FROM:<a@b>", rcpt), req.raw
    assert lab.smtp.command_lines[1] == XCLIENT_NONE


@pytest.mark.nginx_min("1.29.1", "MAIL FROM clears the stored login/password")
def test_half_entered_login_never_reaches_a_none_request(lab):
    """CVE-2025-53859 class (§15, 1.29.1): a user name given in AUTH LOGIN, then a password
    that is not base64 (500): the later MAIL/RCPT asks with Auth-Method none and empty
    Auth-User/Auth-Pass, and XCLIENT carries no LOGIN=."""
    accept(lab)
    with greet(smtp(lab)) as c:
        c.send(b"EHLO x\r\n").readline(), c.readline()
        c.send(b"AUTH LOGIN " + b64(b"alice") + b"\r\n").expect(PASSWORD)
        c.send(b"!!!!\r\n").expect(INVALID)
        cve_requests(lab, c)


@pytest.mark.nginx_min("1.29.1", "MAIL FROM clears the stored login/password")
def test_failed_decode_after_a_long_login_leaks_nothing(lab):
    """CVE-2025-53859 (§5.5: decode errors do not clobber stored credentials): a long user
    name, a bad password; then a bad user name and a PLAIN message whose password part is
    missing (both would once have left a stale length over new data). The none request still
    has empty Auth-User and Auth-Pass."""
    accept(lab)
    with greet(smtp(lab)) as c:
        c.send(b"EHLO x\r\n").readline(), c.readline()
        c.send(b"AUTH LOGIN\r\n").expect(USERNAME)
        c.send(b64(b"A" * 48) + b"\r\n").expect(PASSWORD)
        c.send(b"%%%%\r\n").expect(INVALID)
        c.send(b"AUTH LOGIN\r\n").expect(USERNAME)
        c.send(b"!!!!\r\n").expect(INVALID)
        c.send(b"AUTH PLAIN " + b64(b"\0b") + b"\r\n").expect(INVALID)
        c.send(b"AUTH PLAIN " + b64(b"nonul") + b"\r\n").expect(INVALID)
        cve_requests(lab, c)


def test_failed_decode_keeps_earlier_login_out_of_none_request_after_mail(lab):
    """CVE-2025-53859 class, the form every patched nginx shares: bad base64 first, then
    MAIL/RCPT: nothing from the failed AUTH appears in the request."""
    accept(lab)
    with greet(smtp(lab)) as c:
        c.send(b"EHLO x\r\n").readline(), c.readline()
        c.send(b"AUTH PLAIN !!!!\r\n").expect(INVALID)
        c.send(b"AUTH LOGIN\r\n").expect(USERNAME)
        c.send(b"!!!!\r\n").expect(INVALID)
        cve_requests(lab, c)
