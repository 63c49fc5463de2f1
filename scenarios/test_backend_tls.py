"""TLS towards the backend (proxy_ssl on|starttls, proxy_ssl_verify, proxy_ssl_name,
proxy_ssl_auth_header): logins and the relay over TLS to the fake upstreams, and every
failure ending in the protocol's internal-error line with nginx stream's log line.

nginx's mail module speaks plaintext to its backends, so all of this is Postern's own.
"""

from __future__ import annotations

import re
import ssl
import time

import pytest
from postern.fakes.auth import Reply
from postern.fakes.imap import FakeImapServer
from postern.fakes.pki import Authority
from postern.fakes.pop3 import FakePop3Server
from postern.fakes.smtp import FakeSmtpServer
from postern.scenarios.kit import imap_support, pop3_support, smtp_support
from postern.scenarios.kit.support import LogWatch, ScriptedBackend
from postern.scenarios.kit.tls_support import tls_connect

pytestmark = pytest.mark.postern_only("nginx's mail module speaks plaintext to backends")

USERS = {"alice": "secret"}
FAKES = {"imap": FakeImapServer, "pop3": FakePop3Server, "smtp": FakeSmtpServer}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("backend-pki")
    good = Authority("Backend CA").server_files(d, "backend.test", "127.0.0.1")
    other = Authority("Another CA").server_files(d, "backend.test", stem="other",
                                                 ca_name="other-ca.pem")
    return good, other


def server_context(files) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files.cert, files.key)
    return ctx


@pytest.fixture(scope="module")
def upstreams(pki):
    """Per protocol: a STARTTLS fake, an implicit-TLS fake, and one whose certificate comes
    from another CA."""
    good, other = pki
    running = {}
    for protocol, cls in FAKES.items():
        for kind, files, implicit in (("starttls", good, False), ("on", good, True),
                                      ("other-ca", other, True)):
            srv = cls(USERS, tls=server_context(files), implicit_tls=implicit)
            srv.__enter__()
            running[protocol, kind] = srv
    yield running
    for srv in running.values():
        srv.__exit__(None, None, None)


def directives(pki, mode: str, verify: bool = True, name: str = "backend.test") -> str:
    good, _ = pki
    text = f"proxy_ssl {mode};\n"
    if verify:
        text += (f"proxy_ssl_verify on;\nproxy_ssl_trusted_certificate {good.ca};\n"
                 f"proxy_ssl_name {name};\n")
    return text


def imap_session(proxy) -> None:
    with imap_support.login(proxy, extra=b"a2 SELECT INBOX\r\n") as c:
        c.expect(b"a1 OK")
        c.readline()
        reply = imap_support.read_tagged(c, b"a2")
        assert b"a2 OK" in reply, reply
        c.send(b"a3 FETCH 1 (BODY[])\r\n")
        assert b"a3 OK" in imap_support.read_tagged(c, b"a3")
        c.send(b"a4 LOGOUT\r\n")
        c.expect(b"* BYE")


def pop3_session(proxy) -> None:
    with pop3_support.login(proxy) as c:
        c.expect(b"+OK")
        c.readline()
        c.send(b"STAT\r\n").expect(b"+OK ")
        c.readline()
        c.send(b"RETR 1\r\n").expect(b"+OK")
        while c.readline() != b".\r\n":
            pass
        c.send(b"QUIT\r\n").expect(b"+OK")


def smtp_session(proxy) -> None:
    with smtp_support.greet(proxy) as c:
        smtp_support.ehlo(c)
        c.send(b"AUTH PLAIN " + smtp_support.plain() + b"\r\n").expect(smtp_support.AUTH_OK)
        for line, code in ((b"MAIL FROM:<alice@x.test>", b"250 "),
                           (b"RCPT TO:<alice@x.test>", b"250 "), (b"DATA", b"354 "),
                           (b"Subject: over TLS\r\n\r\nhello\r\n.", b"250 "),
                           (b"QUIT", b"221 ")):
            reply = smtp_support.read_reply(c.send(line + b"\r\n"))
            assert reply.startswith(code), (line, reply)


SESSIONS = {"imap": imap_session, "pop3": pop3_session, "smtp": smtp_session}


@pytest.mark.parametrize("mode", ["on", "starttls"])
@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_login_and_relay_over_tls_with_verification(lab, pki, upstreams, protocol, mode):
    """proxy_ssl on|starttls with proxy_ssl_verify: the STARTTLS fakes refuse a plaintext
    login (LOGINDISABLED, POP3 -ERR, SMTP 530), so a working session proves the TLS leg;
    pipelined commands, a message download and the close go through it."""
    proxy = lab.proxy(server=directives(pki, mode), protocol=protocol)
    upstream = upstreams[protocol, mode]
    lab.auth.push(Reply.ok("127.0.0.1", upstream.port))
    SESSIONS[protocol](proxy)


