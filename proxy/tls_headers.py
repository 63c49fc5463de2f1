"""The Auth-SSL-* headers of the auth request, byte for byte as nginx writes them (spec §10.1).

nginx takes each value from OpenSSL: the protocol and cipher names, the verify result text
(X509_verify_cert_error_string), the subject and issuer through X509_NAME_print_ex with
XN_FLAG_RFC2253, the serial through i2a_ASN1_INTEGER, the SHA-1 fingerprint, and the PEM of
the certificate escaped like Auth-User. The DN printer below follows OpenSSL's rules:
entries last to first, `,` between RDNs and `+` inside one, short names from OpenSSL's object
table, backslash before `,+"\\<>;` (and a leading `#` or space, a trailing space), `\\XX` for
control characters and for every byte of a non-ASCII character, `#<hex DER>` for a value
whose attribute or string type OpenSSL does not know.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

from proxy.auth_http import escape

if TYPE_CHECKING:
    from proxy.tls import TlsConnection

# ASN.1 string types do_print_ex() prints as text (tag2nbyte >= 0); others are dumped
_TEXT_TYPES = frozenset({12, 18, 19, 20, 22, 23, 24, 26, 27, 28, 30})
_ESCAPED = frozenset(',+"\\<>;')


def verify_error_text(rc: int) -> str:
    return _ffi.string(_lib.X509_verify_cert_error_string(rc)).decode("latin-1")


def auth_ssl_headers(conn: TlsConnection) -> list[tuple[str, bytes]]:
    headers = [("Auth-SSL", b"on"),
               ("Auth-SSL-Protocol", conn.protocol_version.encode()),
               ("Auth-SSL-Cipher", conn.cipher.encode())]
    if conn.server.verify != "off":
        cert = conn.peer_certificate()
        if cert is None:
            headers.append(("Auth-SSL-Verify", b"NONE"))
        else:
            rc = conn.verify_result()
            verify = "SUCCESS" if rc == 0 else "FAILED:" + verify_error_text(rc)
            headers += [
                ("Auth-SSL-Verify", verify.encode()),
                ("Auth-SSL-Subject", rfc2253(cert.subject).encode()),
                ("Auth-SSL-Issuer", rfc2253(cert.issuer).encode()),
                ("Auth-SSL-Serial", serial_text(cert.serial_number).encode()),
                ("Auth-SSL-Fingerprint", cert.fingerprint(hashes.SHA1()).hex().encode()),
            ]
            if conn.server.pass_client_cert:
                headers.append(("Auth-SSL-Cert", escape(cert.public_bytes(Encoding.PEM))))
    return [(name, value) for name, value in headers if value]


def serial_text(serial: int) -> str:
    """i2a_ASN1_INTEGER(): the magnitude's bytes in uppercase hex, "-" before a negative."""
    sign, magnitude = ("-", -serial) if serial < 0 else ("", serial)
    if magnitude == 0:
        return sign + "00"
    return sign + magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big").hex().upper()


def rfc2253(name: x509.Name) -> str:
    """X509_NAME_print_ex(..., XN_FLAG_RFC2253)."""
    rdns = []
    for rdn in reversed(name.rdns):
        rdns.append("+".join(_entry(attr) for attr in reversed(list(rdn))))
    return ",".join(rdns)


def _entry(attr: x509.NameAttribute) -> str:
    oid = attr.oid.dotted_string
    try:
        short = ssl._ssl.txt2obj(oid)[1]  # OpenSSL's own object table
    except ValueError:
        return f"{oid}=#{_der(attr).hex().upper()}"
    asn1_type = getattr(attr, "_type", None)
    tag = getattr(asn1_type, "value", 12)
    if tag not in _TEXT_TYPES or not isinstance(attr.value, str):
        return f"{short}=#{_der(attr).hex().upper()}"
    return f"{short}={_escape_value(attr.value)}"


def _escape_value(value: str) -> str:
    out = []
    last = len(value) - 1
    for i, ch in enumerate(value):
        code = ord(ch)
        if code > 0x7F:
            out.extend(f"\\{b:02X}" for b in ch.encode("utf-8"))
        elif ch in _ESCAPED or (i == 0 and ch in " #") or (i == last and ch == " "):
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\{code:02X}")
        else:
            out.append(ch)
    return "".join(out)


def _der(attr: x509.NameAttribute) -> bytes:
    """The value's DER (tag, length, content) as OpenSSL dumps it."""
    asn1_type = getattr(attr, "_type", None)
    tag = getattr(asn1_type, "value", 12)
    value = attr.value
    if isinstance(value, str):
        if tag == 30:
            content = value.encode("utf-16-be")
        elif tag == 28:
            content = value.encode("utf-32-be")
        else:
            content = value.encode("utf-8")
    else:
        content = bytes(value)
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        size = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(size)]) + size
    return bytes([tag]) + length + content
