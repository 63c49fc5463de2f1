"""Client certificates from the wild under `ssl_verify_client optional_no_ca`: odd but valid
shapes OpenSSL accepts (T61String/BMPString names, zero, negative and huge serials, no
subject, huge and unknown critical extensions). nginx: the session goes on and the
Auth-SSL-* headers carry OpenSSL's own text, which the `openssl` command prints the same."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest
from postern.scenarios.kit.tls_support import CERT_ERROR, client_context, pki, tls_connect
from postern.scenarios.kit.wild_certs import WILD, write

__all__ = ["pki"]

# OpenSSL's verdict on a self-signed certificate with an extension it cannot handle
REFUSED = {"unknown_critical_extension": "34:unhandled critical extension"}


def _openssl(path: str, what: str) -> str:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.skip("the openssl command is not installed")
    out = subprocess.run([binary, "x509", "-in", path, "-noout", what, "-nameopt", "RFC2253"],
                         capture_output=True, check=True, timeout=30).stdout
    return out.decode("latin-1").strip().split("=", 1)[1]


@pytest.mark.parametrize("label", sorted(WILD))
def test_wild_client_certificate(lab, pki, label, tmp_path):
    """nginx: optional_no_ca takes a self-signed certificate of any shape OpenSSL reads; the
    auth request says FAILED:<reason> and carries subject, issuer, serial, fingerprint."""
    cert, key, der = write(tmp_path, label)
    proxy = lab.proxy(server=pki.server() + "ssl_verify_client optional_no_ca;\n",
                      listen_params="ssl")
    ctx = client_context(pki)
    ctx.load_cert_chain(cert, key)
    mark = len(proxy.error_log())
    with tls_connect(proxy, ctx) as c:
        if label in REFUSED:
            c.expect(CERT_ERROR["imap"])
            assert REFUSED[label] in proxy.error_log()[mark:]
            return
        lab.login(c)
        c.send(b"a9 LOGOUT\r\n")
    headers = {k: v for k, v in lab.auth.requests[0].headers if k.startswith("Auth-SSL")}
    assert headers["Auth-SSL-Verify"].startswith("FAILED:")
    assert headers.get("Auth-SSL-Subject", "") == _openssl(cert, "-subject")
    assert headers["Auth-SSL-Issuer"] == _openssl(cert, "-issuer")
    assert headers["Auth-SSL-Serial"] == _openssl(cert, "-serial")
    assert headers["Auth-SSL-Fingerprint"] == hashlib.sha1(der).hexdigest()
