"""SASL decoding shared by IMAP, POP3 and SMTP, with nginx's exact leniency and strictness.

Every decoder returns a value or raises SaslError carrying the info-level log line nginx
writes. Decoders never touch session state: a failed decode must not clobber credentials
stored earlier (the CVE-2025-53859 lesson), so the caller assigns only on success.
"""

from __future__ import annotations

import base64
import binascii
import random
import time

# Server challenges, identical for the three protocols apart from the prefix.
USERNAME_CHALLENGE = b"VXNlcm5hbWU6"  # base64("Username:")
PASSWORD_CHALLENGE = b"UGFzc3dvcmQ6"  # base64("Password:")

_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


class SaslError(ValueError):
    """A client's SASL data was malformed; .log is what nginx logs at info level."""

    def __init__(self, log: str) -> None:
        super().__init__(log)
        self.log = log


def decode_base64(data: bytes) -> bytes | None:
    """nginx's ngx_decode_base64: stop at the first '=', padding optional, else strict."""
    end = data.find(b"=")
    if end >= 0:
        data = data[:end]
    if not _B64_ALPHABET.issuperset(data) or len(data) % 4 == 1:
        return None
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4))
    except binascii.Error:  # pragma: no cover - excluded by the checks above
        return None


def _decode(data: bytes, mechanism: str) -> bytes:
    decoded = decode_base64(data)
    if decoded is None:
        raise SaslError(f"client sent invalid base64 encoding in AUTH {mechanism} command")
    return decoded


def plain(data: bytes) -> tuple[bytes, bytes]:
    """AUTH PLAIN blob -> (login, password); authzid is ignored as nginx does."""
    blob = _decode(data, "PLAIN")
    first = blob.find(b"\0")
    if first < 0 or first == len(blob) - 1:
        raise SaslError("client sent invalid login in AUTH PLAIN command")
    rest = blob[first + 1 :]
    second = rest.find(b"\0")
    if second < 0:
        raise SaslError("client sent invalid password in AUTH PLAIN command")
    return rest[:second], rest[second + 1 :]


def login_username(data: bytes) -> bytes:
    return _decode(data, "LOGIN")


def login_password(data: bytes) -> bytes:
    return _decode(data, "LOGIN")


def cram_md5(data: bytes) -> tuple[bytes, bytes]:
    """CRAM-MD5 response -> (login, 32-byte digest); hex-ness is not checked, as in nginx."""
    blob = _decode(data, "CRAM-MD5")
    space = blob.find(b" ")
    if space < 0 or space == len(blob) - 1 or len(blob) - space - 1 != 32:
        raise SaslError("client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command")
    return blob[:space], blob[space + 1 :]


def external(data: bytes) -> bytes:
    return _decode(data, "EXTERNAL")


def make_salt(server_name: str) -> bytes:
    """`<R.T@server_name>` CRLF as nginx builds it for APOP and CRAM-MD5."""
    r = random.getrandbits(31)
    return b"<%d.%d@%s>\r\n" % (r, int(time.time()), server_name.encode())


def cram_md5_challenge(prefix: bytes, salt: bytes) -> bytes:
    return prefix + base64.b64encode(salt.rstrip(b"\r\n")) + b"\r\n"
