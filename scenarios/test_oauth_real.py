"""OAuth end to end: curl's `--oauth2-bearer` (and Python's imaplib) through Postern to a real
Dovecot that checks the token itself with its oauth2 passdb against a token introspection
endpoint (RFC 7662, fakes.introspect), for IMAP and POP3; SMTP with curl to the fake upstream.
RFC 7628 (OAUTHBEARER), Google's XOAUTH2. nginx has no OAuth: all Postern-only.
Without Dovecot or curl the scenarios are skipped, except under CI, where that is a failure.
"""

from __future__ import annotations

import base64
import imaplib
import shutil
import subprocess

import pytest
from postern.fakes.auth import User
from postern.fakes.introspect import Introspection
from postern.scenarios.kit.real.common import available, require
from postern.scenarios.kit.real.dovecot_oauth import DovecotOAuthInstance

pytestmark = pytest.mark.postern_only("XOAUTH2 and OAUTHBEARER: nginx has no OAuth mechanisms")

USER, PASSWORD, TOKEN = "carol", "c4rol pw", "tok-carol.1"
REVOKED = "tok-revoked"  # the auth server still takes it, the identity provider does not
MESSAGE = (b"From: Dave <dave@example.com>\r\nTo: Carol <carol@example.com>\r\n"
           b"Subject: bearer tokens\r\nMessage-ID: <oauth-1@example.com>\r\n\r\n"
           b"Hello Carol,\r\n\r\nthis came back through the proxy with a token.\r\n")
IMAP = "imap_auth plain xoauth2 oauthbearer;"
POP3 = "pop3_auth plain xoauth2 oauthbearer;"
SMTP = "smtp_auth plain login xoauth2 oauthbearer;"


@pytest.fixture(scope="module")
def idp():
    with Introspection({TOKEN: USER}) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory, idp):
    server = available(DovecotOAuthInstance, {USER: PASSWORD},
                       tmp_path_factory.mktemp("dovecot-oauth"), idp.url)
    with server as instance:
        instance.uid = instance.append(USER, None, MESSAGE)
        yield instance


@pytest.fixture
def real(lab, dovecot):
    """The lab with carol's backends at Dovecot (IMAP, POP3) and the fake SMTP; the mock auth
    server takes her token and the revoked one."""
    lab.auth.users[USER] = User(PASSWORD, tokens=[TOKEN, REVOKED], backends={
        "imap": ("127.0.0.1", dovecot.imap_port), "pop3": ("127.0.0.1", dovecot.pop3_port),
        "smtp": ("127.0.0.1", lab.smtp.port)})
    return lab


def _curl(url: str, *extra: str) -> subprocess.CompletedProcess:
    require(None if shutil.which("curl") else "curl is not installed")
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "20",
                           "--user", f"{USER}:", "--oauth2-bearer", TOKEN, *extra, url],
                          capture_output=True, timeout=30, check=False)


def test_curl_imap_oauthbearer_fetches_through_dovecot(real, dovecot, idp):
    """RFC 7628 §3.1 with curl's IMAP client: OAUTHBEARER (curl's choice when both are
    offered) to Postern, the token to auth_http as Auth-Pass, then AUTHENTICATE OAUTHBEARER
    to Dovecot, whose oauth2 passdb asks the introspection endpoint; the message comes back
    byte for byte."""
    proxy = real.proxy(server=IMAP)
    fetched = _curl(f"imap://127.0.0.1:{proxy.port}/INBOX;UID={dovecot.uid}")
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == MESSAGE
    req = real.auth.requests[0]
    assert (req.auth_method, req.user, req.password) == ("oauthbearer", USER, TOKEN)
    assert "Login: user=<carol>, method=OAUTHBEARER" in dovecot.log_text()
    assert ("post", True) in idp.requests


def test_imaplib_xoauth2_through_dovecot(real, dovecot):
    """RFC 3501 §6.2.2 AUTHENTICATE with Google's XOAUTH2 (`user=` ^A `auth=Bearer` ^A ^A)
    from imaplib, after a `+ ` continuation: Dovecot logs carol in with XOAUTH2."""
    proxy = real.proxy(server=IMAP)
    client = imaplib.IMAP4("127.0.0.1", proxy.port, timeout=10)
    try:
        blob = f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01".encode()
        typ, _ = client.authenticate("XOAUTH2", lambda _: blob)
        assert typ == "OK"
        assert client.select("INBOX") == ("OK", [b"1"])
        client.logout()
    finally:
        if client.state != "LOGOUT":
            client.shutdown()
    assert "Login: user=<carol>, method=XOAUTH2" in dovecot.log_text()


def test_token_the_backend_refuses(real, dovecot):
    """RFC 7628 §3.2.2 at the backend: Dovecot's error challenge gets Postern's dummy
    response, and its tagged NO is what the client sees (nginx: proxy_pass_error_message)."""
    proxy = real.proxy(server=IMAP + "\nproxy_pass_error_message on;")
    with proxy.connect() as c:
        c.expect(b"* OK IMAP4 ready\r\n")
        blob = f"n,a={USER},\x01auth=Bearer {REVOKED}\x01\x01".encode()
        c.send(b"a1 AUTHENTICATE OAUTHBEARER " + base64.b64encode(blob) + b"\r\n")
        assert c.readline().startswith(b"a1 NO [AUTHENTICATIONFAILED]")
        c.expect_closed()
    assert real.auth.requests[0].password == REVOKED


def test_curl_pop3_lists_through_dovecot(real, dovecot):
    """RFC 5034 §4 AUTH with curl's POP3 client and a bearer token: the message list comes
    from Dovecot, logged in with the same mechanism."""
    proxy = real.proxy(server=POP3, protocol="pop3")
    listing = _curl(f"pop3://127.0.0.1:{proxy.port}/")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout == b"1 %d\r\n" % len(MESSAGE), listing.stdout
    assert real.auth.requests[0].auth_method in ("oauthbearer", "xoauth2")
    assert "pop3-login: Info: Login: user=<carol>, method=OAUTHBEARER" in dovecot.log_text()


def test_curl_smtp_sends_with_a_token(real, tmp_path):
    """RFC 4954 §4 / RFC 7628 with curl's SMTP client: AUTH OAUTHBEARER with an initial
    response through Postern, then XCLIENT LOGIN to the upstream, which takes the mail."""
    proxy = real.proxy(server=SMTP, protocol="smtp")
    upload = tmp_path / "m.eml"
    upload.write_bytes(b"Subject: token\r\n\r\nsent with a bearer token\r\n")
    done = _curl(f"smtp://127.0.0.1:{proxy.port}/curl.example", "--mail-from",
                 "carol@example.com", "--mail-rcpt", "alice@example.com", "-T", str(upload))
    assert done.returncode == 0, done.stderr
    (msg,) = real.smtp.wait_messages(1)
    assert b"sent with a bearer token" in msg.content
    req = real.auth.requests[0]
    assert (req.protocol, req.auth_method, req.password) == ("smtp", "oauthbearer", TOKEN)
