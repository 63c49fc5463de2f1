"""The fakes with TLS: `tls=` offers STARTTLS (IMAP STARTTLS, POP3 STLS, SMTP STARTTLS) and
then refuses a plaintext login; `implicit_tls=True` speaks TLS from the first byte. Checked
with the standard library's clients on both event loops."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import ssl

import pytest
import trustme
from postern.fakes.imap import FakeImapServer
from postern.fakes.pop3 import FakePop3Server
from postern.fakes.smtp import FakeSmtpServer

from tests.fake_support import LOOPS, cli_fake

USERS = {"alice": "secret"}


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def contexts(ca):
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.fixture(**LOOPS)
def loop_choice(request):
    return request.param


@pytest.fixture
def client_ctx(contexts):
    return contexts[1]


@pytest.fixture
def tls_fake(contexts, loop_choice):
    """Starts a fake with the test CA's server certificate, on each event loop:
    ``with tls_fake(FakeImapServer, implicit_tls=True) as srv``."""
    return lambda fake_class, **kw: fake_class(USERS, tls=contexts[0], use_uvloop=loop_choice,
                                               **kw)


def test_imap_starttls_then_login(tls_fake, client_ctx):
    with tls_fake(FakeImapServer) as srv:
        client = imaplib.IMAP4(srv.host, srv.port)
        assert "STARTTLS" in client.capabilities and "LOGINDISABLED" in client.capabilities
        typ, data = client._simple_command("LOGIN", "alice", "secret")
        assert (typ, data[0][:17]) == ("NO", b"[PRIVACYREQUIRED]")
        client.starttls(client_ctx)
        assert client.capability()[1][0].split().count(b"STARTTLS") == 0
        assert client.login("alice", "secret")[0] == "OK"
        client.logout()


def test_imap_without_tls_refuses_starttls(loop_choice):
    with FakeImapServer(USERS, use_uvloop=loop_choice) as srv:
        client = imaplib.IMAP4(srv.host, srv.port)
        with pytest.raises(imaplib.IMAP4.error, match="BAD.*STARTTLS not available"):
            client._simple_command("STARTTLS")
        assert client.login("alice", "secret")[0] == "OK"


def test_imap_implicit_tls(tls_fake, client_ctx):
    with tls_fake(FakeImapServer, implicit_tls=True) as srv:
        client = imaplib.IMAP4_SSL(srv.host, srv.port, ssl_context=client_ctx)
        assert "STARTTLS" not in client.capabilities
        assert client.login("alice", "secret")[0] == "OK"


def test_pop3_stls_then_login(tls_fake, client_ctx):
    with tls_fake(FakePop3Server) as srv:
        client = poplib.POP3(srv.host, srv.port)
        assert "STLS" in client.capa()
        with pytest.raises(poplib.error_proto, match="Plaintext"):
            client.user("alice")
        client.stls(client_ctx)
        assert "STLS" not in client.capa()
        client.user("alice")
        assert client.pass_("secret").startswith(b"+OK")
        client.quit()


def test_pop3_implicit_tls(tls_fake, client_ctx):
    with tls_fake(FakePop3Server, implicit_tls=True) as srv:
        client = poplib.POP3_SSL(srv.host, srv.port, context=client_ctx)
        client.user("alice")
        assert client.pass_("secret").startswith(b"+OK")


def test_smtp_starttls_required(tls_fake, client_ctx):
    with tls_fake(FakeSmtpServer) as srv:
        client = smtplib.SMTP(srv.host, srv.port)
        client.ehlo("me")
        assert client.has_extn("starttls")
        assert client.mail("a@x.test")[0] == 530  # "Must issue a STARTTLS command first"
        client.starttls(context=client_ctx)
        client.ehlo("me")
        assert not client.has_extn("starttls")
        assert client.mail("a@x.test")[0] == 250
        client.quit()


def test_smtp_implicit_tls(tls_fake, client_ctx):
    with tls_fake(FakeSmtpServer, implicit_tls=True) as srv:
        client = smtplib.SMTP_SSL(srv.host, srv.port, context=client_ctx)
        client.ehlo("me")
        assert not client.has_extn("starttls")
        assert client.mail("a@x.test")[0] == 250
        client.quit()


def test_implicit_tls_needs_a_context():
    with pytest.raises(ValueError, match="implicit_tls needs a tls context"):
        FakeImapServer(USERS, implicit_tls=True)


@pytest.fixture(scope="module")
def cert_files(ca, tmp_path_factory):
    d = tmp_path_factory.mktemp("fake-tls")
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(d / "key.pem"))
    return str(d / "cert.pem"), str(d / "key.pem")


@pytest.mark.parametrize("implicit", [False, True])
def test_command_line_tls(cert_files, contexts, implicit):
    """postern fake-pop3 / fake-smtp --tls-cert C --tls-key K [--implicit-tls]."""
    cert, key = cert_files
    flags = ["--user", "alice:secret", "--tls-cert", cert, "--tls-key", key]
    flags += ["--implicit-tls"] if implicit else []
    with cli_fake("pop3", *flags) as run:
        if implicit:
            client = poplib.POP3_SSL("127.0.0.1", run.port, context=contexts[1])
        else:
            client = poplib.POP3("127.0.0.1", run.port)
            client.stls(contexts[1])
        client.user("alice")
        assert client.pass_("secret").startswith(b"+OK")
        client.quit()
    with cli_fake("smtp", *flags) as run:
        client = (smtplib.SMTP_SSL("127.0.0.1", run.port, context=contexts[1]) if implicit
                  else smtplib.SMTP("127.0.0.1", run.port))
        client.ehlo("me")
        assert client.has_extn("starttls") != implicit
        client.quit()
