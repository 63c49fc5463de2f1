"""The SASL responses the fakes decode (PLAIN, XOAUTH2, OAUTHBEARER), with the proxy's own
decoders where it has them."""

from __future__ import annotations

import base64

from postern.proxy import sasl

OAUTH_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")


def decode_oauth(mechanism: str, response: bytes) -> tuple[str, str]:
    """An XOAUTH2 / OAUTHBEARER response: (user, bearer token); the fakes take a user's
    password as its token. ValueError when it is not one."""
    decode = sasl.xoauth2 if mechanism.upper() == "XOAUTH2" else sasl.oauthbearer
    try:
        user, token = decode(response)
    except sasl.SaslError as err:
        raise ValueError(err.log) from None
    return (user.decode("utf-8", "surrogateescape"), token.decode("ascii"))


def decode_plain(response: bytes) -> tuple[bytes, bytes, bytes]:
    """A SASL PLAIN response (RFC 4616, base64; "=" is empty): (authzid, user, password).
    ValueError when it is not one."""
    decoded = b"" if response == b"=" else base64.b64decode(response, validate=True)
    authz, user, password = decoded.split(b"\0")
    return authz, user, password
