"""Logging into the backend with the client's OAuth mechanism and token: IMAP AUTHENTICATE,
POP3 AUTH, SMTP AUTH (with proxy_smtp_auth), and an error challenge from the backend."""

from __future__ import annotations

import pytest
from postern.proxy import sasl
from postern.proxy.backend_login import LoggedIn, LoginFailed, SendToBackend
from postern.proxy.imap.backend_login import ImapBackendLogin
from postern.proxy.pop3.backend_login import Pop3BackendLogin
from postern.proxy.smtp.backend_login import AUTH_OK, SmtpBackendLogin

MECHS = [("xoauth2", b"XOAUTH2"), ("oauthbearer", b"OAUTHBEARER")]


def imap(mech, pass_error_message=False):
    return ImapBackendLogin(b"a1 ", b"u@example.com", b"tok", 4096, pass_error_message,
                            mechanism=mech)


@pytest.mark.parametrize("mech,name", MECHS)
def test_imap_authenticate_with_the_token(mech, name):
    m = imap(mech)
    assert m.receive_data(b"* OK hi\r\n") == SendToBackend(b"a1 AUTHENTICATE %s\r\n" % name)
    response = sasl.OAUTH_RESPONSES[mech](b"u@example.com", b"tok")
    assert m.receive_data(b"+ \r\n") == SendToBackend(response + b"\r\n")
    assert m.receive_data(b"a1 OK Logged in\r\n") == LoggedIn(b"a1 OK Logged in\r\n")


def test_imap_error_challenge_gets_the_dummy_then_the_no_is_judged():
    m = imap("oauthbearer", pass_error_message=True)
    m.receive_data(b"* OK hi\r\n")
    m.receive_data(b"+ \r\n")
    assert m.receive_data(b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n") == SendToBackend(b"AQ==\r\n")
    out = m.receive_data(b"a1 NO [AUTHENTICATIONFAILED] bad\r\n")
    assert out == LoginFailed(b"a1 NO [AUTHENTICATIONFAILED] bad\r\n", "info",
                              'upstream sent invalid response: "NO [AUTHENTICATIONFAILED] bad"')


def test_imap_refused_mechanism():
    m = imap("xoauth2")
    m.receive_data(b"* OK hi\r\n")
    assert isinstance(m.receive_data(b"a1 NO unsupported\r\n"), LoginFailed)


@pytest.mark.parametrize("mech,name", MECHS)
def test_pop3_auth_with_the_token(mech, name):
    m = Pop3BackendLogin(b"u", b"tok", 4096, False, mechanism=mech)
    assert m.receive_data(b"+OK hi\r\n") == SendToBackend(b"AUTH %s\r\n" % name)
    response = sasl.OAUTH_RESPONSES[mech](b"u", b"tok")
    assert m.receive_data(b"+ \r\n") == SendToBackend(response + b"\r\n")
    assert m.receive_data(b"+OK Logged in.\r\n") == LoggedIn(b"+OK Logged in.\r\n")


def test_pop3_error_challenge_and_refusals():
    m = Pop3BackendLogin(b"u", b"tok", 4096, False, mechanism="xoauth2")
    m.receive_data(b"+OK hi\r\n")
    assert isinstance(m.receive_data(b"+OK no continuation\r\n"), LoginFailed)
    m = Pop3BackendLogin(b"u", b"tok", 4096, False, mechanism="xoauth2")
    m.receive_data(b"+OK hi\r\n")
    m.receive_data(b"+ \r\n")
    assert m.receive_data(b"+ eyJ9\r\n") == SendToBackend(b"\r\n")
    assert isinstance(m.receive_data(b"-ERR [AUTH] failed\r\n"), LoginFailed)


def smtp(mech, **kw):
    return SmtpBackendLogin(server_name="mx.test", client_ip="127.0.0.1",
                            client_host="[UNAVAILABLE]", login=b"u", password=b"tok",
                            helo=b"c", esmtp=True, method_none=False, xclient=False,
                            proxy_smtp_auth=True, mechanism=mech, **kw)


@pytest.mark.parametrize("mech,name", MECHS)
def test_smtp_auth_with_the_token(mech, name):
    m = smtp(mech)
    assert m.receive_data(b"220 b ESMTP\r\n") == SendToBackend(b"EHLO mx.test\r\n")
    response = sasl.OAUTH_RESPONSES[mech](b"u", b"tok")
    assert m.receive_data(b"250 b\r\n") == SendToBackend(b"AUTH %s %s\r\n" % (name, response))
    assert m.receive_data(b"235 2.7.0 ok\r\n") == LoggedIn(AUTH_OK)


def test_smtp_error_challenge():
    m = smtp("oauthbearer")
    m.receive_data(b"220 b ESMTP\r\n")
    m.receive_data(b"250 b\r\n")
    assert m.receive_data(b"334 eyJ9\r\n") == SendToBackend(b"AQ==\r\n")
    out = m.receive_data(b"535 5.7.8 Authentication failed\r\n")
    assert isinstance(out, LoginFailed) and "535 5.7.8" in out.log


def test_smtp_without_proxy_smtp_auth_uses_xclient_as_ever():
    m = smtp("xoauth2")
    m.proxy_smtp_auth = False
    m.receive_data(b"220 b ESMTP\r\n")
    assert m.receive_data(b"250 b\r\n") == LoggedIn(AUTH_OK)
