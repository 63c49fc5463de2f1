"""SMTP over TLS: STARTTLS (RFC 3207) with `starttls on` and `only`, and implicit TLS
(`listen ... ssl`, RFC 8314), on every target (docs/behaviour.md §2.7, §4.4, §9.4, §9.5, §18).

Both targets read the same throwaway certificate (trustme), passed as ssl_certificate paths
in the server block.
"""

from __future__ import annotations

import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit.client import tls_client_context
from postern.scenarios.kit.smtp_support import (  # noqa: F401 -- fixtures are used by name
    AUTH_OK,
    BAD_SEQUENCE,
    GREETING,
    HELO_REPLY,
    INVALID,
    OK,
    START_TLS,
    UPSTREAM_OK,
    fresh_smtp_fixture,
    greet,
    none_request,
    plain,
    smtp_request,
    tls_directives_fixture,
)

EHLO_ON = b"250-mx.test\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n"
EHLO_ONLY = b"250-mx.test\r\n250 STARTTLS\r\n"
EHLO_TLS = b"250-mx.test\r\n250 AUTH PLAIN LOGIN\r\n"


def tls_proxy(lab, tls_directives: str, starttls: str, extra: str = "", **kw):
    return lab.proxy(server=f"{tls_directives}\nstarttls {starttls};\n{extra}",
                     protocol="smtp", **kw)


def starttls(c):
    c.send(b"STARTTLS\r\n").expect(START_TLS)
    return c.starttls()


def ssl_tail(c) -> bytes:
    """The Auth-SSL headers nginx adds for a TLS client (§10.1, 1.21.2), as this client's
    handshake came out."""
    return (b"Auth-SSL: on\r\nAuth-SSL-Protocol: " + c.sock.version().encode() +
            b"\r\nAuth-SSL-Cipher: " + c.sock.cipher()[0].encode() + b"\r\n")


# -- starttls on --------------------------------------------------------------------------

def test_starttls_on_advertised_then_gone(lab, tls_directives):
    """RFC 3207 §4, §9.5: with `starttls on` the EHLO block ends with STARTTLS; after the
    handshake there is no new greeting and EHLO no longer offers it."""
    with greet(tls_proxy(lab, tls_directives, "on")) as c:
        c.send(b"EHLO x\r\n").expect(EHLO_ON)
        starttls(c)
        c.send(b"EHLO y\r\n").expect(EHLO_TLS)
        c.send(b"NOOP\r\n").expect(OK)


def test_capture_starttls_with_capabilities(lab, tls_directives):
    """§18 capture: `smtp_auth plain login none; smtp_capabilities "SIZE 100" 8BITMIME;
    starttls on;` before and after STARTTLS, byte for byte."""
    proxy = tls_proxy(lab, tls_directives, "on",
                      'smtp_auth plain login none;\nsmtp_capabilities "SIZE 100" 8BITMIME;')
    with greet(proxy) as c:
        c.send(b"EHLO x\r\n").expect(b"250-mx.test\r\n250-SIZE 100\r\n250-8BITMIME\r\n"
                                     b"250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n")
        starttls(c)
        c.send(b"EHLO y\r\n").expect(b"250-mx.test\r\n250-SIZE 100\r\n250-8BITMIME\r\n"
                                     b"250 AUTH PLAIN LOGIN\r\n")


def test_auth_over_starttls_sends_ssl_headers(lab, tls_directives):
    """§10.1: an authentication inside TLS carries Auth-SSL: on, Auth-SSL-Protocol and
    Auth-SSL-Cipher after Client-Host; the login then proceeds as usual."""
    with greet(tls_proxy(lab, tls_directives, "on")) as c:
        starttls(c)
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(AUTH_OK)
        c.send(b"NOOP\r\n").expect(UPSTREAM_OK)
        tail = ssl_tail(c)
    assert [r.raw for r in lab.auth.requests] == [smtp_request(tail=tail)]


