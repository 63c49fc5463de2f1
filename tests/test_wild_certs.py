"""Certificates from the wild: the Auth-SSL-* values nginx takes from OpenSSL, for shapes the
`cryptography` parser refuses (checked against the openssl command's own printing)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from OpenSSL import crypto
from postern.proxy.tls_headers import certificate_fields, rfc2253, serial_text
from postern.scenarios.kit.wild_certs import WILD, write


def _openssl(path: str, *what: str) -> list[str]:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.skip("the openssl command is not installed")
    out = subprocess.run([binary, "x509", "-in", path, "-noout", *what, "-nameopt", "RFC2253"],
                         capture_output=True, check=True, timeout=30)
    return out.stdout.decode("latin-1").splitlines()


@pytest.mark.parametrize("label", sorted(WILD))
def test_values_match_openssl(label, tmp_path):
    path, _, der = write(tmp_path, label)
    cert = crypto.load_certificate(crypto.FILETYPE_PEM, Path(path).read_bytes())
    assert crypto.dump_certificate(crypto.FILETYPE_ASN1, cert) == der  # OpenSSL keeps it
    fields = certificate_fields(der)
    subject, issuer, serial = _openssl(path, "-subject", "-issuer", "-serial")
    assert "subject=" + rfc2253(fields.subject) == subject.rstrip()
    assert "issuer=" + rfc2253(fields.issuer) == issuer.rstrip()
    assert "serial=" + serial_text(fields.serial) == serial
    assert hashlib.sha1(der).hexdigest() == cert.digest("sha1").decode().replace(":", "").lower()


def test_cryptography_refuses_some_of_them(tmp_path):
    """Why the values are not read through `cryptography`: it fails on a T61String name."""
    from cryptography import x509
    der = WILD["t61_subject"]()[0]
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(der).subject  # noqa: B018
