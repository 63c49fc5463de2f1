"""Client certificates: ssl_verify_client on|optional|optional_no_ca with
ssl_client_certificate / ssl_trusted_certificate, ssl_verify_depth and ssl_crl; the
certificate error lines of docs/behaviour.md §3 inside TLS; the Auth-SSL-* headers with the values nginx
takes from OpenSSL (docs/behaviour.md §2.7, §4.4, §10.1, §10.2).

The expected header values come from the `openssl` command line tool for the same files
(`x509 -subject -nameopt RFC2253`, `-serial`), so both targets are held to OpenSSL's text.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from postern.proxy.auth_http import escape
from postern.scenarios.kit.tls_support import (
    CERT_ERROR,
    GREETINGS,
    NO_CERT,
    client_context,
    ends_with_close_notify,
    pki,
    tls_connect,
)

__all__ = ["pki"]

PROTOCOLS = ("imap", "pop3", "smtp")


def _proxy(lab, pki, verify, protocol="imap", extra="", ca=True):
    text = pki.server() + f"ssl_verify_client {verify};\n"
    if ca:
        text += f"ssl_client_certificate {pki.client_ca};\n"
    return lab.proxy(server=text + extra, protocol=protocol, listen_params="ssl")


def _openssl(*args: str) -> str:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.skip("the openssl command is not installed")
    return subprocess.run([binary, *args], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


def _expected(pki, name: str, verify: str = "SUCCESS", with_cert: bool = False):
    path = pki.clients[name][0]
    cert = pki.client_cert(name)
    subject = _openssl("x509", "-in", path, "-noout", "-subject", "-nameopt", "RFC2253")
    issuer = _openssl("x509", "-in", path, "-noout", "-issuer", "-nameopt", "RFC2253")
    serial = _openssl("x509", "-in", path, "-noout", "-serial")
    headers = [
        ("Auth-SSL", "on"), ("Auth-SSL-Protocol", "TLSv1.3"),
        ("Auth-SSL-Cipher", "TLS_AES_256_GCM_SHA384"), ("Auth-SSL-Verify", verify),
        ("Auth-SSL-Subject", subject.removeprefix("subject=")),
        ("Auth-SSL-Issuer", issuer.removeprefix("issuer=")),
        ("Auth-SSL-Serial", serial.removeprefix("serial=")),
        ("Auth-SSL-Fingerprint", hashlib.sha1(cert.public_bytes(Encoding.DER)).hexdigest()),
    ]
    if with_cert:
        headers.append(("Auth-SSL-Cert", escape(cert.public_bytes(Encoding.PEM)).decode()))
    return headers


def _ssl_headers(lab) -> list[tuple[str, str]]:
    return [(k, v) for k, v in lab.auth.requests[0].headers if k.startswith("Auth-SSL")]


def _login(c, lab):
    lab.login(c)
    c.send(b"a9 LOGOUT\r\n")


# -- verification succeeds ----------------------------------------------------------------------

@pytest.mark.parametrize("verify", ["on", "optional", "optional_no_ca"])
def test_trusted_certificate_headers(lab, pki, verify):
    """§10.1: Verify SUCCESS, Subject/Issuer in RFC 2253, Serial in uppercase hex, SHA-1
    fingerprint in lowercase hex; no Auth-SSL-Cert without auth_http_pass_client_cert."""
    proxy = _proxy(lab, pki, verify)
    with tls_connect(proxy, client_context(pki, cert="plain")) as c:
        _login(c, lab)
    assert _ssl_headers(lab) == _expected(pki, "plain")


def test_pass_client_cert_sends_the_escaped_pem(lab, pki):
    """§2.2, §10.2: auth_http_pass_client_cert on adds Auth-SSL-Cert, the PEM with spaces,
    line ends and `%` escaped (`%20`, `%0A`)."""
    proxy = _proxy(lab, pki, "on", extra="auth_http_pass_client_cert on;")
    with tls_connect(proxy, client_context(pki, cert="plain")) as c:
        _login(c, lab)
    headers = _ssl_headers(lab)
    assert headers == _expected(pki, "plain", with_cert=True)
    assert headers[-1][1].startswith("-----BEGIN%20CERTIFICATE-----%0A")


def test_subject_needing_rfc2253_escapes(lab, pki):
    """RFC 2253 §2.4 as OpenSSL prints it: `,+"\\<>;` escaped with a backslash, a leading `#`
    and leading/trailing spaces too, bytes of non-ASCII characters as \\XX, emailAddress by
    its OpenSSL short name, entries last to first."""
    proxy = _proxy(lab, pki, "optional")
    with tls_connect(proxy, client_context(pki, cert="odd")) as c:
        _login(c, lab)
    headers = dict(_ssl_headers(lab))
    assert headers["Auth-SSL-Subject"] == dict(_expected(pki, "odd"))["Auth-SSL-Subject"]
    assert headers["Auth-SSL-Subject"].startswith(
        "emailAddress=odd@example.com,CN=\\#odd=name\\\\x,OU=\\ Mail\\;\\\"IT\\\" \\<dept\\>\\ ,"
        "O=M\\C3\\BCller\\, S\\C3\\B6hne \\+ Co,C=DE")


def test_no_certificate_with_optional(lab, pki):
    """§10.1: no certificate → only `Auth-SSL-Verify: NONE` besides protocol and cipher."""
    proxy = _proxy(lab, pki, "optional")
    with tls_connect(proxy) as c:
        _login(c, lab)
    assert _ssl_headers(lab) == [
        ("Auth-SSL", "on"), ("Auth-SSL-Protocol", "TLSv1.3"),
        ("Auth-SSL-Cipher", "TLS_AES_256_GCM_SHA384"), ("Auth-SSL-Verify", "NONE")]


def test_optional_no_ca_without_certificate(lab, pki):
    """§18 capture: implicit TLS, optional_no_ca, no client certificate (no CA configured)."""
    proxy = _proxy(lab, pki, "optional_no_ca", ca=False)
    with tls_connect(proxy) as c:
        _login(c, lab)
    assert _ssl_headers(lab)[-1] == ("Auth-SSL-Verify", "NONE")


@pytest.mark.parametrize("name,reason", [
    ("self", "self-signed certificate"),
    ("stranger", "unable to verify the first certificate")])
def test_optional_no_ca_accepts_unverifiable_certificates(lab, pki, name, reason):
    """§4.4: optional_no_ca lets self-signed and unknown-issuer certificates through; the
    auth server learns `FAILED:<OpenSSL's reason>` and decides."""
    proxy = _proxy(lab, pki, "optional_no_ca")
    with tls_connect(proxy, client_context(pki, cert=name)) as c:
        _login(c, lab)
    assert _ssl_headers(lab) == _expected(pki, name, verify="FAILED:" + reason)


# -- verification fails: the error line inside TLS ---------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_required_certificate_missing(lab, pki, protocol):
    """§3, §4.4: `on` without a client certificate: the handshake completes, then instead of
    the greeting `No required SSL certificate`, then close_notify."""
    proxy = _proxy(lab, pki, "on", protocol)
    with tls_connect(proxy) as c:
        c.expect(NO_CERT[protocol])
        assert ends_with_close_notify(c)
    assert ("client sent no required SSL certificate while SSL handshaking, "
            "client: 127.0.0.1, server: ") in proxy.error_log()
    assert lab.auth.requests == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("verify", ["on", "optional"])
def test_untrusted_certificate(lab, pki, protocol, verify):
    """§3, §4.4: a certificate from an unknown CA: `SSL certificate error` inside TLS instead
    of the greeting; the log names OpenSSL's error number and text."""
    proxy = _proxy(lab, pki, verify, protocol)
    with tls_connect(proxy, client_context(pki, cert="stranger")) as c:
        c.expect(CERT_ERROR[protocol])
        assert ends_with_close_notify(c)
    assert "client SSL certificate verify error: (21:unable to verify the first certificate)" \
        in proxy.error_log()


