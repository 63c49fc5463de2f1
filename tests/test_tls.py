"""proxy.tls and proxy.tls_headers without sockets: the sans-IO TLS endpoint driven by a stdlib
client over memory BIOs, the context built from SslSettings, and the Auth-SSL-* values
(RFC 2253 names checked against the openssl command's own printing)."""

from __future__ import annotations

import datetime
import shutil
import ssl
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier
from OpenSSL import SSL
from postern.proxy.conf.settings import AuthHttp, ServerSettings, SslSettings
from postern.proxy.protocols import PROTOCOLS
from postern.proxy.tls import TlsError, TlsServer, server_tls
from postern.proxy.tls_headers import auth_ssl_headers, parse_name, rfc2253, serial_text
from postern.scenarios.kit.tls_support import client_context, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _server(pki, protocol="imap", **ssl_kw) -> ServerSettings:
    ssl_kw.setdefault("certificates", (pki.ecdsa_cert,))
    ssl_kw.setdefault("certificate_keys", (pki.ecdsa_key,))
    return ServerSettings(file="test.conf", line=1, listens=(), protocol=protocol,
                          auth_http=AuthHttp("127.0.0.1:9", "127.0.0.1", "/"),
                          server_name="mx.test", ssl=SslSettings(**ssl_kw))


class Pair:
    """A stdlib client and a TlsConnection talking through memory."""

    def __init__(self, server: TlsServer, ctx: ssl.SSLContext) -> None:
        self.server = server.connection()
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="mx.test")

    def handshake(self, rounds: int = 6) -> None:
        for _ in range(rounds):
            try:
                self.client.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            data = self.outgoing.read()
            if data:
                assert self.server.receive(data) == b""
            self.incoming.write(self.server.outgoing())
            if done and self.server.established:
                return
        raise AssertionError("no handshake")

    def to_server(self, data: bytes) -> bytes:
        self.client.write(data)
        return self.server.receive(self.outgoing.read())

    def to_client(self, data: bytes) -> bytes:
        self.incoming.write(self.server.encrypt(data))
        out = b""
        while True:
            try:
                out += self.client.read(65536)
            except ssl.SSLWantReadError:
                return out


def test_handshake_and_records_both_ways(pki):
    pair = Pair(TlsServer(_server(pki)), client_context(pki))
    pair.handshake()
    assert pair.server.protocol_version == "TLSv1.3"
    assert pair.server.cipher == "TLS_AES_256_GCM_SHA384"
    assert pair.to_client(b"* OK IMAP4 ready\r\n") == b"* OK IMAP4 ready\r\n"
    big = bytes(range(256)) * 300  # several records in one call
    assert pair.to_server(big) == big
    assert pair.to_client(big) == big


def test_close_notify_both_ways(pki):
    pair = Pair(TlsServer(_server(pki)), client_context(pki))
    pair.handshake()
    pair.to_client(b"x")
    pair.incoming.write(pair.server.close_notify())
    assert pair.client.read(10) == b""  # close_notify read: a clean end
    pair2 = Pair(TlsServer(_server(pki)), client_context(pki))
    pair2.handshake()
    with pytest.raises(ssl.SSLWantReadError):
        pair2.client.unwrap()
    assert pair2.server.receive(pair2.outgoing.read()) == b""
    assert pair2.server.peer_closed


def test_alpn_refusal_is_a_fatal_alert(pki):
    """nginx 1.21.4: no_application_protocol (alert 120) when our protocol is not offered."""
    pair = Pair(TlsServer(_server(pki, "pop3")), client_context(alpn=["imap", "smtp"]))
    with pytest.raises(ssl.SSLWantReadError):
        pair.client.do_handshake()
    with pytest.raises(TlsError):
        pair.server.receive(pair.outgoing.read())
    alert = pair.server.outgoing()
    assert alert[:1] == b"\x15" and alert[-2:] == b"\x02\x78"  # fatal, no_application_protocol
    assert pair.server.failed and pair.server.close_notify() == b""


def test_alpn_selects_the_protocol(pki):
    pair = Pair(TlsServer(_server(pki, "smtp")), client_context(alpn=["h2", "smtp"]))
    pair.handshake()
    assert pair.server.alpn == b"smtp" and pair.client.selected_alpn_protocol() == "smtp"


def test_garbage_is_a_tls_error(pki):
    conn = TlsServer(_server(pki)).connection()
    with pytest.raises(TlsError):
        conn.receive(b"a1 CAPABILITY\r\n")
    assert not conn.established


