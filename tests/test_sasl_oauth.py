"""XOAUTH2 and OAUTHBEARER (RFC 7628) decoding, and the responses Postern sends a backend."""

from __future__ import annotations

import base64

import pytest
from postern.proxy import sasl


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_xoauth2_gives_user_and_token():
    data = b64(b"user=someuser@example.com\x01"
               b"auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01")
    assert sasl.xoauth2(data) == (b"someuser@example.com",
                                  b"ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")


def test_oauthbearer_rfc7628_example():
    # RFC 7628 §4.1, with the authzid
    blob = (b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
            b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01")
    assert sasl.oauthbearer(b64(blob)) == (b"user@example.com",
                                           b"vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==")


def test_oauthbearer_without_authzid_and_escaped_saslname():
    assert sasl.oauthbearer(b64(b"n,,\x01auth=bearer t0k\x01\x01")) == (b"", b"t0k")
    assert sasl.oauthbearer(b64(b"y,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01")) == (b"a,b=c", b"t")


XOAUTH2_MALFORMED = [
    (b"user=u\x01auth=Bearer t\x01", "invalid message"),            # one ^A at the end
    (b"auth=Bearer t\x01\x01", "invalid login"),                   # no user
    (b"user=\x01auth=Bearer t\x01\x01", "invalid login"),          # empty user
    (b"user=u\x01auth=Basic dTpw\x01\x01", "invalid auth value"),  # not a bearer token
    (b"user=u\x01\x01", "invalid auth value"),                     # no auth
    (b"user=u\x01auth=Bearer \x01\x01", "invalid token"),          # empty token
    (b"user=u\x01auth=Bearer a b\x01\x01", "invalid token"),       # space in the token
    (b"user=u\x01junk\x01auth=Bearer t\x01\x01", "invalid message"),
    (b"", "invalid message"),
]
OAUTHBEARER_MALFORMED = [
    (b"p=tls-unique,a=u,\x01auth=Bearer t\x01\x01", "invalid message"),  # channel binding
    (b"n,a=u\x01auth=Bearer t\x01\x01", "invalid message"),              # no second comma
    (b"n,a=u,auth=Bearer t\x01\x01", "invalid message"),                 # no ^A after gs2
    (b"n,u,\x01auth=Bearer t\x01\x01", "invalid login"),                 # authzid without a=
    (b"n,a=u=2,\x01auth=Bearer t\x01\x01", "invalid login"),             # a bad = escape
    (b"n,a=u,\x01auth=Bearer t\x01", "invalid message"),
    (b"n,a=u,\x01host=h\x01\x01", "invalid auth value"),
    (b"", "invalid message"),
]


@pytest.mark.parametrize("mechanism,blob,log",
                         [("XOAUTH2", *case) for case in XOAUTH2_MALFORMED]
                         + [("OAUTHBEARER", *case) for case in OAUTHBEARER_MALFORMED])
def test_malformed(mechanism, blob, log):
    """The log line names the mechanism and what is wrong, never the token."""
    with pytest.raises(sasl.SaslError) as err:
        getattr(sasl, mechanism.lower())(b64(blob))
    assert err.value.log == f"client sent {log} in AUTH {mechanism} command"
    assert "Bearer" not in err.value.log


def test_bad_base64_is_the_usual_error():
    with pytest.raises(sasl.SaslError) as err:
        sasl.oauthbearer(b"!!!")
    assert err.value.log == "client sent invalid base64 encoding in AUTH OAUTHBEARER command"


@pytest.mark.parametrize("user", [b"u@example.com", b"a,b=c", b""])
def test_responses_decode_back(user):
    assert sasl.oauthbearer(sasl.oauthbearer_response(user, b"tok.en")) == (user, b"tok.en")
    if user:
        assert sasl.xoauth2(sasl.xoauth2_response(user, b"tok.en")) == (user, b"tok.en")


def test_error_challenge_and_dummy_responses():
    assert base64.b64decode(sasl.OAUTH_ERROR) == b'{"status":"invalid_token","schemes":"bearer"}'
    assert sasl.OAUTH_DUMMY == {"xoauth2": b"", "oauthbearer": b"AQ=="}