def test_plaintext_auth_allowed_with_starttls_on(lab, tls_directives):
    """§2.7: `starttls on` offers TLS but does not require it."""
    with greet(tls_proxy(lab, tls_directives, "on")) as c:
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(AUTH_OK)
    assert lab.auth.requests[0].header("Auth-SSL") is None


def test_commands_pipelined_after_starttls_are_discarded(lab, tls_directives):
    """CVE-2014-3556 (nginx 1.7.4), RFC 3207 §6: plaintext pipelined behind STARTTLS is
    thrown away, so only the 220 is answered; the first command inside TLS gets its own
    single reply."""
    with greet(tls_proxy(lab, tls_directives, "on")) as c:
        c.send(b"STARTTLS\r\nAUTH PLAIN " + plain() + b"\r\nNOOP\r\n").expect(START_TLS)
        c.starttls()
        c.send(b"NOOP\r\n").expect(OK)
        c.expect_silence(0.3)
    assert lab.auth.requests == []


def test_starttls_inside_tls_is_invalid_not_counted(lab, tls_directives):
    """RFC 3207 §4.2 / §9.4: STARTTLS on a TLS connection → `500 5.5.1 Invalid command`,
    handler-level (max_errors 1 is not reached)."""
    with greet(tls_proxy(lab, tls_directives, "on", "max_errors 1;")) as c:
        starttls(c)
        c.send(b"STARTTLS\r\n").expect(INVALID)
        c.send(b"STARTTLS\r\n").expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)


def test_starttls_forgets_helo_but_not_esmtp(lab, tls_directives):
    """RFC 3207 §4.2 / §9.4 QUIRK: STARTTLS forgets the client's HELO argument (no client EHLO
    is repeated to the upstream) but not the ESMTP flag: with xclient off nginx still says
    EHLO (not HELO) to the upstream."""
    with greet(tls_proxy(lab, tls_directives, "on", "xclient off;")) as c:
        c.send(b"EHLO before.tls\r\n").expect(EHLO_ON)
        starttls(c)
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(AUTH_OK)
        c.send(b"NOOP\r\n").expect(UPSTREAM_OK)
    assert lab.smtp.command_lines == [b"EHLO mx.test", b"NOOP"]


def test_starttls_forgets_mail(lab, tls_directives):
    """RFC 3207 §4.2: a MAIL given before STARTTLS is forgotten: RCPT → 503 inside TLS, and
    a new MAIL is accepted."""
    with greet(tls_proxy(lab, tls_directives, "on", "smtp_auth plain login none;")) as c:
        c.send(b"MAIL FROM:<a@b>\r\n").expect(OK)
        starttls(c)
        c.send(b"RCPT TO:<c@d>\r\n").expect(BAD_SEQUENCE)
        c.send(b"MAIL FROM:<a@b>\r\n").expect(OK)


def test_failed_handshake_closes_silently(lab, tls_directives):
    """§4.4: a TLS handshake failure after STARTTLS closes the connection."""
    with greet(tls_proxy(lab, tls_directives, "on")) as c:
        c.send(b"STARTTLS\r\n").expect(START_TLS)
        c.send(b"this is not a TLS ClientHello\r\n\r\n")
        rest = c.read_all()
        assert not rest.startswith(b"2"), rest


# -- starttls only ----------------------------------------------------------------------------

def test_starttls_only_hides_auth_until_tls(lab, tls_directives):
    """§9.5: with `starttls only` the plaintext EHLO has no AUTH line, just STARTTLS; inside
    TLS the AUTH line is back."""
    with greet(tls_proxy(lab, tls_directives, "only")) as c:
        c.send(b"EHLO x\r\n").expect(EHLO_ONLY)
        starttls(c)
        c.send(b"EHLO y\r\n").expect(EHLO_TLS)


def test_starttls_only_refuses_auth_in_plaintext(lab, tls_directives):
    """RFC 3207 §4 (a server may require TLS first) / §9.4: every AUTH before TLS → `500
    5.5.1 Invalid command`, not counted (max_errors 1); inside TLS AUTH works."""
    proxy = tls_proxy(lab, tls_directives, "only", "max_errors 1;")
    with greet(proxy) as c:
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(INVALID)
        c.send(b"AUTH LOGIN\r\n").expect(INVALID)
        c.send(b"AUTH\r\n").expect(INVALID)
        starttls(c)
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(AUTH_OK)
    [req] = lab.auth.requests
    assert (req.auth_method, req.user, req.password) == ("plain", "alice", "secret")


