"""The ssl_* directives that shape the handshake: several certificates chosen by key type,
ssl_password_file, ssl_protocols, ssl_ciphers, ssl_prefer_server_ciphers, ssl_ecdh_curve,
ssl_dhparam, and session resumption under ssl_session_cache / ssl_session_tickets /
ssl_session_timeout (docs/behaviour.md §2.7; RFC 5246 §7.4.1, RFC 8446 §2.2, RFC 5077), and
ssl_conf_command: OpenSSL SSL_CONF_cmd() commands applied to the server's context after every
other ssl_* directive (nginx 1.19.4+, ngx_ssl_conf_commands), each observed from a real client
(RFC 5077 tickets, RFC 8446 versions and suites).
"""

from __future__ import annotations

import contextlib
import ssl
import time
import warnings
from dataclasses import dataclass

import pytest
from postern.scenarios.kit.tls_support import (
    GREETINGS,
    TLS12,
    TLS13,
    client_context,
    handshake_fails,
    implicit_tls_proxy,
    pki,
    s_client,
    tls_connect,
)

__all__ = ["pki"]


def _both_certs(pki) -> str:
    return (f"ssl_certificate {pki.rsa_cert};\nssl_certificate_key {pki.rsa_key};\n"
            f"ssl_certificate {pki.ecdsa_cert};\nssl_certificate_key {pki.ecdsa_key};\n"
            "ssl_protocols TLSv1.2 TLSv1.3;\n")


def _peer_cert(proxy, ctx) -> bytes:
    with tls_connect(proxy, ctx) as c:
        c.expect(GREETINGS["imap"])
        return c.sock.getpeercert(binary_form=True)


@pytest.mark.parametrize("cipher,kind", [("ECDHE-RSA-AES128-GCM-SHA256", "rsa"),
                                         ("ECDHE-ECDSA-AES128-GCM-SHA256", "ecdsa")])
def test_rsa_and_ecdsa_certificates_served_by_type(lab, pki, cipher, kind):
    """ssl_certificate repeated (1.11.0): the certificate whose key fits the negotiated
    cipher suite is served."""
    proxy = implicit_tls_proxy(lab, _both_certs(pki))
    der = _peer_cert(proxy, client_context(pki, version=TLS12, ciphers=cipher))
    assert der == pki.der(pki.rsa_cert if kind == "rsa" else pki.ecdsa_cert)


def test_encrypted_key_with_password_file(lab, pki):
    """ssl_password_file: each line is tried in turn (the first one here is wrong)."""
    proxy = implicit_tls_proxy(lab, f"ssl_certificate {pki.rsa_cert};\n"
                        f"ssl_certificate_key {pki.rsa_key_encrypted};\n"
                        f"ssl_password_file {pki.password_file};\n"
                        "ssl_protocols TLSv1.2 TLSv1.3;")
    assert _peer_cert(proxy, client_context(pki)) == pki.der(pki.rsa_cert)


@pytest.mark.parametrize("protocols,client,ok", [
    ("TLSv1.2", TLS12, True), ("TLSv1.2", TLS13, False),
    ("TLSv1.3", TLS13, True), ("TLSv1.3", TLS12, False),
    ("TLSv1.2 TLSv1.3", TLS12, True)])
def test_ssl_protocols(lab, pki, protocols, client, ok):
    """ssl_protocols: versions not listed are refused at the handshake."""
    proxy = implicit_tls_proxy(lab, pki.server(protocols=protocols))
    ctx = client_context(version=client)
    if ok:
        with tls_connect(proxy, ctx) as c:
            c.expect(GREETINGS["imap"])
            assert c.sock.version() == {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}[client]
    else:
        assert "VERSION" in handshake_fails(proxy, ctx).upper()


def _tls1_client() -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = client_context(version=ssl.TLSVersion.TLSv1)
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


