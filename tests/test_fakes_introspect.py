"""The fake RFC 7662 token introspection endpoint, in each way a client may send the token."""

from __future__ import annotations

import json
import urllib.request

import pytest
from postern.fakes.introspect import Introspection


def _ask(url: str, data: bytes | None = None, headers: dict | None = None) -> dict:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        return json.loads(resp.read())


@pytest.fixture
def idp():
    with Introspection({"tok-carol": "carol", "tok-dave": "dave@example.org"}) as endpoint:
        yield endpoint


def test_post_form_rfc7662(idp):
    assert _ask(idp.url, b"token=tok-carol&token_type_hint=access_token") == {
        "active": True, "username": "carol", "sub": "carol", "email": "carol@example.com",
        "token_type": "Bearer", "scope": "mail"}
    assert _ask(idp.url, b"token=nope") == {"active": False}
    assert idp.requests == [("post", True), ("post", False)]


def test_get_and_bearer_modes(idp):
    assert _ask(idp.url + "?token=tok-dave")["email"] == "dave@example.org"
    assert _ask(idp.url + "/tok-carol")["username"] == "carol"
    assert _ask(idp.url, headers={"Authorization": "Bearer tok-carol"})["active"] is True
    assert _ask(idp.url, headers={"Authorization": "Bearer other"}) == {"active": False}
    assert _ask(idp.url) == {"active": False}
    assert [mode for mode, _ in idp.requests] == ["get", "get", "auth", "auth", "get"]