def test_self_signed_refused_with_optional(lab, pki):
    """§4.4: `optional` (unlike optional_no_ca) refuses a self-signed certificate."""
    proxy = _proxy(lab, pki, "optional")
    with tls_connect(proxy, client_context(pki, cert="self")) as c:
        c.expect(CERT_ERROR["imap"])
    assert "(18:self-signed certificate)" in proxy.error_log()


def test_verify_depth(lab, pki):
    """ssl_verify_depth counts the CA certificates between the client's certificate and the
    trusted root (OpenSSL's X509_VERIFY_PARAM depth): the default 1 lets one intermediate CA
    through, 0 does not (and still takes a certificate the root signed itself)."""
    proxy = _proxy(lab, pki, "on")
    with tls_connect(proxy, client_context(pki, cert="deep")) as c:
        _login(c, lab)
    assert _ssl_headers(lab) == _expected(pki, "deep")
    proxy = _proxy(lab, pki, "on", extra="ssl_verify_depth 0;")
    with tls_connect(proxy, client_context(pki, cert="deep")) as c:
        c.expect(CERT_ERROR["imap"])
    # with no room for the intermediate, OpenSSL stops looking for the issuer
    assert "(20:unable to get local issuer certificate)" in proxy.error_log()
    lab.auth.requests.clear()
    with tls_connect(proxy, client_context(pki, cert="plain")) as c:
        _login(c, lab)
    assert dict(_ssl_headers(lab))["Auth-SSL-Verify"] == "SUCCESS"


