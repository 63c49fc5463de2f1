"""A real Dovecot POP3 backend behind the proxy, driven by real clients (Python's poplib and
curl), on every target (docs/behaviour.md §11.2 backend login against a real POP3 server, §12 relay,
RFC 1939, RFC 2449, RFC 5034).

The mock auth server sends the test user to Dovecot's POP3 port; everything else is the real
thing. Without Dovecot (or curl) the scenarios are skipped, except under CI, where that is a
failure (scenarios.kit.real.common.require).
"""

from __future__ import annotations

import poplib
import shutil
import subprocess
import time

import pytest
from postern.fakes.auth import User
from postern.scenarios.kit.real.common import available, require
from postern.scenarios.kit.real.dovecot import DovecotInstance
from postern.scenarios.kit.support import LogWatch

USER, PASSWORD = "dora", "d0ra pw"  # the space is kept by USER/PASS (docs/behaviour.md §8.2)
MESSAGE = (b"From: Erin <erin@example.com>\r\nTo: Dora <dora@example.com>\r\n"
           b"Subject: POP3 through the proxy\r\nMessage-ID: <real-pop3-1@example.com>\r\n"
           b"Date: Thu, 01 Jan 2026 12:00:00 +0000\r\n\r\n"
           b"Hello Dora,\r\n\r\n.a line starting with a dot (RFC 1939 byte-stuffing)\r\n"
           b".\r\n..\r\n"
           + b"".join(b"line %04d of the body\r\n" % i for i in range(300)))


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory):
    server = available(DovecotInstance, {USER: PASSWORD}, tmp_path_factory.mktemp("dovecot-pop3"))
    with server as instance:
        instance.append(USER, None, MESSAGE)
        yield instance


@pytest.fixture
def real(lab, dovecot):
    """The lab with the test user's POP3 backend pointing at Dovecot."""
    lab.auth.users[USER] = User(PASSWORD, backends=dovecot.backends("pop3"))
    return lab


def retrieved(lines: list[bytes]) -> bytes:
    """poplib returns the lines without CRLF and already un-stuffed."""
    return b"".join(line + b"\r\n" for line in lines)


def test_poplib_retrieves_a_message_byte_exact(real, dovecot):
    """RFC 1939 §7 USER/PASS, §5 STAT, LIST, RETR through the proxy: poplib logs in (the proxy
    logs into Dovecot with USER/PASS, §11.2), sees the one message and retrieves it byte for
    byte, dot-stuffed lines included."""
    proxy = real.proxy(protocol="pop3")
    client = poplib.POP3("127.0.0.1", proxy.port, timeout=10)
    try:
        assert client.getwelcome() == b"+OK POP3 ready"
        assert client.user(USER) == b"+OK"
        assert client.pass_(PASSWORD).startswith(b"+OK")
        assert client.stat() == (1, len(MESSAGE))
        assert client.list()[1] == [b"1 %d" % len(MESSAGE)]
        _, lines, _ = client.retr(1)
        assert retrieved(lines) == MESSAGE
        assert client.quit().startswith(b"+OK")
    finally:
        client.close()
    req = real.auth.requests[0]
    assert (req.header("Auth-Method"), req.header("Auth-User"), req.header("Auth-Pass"),
            req.header("Auth-Protocol")) == ("plain", "dora", "d0ra%20pw", "pop3")
    assert "pop3-login: Info: Login: user=<dora>, method=PLAIN" in dovecot.log_text()


def test_poplib_apop_logs_into_dovecot_with_the_plain_password(real, dovecot):
    """RFC 1939 §7 APOP: poplib answers the proxy's greeting timestamp; the mock auth server
    checks the digest and returns the plaintext Auth-Pass, with which the proxy logs into
    Dovecot by USER/PASS (§11.2: APOP is never used upstream)."""
    proxy = real.proxy(server="pop3_auth plain apop;", protocol="pop3")
    client = poplib.POP3("127.0.0.1", proxy.port, timeout=10)
    try:
        assert client.getwelcome().startswith(b"+OK POP3 ready <")
        assert client.apop(USER, PASSWORD).startswith(b"+OK")
        assert client.stat() == (1, len(MESSAGE))
        _, lines, _ = client.top(1, 2)
        assert retrieved(lines) == MESSAGE[:MESSAGE.index(b"\r\n\r\n") + 4] + \
            b"Hello Dora,\r\n\r\n"
        client.quit()
    finally:
        client.close()
    req = real.auth.requests[0]
    assert req.header("Auth-Method") == "apop"
    assert req.header("Auth-Salt") == client.getwelcome()[len(b"+OK POP3 ready "):].decode()
    assert req.decision.password == PASSWORD


def _curl(url: str, *extra: str) -> subprocess.CompletedProcess:
    require(None if shutil.which("curl") else "curl is not installed")
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "20", *extra,
                           url], capture_output=True, timeout=30, check=False)


def test_curl_lists_and_retrieves(real, dovecot):
    """curl's POP3 client through the proxy (CAPA, then AUTH with a SASL mechanism from the
    CAPA list, RFC 5034): the bare URL LISTs the maildrop, `/1` RETRieves the message byte for
    byte."""
    proxy = real.proxy(protocol="pop3")
    base = f"pop3://127.0.0.1:{proxy.port}/"
    auth = ("--user", f"{USER}:{PASSWORD}")
    listing = _curl(base, *auth)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout == b"1 %d\r\n" % len(MESSAGE)
    fetched = _curl(f"{base}1", *auth)
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == MESSAGE
    assert [r.header("Auth-Method") for r in real.auth.requests] == ["plain", "plain"]
    assert {r.header("Auth-Pass") for r in real.auth.requests} == {"d0ra%20pw"}


def test_wrong_password_never_reaches_dovecot(real, dovecot):
    """§10.4.1: the mock auth server refuses a wrong password: `-ERR <text>` and close, and
    Dovecot is never contacted (its login process logs every connection)."""
    proxy = real.proxy(protocol="pop3")
    log = LogWatch(proxy)
    before = dovecot.logins("pop3")
    client = poplib.POP3("127.0.0.1", proxy.port, timeout=10)
    try:
        client.user(USER)
        with pytest.raises(poplib.error_proto, match="Invalid login or password"):
            client.pass_("not it")
    finally:
        client.close()
    log.wait_for('client login failed: "Invalid login or password"')
    time.sleep(0.5)  # a proxied login would show up in Dovecot's log by now
    assert dovecot.logins("pop3") == before