def test_default_name_is_the_backend_address(lab, pki, upstreams):
    """proxy_ssl_name unset: the certificate must match Auth-Server (an IP SAN here)."""
    good, _ = pki
    proxy = lab.proxy(server=f"proxy_ssl on; proxy_ssl_verify on; "
                             f"proxy_ssl_trusted_certificate {good.ca};", protocol="pop3")
    lab.auth.push(Reply.ok("127.0.0.1", upstreams["pop3", "on"].port))
    pop3_session(proxy)


def failure(lab, proxy, protocol: str, port: int, log: str) -> str:
    """One login that must end in the internal-error line; the log line that says why."""
    watch = LogWatch(proxy)
    lab.auth.push(Reply.ok("127.0.0.1", port))
    support = {"imap": imap_support, "pop3": pop3_support}.get(protocol)
    if support is not None:
        with support.login(proxy) as c:
            support.expect_internal_error(c)
    else:
        with smtp_support.greet(proxy) as c:
            smtp_support.ehlo(c)
            c.send(b"AUTH PLAIN " + smtp_support.plain() + b"\r\n")
            c.expect(smtp_support.INTERNAL_ERROR).expect_closed()
    return watch.line(log)


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_name_mismatch(lab, pki, upstreams, protocol):
    """proxy_ssl_name against the certificate: a mismatch is nginx stream's verify error
    and the protocol's internal-error line."""
    proxy = lab.proxy(server=directives(pki, "on", name="wrong.test"), protocol=protocol)
    line = failure(lab, proxy, protocol, upstreams[protocol, "on"].port,
                   "upstream SSL certificate verify error")
    assert "upstream SSL certificate verify error: (62:hostname mismatch) while SSL " \
           "handshaking to upstream, client: 127.0.0.1" in line
    assert "[error]" in line and "secret" not in line


def test_unknown_ca(lab, pki, upstreams):
    """proxy_ssl_trusted_certificate: a backend certificate from another CA is refused."""
    proxy = lab.proxy(server=directives(pki, "on"), protocol="imap")
    line = failure(lab, proxy, "imap", upstreams["imap", "other-ca"].port,
                   "upstream SSL certificate verify error")
    assert "(21:unable to verify the first certificate) while SSL handshaking to upstream" \
        in line or "(20:unable to get local issuer certificate) while SSL handshaking" in line


def test_without_verification_any_certificate_is_taken(lab, pki, upstreams):
    """proxy_ssl_verify off (nginx stream's default): any certificate is taken."""
    proxy = lab.proxy(server="proxy_ssl on;", protocol="imap")
    lab.auth.push(Reply.ok("127.0.0.1", upstreams["imap", "other-ca"].port))
    imap_session(proxy)


@pytest.mark.parametrize("protocol,log", [
    ("imap", "upstream does not offer STARTTLS"),
    ("pop3", 'upstream refused STARTTLS: "-ERR STLS not available"'),
    ("smtp", "upstream does not offer STARTTLS"),
])
def test_backend_without_starttls(lab, pki, protocol, log):
    """proxy_ssl starttls towards a backend without it (the lab's plaintext fakes): the
    internal-error line, never a fallback to plaintext."""
    proxy = lab.proxy(server=directives(pki, "starttls"), protocol=protocol)
    line = failure(lab, proxy, protocol, getattr(lab, protocol).port, log)
    assert re.search(r"\[error\] \d+#\d+: \*\d+ " + re.escape(log), line), line
    assert " while reading response from upstream, client: " in line


def test_backend_refusing_starttls(lab, pki):
    """proxy_ssl starttls: a tagged NO to STARTTLS (RFC 3501 §6.2.1) ends the login."""
    backend = ScriptedBackend(("send", b"* OK ready\r\n"), ("recv", 13),
                              ("send", b"s1 NO [UNAVAILABLE] TLS is down\r\n"))
    proxy = lab.proxy(server=directives(pki, "starttls"), protocol="imap")
    line = failure(lab, proxy, "imap", backend.port, "upstream refused STARTTLS")
    assert 'upstream refused STARTTLS: "s1 NO [UNAVAILABLE] TLS is down" while reading ' \
           "response from upstream" in line
    assert backend.join() == b"s1 STARTTLS\r\n"


def test_implicit_tls_to_a_plaintext_backend(lab, pki):
    """proxy_ssl on towards a plaintext backend: the handshake fails with OpenSSL's reason."""
    proxy = lab.proxy(server=directives(pki, "on"), protocol="imap")
    line = failure(lab, proxy, "imap", lab.imap.port, "SSL_do_handshake() failed")
    assert "SSL_do_handshake() failed (SSL: " in line
    assert ") while SSL handshaking to upstream, client: 127.0.0.1" in line


def test_handshake_timeout(lab, pki):
    """timeout bounds the backend handshake: a backend that never answers the ClientHello
    gets nginx's "upstream timed out" while SSL handshaking to upstream."""
    backend = ScriptedBackend(("recv", 5), ("sleep", 3))
    proxy = lab.proxy(server=directives(pki, "on") + "timeout 1s;", protocol="imap")
    started = time.monotonic()
    line = failure(lab, proxy, "imap", backend.port, "upstream timed out")
    assert time.monotonic() - started < 2.9
    assert "upstream timed out (110: Connection timed out) while SSL handshaking to " \
           "upstream" in line


