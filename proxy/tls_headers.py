"""The Auth-SSL-* headers of the auth request, byte for byte as nginx writes them (docs/behaviour.md §10.1).

nginx takes each value from OpenSSL: the protocol and cipher names, the verify result text
(X509_verify_cert_error_string), the subject and issuer through X509_NAME_print_ex with
XN_FLAG_RFC2253, the serial through i2a_ASN1_INTEGER, the SHA-1 fingerprint, and the PEM of
the certificate escaped like Auth-User. The DN printer below follows OpenSSL's rules:
entries last to first, `,` between RDNs and `+` inside one, short names from OpenSSL's object
table, backslash before `,+"\\<>;` (and a leading `#` or space, a trailing space), `\\XX` for
control characters and for every byte of a non-ASCII character, `#<hex DER>` for a value
whose attribute or string type OpenSSL does not know.

The values are read from the certificate's DER as OpenSSL accepted it, with the few lines of
DER walking below rather than through the `cryptography` parser: that parser is stricter than
OpenSSL (it refuses T61String names, zero serials and more that OpenSSL and nginx take), and
a client certificate OpenSSL let through must not fail the login here.
"""

from __future__ import annotations

import hashlib
import ssl
from typing import Any, Protocol

from OpenSSL import crypto
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from postern.proxy.auth_http import AuthServerError, escape


class EstablishedTls(Protocol):
    """What the headers read of an established connection (proxy.tls.TlsConnection)."""

    server: Any  # its `verify` (ssl_verify_client) and `pass_client_cert`
    protocol_version: str
    cipher: str

    def peer_certificate(self) -> crypto.X509 | None: ...

    def verify_result(self) -> int: ...

_ESCAPED = frozenset(',+"\\<>;')


def verify_error_text(rc: int) -> str:
    return _ffi.string(_lib.X509_verify_cert_error_string(rc)).decode("latin-1")


class UnprintableName(AuthServerError):
    """X509_NAME_print_ex() fails (a UTF8String that is not UTF-8, an odd BMPString): nginx
    then makes no auth request and answers with the internal error, logging nothing."""

    def __init__(self) -> None:
        super().__init__("")


def auth_ssl_headers(conn: EstablishedTls) -> list[tuple[str, bytes]]:
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
            der = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
            fields = certificate_fields(der)
            headers += [
                ("Auth-SSL-Verify", verify.encode()),
                ("Auth-SSL-Subject", rfc2253(fields.subject).encode()),
                ("Auth-SSL-Issuer", rfc2253(fields.issuer).encode()),
                ("Auth-SSL-Serial", serial_text(fields.serial).encode()),
                ("Auth-SSL-Fingerprint", hashlib.sha1(der).hexdigest().encode()),
            ]
            if conn.server.pass_client_cert:
                headers.append(("Auth-SSL-Cert",
                                escape(crypto.dump_certificate(crypto.FILETYPE_PEM, cert))))
    return [(name, value) for name, value in headers if value]


def serial_text(serial: int) -> str:
    """i2a_ASN1_INTEGER(): the magnitude's bytes in uppercase hex, "-" before a negative."""
    sign, magnitude = ("-", -serial) if serial < 0 else ("", serial)
    if magnitude == 0:
        return sign + "00"
    return sign + magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big").hex().upper()


# -- DER -----------------------------------------------------------------------------------

