"""STARTTLS (IMAP, SMTP) and STLS (POP3) with `starttls on|only|off`: capabilities before and
after TLS, what `only` refuses, STARTTLS inside TLS, the command-injection case (plaintext
pipelined behind STARTTLS is discarded), and login through the upgraded connection
(docs/behaviour.md §2.7, §4.4, §5.2, §7.4-7.5, §8.3-8.4, §9.4-9.5, §18; RFC 3501 §6.2.1, RFC 2595 §4,
RFC 3207 §4; CVE-2011-0411 / CVE-2014-3556).
"""

from __future__ import annotations

import time

import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit.support import PLAIN_ALICE
from postern.scenarios.kit.tls_support import (
    CERT_ERROR,
    GREETINGS,
    NO_CERT,
    client_context,
    ends_with_close_notify,
    pki,
    start_tls,
)

__all__ = ["pki"]

IMAP_CAPS = b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN"
POP3_CAPS = b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\n"


def _proxy(lab, pki, protocol, mode, extra=""):
    return lab.proxy(server=pki.server() + f"starttls {mode};\n" + extra, protocol=protocol)


def _greet(proxy, protocol):
    c = proxy.connect()
    c.expect(GREETINGS[protocol])
    return c


def _upgrade(c, pki, listed, starttls, unlisted, again):
    """`starttls on`: each step is (line sent, exact reply). The capability list offers
    STARTTLS, the command is accepted, the handshake runs (trusting `pki`), and inside TLS the
    list no longer offers it and the command is invalid."""
    for line, reply in (listed, starttls):
        c.send(line).expect(reply)
    start_tls(c, client_context(pki))
    for line, reply in (unlisted, again):
        c.send(line).expect(reply)


# -- IMAP -------------------------------------------------------------------------------------

def test_imap_starttls_on(lab, pki):
    """§7.5: STARTTLS listed before TLS, not after; §7.4: `OK completed`, handshake, no new
    greeting; the AUTH= tokens stay; LOGIN then works through TLS."""
    proxy = _proxy(lab, pki, "imap", "on")
    with _greet(proxy, "imap") as c:
        _upgrade(c, pki,
                 (b"a1 CAPABILITY\r\n", IMAP_CAPS + b" STARTTLS\r\na1 OK completed\r\n"),
                 (b"a2 STARTTLS\r\n", b"a2 OK completed\r\n"),
                 (b"a3 CAPABILITY\r\n", IMAP_CAPS + b"\r\na3 OK completed\r\n"),
                 (b"a4 STARTTLS\r\n", b"a4 BAD invalid command\r\n"))
        c.send(b"a5 LOGIN alice secret\r\n")
        assert c.readline().startswith(b"a5 OK")
        c.send(b"a6 LOGOUT\r\n")
        assert c.readline().startswith(b"* BYE")
    req = lab.auth.requests[0]
    assert (req.header("Auth-SSL"), req.header("Auth-SSL-Protocol")) == ("on", "TLSv1.3")
    assert lab.imap.commands[0].startswith(b"a5 LOGIN")  # the client's tag, §11.3


