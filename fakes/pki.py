"""The toolkit's one certificate maker: throw-away CAs and what they sign, as PEM files.

trustme makes the CAs and the ordinary leaves; cryptography makes what trustme cannot (a
client certificate with an arbitrary subject, a self-signed one, a CRL). Every key is new at
each run: nothing is committed, nothing depends on the machine's clock beyond "valid from an
hour ago". The lab, locust's embedded lab and the stack use ``Authority.server_files``; the
TLS scenarios' PKI (client certificates under an intermediate, a revoked one and its CRL,
odd subjects) is built from the same calls::

    ca = Authority("Postern lab")
    files = ca.server_files(workdir, "localhost", "127.0.0.1")   # ca.pem, server.pem, .key
    plain = ca.client("client.example", common_name="client.example")
    odd_cert, odd_key = ca.issue_with_subject(x509.Name([...]))
    crl_pem = ca.crl([serial_of(revoked_cert_pem)])
"""

from __future__ import annotations

import datetime
import os
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
_KEY_TYPES = {"ecdsa": trustme.KeyType.ECDSA, "rsa": trustme.KeyType.RSA}


def write(path: Path, data: bytes, mode: int = 0o644) -> str:
    """Write a PEM file readable by a proxy running as another user (keys: mode 0o600)."""
    path.write_bytes(data)
    os.chmod(path, mode)
    return str(path)


@dataclass(frozen=True)
class ServerFiles:
    """A server certificate on disk: ``cert`` holds the chain, ``key`` the private key,
    ``ca`` the certificate of the CA a client should trust."""

    ca: Path
    cert: Path
    key: Path

    def directives(self) -> str:
        """The ``ssl_certificate`` lines that point nginx or Postern at these files."""
        return f"ssl_certificate {self.cert};\nssl_certificate_key {self.key};\n"


class Authority:
    """One throw-away CA (``key_type`` "ecdsa" or "rsa"); ``ca`` is the trustme.CA."""

    def __init__(self, organization: str = "Postern test", key_type: str = "ecdsa", *,
                 ca: trustme.CA | None = None) -> None:
        self.key_type = key_type
        self.ca = ca or trustme.CA(organization_name=organization,
                                   key_type=_KEY_TYPES[key_type])

    @property
    def cert_pem(self) -> bytes:
        return self.ca.cert_pem.bytes()

    def child(self) -> Authority:
        """An intermediate CA signed by this one."""
        return Authority(key_type=self.key_type, ca=self.ca.create_child_ca())

    def issue(self, *names: str, **kw: Any) -> trustme.LeafCert:
        """A leaf for these DNS names / IP addresses (trustme's ``issue_cert`` keywords)."""
        kw.setdefault("key_type", _KEY_TYPES[self.key_type])
        return self.ca.issue_cert(*names, **kw)

    def server_files(self, directory: Path, *names: str, stem: str = "server",
                     ca_name: str = "ca.pem") -> ServerFiles:
        """A server certificate for ``names`` (default: localhost and the loopback addresses)
        written as STEM.pem (the chain), STEM.key (mode 0o600) and the CA as ``ca_name``."""
        leaf = self.issue(*(names or LOCAL_NAMES))
        files = ServerFiles(directory / ca_name, directory / f"{stem}.pem",
                            directory / f"{stem}.key")
        write(files.ca, self.cert_pem)
        write(files.cert, b"".join(p.bytes() for p in leaf.cert_chain_pems))
        write(files.key, leaf.private_key_pem.bytes(), 0o600)
        return files

    def client(self, *names: str, chain: bool = False, **kw: Any) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) of a client certificate; ``chain`` adds the
        intermediates (for a leaf of a ``child()``)."""
        leaf = self.issue(*names, **kw)
        pems = leaf.cert_chain_pems if chain else leaf.cert_chain_pems[:1]
        return b"".join(p.bytes() for p in pems), leaf.private_key_pem.bytes()

    def _signer(self) -> tuple[x509.Name, Any]:
        cert = x509.load_pem_x509_certificate(self.cert_pem)
        return cert.subject, serialization.load_pem_private_key(
            self.ca.private_key_pem.bytes(), None)

    def issue_with_subject(self, subject: x509.Name, days: int = 30) -> tuple[bytes, bytes]:
        """A client certificate with a subject trustme cannot make (escapes, e-mail)."""
        return _client_cert(subject, self._signer(), days)

    def crl(self, revoked_serials: list[int], days: int = 30) -> bytes:
        """A CRL of this CA revoking these serial numbers."""
        issuer, key = self._signer()
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer)
                   .last_update(now - datetime.timedelta(hours=1))
                   .next_update(now + datetime.timedelta(days=days)))
        for serial in revoked_serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial)
                .revocation_date(now - datetime.timedelta(minutes=30)).build())
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def https_server(directory: Path, *names: str) -> ssl.SSLContext:
    """An HTTPS server's context with a certificate for ``names``; its CA is written to
    ``directory`` as ca.pem, and an unrelated CA as other-ca.pem (one that must not verify)."""
    authority = Authority()
    write(directory / "ca.pem", authority.cert_pem)
    write(directory / "other-ca.pem", Authority().cert_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue(*names).configure_cert(context)
    return context


def self_signed_client(subject: x509.Name, days: int = 30) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a client certificate no CA signed."""
    return _client_cert(subject, None, days)


def serial_of(cert_pem: bytes) -> int:
    return x509.load_pem_x509_certificate(cert_pem).serial_number


def _client_cert(subject: x509.Name, signer: tuple[x509.Name, Any] | None,
                 days: int) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer, signing_key = signer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(signing_key, hashes.SHA256()))
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def dhparam(path: Path) -> str | None:
    """ffdhe2048 parameters for ``ssl_dhparam`` (openssl's command; None without it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    done = subprocess.run([openssl, "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt",
                           "group:ffdhe2048"], capture_output=True, timeout=60, check=False)
    return write(path, done.stdout) if done.returncode == 0 else None
