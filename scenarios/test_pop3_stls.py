"""POP3 STLS (RFC 2595 §4) with `starttls on|only`: the CAPA variants, the handshake, what is
discarded and what changes inside TLS (docs/behaviour.md §8.3, §8.4, §4.4, §5.2; the §18 capture).

Both targets read the same throwaway certificate, made once per run.
"""

from __future__ import annotations

import pytest
from postern.scenarios.kit.pop3_support import (
    CAPA,
    CAPA_HEAD,
    INVALID,
    OK,
    greeted,
    greeted_with_salt,
    logged_in,
)
from postern.scenarios.kit.tls_support import throwaway_certificate

CAPA_STLS = CAPA[:-3] + b"STLS\r\n.\r\n"
CAPA_ONLY = CAPA_HEAD + b"TOP\r\nUIDL\r\nSTLS\r\n.\r\n"


@pytest.fixture(scope="session")
def tls_directives(tmp_path_factory) -> str:
    """`ssl_certificate ...; ssl_certificate_key ...;` for a throwaway certificate that both
    targets read (the directory is world-readable for nginx's workers)."""
    cert, key = throwaway_certificate(tmp_path_factory, "pop3-tls")
    return f"ssl_certificate {cert};\nssl_certificate_key {key};"



def test_captured_exchange_of_spec_18_with_stls(lab, tls_directives):
    """The docs/behaviour.md §18 capture, `pop3_auth plain apop cram-md5; starttls on;`: CAPA with STLS,
    the AUTH listing, `USER  a b `, CAPA in the USER state without STLS, STAT → invalid and
    back to the start, PASS → invalid."""
    c, _ = greeted_with_salt(lab, "pop3_auth plain apop cram-md5;\nstarttls on;\n"
                             + tls_directives)
    head = CAPA_HEAD + b"TOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN CRAM-MD5\r\n"
    with c:
        c.send(b"CAPA\r\n").expect(head + b"STLS\r\n.\r\n")
        c.send(b"AUTH\r\n").expect(b"+OK methods supported:\r\nPLAIN\r\nLOGIN\r\nCRAM-MD5\r\n"
                                   b".\r\n")
        c.send(b"USER  a b \r\n").expect(OK)
        c.send(b"CAPA\r\n").expect(head + b".\r\n")
        c.send(b"STAT\r\n").expect(INVALID)
        c.send(b"PASS x\r\n").expect(INVALID)
    assert lab.auth.requests == []


def test_starttls_only_capa_and_refused_logins(lab, tls_directives):
    """docs/behaviour.md §8.4 + §18: with `starttls only` CAPA lists the capabilities except USER (matched
    case-insensitively) and STLS, no SASL line; USER, APOP and AUTH are refused until TLS
    (handler level, not counted), while CAPA, NOOP and QUIT still work."""
    conf = ('pop3_capabilities TOP user "SASL-IR" UIDL;\npop3_auth plain apop;\n'
            "starttls only;\nmax_errors 1;\n" + tls_directives)
    c, _ = greeted_with_salt(lab, conf)
    with c:
        c.send(b"CAPA\r\n").expect(CAPA_HEAD + b"TOP\r\nSASL-IR\r\nUIDL\r\nSTLS\r\n.\r\n")
        for line in (b"USER x\r\n", b"AUTH\r\n", b"AUTH PLAIN AGEAYg==\r\n",
                     b"APOP a " + b"0" * 32 + b"\r\n", b"PASS x\r\n"):
            c.send(line).expect(INVALID)
        c.send(b"NOOP\r\n").expect(OK)
        c.send(b"QUIT\r\n").expect(OK).expect_closed()
    assert lab.auth.requests == []


def test_stls_then_login_inside_tls(lab, tls_directives):
    """RFC 2595 §4: `+OK`, the TLS handshake, and no new greeting (docs/behaviour.md §4.4); inside TLS CAPA
    has no STLS, a second STLS is invalid, and USER/PASS log in through the TLS connection,
    the auth request saying so with the Auth-SSL headers (1.21.2)."""
    with greeted(lab, "starttls on;\n" + tls_directives) as c:
        c.send(b"CAPA\r\n").expect(CAPA_STLS)
        c.send(b"STLS\r\n").expect(OK)
        c.starttls()
        c.send(b"CAPA\r\n").expect(CAPA)
        c.send(b"STLS\r\n").expect(INVALID)
        c.send(b"USER alice\r\n").expect(OK)
        c.send(b"PASS secret\r\n").expect(logged_in(lab))
        c.send(b"NOOP\r\n").expect(OK)
    [req] = lab.auth.requests
    assert (req.header("Auth-Method"), req.header("Auth-User"), req.header("Auth-Pass"),
            req.header("Auth-Protocol")) == ("plain", "alice", "secret", "pop3")
    # docs/behaviour.md §10.1: a TLS client connection adds Auth-SSL (the protocol and cipher headers
    # depend on the build's defaults: nginx 1.22 picks TLSv1.2 where mainline has TLSv1.3)
    assert req.header("Auth-SSL") == "on", req.raw
    assert req.header("Auth-SSL-Protocol", "").startswith("TLSv1."), req.raw
    assert req.header("Auth-SSL-Cipher"), req.raw


def test_starttls_only_allows_logins_after_stls(lab, tls_directives):
    """docs/behaviour.md §8.4: once TLS is up under `starttls only`, CAPA is the full list (USER and the
    SASL line back, no STLS) and AUTH PLAIN works."""
    with greeted(lab, "starttls only;\n" + tls_directives) as c:
        c.send(b"CAPA\r\n").expect(CAPA_ONLY)
        c.send(b"STLS\r\n").expect(OK)
        c.starttls()
        c.send(b"CAPA\r\n").expect(CAPA)
        c.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n").expect(logged_in(lab))
    assert [r.header("Auth-User") for r in lab.auth.requests] == ["alice"]


def test_commands_pipelined_after_stls_are_discarded(lab, tls_directives):
    """nginx 1.7.4 (CVE-2014-3556, docs/behaviour.md §5.2): plaintext pipelined after STLS is dropped, so
    an injected USER/PASS never logs in; the TLS session starts clean."""
    with greeted(lab, "starttls on;\n" + tls_directives) as c:
        c.send(b"STLS\r\nUSER alice\r\nPASS secret\r\n").expect(OK)
        c.starttls()
        c.send(b"PASS secret\r\n").expect(INVALID)  # no USER was kept
        c.send(b"NOOP\r\n").expect(OK)
    assert lab.auth.requests == []


def test_stls_in_user_state_resets(lab, tls_directives):
    """docs/behaviour.md §8.3: after USER, STLS is like any other intruder — `-ERR invalid command` and
    back to the initial state, even with `starttls on`; the connection stays plaintext."""
    with greeted(lab, "starttls on;\n" + tls_directives) as c:
        c.send(b"USER alice\r\n").expect(OK)
        c.send(b"STLS\r\n").expect(INVALID)
        c.send(b"PASS secret\r\n").expect(INVALID)
        c.send(b"CAPA\r\n").expect(CAPA_STLS)
