"""Logging into the SMTP upstream for the client (docs/behaviour.md §11.1, §11.4, §11.6) and the relay
after it (§12), on every target, exact bytes.

Every row of the §11.4 sequence table (xclient on/off × proxy_smtp_auth on/off, HELO or EHLO
by the client's choice), the exact Postfix XCLIENT line (ADDR, LOGIN in xtext, NAME), AUTH
PLAIN (RFC 4616) to the upstream, nginx's own `235 2.0.0 OK`, and every way the upstream can
fail the login. The fake upstream (lab.smtp, aiosmtpd with Postfix's XCLIENT) records each
line it receives; its faults script the failures.
"""

from __future__ import annotations

import time

import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit.real.common import free_port
from postern.scenarios.kit.smtp_support import (  # noqa: F401 -- fixtures
    AUTH_OK,
    EHLO_DEFAULT,
    HELO_REPLY,
    INTERNAL_ERROR,
    UPSTREAM_BYE,
    UPSTREAM_OK,
    b64,
    fresh_smtp_fixture,
    greet,
    plain,
    read_reply,
)
from postern.scenarios.kit.support import LogWatch

XCLIENT_LOGIN = b"XCLIENT ADDR=127.0.0.1 LOGIN=alice NAME=[UNAVAILABLE]"
XCLIENT_NO_LOGIN = b"XCLIENT ADDR=127.0.0.1 NAME=[UNAVAILABLE]"
AUTH_BLOB = b"AUTH PLAIN " + plain()
PASS_ON = "proxy_pass_error_message on;"


def smtp(lab, server: str = ""):
    return lab.proxy(server=server, protocol="smtp")


def submit(proxy, helo: bytes | None = b"EHLO client.example", auth: bytes = AUTH_BLOB,
           reply: bytes = AUTH_OK):
    """Greeting, optional HELO/EHLO, AUTH; returns the client after the expected reply."""
    c = greet(proxy)
    if helo is not None:
        c.send(helo + b"\r\n")
        read_reply(c)
    c.send(auth + b"\r\n").expect(reply)
    return c


# -- the §11.4 table ----------------------------------------------------------------------

@pytest.mark.parametrize("helo,repeated", [
    (b"EHLO client.example", [b"EHLO client.example"]),
    (b"HELO client.example", [b"HELO client.example"]),
    (None, []),
])
def test_xclient_on_smtp_auth_off(lab, helo, repeated):
    """§11.4 row 1 (xclient on, proxy_smtp_auth off): `EHLO <server_name>` (always EHLO with
    xclient), `XCLIENT ADDR=... LOGIN=... NAME=...`, then the client's own HELO/EHLO repeated
    with its own verb (nginx 0.7.34), none if it sent none."""
    with submit(smtp(lab), helo) as c:
        c.send(b"NOOP\r\n").expect(UPSTREAM_OK)
    assert lab.smtp.command_lines == [b"EHLO mx.test", XCLIENT_LOGIN] + repeated + [b"NOOP"]


def test_xclient_on_smtp_auth_on(lab):
    """§11.4 row 2 (xclient on, proxy_smtp_auth on): XCLIENT without LOGIN=, the client's
    EHLO, then `AUTH PLAIN <b64(\\0login\\0password)>` (RFC 4616); the upstream's 235 is
    swallowed and the client gets nginx's `235 2.0.0 OK`."""
    with submit(smtp(lab, "proxy_smtp_auth on;")) as c:
        c.send(b"NOOP\r\n").expect(UPSTREAM_OK)
    assert lab.smtp.command_lines == [b"EHLO mx.test", XCLIENT_NO_LOGIN, b"EHLO client.example",
                                      AUTH_BLOB, b"NOOP"]
    assert lab.smtp.auth_attempts == [("PLAIN", "alice", True)]


@pytest.mark.parametrize("helo,own", [
    (b"EHLO client.example", b"EHLO mx.test"),
    (b"HELO client.example", b"HELO mx.test"),
    (None, b"HELO mx.test"),
])
def test_xclient_off_smtp_auth_off(lab, helo, own):
    """§11.4 row 3 (xclient off, proxy_smtp_auth off): only nginx's own HELO, or EHLO when
    the client said EHLO; the client's HELO argument is not sent."""
    with submit(smtp(lab, "xclient off;"), helo) as c:
        c.send(b"NOOP\r\n").expect(UPSTREAM_OK)
    assert lab.smtp.command_lines == [own, b"NOOP"]


@pytest.mark.parametrize("helo,own", [
    (b"EHLO client.example", b"EHLO mx.test"),
    (b"HELO client.example", b"HELO mx.test"),
])
def test_xclient_off_smtp_auth_on(lab, helo, own):
    """§11.4 row 4 (xclient off, proxy_smtp_auth on): HELO/EHLO with nginx's name, AUTH
    PLAIN."""
    with submit(smtp(lab, "xclient off;\nproxy_smtp_auth on;"), helo) as c:
        c.send(b"NOOP\r\n").expect(UPSTREAM_OK)
    assert lab.smtp.command_lines == [own, AUTH_BLOB, b"NOOP"]


