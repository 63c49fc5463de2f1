"""`proxy_client_identity on` against a real Dovecot that trusts the proxy
(`login_trusted_networks`): Dovecot's own log names the real client (`rip=`) and Postern's
session id (`session=<PID-N>`) for IMAP (ID, RFC 2971) and POP3 (XCLIENT) sessions through
Postern, where without the directive it names the proxy (127.0.0.1), as behind nginx.

The client connects from 127.0.0.2 so that its address differs from the proxy's. Without
Dovecot the scenarios are skipped, except under CI, where that is a failure.
"""

from __future__ import annotations

import re

import pytest
from postern.fakes.auth import User
from postern.scenarios.kit.client import Client
from postern.scenarios.kit.identity_support import IDENTITY, session_id_of
from postern.scenarios.kit.real.common import available
from postern.scenarios.kit.real.dovecot import DovecotInstance
from postern.scenarios.kit.support import LogWatch, wait_until

USER, PASSWORD = "frank", "fr4nk"
WHY = "proxy_client_identity: nginx sends the backend no client identity"
SOURCE = "127.0.0.2"


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory):
    # the proxy reaches Dovecot from 127.0.0.1; the client's 127.0.0.2 must not be trusted
    server = available(DovecotInstance, {USER: PASSWORD}, tmp_path_factory.mktemp("dovecot-id"),
                       extra_config="login_trusted_networks = 127.0.0.1/32\n")
    with server as instance:
        yield instance


@pytest.fixture
def real(lab, dovecot):
    lab.auth.users[USER] = User(PASSWORD, backends=dovecot.backends("imap", "pop3"))
    return lab


def login_lines(dovecot, protocol: str) -> list[str]:
    """Dovecot's `<protocol>-login: Info: Login: user=<...>, ...` lines so far."""
    return re.findall(rf"{protocol}-login: Info: Login: user=<{USER}>.*", dovecot.log_text())


def next_login_line(dovecot, protocol: str, before: int) -> str:
    """The login line after the first `before` (Dovecot writes its log on its own time)."""
    wait_until(lambda: len(login_lines(dovecot, protocol)) > before, what="Dovecot's login")
    return login_lines(dovecot, protocol)[before]


def imap_session(proxy) -> tuple[str, int]:
    with Client(proxy.host, proxy.port, timeout=10, source=SOURCE) as c:
        c.expect(b"* OK IMAP4 ready\r\n")
        c.send(b"a1 LOGIN %s %s\r\n" % (USER.encode(), PASSWORD.encode()))
        line = c.readline()
        assert line.startswith(b"a1 OK"), line
        c.send(b"a2 LOGOUT\r\n")
        return c.sock.getsockname()[:2]


def pop3_session(proxy) -> tuple[str, int]:
    with Client(proxy.host, proxy.port, timeout=10, source=SOURCE) as c:
        c.expect(b"+OK POP3 ready\r\n")
        c.send(b"USER %s\r\n" % USER.encode()).expect(b"+OK\r\n")
        c.send(b"PASS %s\r\n" % PASSWORD.encode())
        line = c.readline()
        assert line.startswith(b"+OK"), line
        c.send(b"QUIT\r\n")
        return c.sock.getsockname()[:2]


SESSIONS = {"imap": imap_session, "pop3": pop3_session}


@pytest.mark.postern_only(WHY)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_dovecot_logs_the_real_client_and_the_session_id(real, dovecot, protocol):
    """RFC 2971 ID (IMAP) and XCLIENT (POP3) into a Dovecot that trusts the proxy: its login
    line says `rip=127.0.0.2` (the client, not the proxy) and `session=<PID-N>`, the id of
    the session in Postern's error log, so one session can be followed from log to log."""
    proxy = real.proxy(server=IDENTITY, protocol=protocol)
    log = LogWatch(proxy)
    before = len(login_lines(dovecot, protocol))
    client = SESSIONS[protocol](proxy)
    session = session_id_of(log.wait_for(f"client {client[0]}:{client[1]} connected"), client)
    line = next_login_line(dovecot, protocol, before)
    assert f"rip={SOURCE}," in line and f"session=<{session}>" in line, line
    assert "client identity not sent" not in log.text()


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_without_the_directive_dovecot_sees_the_proxy(real, dovecot, protocol):
    """nginx: the backend login carries no client identity (docs/behaviour.md §11.2,
    §11.3), so even a Dovecot that trusts the proxy logs the proxy's address."""
    proxy = real.proxy(protocol=protocol)
    before = len(login_lines(dovecot, protocol))
    SESSIONS[protocol](proxy)
    line = next_login_line(dovecot, protocol, before)
    assert "rip=127.0.0.1," in line, line


@pytest.fixture(scope="module")
def untrusting_dovecot(tmp_path_factory):
    server = available(DovecotInstance, {USER: PASSWORD},
                       tmp_path_factory.mktemp("dovecot-untrusting"))
    with server as instance:
        yield instance


@pytest.mark.postern_only(WHY)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_dovecot_that_does_not_trust_the_proxy_still_logs_in(lab, untrusting_dovecot,
                                                               protocol):
    """Without `login_trusted_networks`, Dovecot answers the RFC 2971 ID OK and ignores its
    fields, and greets POP3 without `[XCLIENT]`, so no XCLIENT is sent and a warning says
    so; the login goes through either way and Dovecot logs the proxy's address."""
    dovecot = untrusting_dovecot
    lab.auth.users[USER] = User(PASSWORD, backends=dovecot.backends("imap", "pop3"))
    proxy = lab.proxy(server=IDENTITY, protocol=protocol)
    log = LogWatch(proxy)
    before = len(login_lines(dovecot, protocol))
    SESSIONS[protocol](proxy)
    line = next_login_line(dovecot, protocol, before)
    assert "rip=127.0.0.1," in line, line
    if protocol == "pop3":
        assert "[warn]" in log.line("upstream greeting has no [XCLIENT]")
    else:
        log.wait_for("client logged in")
        assert "client identity not sent" not in log.text()
