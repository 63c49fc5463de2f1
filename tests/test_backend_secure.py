"""The backend login with TLS below it (proxy_ssl on|starttls), bytes in and outcomes out:
the handshake, the certificate checks with nginx stream's error lines, the login over TLS."""

from __future__ import annotations

import dataclasses

import pytest
import trustme
from OpenSSL import SSL
from postern.proxy.auth_http import AuthResponse
from postern.proxy.backend_login import LoggedIn, LoginFailed, SendToBackend
from postern.proxy.backend_secure import SecureBackendLogin
from postern.proxy.backend_tls import BackendTlsContext, backend_tls_mode
from postern.proxy.conf.settings import BackendTlsSettings
from postern.proxy.imap.backend_login import ImapBackendLogin
from postern.proxy.pop3.backend_login import Pop3BackendLogin
from postern.proxy.pop3.backend_starttls import Pop3BackendStartTls
from postern.proxy.smtp.backend_login import SmtpBackendLogin
from postern.proxy.smtp.backend_starttls import SmtpBackendStartTls

from tests.backend_tls_support import MemoryTlsServer


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def context(**kw) -> BackendTlsContext:
    return BackendTlsContext(BackendTlsSettings(mode="on", **kw))


def imap_login():
    return ImapBackendLogin(b"a1 ", b"alice", b"secret", 4096, False)


def handshake(machine, server, outcome):
    """Drive the handshake; returns the first outcome after it (the backend's turn)."""
    while isinstance(outcome, SendToBackend) and machine.stage == "handshake":
        server.feed(outcome.data)
        outcome = machine.receive_data(server.out())
    return outcome


def test_implicit_tls_then_imap_login_over_it(ca, ca_file):
    server = MemoryTlsServer(ca, "imap.test")
    tls = context(verify=True, trusted_certificate=ca_file).connection(
        "127.0.0.1", 993, "imap.test")
    m = SecureBackendLogin(imap_login(), tls)
    first = m.start()
    assert isinstance(first, SendToBackend) and first.data[:1] == b"\x16"  # a ClientHello
    assert m.action == m.reading_action == "SSL handshaking to upstream"
    outcome = handshake(m, server, first)
    assert m.stage == "login" and m.reading_action == "reading response from upstream"
    if outcome is not None:  # the client's Finished
        server.feed(outcome.data)
    out = m.receive_data(server.send(b"* OK IMAP ready\r\n"))
    server.feed(out.data)
    assert server.take() == b"a1 LOGIN {5}\r\n"
    assert m.action == "sending LOGIN command to upstream"
    server.feed(m.receive_data(server.send(b"+ go\r\n")).data)
    assert server.take() == b"alice {6}\r\n"
    server.feed(m.receive_data(server.send(b"+ go\r\n")).data)
    assert server.take() == b"secret\r\n"
    assert m.receive_data(server.send(b"a1 OK in\r\n")) == LoggedIn(b"a1 OK in\r\n")
    # the relay goes on through the same TLS object
    server.feed(tls.encrypt(b"a2 NOOP\r\n"))
    assert server.take() == b"a2 NOOP\r\n"
    assert tls.receive(server.send(b"a2 OK\r\n")) == b"a2 OK\r\n"


def test_starttls_then_pop3_login_without_a_second_greeting(ca, ca_file):
    server = MemoryTlsServer(ca, "pop3.test")
    tls = context(verify=True, trusted_certificate=ca_file).connection(
        "127.0.0.1", 110, "pop3.test")
    m = SecureBackendLogin(Pop3BackendLogin(b"alice", b"secret", 4096, False), tls,
                           Pop3BackendStartTls(4096))
    assert m.start() is None
    assert m.receive_data(b"+OK ready\r\n") == SendToBackend(b"STLS\r\n")
    assert m.action == "sending STARTTLS to upstream"
    hello = m.receive_data(b"+OK Begin TLS\r\n")
    assert hello.data[:1] == b"\x16" and m.action == "SSL handshaking to upstream"
    out = handshake(m, server, hello)
    server.feed(out.data)  # Finished and USER together
    assert server.take() == b"USER alice\r\n"
    server.feed(m.receive_data(server.send(b"+OK\r\n")).data)
    assert server.take() == b"PASS secret\r\n"
    assert m.receive_data(server.send(b"+OK Logged in.\r\n")) == LoggedIn(b"+OK Logged in.\r\n")