def test_tls1_needs_seclevel_0_in_the_ciphers(lab, pki):
    """ssl_protocols TLSv1 with OpenSSL 3: TLS 1.0 is refused at the default security level,
    even when listed (the seed's `TLSv1 TLSv1.1 TLSv1.2`); only ciphers with @SECLEVEL=0
    let it through. nginx adds nothing of its own; neither does Postern."""
    plain = implicit_tls_proxy(lab, pki.server(protocols="TLSv1 TLSv1.1 TLSv1.2"))
    handshake_fails(plain, _tls1_client())
    legacy = implicit_tls_proxy(lab, pki.server(protocols="TLSv1 TLSv1.1 TLSv1.2") +
                    "ssl_ciphers HIGH:!aNULL:!MD5:@SECLEVEL=0;")
    with tls_connect(legacy, _tls1_client()) as c:
        c.expect(GREETINGS["imap"])
        assert c.sock.version() == "TLSv1"


def test_ssl_ciphers_restricts_tls12(lab, pki):
    """ssl_ciphers: only the listed TLS 1.2 suites are negotiated; a client with none of them
    gets no handshake."""
    proxy = implicit_tls_proxy(lab, pki.server() + "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256;")
    with tls_connect(proxy, client_context(version=TLS12)) as c:
        c.expect(GREETINGS["imap"])
        assert c.sock.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert "HANDSHAKE" in handshake_fails(
        proxy, client_context(version=TLS12, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384")).upper()


@pytest.mark.parametrize("prefer,expected", [("on", "ECDHE-ECDSA-AES128-GCM-SHA256"),
                                             ("off", "ECDHE-ECDSA-AES256-GCM-SHA384")])
def test_prefer_server_ciphers(lab, pki, prefer, expected):
    """ssl_prefer_server_ciphers: on → the server's order wins, off → the client's."""
    proxy = implicit_tls_proxy(lab, pki.server() + "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:"
                   f"ECDHE-ECDSA-AES256-GCM-SHA384;\nssl_prefer_server_ciphers {prefer};")
    ctx = client_context(version=TLS12, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384:"
                         "ECDHE-ECDSA-AES128-GCM-SHA256")
    with tls_connect(proxy, ctx) as c:
        c.expect(GREETINGS["imap"])
        assert c.sock.cipher()[0] == expected



def test_ecdh_curve(lab, pki):
    """ssl_ecdh_curve secp384r1: the key exchange uses that group; a client offering only
    X25519 gets no handshake."""
    proxy = implicit_tls_proxy(lab, pki.server() + "ssl_ecdh_curve secp384r1;")
    assert "Server Temp Key: ECDH, secp384r1" in s_client(proxy, "-groups",
                                                           "X25519:secp384r1")
    assert "Server Temp Key" not in s_client(proxy, "-groups", "X25519")


def test_dhparam_enables_dhe(lab, pki):
    """ssl_dhparam: without it no DHE suite can be negotiated; with it DHE-RSA works."""
    if pki.dhparam is None:
        pytest.skip("no DH parameters (openssl command missing)")
    suite = "DHE-RSA-AES256-GCM-SHA384"
    base = pki.server("rsa", protocols="TLSv1.2") + f"ssl_ciphers {suite};\n"
    without = implicit_tls_proxy(lab, base)
    handshake_fails(without, client_context(version=TLS12, ciphers=suite))
    with_dh = implicit_tls_proxy(lab, base + f"ssl_dhparam {pki.dhparam};")
    with tls_connect(with_dh, client_context(version=TLS12, ciphers=suite)) as c:
        c.expect(GREETINGS["imap"])
        assert c.sock.cipher()[0] == suite


# -- session resumption --------------------------------------------------------------------------

def _resumed(proxy, version, wait: float = 0.0) -> bool:
    """A full handshake, then a second one offering its session: was it resumed?"""
    ctx = client_context(version=version)
    with tls_connect(proxy, ctx) as c:
        c.expect(GREETINGS["imap"])  # reading also takes in TLS 1.3 tickets
        c.send(b"a1 LOGOUT\r\n").expect(b"* BYE\r\na1 OK completed\r\n")
        session = c.sock.session
        # let the server finish its own TLS shutdown first: OpenSSL drops a session from
        # the server cache when the peer vanishes before that (nginx then resumes nothing)
        with contextlib.suppress(Exception):
            c.read_all(timeout=2)
    if wait:
        time.sleep(wait)
    with tls_connect(proxy, ctx, session=session) as c:
        c.expect(GREETINGS["imap"])
        return c.sock.session_reused


CACHES = ["off", "none", "builtin", "builtin:1000", "shared:SSL:1m",
          "builtin:1000 shared:SSL:1m"]


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["tls12", "tls13"])
@pytest.mark.parametrize("cache", CACHES)
def test_resumption_with_tickets(lab, pki, cache, version):
    """ssl_session_tickets on (default): a ticket resumes the session whatever the cache
    mode; the ticket keys live in the context, not in the cache."""
    proxy = implicit_tls_proxy(lab, pki.server() + f"ssl_session_cache {cache};")
    assert _resumed(proxy, version)


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["tls12", "tls13"])
@pytest.mark.parametrize("cache,resumed", [
    ("off", False), ("none", False), ("builtin", True), ("builtin:1000", True),
    ("shared:SSL:1m", True), ("builtin:1000 shared:SSL:1m", True)])
