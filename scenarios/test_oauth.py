"""XOAUTH2 and OAUTHBEARER (RFC 7628) through the proxy, for IMAP, POP3 and SMTP: the
capabilities, the auth_http request (Auth-Method, Auth-User from the SASL message, the token
as Auth-Pass), the backend login with the same mechanism, and RFC 7628 §3.2.2's failure
(the error challenge, the client's dummy response, the failure line). nginx has none of it:
every scenario here is Postern-only, behind `imap_auth` / `pop3_auth` / `smtp_auth`."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from postern.fakes.auth import Reply
from postern.proxy import sasl
from postern.scenarios.kit import imap_support as imap
from postern.scenarios.kit import pop3_support as pop3
from postern.scenarios.kit import smtp_support as smtp

pytestmark = pytest.mark.postern_only("XOAUTH2 and OAUTHBEARER: nginx has no OAuth mechanisms")

IMAP_OAUTH = "imap_auth plain xoauth2 oauthbearer;"
POP3_OAUTH = "pop3_auth plain xoauth2 oauthbearer;"
SMTP_OAUTH = "smtp_auth plain login xoauth2 oauthbearer;"
ERROR = base64.b64encode(b'{"status":"invalid_token","schemes":"bearer"}')
FAILED = b"Invalid login or password"


@pytest.fixture(autouse=True)
def _tokens(lab):
    """alice's bearer token is her fake upstream password, which the fakes take as a token."""
    lab.auth.tokens["secret"] = "alice"


def bearer(mech: str, user: bytes = b"alice", token: bytes = b"secret") -> bytes:
    return sasl.OAUTH_RESPONSES[mech](user, token)


def oauth_request(protocol: bytes, method: bytes, token: bytes = b"secret",
                  user: bytes = b"alice", tail: bytes = b"") -> bytes:
    """The auth_http request for an OAuth login: the token is Auth-Pass."""
    return (b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: " + method + b"\r\n"
            b"Auth-User: " + user + b"\r\nAuth-Pass: " + token + b"\r\n"
            b"Auth-Protocol: " + protocol + b"\r\nAuth-Login-Attempt: 1\r\n"
            b"Client-IP: 127.0.0.1\r\n" + tail + b"\r\n")


# -- IMAP ------------------------------------------------------------------------------------

def test_imap_capability_lists_them_only_when_enabled(lab):
    """imap_auth: AUTH=XOAUTH2 AUTH=OAUTHBEARER after nginx's methods, and not by default."""
    with imap.greeted(lab, server=IMAP_OAUTH) as c:
        c.send(b"a1 CAPABILITY\r\n")
        c.expect(imap.CAPS + b" AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER\r\na1 OK completed\r\n")
    with imap.greeted(lab) as c:
        c.send(b"a1 AUTHENTICATE XOAUTH2 " + bearer("xoauth2") + b"\r\n")
        c.expect(b"a1 " + imap.INVALID)
    assert lab.auth.requests == []


@pytest.mark.parametrize("mech", ["xoauth2", "oauthbearer"])
def test_imap_initial_response_logs_in_upstream_with_the_same_mechanism(lab, mech):
    """RFC 7628 §3.1 / SASL-IR: the token goes to auth_http as Auth-Pass with the SASL
    message's user, and the upstream gets AUTHENTICATE with the same mechanism and token."""
    with imap.greeted(lab, server=IMAP_OAUTH) as c:
        c.send(b"a1 AUTHENTICATE " + mech.upper().encode() + b" " + bearer(mech) + b"\r\n")
        c.expect(b"a1 " + imap.LOGGED_IN)
    assert [r.raw for r in lab.auth.requests] == [oauth_request(b"imap", mech.encode())]
    assert b"a1 AUTHENTICATE " + mech.upper().encode() in lab.imap.commands


def test_imap_token_from_auth_pass_goes_upstream(lab):
    """RFC 7628 §3.1 (no initial response: `+ ` first); nginx: an Auth-Pass in the reply
    replaces the client's password towards the backend, here the token."""
    lab.ok(password="secret")
    with imap.greeted(lab, server=IMAP_OAUTH) as c:
        c.send(b"a1 AUTHENTICATE OAUTHBEARER\r\n").expect(b"+ \r\n")
        c.send(bearer("oauthbearer", token=b"client-token") + b"\r\n")
        c.expect(b"a1 " + imap.LOGGED_IN)
    assert lab.auth.requests[0].password == "client-token"