def test_auth_reply_chooses_per_user(lab, pki, upstreams):
    """proxy_ssl_auth_header on: Auth-Backend-TLS (on|starttls|off) and
    Auth-Backend-TLS-Name pick the TLS leg per user; without them, proxy_ssl applies."""
    good, _ = pki
    proxy = lab.proxy(server=f"proxy_ssl_auth_header on; proxy_ssl_verify on; "
                             f"proxy_ssl_trusted_certificate {good.ca};", protocol="imap")
    lab.auth.push(Reply.ok("127.0.0.1", upstreams["imap", "starttls"].port,
                           headers=["Auth-Backend-TLS: starttls",
                                    "Auth-Backend-TLS-Name: backend.test"]))
    imap_session(proxy)
    lab.auth.push(Reply.ok("127.0.0.1", lab.imap.port))  # no header: plaintext as configured
    imap_session(proxy)
    watch = LogWatch(proxy)
    lab.auth.push(Reply.ok("127.0.0.1", upstreams["imap", "on"].port,
                           headers=["Auth-Backend-TLS: on", "Auth-Backend-TLS-Name: x.test"]))
    with imap_support.login(proxy) as c:
        imap_support.expect_internal_error(c)
    assert "(62:hostname mismatch)" in watch.line("verify error")


def test_auth_header_ignored_unless_allowed(lab, upstreams):
    """proxy_ssl_auth_header off (the default): Auth-Backend-TLS in the reply is ignored."""
    proxy = lab.proxy(protocol="imap")
    lab.auth.push(Reply.ok("127.0.0.1", lab.imap.port, headers=["Auth-Backend-TLS: on"]))
    imap_session(proxy)


@pytest.mark.parametrize("reuse", ["on", "off"])
def test_session_reuse(lab, upstreams, reuse):
    """proxy_ssl_session_reuse (nginx stream's default on): the next login to the same
    backend resumes the TLS session of the last one."""
    proxy = lab.proxy(server=f"proxy_ssl on; proxy_ssl_session_reuse {reuse};",
                      protocol="imap")
    upstream = upstreams["imap", "on"]
    resumed = []
    for _ in range(2):
        lab.auth.push(Reply.ok("127.0.0.1", upstream.port))
        with imap_support.login(proxy) as c:
            c.expect(b"a1 OK Logged in\r\n")
            ssl_object = upstream.connections[-1].transport.get_extra_info("ssl_object")
            resumed.append(ssl_object.session_reused)
            c.send(b"a2 LOGOUT\r\n").expect(b"* BYE")
    assert resumed == [False, reuse == "on"]


def test_tls_on_both_legs(lab, pki, upstreams):
    """proxy_ssl starttls behind `listen ... ssl`: the client's records are decrypted, the
    plaintext re-encrypted for the backend and back, with pipelined commands."""
    good, _ = pki
    proxy = lab.proxy(server=directives(pki, "starttls") +
                      f"ssl_certificate {good.cert}; ssl_certificate_key {good.key};",
                      protocol="imap", listen_params="ssl")
    lab.auth.push(Reply.ok("127.0.0.1", upstreams["imap", "starttls"].port))
    ctx = ssl.create_default_context(cafile=str(good.ca))
    ctx.check_hostname = False
    with tls_connect(proxy, ctx) as c:
        c.expect(imap_support.GREETING)
        c.send(b"a1 LOGIN alice secret\r\na2 SELECT INBOX\r\n")
        c.expect(b"a1 OK Logged in\r\n")
        assert b"a2 OK" in imap_support.read_tagged(c, b"a2")
        c.send(b"a3 FETCH 1:* (BODY[])\r\n")
        assert b"a3 OK" in imap_support.read_tagged(c, b"a3")
        c.send(b"a4 LOGOUT\r\n").expect(b"* BYE")


def test_identity_goes_inside_tls(lab, pki, upstreams):
    """proxy_ssl starttls with proxy_client_identity on: STARTTLS first, then the ID with the
    client's address inside TLS (the STARTTLS fake refuses logins in plaintext), then LOGIN."""
    upstream = upstreams["imap", "starttls"]
    proxy = lab.proxy(server=directives(pki, "starttls") + "proxy_client_identity on;",
                      protocol="imap")
    lab.auth.push(Reply.ok("127.0.0.1", upstream.port))
    before = len(upstream.connections)
    with imap_support.login(proxy) as c:
        c.expect(b"a1 OK")
    conn = upstream.connections[before]
    assert conn.client_id["x-originating-ip"] == "127.0.0.1"
    assert conn.client_id["x-connected-port"] == str(proxy.port)
    sent = [line.split(b" ", 2)[1].upper() for line in upstream.commands[-3:]]
    assert sent[:2] == [b"STARTTLS", b"ID"], upstream.commands[-3:]