def test_imap_starttls_only(lab, pki):
    """§7.4-7.5: `only` lists STARTTLS LOGINDISABLED without AUTH=, refuses LOGIN and
    AUTHENTICATE (not counted as errors) but not NOOP/CAPABILITY; after TLS all is open."""
    proxy = _proxy(lab, pki, "imap", "only", "max_errors 2;")
    with _greet(proxy, "imap") as c:
        c.send(b"a1 CAPABILITY\r\n").expect(
            b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS STARTTLS LOGINDISABLED\r\na1 OK completed\r\n")
        for n, cmd in enumerate((b"LOGIN alice secret", b"AUTHENTICATE PLAIN",
                                 b"AUTHENTICATE PLAIN " + PLAIN_ALICE), start=2):
            c.send(b"a%d %s\r\n" % (n, cmd)).expect(b"a%d BAD invalid command\r\n" % n)
        c.send(b"a5 NOOP\r\n").expect(b"a5 OK completed\r\n")
        c.send(b"a6 STARTTLS\r\n").expect(b"a6 OK completed\r\n")
        start_tls(c)
        c.send(b"a7 CAPABILITY\r\n").expect(IMAP_CAPS + b"\r\na7 OK completed\r\n")
        c.send(b"a8 AUTHENTICATE PLAIN " + PLAIN_ALICE + b"\r\n")
        assert c.readline().startswith(b"a8 OK")
    assert lab.auth.requests[0].header("Auth-SSL") == "on"


def test_imap_starttls_injection_is_discarded(lab, pki):
    """§5.2, §18 capture: `b STARTTLS` and `c NOOP` in one segment: only `b OK completed` is
    answered, the plaintext NOOP is dropped, TLS then works."""
    proxy = _proxy(lab, pki, "imap", "on")
    with _greet(proxy, "imap") as c:
        c.send(b"b STARTTLS\r\nc NOOP\r\n").expect(b"b OK completed\r\n")
        start_tls(c)
        c.send(b"d NOOP\r\n").expect(b"d OK completed\r\n")
        c.send(b"e STARTTLS\r\n").expect(b"e BAD invalid command\r\n")


def test_imap_injected_login_never_reaches_the_auth_server(lab, pki):
    """CVE-2011-0411 class: a LOGIN smuggled behind STARTTLS in plaintext is not executed
    inside TLS."""
    proxy = _proxy(lab, pki, "imap", "on")
    with _greet(proxy, "imap") as c:
        c.send(b"a STARTTLS\r\nb LOGIN alice secret\r\n").expect(b"a OK completed\r\n")
        start_tls(c)
        c.send(b"c NOOP\r\n").expect(b"c OK completed\r\n")
    assert lab.auth.requests == []


def test_implicit_tls_does_not_offer_starttls(lab, pki):
    """§7.5: on a TLS connection (`listen ... ssl` with `starttls on`) CAPABILITY has no
    STARTTLS and STARTTLS is invalid."""
    proxy = lab.proxy(server=pki.server() + "starttls on;", listen_params="ssl")
    from postern.scenarios.kit.tls_support import tls_connect
    with tls_connect(proxy) as c:
        c.expect(GREETINGS["imap"])
        c.send(b"a1 CAPABILITY\r\n").expect(IMAP_CAPS + b"\r\na1 OK completed\r\n")
        c.send(b"a2 STARTTLS\r\n").expect(b"a2 BAD invalid command\r\n")


# -- POP3 -------------------------------------------------------------------------------------

def test_pop3_stls_on(lab, pki):
    """§8.3-8.4: CAPA lists STLS before TLS only; `+OK`, handshake, no greeting; USER/PASS
    through TLS; STLS inside TLS is invalid."""
    proxy = _proxy(lab, pki, "pop3", "on")
    with _greet(proxy, "pop3") as c:
        _upgrade(c, pki,
                 (b"CAPA\r\n", POP3_CAPS + b"STLS\r\n.\r\n"),
                 (b"STLS\r\n", b"+OK\r\n"),
                 (b"CAPA\r\n", POP3_CAPS + b".\r\n"),
                 (b"STLS\r\n", b"-ERR invalid command\r\n"))
        c.send(b"USER alice\r\n").expect(b"+OK\r\n")
        c.send(b"PASS secret\r\n")
        assert c.readline().startswith(b"+OK")
        c.send(b"QUIT\r\n")
        assert c.readline().startswith(b"+OK")
    assert lab.auth.requests[0].header("Auth-SSL") == "on"


def test_pop3_stls_only(lab, pki):
    """§8.3-8.4, §18: `only` CAPA is `TOP / UIDL / STLS` (no USER, no SASL); USER, AUTH and
    APOP are refused; after STLS the plain list and USER/PASS."""
    proxy = _proxy(lab, pki, "pop3", "only", "pop3_auth plain apop;")
    with proxy.connect() as c:
        assert c.readline().startswith(b"+OK POP3 ready <")  # apop: a salt
        c.send(b"CAPA\r\n").expect(b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nSTLS\r\n.\r\n")
        for cmd in (b"USER alice", b"AUTH", b"AUTH PLAIN " + PLAIN_ALICE,
                    b"APOP alice 0123456789abcdef0123456789abcdef"):
            c.send(cmd + b"\r\n").expect(b"-ERR invalid command\r\n")
        c.send(b"NOOP\r\n").expect(b"+OK\r\n")
        c.send(b"STLS\r\n").expect(b"+OK\r\n")
        start_tls(c)
        c.send(b"CAPA\r\n").expect(POP3_CAPS + b".\r\n")
        c.send(b"USER alice\r\n").expect(b"+OK\r\n")
        c.send(b"PASS secret\r\n")
        assert c.readline().startswith(b"+OK")


def test_pop3_stls_injection_is_discarded(lab, pki):
    """§5.2: `STLS` + pipelined `USER alice` in one segment: only `+OK`; the USER is gone, so
    PASS inside TLS is invalid (initial state)."""
    proxy = _proxy(lab, pki, "pop3", "on")
    with _greet(proxy, "pop3") as c:
        c.send(b"STLS\r\nUSER alice\r\n").expect(b"+OK\r\n")
        start_tls(c)
        c.send(b"PASS secret\r\n").expect(b"-ERR invalid command\r\n")
        c.send(b"NOOP\r\n").expect(b"+OK\r\n")
    assert lab.auth.requests == []


# -- SMTP -------------------------------------------------------------------------------------

def test_smtp_starttls_on(lab, pki):
    """§9.5, §18 capture: EHLO lists STARTTLS before TLS; `220 2.0.0 Start TLS`; inside TLS
    EHLO without STARTTLS; STARTTLS again is invalid; AUTH PLAIN then works."""
    proxy = _proxy(lab, pki, "smtp", "on", 'smtp_auth plain login none;\n'
                   'smtp_capabilities "SIZE 100" 8BITMIME;')
    with _greet(proxy, "smtp") as c:
        _upgrade(c, pki,
                 (b"EHLO x\r\n", (b"250-mx.test\r\n250-SIZE 100\r\n250-8BITMIME\r\n"
                                 b"250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n")),
                 (b"STARTTLS\r\n", b"220 2.0.0 Start TLS\r\n"),
                 (b"EHLO y\r\n", (b"250-mx.test\r\n250-SIZE 100\r\n250-8BITMIME\r\n"
                                 b"250 AUTH PLAIN LOGIN\r\n")),
                 (b"STARTTLS\r\n", b"500 5.5.1 Invalid command\r\n"))
        c.send(b"AUTH PLAIN " + PLAIN_ALICE + b"\r\n").expect(b"235 2.0.0 OK\r\n")
    req = lab.auth.requests[0]
    assert (req.header("Auth-SSL"), req.header("Auth-SSL-Cipher")) == (
        "on", "TLS_AES_256_GCM_SHA384")


def test_smtp_starttls_only(lab, pki):
    """§9.4-9.5, §18: `only` EHLO is `250-mx.test / 250 STARTTLS`, AUTH is refused; MAIL in
    `none` mode is not (QUIRK); after STARTTLS AUTH works."""
    proxy = _proxy(lab, pki, "smtp", "only", "smtp_auth plain none;")
    with _greet(proxy, "smtp") as c:
        c.send(b"EHLO x\r\n").expect(b"250-mx.test\r\n250 STARTTLS\r\n")
        c.send(b"AUTH PLAIN " + PLAIN_ALICE + b"\r\n").expect(b"500 5.5.1 Invalid command\r\n")
        c.send(b"MAIL FROM:<a@b>\r\n").expect(b"250 2.0.0 OK\r\n")
        c.send(b"RSET\r\n").expect(b"250 2.0.0 OK\r\n")
        c.send(b"STARTTLS\r\n").expect(b"220 2.0.0 Start TLS\r\n")
        start_tls(c)
        c.send(b"EHLO y\r\n").expect(b"250-mx.test\r\n250 AUTH PLAIN\r\n")
        c.send(b"AUTH PLAIN " + PLAIN_ALICE + b"\r\n").expect(b"235 2.0.0 OK\r\n")


def test_smtp_starttls_injection_is_discarded(lab, pki):
    """CVE-2014-3556: `STARTTLS` + pipelined `AUTH PLAIN ...` in one segment: only the 220;
    nothing reaches the auth server; the session continues inside TLS."""
    proxy = _proxy(lab, pki, "smtp", "on")
    with _greet(proxy, "smtp") as c:
        c.send(b"EHLO x\r\nSTARTTLS\r\nAUTH PLAIN " + PLAIN_ALICE + b"\r\n")
        c.expect(b"250-mx.test\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n"
                 b"220 2.0.0 Start TLS\r\n")
        start_tls(c)
        c.send(b"NOOP\r\n").expect(b"250 2.0.0 OK\r\n")
    assert lab.auth.requests == []


# -- client certificates after STARTTLS ----------------------------------------------------------

@pytest.mark.parametrize("protocol,capabilities,starttls", [
    ("imap", (b"a1 CAPABILITY\r\n", IMAP_CAPS + b"\r\na1 OK completed\r\n"),
     (b"a2 STARTTLS\r\n", b"a2 BAD invalid command\r\n")),
    ("pop3", (b"CAPA\r\n", POP3_CAPS + b".\r\n"), (b"STLS\r\n", b"-ERR invalid command\r\n")),
    ("smtp", (b"EHLO x\r\n", b"250-mx.test\r\n250 AUTH PLAIN LOGIN\r\n"),
     (b"STARTTLS\r\n", b"500 5.5.1 Invalid command\r\n")),
])
def test_starttls_off_with_a_certificate(lab, pki, protocol, capabilities, starttls):
    """§2.7: `starttls off` (the default) rejects STARTTLS even where a certificate is set:
    not listed in CAPABILITY, CAPA (§8.3-8.4) or EHLO (§9.4-9.5), and the command is IMAP's
    `BAD invalid command`, POP3's `-ERR invalid command`, SMTP's `500 5.5.1`."""
    proxy = _proxy(lab, pki, protocol, "off")
    with _greet(proxy, protocol) as c:
        for line, reply in (capabilities, starttls):
            c.send(line).expect(reply)


@pytest.mark.parametrize("protocol,command,reply", [
    ("imap", b"a1 STARTTLS\r\n", b"a1 OK completed\r\n"),
    ("pop3", b"STLS\r\n", b"+OK\r\n"),
    ("smtp", b"STARTTLS\r\n", b"220 2.0.0 Start TLS\r\n")])
def test_required_certificate_missing_after_starttls(lab, pki, protocol, command, reply):
    """§4.4: after a STARTTLS handshake without the required certificate the client gets
    `No required SSL certificate` inside TLS, then close_notify."""
    proxy = _proxy(lab, pki, protocol, "on",
                   f"ssl_verify_client on;\nssl_client_certificate {pki.client_ca};")
    with _greet(proxy, protocol) as c:
        c.send(command).expect(reply)
        start_tls(c)
        c.expect(NO_CERT[protocol])
        assert ends_with_close_notify(c)
    # §14: the log names the state and marks the client as having used STARTTLS
    assert ("client sent no required SSL certificate while in starttls state, "
            "client: 127.0.0.1 using starttls, server: ") in proxy.error_log()


@pytest.mark.parametrize("protocol,command,reply", [
    ("imap", b"a1 STARTTLS\r\n", b"a1 OK completed\r\n"),
    ("pop3", b"STLS\r\n", b"+OK\r\n"),
    ("smtp", b"STARTTLS\r\n", b"220 2.0.0 Start TLS\r\n")])
def test_untrusted_certificate_after_starttls(lab, pki, protocol, command, reply):
    """§3: a certificate that fails verification gets the protocol's `SSL certificate error`
    line inside TLS, then close."""
    proxy = _proxy(lab, pki, protocol, "on",
                   f"ssl_verify_client optional;\nssl_client_certificate {pki.client_ca};")
    with _greet(proxy, protocol) as c:
        c.send(command).expect(reply)
        start_tls(c, client_context(pki, cert="stranger"))
        c.expect(CERT_ERROR[protocol])
        assert ends_with_close_notify(c)


def test_login_failure_inside_starttls(lab, pki):
    """§10.4: the auth failure line goes out encrypted on the upgraded connection, then
    close_notify."""
    proxy = _proxy(lab, pki, "imap", "on")
    lab.auth.push(Reply.fail("Bad password"))
    with _greet(proxy, "imap") as c:
        c.send(b"a1 STARTTLS\r\n").expect(b"a1 OK completed\r\n")
        start_tls(c)
        c.send(b"a2 LOGIN alice nope\r\n").expect(b"a2 NO Bad password\r\n")
        assert ends_with_close_notify(c)


def test_starttls_keeps_the_dialogue_deadline(lab, pki):
    """§5.4: STARTTLS does not re-arm `timeout` (observed on nginx 1.22: the deadline set at
    the greeting stays): with `timeout 4s`, a STARTTLS 2.5 s after the greeting leaves about
    1.5 s, and the timeout closes without close_notify."""
    proxy = _proxy(lab, pki, "imap", "on", "timeout 4s;")
    with proxy.connect(timeout=15) as c:
        c.expect(GREETINGS["imap"])
        time.sleep(2.5)
        c.send(b"a1 STARTTLS\r\n").expect(b"a1 OK completed\r\n")
        start_tls(c)
        started = time.monotonic()
        c.send(b"a2 NOOP\r\n").expect(b"a2 OK completed\r\n")
        ended_cleanly = ends_with_close_notify(c, timeout=12)
        waited = time.monotonic() - started
    assert 0.3 < waited < 3.5, waited
    assert not ended_cleanly  # a timeout: no close_notify (ngx_ssl_shutdown, c->timedout)