@pytest.mark.parametrize("dummy", [b"AQ==", b"", b"*"])
def test_imap_failure_is_the_error_challenge_then_no(lab, dummy):
    """RFC 7628 §3.2.2: a refused token gets `+ <base64 JSON error>`; after the client's
    dummy response, the tagged NO, then the connection closes (no Auth-Wait)."""
    with imap.greeted(lab, server=IMAP_OAUTH) as c:
        c.send(b"a1 AUTHENTICATE XOAUTH2 " + bearer("xoauth2", token=b"expired") + b"\r\n")
        c.expect(b"+ " + ERROR + b"\r\n")
        c.send(dummy + b"\r\n").expect(b"a1 NO " + FAILED + b"\r\n").expect_closed()
    assert lab.imap.commands == []


def test_imap_failure_with_auth_wait_continues(lab):
    """RFC 7628 §3.2.2 with nginx: Auth-Wait, the session goes on after the NO (after the
    wait), so a second attempt may succeed."""
    lab.auth.push(Reply.fail("Bad token", wait=1))
    with imap.greeted(lab, server=IMAP_OAUTH) as c:
        c.send(b"a1 AUTHENTICATE OAUTHBEARER " + bearer("oauthbearer") + b"\r\n")
        c.expect(b"+ " + ERROR + b"\r\n", timeout=5)
        c.send(b"AQ==\r\n").expect(b"a1 NO Bad token\r\n")
        c.send(b"a2 AUTHENTICATE OAUTHBEARER " + bearer("oauthbearer") + b"\r\n")
        c.expect(b"a2 " + imap.LOGGED_IN)


def test_imap_malformed_message_is_bad(lab):
    """A message that is not RFC 7628's shape is a clean BAD, nothing goes to auth_http."""
    with imap.greeted(lab, server=IMAP_OAUTH) as c:
        blob = base64.b64encode(b"n,a=alice,auth=Bearer x\x01\x01")
        c.send(b"a1 AUTHENTICATE OAUTHBEARER " + blob + b"\r\n").expect(b"a1 " + imap.INVALID)
        c.send(b"a2 NOOP\r\n").expect(b"a2 OK completed\r\n")
    assert lab.auth.requests == []
    assert "client sent invalid message in AUTH OAUTHBEARER command" in \
        lab.proxy(server=IMAP_OAUTH).error_log()


# -- POP3 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mech", ["xoauth2", "oauthbearer"])
def test_pop3_auth_logs_in_upstream_with_the_same_mechanism(lab, mech):
    """CAPA's SASL line lists them; AUTH with an initial response (RFC 5034) logs in upstream
    with AUTH and the same mechanism; a realistic token fits (the buffer grows with OAuth)."""
    token = b"secret"
    with pop3.greeted(lab, server=POP3_OAUTH) as c:
        c.send(b"CAPA\r\n")
        c.expect(pop3.CAPA_HEAD + b"TOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN XOAUTH2 OAUTHBEARER"
                 b"\r\n.\r\n")
        c.send(b"AUTH " + mech.upper().encode() + b" " + bearer(mech, token=token) + b"\r\n")
        assert c.readline().startswith(b"+OK Logged in")
    assert [r.raw for r in lab.auth.requests] == [oauth_request(b"pop3", mech.encode())]


def test_pop3_long_token_and_failure(lab):
    """RFC 7628 §3.2.2 over RFC 5034 §4: a 2 KB token is read whole (nginx's 128-byte POP3
    buffer grows with OAuth on); a refusal is the error challenge, then -ERR and close."""
    token = b"t" * 2048
    with pop3.greeted(lab, server=POP3_OAUTH) as c:
        c.send(b"AUTH XOAUTH2\r\n").expect(b"+ \r\n")
        c.send(bearer("xoauth2", token=token) + b"\r\n").expect(b"+ " + ERROR + b"\r\n")
        c.send(b"\r\n").expect(b"-ERR " + FAILED + b"\r\n").expect_closed()
    assert lab.auth.requests[0].password == token.decode()


# -- SMTP ------------------------------------------------------------------------------------

def test_smtp_ehlo_and_xoauth2(lab):
    """RFC 4954 §3: EHLO's AUTH line lists them; the login reaches auth_http with the token,
    then the upstream through XCLIENT as for any other mechanism (nginx: xclient on)."""
    proxy = lab.proxy(server=SMTP_OAUTH, protocol="smtp")
    with smtp.greet(proxy) as c:
        smtp.ehlo(c, reply=b"250-mx.test\r\n250 AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER\r\n")
        c.send(b"AUTH XOAUTH2 " + bearer("xoauth2") + b"\r\n").expect(smtp.AUTH_OK)
    assert lab.auth.requests[0].auth_method == "xoauth2"
    assert lab.auth.requests[0].password == "secret"