@pytest.mark.parametrize("xclient,lines", [
    ("on", [b"EHLO mx.test", XCLIENT_NO_LOGIN, b"HELO me", b"MAIL FROM:<a@b>",
            b"RCPT TO:<c@d>"]),
    ("off", [b"HELO mx.test", b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>"]),
])
def test_none_mode_ignores_proxy_smtp_auth(lab, xclient, lines):
    """§11.4 rows 5-6 (`*` for proxy_smtp_auth): an unauthenticated sender is never
    AUTHenticated to the upstream; MAIL and RCPT are replayed."""
    lab.auth.push(Reply.ok("127.0.0.1", lab.smtp.port))
    proxy = smtp(lab, f"smtp_auth plain none;\nproxy_smtp_auth on;\nxclient {xclient};")
    with greet(proxy) as c:
        c.send(b"HELO me\r\n").expect(HELO_REPLY)
        c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n").expect(b"250 2.0.0 OK\r\n" + UPSTREAM_OK)
    assert lab.smtp.command_lines == lines


def test_last_helo_wins_and_ehlo_sticks(lab):
    """§9.4: each HELO/EHLO replaces the stored argument, but a HELO after EHLO keeps the
    ESMTP flag, so nginx repeats `EHLO <last argument>` to the upstream."""
    with greet(smtp(lab)) as c:
        c.send(b"EHLO first.example\r\n").expect(EHLO_DEFAULT)
        c.send(b"HELO second.example\r\n").expect(HELO_REPLY)
        c.send(AUTH_BLOB + b"\r\n").expect(AUTH_OK)
    assert lab.smtp.command_lines == [b"EHLO mx.test", XCLIENT_LOGIN, b"EHLO second.example"]


def test_helo_argument_repeated_byte_for_byte(lab):
    """§11.4: the client's HELO argument goes to the upstream as it was given (an address
    literal, RFC 5321 §4.1.3)."""
    with submit(smtp(lab), b"HELO [127.0.0.1]"):
        pass
    assert lab.smtp.command_lines[2] == b"HELO [127.0.0.1]"


# -- XCLIENT and AUTH contents --------------------------------------------------------------

def test_upstream_sees_the_client_through_xclient(lab):
    """§11.4 (Postfix XCLIENT): the upstream takes ADDR/LOGIN/NAME as the client's; a message
    sent through the relay (RFC 5321 §3.3) is stored with them."""
    with submit(smtp(lab)) as c:
        c.send(b"MAIL FROM:<alice@example.test>\r\n").expect(UPSTREAM_OK)
        c.send(b"RCPT TO:<bob@example.test>\r\n").expect(UPSTREAM_OK)
        c.send(b"DATA\r\n").expect(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        c.send(b"Subject: relayed\r\n\r\nhi\r\n.\r\n").expect(b"250 2.0.0 Ok: queued as ")
        c.readline()
        c.send(b"QUIT\r\n").expect(UPSTREAM_BYE).expect_closed()
    assert lab.smtp.xclients == [{"ADDR": "127.0.0.1", "LOGIN": "alice",
                                  "NAME": "[UNAVAILABLE]"}]
    [msg] = lab.smtp.messages
    assert (msg.login, msg.mail_from, msg.rcpt_tos) == ("alice", "alice@example.test",
                                                        ["bob@example.test"])


@pytest.mark.nginx_min("1.29.2", "XCLIENT LOGIN= is xtext-encoded")
def test_xclient_login_is_xtext(lab):
    """§11.4, §18 [verified]: LOGIN= is xtext (RFC 3461 §4): space, `+` and `=` become +XX;
    login `us er+=` → `LOGIN=us+20er+2B+3D`."""
    lab.auth.push(Reply.ok("127.0.0.1", lab.smtp.port))
    with submit(smtp(lab), b"EHLO client.example", b"AUTH PLAIN " + plain(b"us er+=", b"p")):
        pass
    assert lab.smtp.command_lines[1] == \
        b"XCLIENT ADDR=127.0.0.1 LOGIN=us+20er+2B+3D NAME=[UNAVAILABLE]"
    assert lab.smtp.xclients[0]["LOGIN"] == "us er+="


@pytest.mark.nginx_min("1.29.2", "XCLIENT LOGIN= is xtext-encoded")
def test_xclient_login_xtext_of_high_bytes(lab):
    """§11.4: bytes 0x7F-0xFF are xtext-encoded too (UTF-8 `é` → +C3+A9); `/` and `@` are
    safe."""
    lab.auth.push(Reply.ok("127.0.0.1", lab.smtp.port))
    login = "andré@ex/ample".encode()
    with submit(smtp(lab), None, b"AUTH PLAIN " + plain(login, b"p")):
        pass
    assert lab.smtp.command_lines[1] == \
        b"XCLIENT ADDR=127.0.0.1 LOGIN=andr+C3+A9@ex/ample NAME=[UNAVAILABLE]"


def test_auth_user_and_pass_replace_the_upstream_credentials(lab):
    """§10.3: Auth-User/Auth-Pass from the auth server are what nginx gives the upstream:
    XCLIENT LOGIN= and the AUTH PLAIN blob."""
    lab.auth.push(Reply.ok("127.0.0.1", lab.smtp.port, user="bob", password="hunter2"),
                  Reply.ok("127.0.0.1", lab.smtp.port, user="bob", password="hunter2"))
    with submit(smtp(lab), None, AUTH_BLOB):
        pass
    with submit(smtp(lab, "proxy_smtp_auth on;"), None, AUTH_BLOB):
        pass
    assert lab.smtp.command_lines == [
        b"EHLO mx.test", b"XCLIENT ADDR=127.0.0.1 LOGIN=bob NAME=[UNAVAILABLE]",
        b"EHLO mx.test", XCLIENT_NO_LOGIN, b"AUTH PLAIN " + plain(b"bob", b"hunter2")]


def test_login_methods_all_end_in_the_same_upstream_auth(lab):
    """§11.4: however the client authenticated (LOGIN here), the upstream gets AUTH PLAIN."""
    with greet(smtp(lab, "xclient off;\nproxy_smtp_auth on;")) as c:
        c.send(b"AUTH LOGIN " + b64(b"alice") + b"\r\n").expect(b"334 UGFzc3dvcmQ6\r\n")
        c.send(b64(b"secret") + b"\r\n").expect(AUTH_OK)
    assert lab.smtp.command_lines == [b"HELO mx.test", AUTH_BLOB]


def test_proxy_smtp_auth_without_password_is_internal_error(lab):
    """§11.4, §13: EXTERNAL gives no password; without Auth-Pass, proxy_smtp_auth cannot
    AUTH: `no password available`, `451 4.3.2 Internal server error`."""
    proxy = smtp(lab, "proxy_smtp_auth on;\nxclient off;")
    log = LogWatch(proxy)
    lab.auth.push(Reply.ok("127.0.0.1", lab.smtp.port))
    with submit(proxy, None, b"AUTH EXTERNAL " + b64(b"alice"), INTERNAL_ERROR) as c:
        c.expect_closed()
    log.wait_for("no password available")
    assert lab.smtp.command_lines == [b"HELO mx.test"]


def test_pipelined_commands_after_auth_reach_the_upstream(lab):
    """§11.6, RFC 2920: commands pipelined behind the AUTH are forwarded once logged in and
    answered by the upstream, after nginx's 235."""
    with greet(smtp(lab)) as c:
        c.send(AUTH_BLOB + b"\r\nNOOP\r\nRSET\r\nQUIT\r\n")
        c.expect(AUTH_OK + UPSTREAM_OK + UPSTREAM_OK + UPSTREAM_BYE).expect_closed()


# -- multi-line replies -----------------------------------------------------------------------

def test_multiline_greeting_is_waited_for(lab):
    """§11.4 multi-line rule: a `220-` greeting is judged when its last line arrived."""
    lab.smtp.faults.greeting = "220-upstream.test first\r\n220-second\r\n220 third"
    with submit(smtp(lab)) as c:
        c.send(b"NOOP\r\n").expect(UPSTREAM_OK)
    assert lab.smtp.command_lines[0] == b"EHLO mx.test"


def test_multiline_rejection_passed_through_whole(lab):
    """§11.1: with proxy_pass_error_message on, the whole refused multi-line reply reaches
    the client."""
    lab.smtp.faults.replies = {"XCLIENT": "550-5.7.0 no\r\n550 5.7.0 really not"}
    with submit(smtp(lab, PASS_ON), reply=b"550-5.7.0 no\r\n550 5.7.0 really not\r\n") as c:
        c.expect_closed()


# -- failures ---------------------------------------------------------------------------------

FAILURES = {
    "greeting": ({"greeting": "554 5.3.2 not now"}, b"554 5.3.2 not now\r\n"),
    "ehlo": ({"replies": {"EHLO": "550 5.7.1 no EHLO for you"}},
             b"550 5.7.1 no EHLO for you\r\n"),
    "xclient refused": ({"xclient_authorized": False},
                        b"550 5.7.0 Error: insufficient authorization\r\n"),
    "xclient unknown": ({"xclient": False},
                        b'500 Error: command "XCLIENT" not recognized\r\n'),
    "client helo": ({"replies": {"HELO": "501 5.5.2 bad HELO"}}, b"501 5.5.2 bad HELO\r\n"),
}


def _fault(lab, name: str) -> bytes:
    faults, reply = FAILURES[name]
    for key, value in faults.items():
        setattr(lab.smtp.faults, key, value)
    return reply


@pytest.mark.parametrize("name", list(FAILURES))
def test_upstream_refusal_is_internal_error(lab, name):
    """§11.1: an unexpected upstream reply (greeting not 220, EHLO not 250, XCLIENT not
    220/250, the repeated client HELO not 250) → `451 4.3.2 Internal server error` and close
    (proxy_pass_error_message off), logged as `upstream sent invalid response`."""
    proxy = smtp(lab)
    log = LogWatch(proxy)
    reply = _fault(lab, name)
    with submit(proxy, b"HELO client.example", reply=INTERNAL_ERROR) as c:
        c.expect_closed()
    log.wait_for(f'upstream sent invalid response: "{reply.decode().rstrip()}')


@pytest.mark.parametrize("name", list(FAILURES))
def test_upstream_refusal_passed_through(lab, name):
    """§11.1: with proxy_pass_error_message on the upstream's refusal is relayed verbatim,
    then close."""
    reply = _fault(lab, name)
    with submit(smtp(lab, PASS_ON), b"HELO client.example", reply=reply) as c:
        c.expect_closed()


def test_upstream_auth_rejected(lab):
    """§11.4: with proxy_smtp_auth the upstream must answer 235: a 535 (wrong Auth-Pass) →
    internal error with proxy_pass_error_message off, the 535 itself with it on."""
    lab.auth.push(Reply.ok("127.0.0.1", lab.smtp.port, password="wrong"),
                  Reply.ok("127.0.0.1", lab.smtp.port, password="wrong"))
    with submit(smtp(lab, "proxy_smtp_auth on;"), reply=INTERNAL_ERROR) as c:
        c.expect_closed()
    with submit(smtp(lab, "proxy_smtp_auth on;\n" + PASS_ON),
                reply=b"535 5.7.8 Authentication credentials invalid\r\n") as c:
        c.expect_closed()
    assert [a[2] for a in lab.smtp.auth_attempts] == [False, False]


def test_upstream_closing_during_login_is_always_internal_error(lab):
    """§11.1: EOF from the upstream mid-login → the internal-error line even with
    proxy_pass_error_message on (there is no reply to pass)."""
    lab.smtp.faults.drop_at = "XCLIENT"
    with submit(smtp(lab, PASS_ON), reply=INTERNAL_ERROR) as c:
        c.expect_closed()


def test_upstream_down(lab):
    """§11.1, §13: connection refused → `451 4.3.2 Internal server error`, close."""
    proxy = smtp(lab)
    log = LogWatch(proxy)
    lab.auth.push(Reply.ok("127.0.0.1", free_port()))
    with submit(proxy, reply=INTERNAL_ERROR) as c:
        c.expect_closed()
    log.wait_for("(111: Connection refused)")


def test_upstream_silent_times_out(lab):
    """§11.1: one `timeout` covers the whole upstream login; a silent upstream → `upstream
    timed out`, then the internal-error line and close."""
    proxy = smtp(lab, "timeout 2s;")
    log = LogWatch(proxy)
    lab.smtp.faults.greeting = None
    with greet(proxy, timeout=10) as c:
        start = time.monotonic()
        c.send(AUTH_BLOB + b"\r\n").expect(INTERNAL_ERROR, timeout=9).expect_closed()
        assert 1.5 <= time.monotonic() - start <= 8
    log.wait_for("upstream timed out")


def test_upstream_too_long_reply_line(lab):
    """§11.1: a reply that fills proxy_buffer without a line end → `upstream sent too long
    response line`, internal error."""
    proxy = smtp(lab, "proxy_buffer 1k;")
    log = LogWatch(proxy)
    lab.smtp.faults.greeting = "220 " + "x" * 2000
    with submit(proxy, reply=INTERNAL_ERROR) as c:
        c.expect_closed()
    log.wait_for("upstream sent too long response line")


# -- relay ------------------------------------------------------------------------------------

def test_relay_ends_when_the_upstream_closes(lab):
    """§12: when the upstream closes, the client gets its last bytes and EOF."""
    with submit(smtp(lab)) as c:
        c.send(b"QUIT\r\n").expect(UPSTREAM_BYE).expect_closed()


def test_proxy_timeout_closes_an_idle_relay(lab):
    """§12: `proxy_timeout` closes a relayed session with no client activity, silently."""
    with submit(smtp(lab, "proxy_timeout 1s;")) as c:
        start = time.monotonic()
        c.expect_closed(timeout=8)
        assert 0.8 <= time.monotonic() - start <= 6
