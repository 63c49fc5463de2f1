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


# -- OAuth 2.0 bearer tokens: XOAUTH2 (Google's) and OAUTHBEARER (RFC 7628) ------------------

OAUTH_METHODS = ("xoauth2", "oauthbearer")

# RFC 7628 §3.2.2: a failure is a JSON error challenge the client must answer with a dummy
# response before the server's failure reply. One text serves both mechanisms.
OAUTH_ERROR = base64.b64encode(b'{"status":"invalid_token","schemes":"bearer"}')

# RFC 6750 §2.1 b64token: what a bearer token may be made of
_B64TOKEN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/")


def _bearer(value: bytes | None, mechanism: str) -> bytes:
    """`Bearer <token>` (the scheme in any case, RFC 7235) -> the token."""
    if value is None or value[:7].lower() != b"bearer ":
        raise SaslError(f"client sent invalid auth value in AUTH {mechanism} command")
    token = value[7:]
    body = token.rstrip(b"=")
    if not body or not _B64TOKEN.issuperset(body):
        raise SaslError(f"client sent invalid token in AUTH {mechanism} command")
    return token


def _kvpairs(data: bytes, mechanism: str) -> dict[bytes, bytes]:
    """`key=value` ^A ... ^A ^A (the part after the leading ^A for OAUTHBEARER)."""
    if not data.endswith(b"\x01\x01"):
        raise SaslError(f"client sent invalid message in AUTH {mechanism} command")
    pairs = {}
    for item in data[:-2].split(b"\x01"):
        key, eq, value = item.partition(b"=")
        if not eq or not key:
            raise SaslError(f"client sent invalid message in AUTH {mechanism} command")
        pairs[key] = value
    return pairs


def xoauth2(data: bytes) -> tuple[bytes, bytes]:
    """XOAUTH2 response `user=U ^A auth=Bearer T ^A ^A` -> (user, token)."""
    pairs = _kvpairs(_decode(data, "XOAUTH2"), "XOAUTH2")
    user = pairs.get(b"user")
    if not user:
        raise SaslError("client sent invalid login in AUTH XOAUTH2 command")
    return user, _bearer(pairs.get(b"auth"), "XOAUTH2")


def _saslname(value: bytes) -> bytes:
    """RFC 5801 saslname: `=2C` is ',', `=3D` is '=', any other '=' is an error."""
    out = value.replace(b"=2C", b",").replace(b"=3D", b"\0")
    if b"=" in out or b"\0" in value:
        raise SaslError("client sent invalid login in AUTH OAUTHBEARER command")
    return out.replace(b"\0", b"=")


def oauthbearer(data: bytes) -> tuple[bytes, bytes]:
    """RFC 7628 client response `gs2-header ^A kvpairs ^A ^A` -> (authzid user, token).

    Channel binding is not offered, so a client that requires it (`p=`) is refused; `y`
    (the client could bind but thinks the server cannot) and `n` are accepted."""
    blob = _decode(data, "OAUTHBEARER")
    flag, _, rest = blob.partition(b",")
    authzid, comma, rest = rest.partition(b",")
    if flag not in (b"n", b"y") or not comma or not rest.startswith(b"\x01"):
        raise SaslError("client sent invalid message in AUTH OAUTHBEARER command")
    if authzid and not authzid.startswith(b"a="):
        raise SaslError("client sent invalid login in AUTH OAUTHBEARER command")
    user = _saslname(authzid[2:])
    pairs = _kvpairs(rest[1:], "OAUTHBEARER")
    return user, _bearer(pairs.get(b"auth"), "OAUTHBEARER")


def xoauth2_response(user: bytes, token: bytes) -> bytes:
    """The base64 XOAUTH2 response a client (here: Postern towards a backend) sends."""
    return base64.b64encode(b"user=%s\x01auth=Bearer %s\x01\x01" % (user, token))


def oauthbearer_response(user: bytes, token: bytes) -> bytes:
    """The base64 RFC 7628 response; the user goes into the gs2 header's authzid."""
    name = user.replace(b"=", b"=3D").replace(b",", b"=2C")
    authzid = b"a=" + name if user else b""
    return base64.b64encode(b"n,%s,\x01auth=Bearer %s\x01\x01" % (authzid, token))


OAUTH_RESPONSES = {"xoauth2": xoauth2_response, "oauthbearer": oauthbearer_response}
# what a client answers an error challenge with: RFC 7628 §3.2.3's %x01 for OAUTHBEARER,
# the empty response Google documents for XOAUTH2
OAUTH_DUMMY = {"xoauth2": b"", "oauthbearer": base64.b64encode(b"\x01")}