def test_resumption_without_tickets(lab, pki, cache, resumed, version):
    """ssl_session_tickets off: only a server-side cache can resume; `none` hands out
    session ids but never stores them; `off` refuses caching (docs/behaviour.md §2.7)."""
    proxy = implicit_tls_proxy(lab, pki.server() + f"ssl_session_cache {cache};\n"
                   "ssl_session_tickets off;")
    assert _resumed(proxy, version) is resumed


@pytest.mark.parametrize("tickets", ["on", "off"])
def test_session_timeout(lab, pki, tickets):
    """ssl_session_timeout: a session older than the timeout is not resumed (cache entry and
    ticket alike)."""
    proxy = implicit_tls_proxy(lab, pki.server() + "ssl_session_cache builtin;\n"
                   f"ssl_session_timeout 1s;\nssl_session_tickets {tickets};")
    assert _resumed(proxy, TLS12, wait=2.5) is False
    assert _resumed(proxy, TLS12) is True


def test_resumed_session_keeps_the_client_certificate(lab, pki):
    """§10.1: a resumed session carries the client certificate and its verify result: the auth
    request says SUCCESS and names the certificate as after the full handshake."""
    proxy = implicit_tls_proxy(lab, pki.server() + f"ssl_verify_client on;\n"
                   f"ssl_client_certificate {pki.client_ca};\nssl_session_cache builtin;")
    ctx = client_context(pki, cert="plain", version=TLS12)
    with tls_connect(proxy, ctx) as c:
        lab.login(c)
        c.send(b"a9 LOGOUT\r\n")
        session = c.sock.session
    with tls_connect(proxy, ctx, session=session) as c:
        assert c.sock.session_reused
        lab.login(c)
    first, second = lab.auth.requests[:2]
    pick = [(k, v) for k, v in first.headers if k.startswith("Auth-SSL")]
    assert pick == [(k, v) for k, v in second.headers if k.startswith("Auth-SSL")]
    assert dict(pick)["Auth-SSL-Verify"] == "SUCCESS"


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["tls12", "tls13"])
def test_session_ticket_key_file_is_accepted(lab, pki, tmp_path_factory, version):
    """ssl_session_ticket_key (80-byte file): tickets resume sessions. Postern cannot load
    the key into OpenSSL through pyOpenSSL and warns; within one running instance the
    behaviour is the same (the keys only matter across instances and restarts)."""
    key = tmp_path_factory.mktemp("ticket") / "ticket.key"
    key.write_bytes(bytes(range(80)))
    key.chmod(0o644)
    key.parent.chmod(0o755)
    proxy = implicit_tls_proxy(lab, pki.server() + f"ssl_session_ticket_key {key};")
    assert _resumed(proxy, version)


# -- ssl_conf_command ------------------------------------------------------------------------