class BadDer(ValueError):
    pass


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag byte, content start, content end) of the element at `pos`."""
    try:
        tag = data[pos]
        pos += 1
        if tag & 0x1F == 0x1F:  # high tag number form: skip its base-128 digits
            while data[pos] & 0x80:
                pos += 1
            pos += 1
        length = data[pos]
        pos += 1
        if length & 0x80:
            n = length & 0x7F
            if n == 0 or n > 8:
                raise BadDer("indefinite or oversized length")
            length = int.from_bytes(data[pos:pos + n], "big")
            pos += n
    except IndexError:
        raise BadDer("truncated") from None
    if pos + length > len(data):
        raise BadDer("truncated")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int):
    pos = start
    while pos < end:
        tag, cstart, cend = _tlv(data, pos)
        yield tag, pos, cstart, cend
        pos = cend


def _oid_text(content: bytes) -> str:
    arcs, value = [], 0
    for b in content:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        raise BadDer("empty OID")
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


class Attribute:
    """One AttributeTypeAndValue: its OID, its value's tag and the value's whole DER."""

    __slots__ = ("der", "oid", "tag")

    def __init__(self, oid: str, tag: int, der: bytes) -> None:
        self.oid, self.tag, self.der = oid, tag, der

    @property
    def content(self) -> bytes:
        return self.der[_tlv(self.der, 0)[1]:]


Name = list[list[Attribute]]  # RDNs in certificate order, each a list of attributes


def parse_name(data: bytes, start: int = 0, end: int | None = None) -> Name:
    """A DER Name (SEQUENCE OF SET OF SEQUENCE {OID, ANY})."""
    if end is None:
        _, start, end = _tlv(data, start)
    rdns = []
    for _, _, s_start, s_end in _children(data, start, end):
        rdn = []
        for _, _, a_start, a_end in _children(data, s_start, s_end):
            parts = list(_children(data, a_start, a_end))
            if len(parts) != 2 or parts[0][0] != 0x06:
                raise BadDer("bad attribute")
            (_, _, o_start, o_end), (v_tag, v_pos, _, v_end) = parts
            rdn.append(Attribute(_oid_text(data[o_start:o_end]), v_tag, data[v_pos:v_end]))
        rdns.append(rdn)
    return rdns


class CertificateFields:
    __slots__ = ("issuer", "serial", "subject")

    def __init__(self, serial: int, issuer: Name, subject: Name) -> None:
        self.serial, self.issuer, self.subject = serial, issuer, subject


def certificate_fields(der: bytes) -> CertificateFields:
    """Serial, issuer and subject of a DER certificate (as OpenSSL accepted it)."""
    _, c_start, _ = _tlv(der, 0)
    _, t_start, t_end = _tlv(der, c_start)
    items = list(_children(der, t_start, t_end))
    if items and items[0][0] == 0xA0:  # [0] version
        items = items[1:]
    if len(items) < 5 or items[0][0] != 0x02:
        raise BadDer("not a certificate")
    serial = int.from_bytes(der[items[0][2]:items[0][3]], "big", signed=True)
    issuer = parse_name(der, items[2][2], items[2][3])
    subject = parse_name(der, items[4][2], items[4][3])
    return CertificateFields(serial, issuer, subject)


# -- X509_NAME_print_ex(..., XN_FLAG_RFC2253) ----------------------------------------------

# ASN.1 string types do_print_ex() prints as text (tag2nbyte >= 0) and their character
# widths (0: UTF-8); others are dumped
_UNIT = {12: 0, 18: 1, 19: 1, 20: 1, 22: 1, 23: 1, 24: 1, 26: 1, 27: 1, 28: 4, 30: 2}


def rfc2253(name: Name) -> str:
    """X509_NAME_print_ex(..., XN_FLAG_RFC2253)."""
    rdns = []
    for rdn in reversed(name):
        rdns.append("+".join(_entry(attr) for attr in reversed(rdn)))
    return ",".join(rdns)


def _entry(attr: Attribute) -> str:
    try:
        short = ssl._ssl.txt2obj(attr.oid)[1]  # OpenSSL's own object table
    except ValueError:
        return f"{attr.oid}=#{attr.der.hex().upper()}"
    unit = _UNIT.get(attr.tag)
    if unit is None:  # a type OpenSSL does not print as text: its DER in hex
        return f"{short}=#{attr.der.hex().upper()}"
    return f"{short}={_escape_value(_characters(attr.content, unit))}"


def _characters(content: bytes, unit: int) -> str:
    """The string's characters as do_buf() reads them: bytes (T61, IA5...), UCS-2, UCS-4 or
    UTF-8; what OpenSSL cannot read makes the whole name unprintable."""
    if unit == 0:
        try:
            return content.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise UnprintableName() from None
    if unit == 1:
        return content.decode("latin-1")
    if len(content) % unit:
        raise UnprintableName()
    codes = [int.from_bytes(content[i:i + unit], "big") for i in range(0, len(content), unit)]
    if any(c > 0x10FFFF for c in codes):
        raise UnprintableName()
    return "".join(map(chr, codes))


def _escape_value(value: str) -> str:
    out = []
    last = len(value) - 1
    for i, ch in enumerate(value):
        code = ord(ch)
        if code > 0x7F:
            out.extend(f"\\{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        elif ch in _ESCAPED or (i == 0 and ch in " #") or (i == last and ch == " "):
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\{code:02X}")
        else:
            out.append(ch)
    return "".join(out)
