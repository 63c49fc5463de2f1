"""Odd but valid client certificates, assembled as raw DER and signed with an EC key: the
shapes the `cryptography` builder refuses to make or its parser refuses to read (T61String
and BMPString names, zero and negative serials, no subject, huge and unknown critical
extensions), which OpenSSL, and so nginx, accept."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

ECDSA_SHA256 = bytes.fromhex("06082a8648ce3d040302")  # the OID of ecdsa-with-SHA256
CN, O, C, OU = "2.5.4.3", "2.5.4.10", "2.5.4.6", "2.5.4.11"
UTF8, PRINTABLE, T61, IA5, BMP = 12, 19, 20, 22, 30


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, bytes(body))


def integer(value: int) -> bytes:
    size = max(1, (value + (value < 0)).bit_length() // 8 + 1)
    return tlv(0x02, value.to_bytes(size, "big", signed=True))


def name(*rdns: list[tuple[str, int, bytes]]) -> bytes:
    """rdns: each a list of (OID, string tag, encoded value)."""
    return seq(*(tlv(0x31, b"".join(seq(oid(o), tlv(t, v)) for o, t, v in rdn))
                 for rdn in rdns))


def extension(dotted: str, value: bytes, critical: bool = False) -> bytes:
    flag = tlv(0x01, b"\xff") if critical else b""
    return seq(oid(dotted), flag, tlv(0x04, value))


def certificate(subject: bytes, *, serial: int = 1, issuer: bytes | None = None,
                extensions: list[bytes] | None = None) -> tuple[bytes, bytes]:
    """(DER certificate, PEM key): self-signed (issuer = subject unless given)."""
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    validity = seq(tlv(0x17, b"200101000000Z"), tlv(0x18, b"20991231000000Z"))
    parts = [tlv(0xA0, integer(2)), integer(serial), seq(ECDSA_SHA256),
             issuer if issuer is not None else subject, validity, subject, spki]
    if extensions:
        parts.append(tlv(0xA3, seq(*extensions)))
    tbs = seq(*parts)
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    der = seq(tbs, seq(ECDSA_SHA256), tlv(0x03, b"\x00" + signature))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return der, key_pem


WILD = {
    "t61_subject": lambda: certificate(name([(C, PRINTABLE, b"DE")],
                                            [(CN, T61, b"M\xfcller Gr\xfc\xdfe")])),
    "bmp_subject": lambda: certificate(name([(CN, BMP, "Zoë 日本".encode("utf-16-be"))])),
    "ia5_and_multivalued": lambda: certificate(name(
        [(CN, IA5, b"a@b.example"), (OU, UTF8, b"x+y")], [(O, UTF8, b" #lead, trail ")])),
    "zero_serial": lambda: certificate(name([(CN, UTF8, b"zero")]), serial=0),
    "negative_serial": lambda: certificate(name([(CN, UTF8, b"neg")]), serial=-0x1234),
    "huge_serial": lambda: certificate(name([(CN, UTF8, b"big")]), serial=2**159 - 1),
    "no_subject": lambda: certificate(name(), issuer=name([(CN, UTF8, b"issuer")])),
    "huge_extension": lambda: certificate(name([(CN, UTF8, b"huge")]), extensions=[
        extension("1.3.6.1.4.1.99999.7", tlv(0x04, b"x" * 9000))]),
    "unknown_critical_extension": lambda: certificate(name([(CN, UTF8, b"crit")]), extensions=[
        extension("1.3.6.1.4.1.99999.8", tlv(0x05, b""), critical=True)]),
    "unknown_attribute": lambda: certificate(name([("1.3.6.1.4.1.99999.1", UTF8, b"p")],
                                                  [(CN, UTF8, b"x")])),
}


def write(directory: Path, label: str) -> tuple[str, str, bytes]:
    """Write one wild certificate and its key as PEM; (cert path, key path, DER)."""
    der, key_pem = WILD[label]()
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    text = "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
    cert_path, key_path = directory / f"{label}.pem", directory / f"{label}.key"
    cert_path.write_text(text)
    key_path.write_bytes(key_pem)
    return str(cert_path), str(key_path), der