@dataclass
class Seen:
    version: str
    cipher: str
    ticket: bool
    cert: bytes


def _greeted(proxy, ctx) -> Seen:
    """Handshake, greeting, LOGOUT: what the client saw of the TLS session."""
    with tls_connect(proxy, ctx) as c:
        c.expect(GREETINGS["imap"])  # reading also takes in TLS 1.3 tickets
        c.send(b"a1 LOGOUT\r\n").expect(b"* BYE\r\na1 OK completed\r\n")
        sock = c.sock
        return Seen(sock.version(), sock.cipher()[0], sock.session.has_ticket,
                    sock.getpeercert(binary_form=True))



@pytest.mark.parametrize("command,ticket", [("", True), ("Options -SessionTicket", False),
                                            ("Options SessionTicket", True)])
def test_session_ticket_option(lab, pki, command, ticket):
    """nginx ssl_conf_command: Options -SessionTicket: a TLS 1.2 client gets no ticket; `Options
    SessionTicket` clears what `ssl_session_tickets off` set (the commands come last)."""
    tickets = "off" if command == "Options SessionTicket" else "on"
    conf = pki.server() + f"ssl_session_tickets {tickets};\n"
    if command:
        conf += f"ssl_conf_command {command};\n"
    sock = _greeted(implicit_tls_proxy(lab, conf), client_context(version=TLS12))
    assert sock.ticket is ticket


@pytest.mark.parametrize("command,expected", [
    ("", "ECDHE-ECDSA-AES128-GCM-SHA256"),
    ("Options -ServerPreference", "ECDHE-ECDSA-AES256-GCM-SHA384")])