def test_verify_failure_lets_the_handshake_finish(pki):
    """ngx_ssl_verify_callback: the handshake completes; the check comes afterwards, with the
    protocol's own line."""
    tls = TlsServer(_server(pki, "pop3", verify_client="on", client_certificate=pki.client_ca))
    pair = Pair(tls, client_context(pki, cert="stranger"))
    pair.handshake()
    line, log = pair.server.check_client_certificate()
    assert line == b"-ERR SSL certificate error\r\n"
    assert log == "client SSL certificate verify error: (21:unable to verify the first certificate)"
    pair = Pair(tls, client_context(pki))
    pair.handshake()
    assert pair.server.check_client_certificate() == (
        PROTOCOLS["pop3"].no_cert, "client sent no required SSL certificate")
    pair = Pair(tls, client_context(pki, cert="plain"))
    pair.handshake()
    assert pair.server.check_client_certificate() is None


def test_optional_no_ca_tolerates_self_signed(pki):
    tls = TlsServer(_server(pki, verify_client="optional_no_ca"))
    pair = Pair(tls, client_context(pki, cert="self"))
    pair.handshake()
    assert pair.server.check_client_certificate() is None
    verify = dict(auth_ssl_headers(pair.server))["Auth-SSL-Verify"]
    assert verify == b"FAILED:self-signed certificate"


@pytest.mark.parametrize("cache,mode", [
    ("off", SSL.SESS_CACHE_OFF),
    ("none", SSL.SESS_CACHE_SERVER | SSL.SESS_CACHE_NO_AUTO_CLEAR |
     SSL.SESS_CACHE_NO_INTERNAL_STORE),
    ("builtin", SSL.SESS_CACHE_SERVER), ("builtin:1000 shared:SSL:1m", SSL.SESS_CACHE_SERVER),
    ("shared:SSL:10m", SSL.SESS_CACHE_SERVER)])
def test_session_cache_modes(pki, cache, mode):
    tls = TlsServer(_server(pki, session_cache=cache, session_timeout=42.0))
    assert tls.context.get_session_cache_mode() == mode
    assert tls.context.get_timeout() == 42


def test_server_tls_is_one_context_per_settings_object(pki):
    conf = _server(pki)
    assert server_tls(conf) is server_tls(conf)
    assert server_tls(_server(pki)) is not server_tls(conf)  # equal settings, a reload


def test_unknown_curve_is_a_setup_error(pki):
    from postern.proxy.tls import TlsSetupError
    with pytest.raises(TlsSetupError, match="SSL_CTX_set1_curves_list"):
        TlsServer(_server(pki, ecdh_curve="nosuchcurve"))


@pytest.mark.parametrize("serial,text", [(0, "00"), (10, "0A"), (0x1234, "1234"),
                                         (0x0A0B, "0A0B"), (-5, "-05")])
def test_serial_text(serial, text):
    assert serial_text(serial) == text


def _cert_with(subject: x509.Name) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))


NAMES = {
    "plain": x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                        x509.NameAttribute(NameOID.COMMON_NAME, "client.example")]),
    "specials": x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ' #a,b+c"d\\e<f>g;h= '),
                           x509.NameAttribute(NameOID.ORGANIZATION_NAME, "#x y ")]),
    "utf8": x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Grüße 日本")]),
    "control": x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tab\there\x7f")]),
    "email": x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "a@b.example"),
                        x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "example"),
                        x509.NameAttribute(NameOID.USER_ID, "uid7"),
                        x509.NameAttribute(NameOID.SERIAL_NUMBER, "1234")]),
    "multivalued": x509.Name([x509.RelativeDistinguishedName([
        x509.NameAttribute(NameOID.COMMON_NAME, "a"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "b")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")])]),
    "unknown_oid": x509.Name([x509.NameAttribute(ObjectIdentifier("1.3.6.1.4.1.99999.1"),
                                                 "private"),
                              x509.NameAttribute(NameOID.COMMON_NAME, "x")]),
    "bmp": x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bmp é",
                                         _type=x509.name._ASN1Type.BMPString)]),
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_rfc2253_matches_openssl(name, tmp_path):
    """X509_NAME_print_ex(XN_FLAG_RFC2253), as `openssl x509 -nameopt RFC2253` prints it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    cert = _cert_with(NAMES[name])
    path = tmp_path / "c.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out = subprocess.run([openssl, "x509", "-in", str(path), "-noout", "-subject", "-nameopt",
                          "RFC2253"], capture_output=True, check=True)
    expected = out.stdout.decode("latin-1").rstrip("\n").removeprefix("subject=")
    assert rfc2253(parse_name(cert.subject.public_bytes())) == expected