def test_crl_revokes(lab, pki):
    """ssl_crl: a revoked certificate gets the error line; a good one still verifies."""
    proxy = _proxy(lab, pki, "on", extra=f"ssl_crl {pki.crl};")
    with tls_connect(proxy, client_context(pki, cert="revoked")) as c:
        c.expect(CERT_ERROR["imap"])
    assert "(23:certificate revoked)" in proxy.error_log()
    with tls_connect(proxy, client_context(pki, cert="plain")) as c:
        _login(c, lab)
    assert dict(_ssl_headers(lab))["Auth-SSL-Verify"] == "SUCCESS"


def test_trusted_certificate_verifies_without_being_advertised(lab, pki):
    """ssl_trusted_certificate: its CAs verify client certificates but are not sent in the
    CertificateRequest (only ssl_client_certificate's are)."""
    proxy = _proxy(lab, pki, "on", extra=f"ssl_trusted_certificate {pki.other_ca};")
    with tls_connect(proxy, client_context(pki, cert="stranger")) as c:
        _login(c, lab)
    assert dict(_ssl_headers(lab))["Auth-SSL-Verify"] == "SUCCESS"
    out = _openssl_s_client(proxy)
    names = out.split("Acceptable client certificate CA names", 1)[1].split("---", 1)[0]
    assert "Postern Test Clients" in names and "Somebody Else" not in names


def _openssl_s_client(proxy) -> str:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.skip("the openssl command is not installed")
    done = subprocess.run([binary, "s_client", "-connect", f"{proxy.host}:{proxy.port}"],
                          input="", capture_output=True, text=True, timeout=30, check=False)
    return done.stdout


def test_verify_off_sends_no_verify_headers(lab, pki):
    """§10.1: with ssl_verify_client off a presented certificate is not asked for; only
    Auth-SSL, protocol and cipher."""
    proxy = lab.proxy(server=pki.server(), listen_params="ssl")
    with tls_connect(proxy, client_context(pki, cert="plain")) as c:
        _login(c, lab)
    assert [k for k, _ in _ssl_headers(lab)] == ["Auth-SSL", "Auth-SSL-Protocol",
                                                 "Auth-SSL-Cipher"]
    assert GREETINGS  # (imported for the error-line scenarios above)
