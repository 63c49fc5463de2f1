"""ssl_conf_command: OpenSSL SSL_CONF_cmd() commands applied to the server's context after
every other ssl_* directive (nginx 1.19.4+, ngx_ssl_conf_commands), each observed from a
real client (RFC 5077 tickets, RFC 8446 versions and suites).
"""

from __future__ import annotations

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
