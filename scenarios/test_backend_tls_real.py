"""TLS to real backends (proxy_ssl on|starttls with proxy_ssl_verify): Dovecot with
`ssl = required` (IMAP and POP3, implicit TLS and STARTTLS) and Postfix with
`smtpd_tls_security_level = encrypt` (STARTTLS, then XCLIENT), driven by real clients.

Both refuse a plaintext login, so a working session proves the TLS leg; their logs say so too.
Without Dovecot or Postfix the scenarios are skipped, except under CI (kit.real.common.require).
"""

from __future__ import annotations

import email
import imaplib
import poplib
import smtplib
import uuid

import pytest
from postern.fakes.auth import User
from postern.fakes.pki import Authority
from postern.scenarios.kit import imap_support
from postern.scenarios.kit.real.common import available
from postern.scenarios.kit.real.dovecot import DovecotInstance
from postern.scenarios.kit.real.postfix import PostfixInstance
from postern.scenarios.kit.support import LogWatch

pytestmark = pytest.mark.postern_only("nginx's mail module speaks plaintext to backends")

USER, PASSWORD = "tess", "t3ss pw"
NAME = "mail.backend.test"
MESSAGE = (b"From: Una <una@example.com>\r\nTo: Tess <tess@example.com>\r\n"
           b"Subject: fetched over two TLS legs\r\n\r\n"
           + b"".join(b"line %04d of the body\r\n" % i for i in range(2000)))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("real-backend-pki")
    d.chmod(0o755)
    return Authority("Real backend CA").server_files(d, NAME)


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory, pki):
    server = available(DovecotInstance, {USER: PASSWORD},
                       tmp_path_factory.mktemp("dovecot-tls"), tls=(pki.cert, pki.key))
    with server as instance:
        instance.append(USER, None, MESSAGE)
        yield instance


@pytest.fixture(scope="module")
def postfix(tmp_path_factory, pki):
    server = available(PostfixInstance, tmp_path_factory.mktemp("postfix-tls"), extra_main=(
        "smtpd_sasl_authenticated_header = yes\nsmtpd_tls_security_level = encrypt\n"
        f"smtpd_tls_cert_file = {pki.cert}\nsmtpd_tls_key_file = {pki.key}\n"
        "smtpd_tls_loglevel = 1\n"))
    with server as instance:
        yield instance


def verified(pki, mode: str) -> str:
    return (f"proxy_ssl {mode}; proxy_ssl_verify on; proxy_ssl_trusted_certificate {pki.ca}; "
            f"proxy_ssl_name {NAME};")


PORTS = {("imap", "on"): "imaps_port", ("imap", "starttls"): "imap_port",
         ("pop3", "on"): "pop3s_port", ("pop3", "starttls"): "pop3_port"}


@pytest.mark.parametrize("mode", ["on", "starttls"])
def test_imap_to_dovecot_over_tls(lab, pki, dovecot, mode):
    """proxy_ssl on|starttls to Dovecot with ssl = required (RFC 3501 §6.2.1 STARTTLS, or
    port 993 style): imaplib logs in and fetches a message byte for byte; Dovecot logs the
    login as TLS."""
    lab.auth.users[USER] = User(PASSWORD, backends={
        "imap": ("127.0.0.1", getattr(dovecot, PORTS["imap", mode]))})
    proxy = lab.proxy(server=verified(pki, mode), protocol="imap")
    before = dovecot.log_text().count("imap-login: Info: Login: user=<tess>")
    with imaplib.IMAP4("127.0.0.1", proxy.port, timeout=10) as client:
        assert client.login(USER, PASSWORD)[0] == "OK"
        assert client.select("INBOX")[0] == "OK"
        typ, data = client.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK" and data[0][1] == MESSAGE
    logins = [line for line in dovecot.log_text().splitlines()
              if "imap-login: Info: Login: user=<tess>" in line]
    assert len(logins) == before + 1 and ", TLS" in logins[-1], logins[-1]


@pytest.mark.parametrize("mode", ["on", "starttls"])
def test_pop3_to_dovecot_over_tls(lab, pki, dovecot, mode):
    """proxy_ssl on|starttls to Dovecot with ssl = required (RFC 2595 §4 STLS, or port 995
    style): poplib logs in and retrieves the message; Dovecot logs the login as TLS."""
    lab.auth.users[USER] = User(PASSWORD, backends={
        "pop3": ("127.0.0.1", getattr(dovecot, PORTS["pop3", mode]))})
    proxy = lab.proxy(server=verified(pki, mode), protocol="pop3")
    client = poplib.POP3("127.0.0.1", proxy.port, timeout=10)
    try:
        client.user(USER)
        assert client.pass_(PASSWORD).startswith(b"+OK")
        _, lines, _ = client.retr(1)
        assert b"".join(line + b"\r\n" for line in lines) == MESSAGE
        client.quit()
    finally:
        client.close()
    logins = [line for line in dovecot.log_text().splitlines()
              if "pop3-login: Info: Login: user=<tess>" in line]
    assert logins and ", TLS" in logins[-1], logins[-1]


def test_dovecot_certificate_name_is_checked(lab, pki, dovecot):
    """proxy_ssl_name: Dovecot's certificate names mail.backend.test, not its address."""
    lab.auth.users[USER] = User(PASSWORD, backends={"imap": ("127.0.0.1", dovecot.imaps_port)})
    proxy = lab.proxy(server=f"proxy_ssl on; proxy_ssl_verify on; "
                             f"proxy_ssl_trusted_certificate {pki.ca};", protocol="imap")
    watch = LogWatch(proxy)
    with imap_support.login(proxy, USER.encode(), b'"t3ss pw"') as c:
        imap_support.expect_internal_error(c)
    assert "upstream SSL certificate verify error: (64:IP address mismatch) while SSL " \
           "handshaking to upstream" in watch.line("verify error")


def test_smtp_to_postfix_over_starttls(lab, pki, postfix):
    """proxy_ssl starttls to Postfix with smtpd_tls_security_level = encrypt (RFC 3207): EHLO,
    STARTTLS, EHLO again, XCLIENT, then the client's mail; Postfix records ESMTPSA."""
    lab.auth.users[USER] = User(PASSWORD, backends={"smtp": ("127.0.0.1", postfix.port)})
    proxy = lab.proxy(server=verified(pki, "starttls"), protocol="smtp")
    marker = uuid.uuid4().hex
    before = len(postfix.delivered_paths())
    with smtplib.SMTP("127.0.0.1", proxy.port, timeout=15) as client:
        client.login(USER, PASSWORD)
        client.sendmail("tess@example.com", ["una@example.com"],
                        f"Subject: {marker}\r\n\r\nover TLS\r\n".encode())
    for raw in postfix.delivered(timeout=15, count=before + 1):
        msg = email.message_from_bytes(raw)
        if marker in (msg["Subject"] or ""):
            break
    else:
        raise AssertionError(postfix.log_text()[-3000:])
    received = " ".join(msg.get_all("Received")[0].split())
    assert "with ESMTPSA" in received, received
    assert "TLS connection established from localhost[127.0.0.1]" in postfix.log_text()
