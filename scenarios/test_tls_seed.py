"""The complete example of the mail-proxy guide the project started from (`ssl on` at mail
level, ssl_protocols TLSv1 TLSv1.1 TLSv1.2, HIGH:!aNULL:!MD5, a shared session cache, three
servers), with only the certificate paths, the ports and the auth_http address adjusted:
every server speaks implicit TLS, and a client logs in through each to the fake upstreams.

A scenario on every --target but the external one (the example starts its own proxy with three
servers and worker_processes auto, which a declared external proxy cannot be); it brings its
own fake upstreams and auth server, as the lab's proxies have one server each.
"""

from __future__ import annotations

import ssl

import pytest
from postern.fakes.auth import MockAuthServer, User
from postern.fakes.imap import FakeImapServer
from postern.fakes.pop3 import FakePop3Server
from postern.fakes.smtp import FakeSmtpServer
from postern.scenarios.kit.client import Client
from postern.scenarios.kit.real.common import free_ports
from postern.scenarios.kit.targets import target_class
from postern.scenarios.kit.tls_support import client_context, make_pki, start_tls

# The guide's text, indentation and all; {placeholders} are the only changes.
COMPLETE_EXAMPLE = """\
    server_name mail.example.com;
    auth_http   127.0.0.1:{auth}/cgi-bin/nginxauth.cgi;

    proxy_pass_error_message on;

    ssl                 on;
    ssl_certificate     {cert};
    ssl_certificate_key {key};
    ssl_protocols       TLSv1 TLSv1.1 TLSv1.2;
    ssl_ciphers         HIGH:!aNULL:!MD5;
    ssl_session_cache   shared:SSL:10m;
    ssl_session_timeout 10m;

    server {{
        listen     127.0.0.1:{smtp};
        protocol   smtp;
        smtp_auth  login plain cram-md5;
    }}

    server {{
        listen    127.0.0.1:{pop3};
        protocol  pop3;
        pop3_auth plain apop cram-md5;
}}

     server {{
        listen   127.0.0.1:{imap};
        protocol imap;
    }}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    pki = make_pki(tmp_path_factory.mktemp("seed-pki"))
    users = {"alice": "secret"}
    with FakeImapServer(dict(users)) as imap, FakePop3Server(dict(users)) as pop3, \
            FakeSmtpServer(dict(users)) as smtp, MockAuthServer() as auth:
        auth.users["alice"] = User("secret", backends={
            "imap": ("127.0.0.1", imap.port), "pop3": ("127.0.0.1", pop3.port),
            "smtp": ("127.0.0.1", smtp.port)})
        yield pki, auth


@pytest.fixture
def seed_proxy(target, world, tmp_path):
    if target == "external":
        pytest.skip("the guide's example is a proxy of its own, with three servers")
    pki, auth = world
    cls = target_class(target)
    smtp, pop3, imap = free_ports(3)
    mail = COMPLETE_EXAMPLE.format(auth=auth.port, cert=pki.ecdsa_cert, key=pki.ecdsa_key,
                                   smtp=smtp, pop3=pop3, imap=imap)
    instance = cls(mail, tmp_path, main="worker_processes auto;")
    instance.start()
    auth.clear()
    try:
        yield instance, {"smtp": smtp, "pop3": pop3, "imap": imap}, pki, auth
    finally:
        instance.stop()


def _tls(port: int, pki, **kw) -> Client:
    return start_tls(Client("127.0.0.1", port), client_context(pki, **kw))


def test_every_server_speaks_tls(seed_proxy):
    """nginx ssl (mail level, the guide's complete example): every server of the example
    speaks implicit TLS at TLSv1.2, the newest the example lists; IMAP LOGIN, POP3 USER/PASS
    and SMTP AUTH PLAIN each log in, the auth server hears Auth-SSL-Protocol TLSv1.2, and the
    deprecated directive is warned about at start-up."""
    instance, ports, pki, auth = seed_proxy
    with _tls(ports["imap"], pki) as c:
        c.expect(b"* OK IMAP4 ready\r\n")
        c.send(b"a1 LOGIN alice secret\r\n")
        assert c.readline().startswith(b"a1 OK")
        assert c.sock.version() == "TLSv1.2"  # the newest the example lists
    with _tls(ports["pop3"], pki) as c:
        assert c.readline().startswith(b"+OK POP3 ready <")  # apop/cram-md5: a salt
        c.send(b"USER alice\r\n").expect(b"+OK\r\n")
        c.send(b"PASS secret\r\n")
        assert c.readline().startswith(b"+OK")
    with _tls(ports["smtp"], pki) as c:
        c.expect(b"220 mail.example.com ESMTP ready\r\n")
        c.send(b"EHLO client.example\r\n").expect(
            b"250-mail.example.com\r\n250 AUTH PLAIN LOGIN CRAM-MD5\r\n")
        c.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n").expect(b"235 2.0.0 OK\r\n")
    protocols = [r.header("Auth-Protocol") for r in auth.requests]
    assert protocols == ["imap", "pop3", "smtp"]
    assert {r.header("Auth-SSL-Protocol") for r in auth.requests} == {"TLSv1.2"}
    # nginx 1.22 warns at start-up (removed in 1.25.1); Postern keeps the directive too
    stderr = instance.stderr_path.read_text() if instance.stderr_path.exists() else ""
    assert 'the "ssl" directive is deprecated' in stderr + instance.error_log_text()


def test_sessions_resume_across_connections(seed_proxy):
    """nginx ssl_session_cache shared: with several workers (worker_processes auto) a
    session ticket from one connection resumes on the next, whichever worker takes it: the
    workers share one context."""
    _instance, ports, pki, _auth = seed_proxy
    ctx = client_context(pki, version=ssl.TLSVersion.TLSv1_2)
    with start_tls(Client("127.0.0.1", ports["imap"]), ctx) as c:
        c.expect(b"* OK IMAP4 ready\r\n")
        session = c.sock.session
    reused = []
    for _ in range(8):
        c = Client("127.0.0.1", ports["imap"])
        c.sock = ctx.wrap_socket(c.sock, server_hostname="mx.test", session=session)
        with c:
            c.expect(b"* OK IMAP4 ready\r\n")
            reused.append(c.sock.session_reused)
    assert all(reused), reused