def test_smtp_failure_is_334_error_then_535_578(lab):
    """RFC 7628 §3.2.3: `334 <error>`, the client's dummy `AQ==`, then 535 5.7.8 (RFC 4954
    §6) unless the auth server names its own Auth-Error-Code."""
    proxy = lab.proxy(server=SMTP_OAUTH, protocol="smtp")
    with smtp.greet(proxy) as c:
        smtp.ehlo(c, reply=b"250-mx.test\r\n250 AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER\r\n")
        c.send(b"AUTH OAUTHBEARER\r\n").expect(smtp.NEXT)
        c.send(bearer("oauthbearer", token=b"nope") + b"\r\n").expect(b"334 " + ERROR + b"\r\n")
        c.send(b"AQ==\r\n").expect(b"535 5.7.8 " + FAILED + b"\r\n").expect_closed()


@pytest.mark.parametrize("mech", ["xoauth2", "oauthbearer"])
def test_smtp_proxy_smtp_auth_logs_in_with_the_same_mechanism(lab, mech):
    """RFC 4954 §4 towards the upstream (nginx: proxy_smtp_auth, which sends AUTH PLAIN):
    with an OAuth login the upstream gets AUTH with the same mechanism and the token."""
    lab.smtp.faults.oauth = True
    proxy = lab.proxy(server=SMTP_OAUTH + "\nproxy_smtp_auth on;", protocol="smtp")
    with smtp.greet(proxy) as c:
        smtp.ehlo(c, reply=b"250-mx.test\r\n250 AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER\r\n")
        c.send(b"AUTH " + mech.upper().encode() + b" " + bearer(mech) + b"\r\n")
        c.expect(smtp.AUTH_OK)
    sent = b"AUTH %s %s\r\n" % (mech.upper().encode(), bearer(mech))
    assert sent in lab.smtp.commands
    assert lab.smtp.auth_attempts[-1] == (mech.upper(), "alice", True)


def test_oauthbearer_without_user_takes_the_auth_servers(lab):
    """RFC 7628 §3.1: the authzid is optional; Auth-User goes out empty and the auth server's
    Auth-User (nginx: it replaces the login) is the user of the upstream login."""
    with imap.greeted(lab, server=IMAP_OAUTH) as c:
        c.send(b"a1 AUTHENTICATE OAUTHBEARER " + bearer("oauthbearer", user=b"") + b"\r\n")
        c.expect(b"a1 " + imap.LOGGED_IN)
    assert lab.auth.requests[0].raw == oauth_request(b"imap", b"oauthbearer", user=b"")
    assert b"a1 AUTHENTICATE OAUTHBEARER" in lab.imap.commands


def test_tokens_never_reach_the_debug_log(lab, tmp_path_factory):
    """nginx: error_log debug logs the auth request whole; Postern masks Auth-Pass, so
    neither the token nor the SASL message carrying it is in the log, for a success (the
    upstream login included) and a refusal."""
    log = Path(tmp_path_factory.mktemp("oauthlog")) / "debug.log"
    log.parent.chmod(0o777)
    proxy = lab.proxy(server=f"{IMAP_OAUTH}\nerror_log {log} debug;")
    blobs = [bearer("oauthbearer"), bearer("xoauth2", token=b"expired-Sekr1t")]
    with proxy.connect() as c:
        c.expect(b"* OK IMAP4 ready\r\n")
        c.send(b"a1 AUTHENTICATE OAUTHBEARER " + blobs[0] + b"\r\n")
        c.expect(b"a1 " + imap.LOGGED_IN)
    with proxy.connect() as c:
        c.expect(b"* OK IMAP4 ready\r\n")
        c.send(b"a1 AUTHENTICATE XOAUTH2\r\n").expect(b"+ \r\n")
        c.send(blobs[1] + b"\r\n").expect(b"+ " + ERROR + b"\r\n")
        c.send(b"AQ==\r\n").expect(b"a1 NO " + FAILED + b"\r\n").expect_closed()
    for _ in range(50):
        if log.exists() and log.read_bytes().count(b"close mail connection") >= 2:
            break
        time.sleep(0.1)
    text = log.read_bytes()
    assert b"mail auth http header" in text and b"Auth-Pass: xxxxxxxx" in text
    for secret in (b"secret", b"Sekr1t", *blobs, base64.b64encode(b"auth=Bearer")[:8]):
        assert secret not in text, secret