def test_server_preference_option(lab, pki, command, expected):
    """nginx ssl_conf_command: Options -ServerPreference undoes ssl_prefer_server_ciphers on:
    the client's order wins."""
    conf = (pki.server() + "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:"
            "ECDHE-ECDSA-AES256-GCM-SHA384;\nssl_prefer_server_ciphers on;\n")
    if command:
        conf += f"ssl_conf_command {command};\n"
    ctx = client_context(version=TLS12, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384:"
                         "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert _greeted(implicit_tls_proxy(lab, conf), ctx).cipher == expected


def test_min_protocol(lab, pki):
    """nginx ssl_conf_command: MinProtocol TLSv1.3: a TLS 1.2 client is refused, a TLS 1.3 one
    served."""
    proxy = implicit_tls_proxy(lab, pki.server() + "ssl_conf_command MinProtocol TLSv1.3;")
    assert "VERSION" in handshake_fails(proxy, client_context(version=TLS12)).upper()
    assert _greeted(proxy, client_context(version=TLS13)).version == "TLSv1.3"


def test_max_protocol(lab, pki):
    """nginx ssl_conf_command: MaxProtocol TLSv1.2: a TLS 1.3-only client is refused."""
    proxy = implicit_tls_proxy(lab, pki.server() + "ssl_conf_command MaxProtocol TLSv1.2;")
    assert "VERSION" in handshake_fails(proxy, client_context(version=TLS13)).upper()
    assert _greeted(proxy, client_context()).version == "TLSv1.2"


def test_protocol_list(lab, pki):
    """nginx ssl_conf_command: Protocol -TLSv1.3: the old list form of the same."""
    proxy = implicit_tls_proxy(lab, pki.server() + "ssl_conf_command Protocol -TLSv1.3;")
    assert _greeted(proxy, client_context()).version == "TLSv1.2"


def test_certificate_and_private_key(lab, pki):
    """nginx ssl_conf_command: Certificate + PrivateKey: the RSA certificate is served besides
    ssl_certificate's ECDSA one (an RSA suite picks it)."""
    proxy = implicit_tls_proxy(lab, pki.server() + f"ssl_conf_command Certificate {pki.rsa_cert};\n"
                   f"ssl_conf_command PrivateKey {pki.rsa_key};")
    ctx = client_context(pki, version=TLS12, ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    der = _greeted(proxy, ctx).cert
    assert der == pki.der(pki.rsa_cert)


@pytest.mark.parametrize("suite", ["TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"])
def test_ciphersuites(lab, pki, suite):
    """nginx ssl_conf_command: Ciphersuites: only that TLS 1.3 suite is negotiated."""
    proxy = implicit_tls_proxy(lab, pki.server() + f"ssl_conf_command Ciphersuites {suite};")
    assert _greeted(proxy, client_context(version=TLS13)).cipher == suite


def test_cipher_string(lab, pki):
    """nginx ssl_conf_command: CipherString replaces ssl_ciphers for TLS 1.2."""
    proxy = implicit_tls_proxy(lab, pki.server() + "ssl_ciphers HIGH;\n"
                   "ssl_conf_command CipherString ECDHE-ECDSA-AES256-GCM-SHA384;")
    ctx = client_context(version=TLS12)
    assert _greeted(proxy, ctx).cipher == "ECDHE-ECDSA-AES256-GCM-SHA384"


@pytest.mark.parametrize("name", ["Groups", "Curves"])
def test_groups(lab, pki, name):
    """nginx ssl_conf_command: Groups (and its old name Curves): the key exchange uses the
    listed group."""
    proxy = implicit_tls_proxy(lab, pki.server() + f"ssl_conf_command {name} secp384r1;")
    assert "Server Temp Key: ECDH, secp384r1" in s_client(proxy, "-groups",
                                                           "X25519:secp384r1")


def test_signature_algorithms(lab, pki):
    """nginx ssl_conf_command: SignatureAlgorithms ECDSA+SHA384: the TLS 1.2 handshake is signed
    with SHA-384."""
    proxy = implicit_tls_proxy(lab, pki.server() + "ssl_conf_command SignatureAlgorithms ECDSA+SHA384;")
    out = s_client(proxy, "-tls1_2")
    assert "Peer signing digest: SHA384" in out, out


def test_request_ca_file(lab, pki):
    """nginx ssl_conf_command: RequestCAFile: its subjects are the CA names of the certificate
    request."""
    proxy = implicit_tls_proxy(lab, pki.server() + "ssl_verify_client optional_no_ca;\n"
                   f"ssl_conf_command RequestCAFile {pki.client_ca};")
    out = s_client(proxy, "-tls1_2")
    assert "Acceptable client certificate CA names" in out and "Postern Test Clients" in out


def test_dh_parameters(lab, pki):
    """nginx ssl_conf_command: DHParameters: enables DHE suites as ssl_dhparam does."""
    if pki.dhparam is None:
        pytest.skip("no DH parameters (openssl command missing)")
    suite = "DHE-RSA-AES256-GCM-SHA384"
    proxy = implicit_tls_proxy(lab, pki.server("rsa", protocols="TLSv1.2") + f"ssl_ciphers {suite};\n"
                   f"ssl_conf_command DHParameters {pki.dhparam};")
    assert _greeted(proxy, client_context(version=TLS12, ciphers=suite)).cipher == suite


def test_verify_ca_file(lab, pki):
    """nginx ssl_conf_command: VerifyCAFile with ssl_verify_client optional_no_ca: the client
    certificate is verified against it (Auth-SSL-Verify: SUCCESS)."""
    proxy = implicit_tls_proxy(lab, pki.server() + "ssl_verify_client optional_no_ca;\n"
                   f"ssl_conf_command VerifyCAFile {pki.client_ca};")
    with tls_connect(proxy, client_context(pki, cert="plain", version=TLS12)) as c:
        lab.login(c)
    assert dict(lab.auth.requests[0].headers)["Auth-SSL-Verify"] == "SUCCESS"


def test_option_list_with_several_names(lab, pki):
    """nginx ssl_conf_command: Options with several comma-separated names, set and cleared, any
    case."""
    proxy = implicit_tls_proxy(lab, pki.server() + "ssl_conf_command Options "
                   "\"-sessionticket, PrioritizeChaCha,NoRenegotiation,-EncryptThenMac\";")
    assert _greeted(proxy, client_context(version=TLS12)).ticket is False
