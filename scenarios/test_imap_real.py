"""A real Dovecot behind the proxy, driven by real clients (Python's imaplib and curl), on
every target (docs/behaviour.md §11.3 backend login against a real IMAP server, §12 relay, RFC 3501).

The mock auth server sends the test user to Dovecot; everything else is the real thing.
Without Dovecot the scenarios are skipped, except under CI, where that is a failure.
"""

from __future__ import annotations

import imaplib
import shutil
import subprocess
import time

import pytest
from postern.fakes.auth import User
from postern.scenarios.kit.real.common import available, require
from postern.scenarios.kit.real.dovecot import DovecotInstance
from postern.scenarios.kit.support import LogWatch

USER, PASSWORD = "carol", "c4rol pw"  # the space makes LOGIN quote it
MESSAGE = (b"From: Dave <dave@example.com>\r\nTo: Carol <carol@example.com>\r\n"
           b"Subject: through the proxy\r\nMessage-ID: <real-1@example.com>\r\n"
           b"Date: Thu, 01 Jan 2026 12:00:00 +0000\r\n\r\n"
           b"Hello Carol,\r\n\r\nthis message went into Dovecot directly and comes back through"
           b" the proxy.\r\n" + b"".join(b"line %04d of the body\r\n" % i for i in range(200)))


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory):
    server = available(DovecotInstance, {USER: PASSWORD}, tmp_path_factory.mktemp("dovecot"))
    with server as instance:
        uid = instance.append(USER, None, MESSAGE)
        instance.uid = uid
        yield instance


@pytest.fixture
def real(lab, dovecot):
    """The lab with the test user's IMAP backend pointing at Dovecot."""
    lab.auth.users[USER] = User(PASSWORD, backends=dovecot.backends("imap"))
    return lab


def test_imaplib_fetches_a_message_byte_exact(real, dovecot):
    """RFC 3501 §6.2.3 LOGIN, §6.3.1 SELECT, §6.4.5 FETCH through the proxy: imaplib logs in
    (nginx logs into Dovecot with literals, §11.3), selects INBOX and fetches the message
    stored beforehand, byte for byte."""
    proxy = real.proxy()
    client = imaplib.IMAP4("127.0.0.1", proxy.port, timeout=10)
    try:
        assert client.welcome == b"* OK IMAP4 ready"
        typ, data = client.login(USER, PASSWORD)
        assert typ == "OK", data
        typ, data = client.select("INBOX")
        assert (typ, data) == ("OK", [b"1"])
        typ, data = client.uid("FETCH", str(dovecot.uid), "(BODY.PEEK[])")
        assert typ == "OK", data
        assert data[0][0].endswith(b"BODY[] {%d}" % len(MESSAGE)), data[0][0]
        assert data[0][1] == MESSAGE
        assert client.logout()[0] == "BYE"
    finally:
        if client.state != "LOGOUT":
            client.shutdown()
    req = real.auth.requests[0]
    assert (req.header("Auth-User"), req.header("Auth-Pass")) == ("carol", "c4rol%20pw")
    assert "imap-login: Info: Login: user=<carol>, method=PLAIN" in dovecot.log_text()


def _curl(url: str, *extra: str) -> subprocess.CompletedProcess:
    require(None if shutil.which("curl") else "curl is not installed")
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "20", *extra,
                           url], capture_output=True, timeout=30, check=False)


def test_curl_lists_and_fetches(real, dovecot):
    """curl's IMAP client through the proxy (AUTHENTICATE PLAIN with a `+ ` continuation,
    §7.6): LIST shows INBOX, and `INBOX;UID=n` returns the message byte for byte."""
    proxy = real.proxy()
    base = f"imap://127.0.0.1:{proxy.port}/"
    auth = ("--user", f"{USER}:{PASSWORD}")
    listing = _curl(base, *auth)
    assert listing.returncode == 0, listing.stderr
    assert b'"INBOX"' in listing.stdout or b" INBOX\r\n" in listing.stdout, listing.stdout
    assert listing.stdout.startswith(b"* LIST "), listing.stdout
    fetched = _curl(f"{base}INBOX;UID={dovecot.uid}", *auth)
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == MESSAGE
    methods = {r.header("Auth-Method") for r in real.auth.requests}
    assert methods == {"plain"}
    assert len(real.auth.requests) == 2


def test_wrong_password_never_reaches_dovecot(real, dovecot):
    """§10.4.1: the mock auth server refuses a wrong password: `<tag> NO <text>` and close,
    and Dovecot is never contacted (its login process logs every connection)."""
    proxy = real.proxy()
    log = LogWatch(proxy)
    before = dovecot.logins("imap")
    with proxy.connect() as c:
        c.expect(b"* OK IMAP4 ready\r\n")
        c.send(b'a1 LOGIN carol "not it"\r\n')
        c.expect(b"a1 NO Invalid login or password\r\n").expect_closed()
    log.wait_for('client login failed: "Invalid login or password"')
    # a proxied login would show up in Dovecot's log within this time (see the test above)
    time.sleep(0.5)
    assert dovecot.logins("imap") == before
    assert real.auth.requests[0].header("Auth-Pass") == "not%20it"