def test_starttls_then_smtp_ehlo_again(ca):
    server = MemoryTlsServer(ca, "mx.test")
    login = SmtpBackendLogin(server_name="proxy.test", client_ip="192.0.2.1",
                             client_host="[UNAVAILABLE]", login=b"alice", password=b"secret",
                             helo=b"client.test", esmtp=True, method_none=False)
    m = SecureBackendLogin(login, context().connection("127.0.0.1", 25),
                           SmtpBackendStartTls(4096, "proxy.test"))
    assert m.receive_data(b"220 mx ESMTP\r\n") == SendToBackend(b"EHLO proxy.test\r\n")
    assert m.receive_data(b"250-mx\r\n250 STARTTLS\r\n") == SendToBackend(b"STARTTLS\r\n")
    out = handshake(m, server, m.receive_data(b"220 go\r\n"))
    server.feed(out.data)
    assert server.take() == b"EHLO proxy.test\r\n"
    assert m.action == "sending HELO/EHLO to upstream"


@pytest.mark.parametrize("name,log", [
    ("other.test", "upstream SSL certificate verify error: (62:hostname mismatch)"),
    ("127.0.0.2", "upstream SSL certificate verify error: (64:IP address mismatch)"),
])
def test_name_mismatch(ca, ca_file, name, log):
    server = MemoryTlsServer(ca, "imap.test", "127.0.0.1")
    m = SecureBackendLogin(imap_login(), context(verify=True, trusted_certificate=ca_file)
                           .connection("127.0.0.1", 993, name))
    assert handshake(m, server, m.start()) == LoginFailed(None, "error", log)


def test_the_backend_address_is_the_default_name(ca, ca_file):
    server = MemoryTlsServer(ca, "127.0.0.1")
    m = SecureBackendLogin(imap_login(), context(verify=True, trusted_certificate=ca_file)
                           .connection("127.0.0.1", 993))
    outcome = handshake(m, server, m.start())
    assert m.stage == "login" and not isinstance(outcome, LoginFailed)


def test_unknown_ca(ca_file):
    server = MemoryTlsServer(trustme.CA(), "imap.test")
    m = SecureBackendLogin(imap_login(), context(verify=True, trusted_certificate=ca_file)
                           .connection("127.0.0.1", 993, "imap.test"))
    assert handshake(m, server, m.start()) == LoginFailed(
        None, "error",
        "upstream SSL certificate verify error: (21:unable to verify the first certificate)")


def test_without_verification_any_certificate_is_taken(ca):
    server = MemoryTlsServer(trustme.CA(), "elsewhere.test")
    m = SecureBackendLogin(imap_login(), context().connection("127.0.0.1", 993))
    handshake(m, server, m.start())
    assert m.stage == "login"


def test_handshake_failure_is_logged_with_openssl_reason(ca):
    server = MemoryTlsServer(ca, "imap.test", max_version=SSL.TLS1_3_VERSION)
    m = SecureBackendLogin(imap_login(), context(protocols=("TLSv1.2",))
                           .connection("127.0.0.1", 993))
    failure = handshake(m, server, m.start())
    assert isinstance(failure, LoginFailed) and failure.to_client is None
    assert failure.log.startswith("SSL_do_handshake() failed (SSL: ")
    assert "alert" in failure.log or "version" in failure.log


def test_sni_only_with_proxy_ssl_server_name_and_never_an_ip(ca):
    for conf, name, sent in [({}, "imap.test", None),
                             ({"server_name": True}, "imap.test:993", b"imap.test"),
                             ({"server_name": True}, "127.0.0.1", None)]:
        server = MemoryTlsServer(ca, "imap.test")
        m = SecureBackendLogin(imap_login(), context(**conf).connection("127.0.0.1", 993, name))
        handshake(m, server, m.start())
        assert server.sni == sent, conf


@pytest.mark.parametrize("reuse", [True, False])
def test_session_reuse(ca, reuse):
    server = MemoryTlsServer(ca, "imap.test", max_version=SSL.TLS1_2_VERSION)
    ctx = context(session_reuse=reuse)
    for attempt in range(2):
        server.new()
        tls = ctx.connection("127.0.0.1", 993)
        m = SecureBackendLogin(imap_login(), tls)
        handshake(m, server, m.start())
        assert tls.resumed == (reuse and attempt == 1)
        tls.save_session()
        tls.shut_quietly()  # as the relay's close leaves it


def test_auth_reply_chooses_only_when_allowed():
    reply = AuthResponse(backend_tls=b"STARTTLS", backend_tls_name=b"imap.test")
    conf = BackendTlsSettings()
    assert backend_tls_mode(conf, reply) == ("off", None)
    allowed = dataclasses.replace(conf, auth_header=True, name="default.test")
    assert backend_tls_mode(allowed, reply) == ("starttls", "imap.test")
    assert backend_tls_mode(allowed, AuthResponse(backend_tls=b"bogus")) == ("off",
                                                                             "default.test")
    assert backend_tls_mode(dataclasses.replace(allowed, mode="on"),
                            AuthResponse(backend_tls=b"off")) == ("off", "default.test")
