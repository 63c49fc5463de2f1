"""Passwords never reach the error log, whatever the shape of the line: the "too long
command" and "client was rejected" lines show only what cannot be a credential."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
from postern.proxy import sasl
from postern.proxy.dialogue import Log
from postern.proxy.imap.dialogue import ImapDialogue
from postern.proxy.smtp.dialogue import loggable

from tests.dialogue_support import IMAP_CONF as CONF

SECRET = b"Sekr1tPassw0rd"


def _imap_log(data: bytes) -> str:
    return _imap_log_of(ImapDialogue(CONF), data)


@pytest.mark.parametrize("line", [
    b"a1 LOGIN user " + SECRET * 400,                 # the well-formed case
    b"a1\tLOGIN\tuser\t" + SECRET * 400,              # tabs: no space to stop at
    b"LOGIN user " + SECRET * 400,                    # no tag: the password was the third word
    b"user " + SECRET * 400,                          # no command at all
    b"a1  LOGIN " + SECRET * 400,                     # two spaces
    b"a1 XLOGIN " + SECRET + b" " + SECRET * 400,     # an unknown command's arguments
])
def test_imap_too_long_command_shows_no_credential(line):
    text = _imap_log(line + b"\r\n")
    assert "too long command" in text
    assert SECRET.decode() not in text and "Sekr1t" not in text


def test_imap_too_long_command_keeps_tag_and_command():
    text = _imap_log(b"a1 LOGIN user " + SECRET * 400 + b"\r\n")
    assert 'client sent too long command "a1 LOGIN ..."' in text


def test_imap_too_long_sasl_blob_is_not_shown():
    m = ImapDialogue(CONF)
    m.receive_data(b"a1 AUTHENTICATE PLAIN\r\n")
    while m.next_action() is not None:
        pass
    text = _imap_log_of(m, b"AHVzZXIA" + SECRET * 400 + b"\r\n")
    assert "Sekr1t" not in text and "AHVz" not in text


def _imap_log_of(m, data: bytes) -> str:
    m.receive_data(data)
    lines = []
    while (a := m.next_action()) is not None:
        if isinstance(a, Log):
            lines.append(a.message)
    return "\n".join(lines)


@pytest.mark.parametrize("data", [
    b"AUTH PLAIN " + SECRET + b"\r\n",
    b"AUTH\tPLAIN\t" + SECRET + b"\r\n",
    b"AUTHPLAIN " + SECRET + b"\r\n",
    b"AUTH " + SECRET + b"\r\n",                    # no mechanism: the blob in its place
    b"EHLO x\r\n" + SECRET + b"\r\n",               # a bare SASL line after AUTH LOGIN
    b"EHLO x\r\nAUTH LOGIN\r\n" + SECRET + b"\r\n",
    b"XAUTH PLAIN " + SECRET + b"\r\n",
    SECRET + b"\r\nAUTH PLAIN\r\n",
])
def test_smtp_rejection_shows_no_credential(data):
    assert "Sekr1t" not in loggable(data)


def test_smtp_rejection_keeps_what_is_safe():
    assert loggable(b"EHLO x\r\nMAIL FROM:<a@b>\r\nAUTH PLAIN " + SECRET) == \
        "EHLO x__MAIL FROM:<a@b>__AUTH PLAIN ..."


TOKEN = b"ya29.Sekr1tT0ken"
OAUTH_CONF = replace(CONF, imap_auth=frozenset({"xoauth2", "oauthbearer"}))


@pytest.mark.parametrize("data", [
    b"a1 AUTHENTICATE XOAUTH2 " + sasl.xoauth2_response(b"u", TOKEN * 300) + b"\r\n",
    b"a1 AUTHENTICATE OAUTHBEARER\r\n" + sasl.oauthbearer_response(b"u", TOKEN * 300) + b"\r\n",
    # malformed: the decoding error names what is wrong, never the token
    b"a1 AUTHENTICATE XOAUTH2 " + base64.b64encode(b"user=u\x01auth=Bearer " + TOKEN) + b"\r\n",
    b"a1 AUTHENTICATE OAUTHBEARER "
    + base64.b64encode(b"n,a=u,\x01auth=Bearer " + TOKEN + b" x\x01\x01") + b"\r\n",
])
def test_imap_oauth_token_never_logged(data):
    text = _imap_log_of(ImapDialogue(OAUTH_CONF), data)
    assert text and "Sekr1t" not in text and "ya29" not in text


def test_smtp_oauth_rejection_shows_the_mechanism_only():
    line = b"AUTH XOAUTH2 " + sasl.xoauth2_response(b"u", TOKEN) + b"\r\n"
    assert loggable(line) == "AUTH XOAUTH2 ..."