def test_starttls_only_with_none_lets_mail_through(lab, tls_directives):
    """§9.4 QUIRK [verified], §18: `smtp_auth none; starttls only;` → EHLO `250-mx.test /
    250 STARTTLS`, AUTH → 500, but MAIL FROM on the plaintext connection → `250 2.0.0 OK`
    and the RCPT is relayed (only AUTH checks starttls)."""
    lab.auth.push(Reply.ok("127.0.0.1", lab.smtp.port))
    with greet(tls_proxy(lab, tls_directives, "only", "smtp_auth none;")) as c:
        c.send(b"EHLO x\r\n").expect(EHLO_ONLY)
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(INVALID)
        c.send(b"MAIL FROM:<a@b>\r\n").expect(OK)
        c.send(b"RCPT TO:<c@d>\r\n").expect(UPSTREAM_OK)
    assert [r.raw for r in lab.auth.requests] == [
        none_request(b"x", b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>")]


def test_none_mode_request_inside_tls(lab, tls_directives):
    """§10.1: the Auth-SSL headers follow the Auth-SMTP-* ones in a none request."""
    lab.auth.push(Reply.ok("127.0.0.1", lab.smtp.port))
    with greet(tls_proxy(lab, tls_directives, "only", "smtp_auth none;")) as c:
        starttls(c)
        c.send(b"HELO me\r\n").expect(HELO_REPLY)
        c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n").expect(OK + UPSTREAM_OK)
        tail = ssl_tail(c)
    assert [r.raw for r in lab.auth.requests] == [
        none_request(b"me", b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>", tail=tail)]


# -- implicit TLS -----------------------------------------------------------------------------

def test_implicit_tls_greets_inside_tls(lab, tls_directives):
    """RFC 8314 §3 / §4.1: with `listen ... ssl` the handshake comes first, the greeting
    inside TLS; EHLO offers AUTH and never STARTTLS (even with starttls on), STARTTLS is
    invalid, AUTH logs in."""
    proxy = tls_proxy(lab, tls_directives, "on", listen_params="ssl")
    with proxy.connect() as c:
        c.starttls()
        c.expect(GREETING)
        c.send(b"EHLO x\r\n").expect(EHLO_TLS)
        c.send(b"STARTTLS\r\n").expect(INVALID)
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(AUTH_OK)
        c.send(b"NOOP\r\n").expect(UPSTREAM_OK)


def test_implicit_tls_auth_request_has_ssl_headers(lab, tls_directives):
    """§10.1 (1.21.2): on an implicit-TLS connection the request carries Auth-SSL: on with
    the protocol and cipher of the handshake."""
    proxy = tls_proxy(lab, tls_directives, "on", listen_params="ssl")
    with proxy.connect() as c:
        c.starttls()
        c.expect(GREETING)
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(AUTH_OK)
        tail = ssl_tail(c)
    assert [r.raw for r in lab.auth.requests] == [smtp_request(tail=tail)]


@pytest.mark.parametrize("alpn,ok", [(["smtp"], True), (["http/1.1"], False)])
def test_implicit_tls_alpn(lab, tls_directives, alpn, ok):
    """§2.7 (nginx 1.21.4): a client ALPN list without `smtp` fails the handshake; `smtp`
    is accepted and selected."""
    import ssl

    proxy = tls_proxy(lab, tls_directives, "off", listen_params="ssl")
    ctx = tls_client_context()
    ctx.set_alpn_protocols(alpn)
    with proxy.connect() as c:
        if not ok:
            with pytest.raises(ssl.SSLError):
                c.starttls(ctx)
            return
        c.starttls(ctx)
        assert c.sock.selected_alpn_protocol() == "smtp"
        c.expect(GREETING)
