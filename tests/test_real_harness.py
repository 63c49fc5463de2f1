"""The private real-server instances (scenarios/kit/real) start, serve and stop cleanly.

Skipped where a package is missing; under CI (environment variable CI set) a missing package
fails instead, because CI machines are provisioned by scripts/ensure-system-deps.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
from email import message_from_bytes

from postern.scenarios.kit.real.common import LOOPBACK, free_ports, pid_alive, require
from postern.scenarios.kit.real.dovecot import DovecotInstance
from postern.scenarios.kit.real.nginx import NginxInstance
from postern.scenarios.kit.real.postfix import PostfixInstance

MESSAGE = (
    b"From: sender@example.org\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: harness check\r\n"
    b"\r\n"
    b"first line\r\n"
    b"second line\r\n"
)


def read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_nginx_greets_imap_client(tmp_path):
    require(NginxInstance.unavailable_reason())
    imap_port, closed_port = free_ports(2)  # nothing listens on the auth port: never asked
    mail = f"""
        auth_http {LOOPBACK}:{closed_port}/auth;
        server {{
            listen {LOOPBACK}:{imap_port};
            protocol imap;
        }}
    """
    with NginxInstance(mail, tmp_path) as nginx:
        assert nginx.version is not None and nginx.version >= (1, 0)
        with socket.create_connection((LOOPBACK, imap_port), timeout=5) as client:
            assert read_line(client) == b"* OK IMAP4 ready\r\n"
        master = nginx.pid
    assert not pid_alive(master)
    assert "[emerg]" not in nginx.error_log_text()
    assert "exit" in nginx.error_log_text()  # the master logged its own graceful exit


def test_nginx_config_test_reports_good_and_bad_config(tmp_path):
    require(NginxInstance.unavailable_reason())
    (port,) = free_ports(1)
    good_mail = f"server {{ listen {LOOPBACK}:{port}; protocol pop3; auth_http {LOOPBACK}:9/; }}"
    rc, output = NginxInstance(good_mail, tmp_path / "good").check_config()
    assert rc == 0, output
    assert "test is successful" in output

    bad = NginxInstance.render("no_such_mail_directive on;", tmp_path / "bad")
    rc, output = NginxInstance.test_config(bad, tmp_path / "bad")
    assert rc == 1
    assert 'unknown directive "no_such_mail_directive"' in output
    assert f"{tmp_path / 'bad' / 'nginx.conf'}:" in output
    assert "test failed" in output


def test_dovecot_serves_appended_message_over_imap_and_pop3(tmp_path):
    require(DovecotInstance.unavailable_reason())
    users = {"alice@example.com": "wonder land:1"}
    with DovecotInstance(users, tmp_path) as dovecot:
        assert dovecot.append("alice@example.com", "wonder land:1", MESSAGE) == 1

        imap = imaplib.IMAP4(LOOPBACK, dovecot.imap_port, timeout=10)
        try:
            imap.login("alice@example.com", "wonder land:1")
            typ, data = imap.select("INBOX")
            assert (typ, data) == ("OK", [b"1"])
            typ, data = imap.fetch("1", "(BODY.PEEK[])")
            assert typ == "OK"
            assert data[0][1] == MESSAGE
        finally:
            imap.logout()

        pop = poplib.POP3(LOOPBACK, dovecot.pop3_port, timeout=10)
        try:
            pop.user("alice@example.com")
            pop.pass_("wonder land:1")
            assert pop.stat() == (1, len(MESSAGE))
            _, lines, _ = pop.retr(1)
            assert b"\r\n".join(lines) + b"\r\n" == MESSAGE
        finally:
            pop.quit()

        rejected = imaplib.IMAP4(LOOPBACK, dovecot.imap_port, timeout=10)
        try:
            try:
                rejected.login("alice@example.com", "wrong")
            except imaplib.IMAP4.error:
                pass
            else:
                raise AssertionError("Dovecot accepted a wrong password")
        finally:
            rejected.shutdown()
        master = dovecot.pid
    assert not pid_alive(master)


def test_postfix_delivers_with_xclient_address(tmp_path):
    require(PostfixInstance.unavailable_reason())
    with PostfixInstance(tmp_path) as postfix:
        with smtplib.SMTP(LOOPBACK, postfix.port, timeout=10) as smtp:
            code, _ = smtp.ehlo("proxy.test")
            assert code == 250
            assert smtp.has_extn("xclient")
            code, reply = smtp.docmd("XCLIENT", "ADDR=192.0.2.7 NAME=client.example.org")
            assert code == 220, reply  # XCLIENT restarts the session with a new greeting
            smtp.ehlo_resp = None
            smtp.ehlo("client.example.org")
            refused = smtp.sendmail("sender@example.org", ["alice@example.com"], MESSAGE)
            assert refused == {}
        delivered = postfix.delivered(timeout=15)
        master = postfix.master_pid
    assert master is not None and not pid_alive(master)
    assert len(delivered) == 1, postfix.log_text()
    received = message_from_bytes(delivered[0]).get_all("Received")
    assert "[192.0.2.7]" in received[0]
    assert "client.example.org" in received[0]
    assert message_from_bytes(delivered[0])["Subject"] == "harness check"


def test_nginx_proxies_imap_to_dovecot_with_auth_from_its_own_http_block(tmp_path):
    require(NginxInstance.unavailable_reason())
    require(DovecotInstance.unavailable_reason())
    with DovecotInstance({"alice@example.com": "secret"}, tmp_path / "dovecot") as dovecot:
        dovecot.append("alice@example.com", "secret", MESSAGE)
        imap_port, auth_port = free_ports(2)
        mail = f"""
            auth_http {LOOPBACK}:{auth_port}/auth;
            server {{
                listen {LOOPBACK}:{imap_port};
                protocol imap;
            }}
        """
        http = f"""
            access_log off;
            server {{
                listen {LOOPBACK}:{auth_port};
                location = /auth {{
                    add_header Auth-Status OK;
                    add_header Auth-Server {LOOPBACK};
                    add_header Auth-Port {dovecot.imap_port};
                    return 200;
                }}
            }}
        """
        with NginxInstance(mail, tmp_path / "nginx", http_block=http) as nginx:
            imap = imaplib.IMAP4(LOOPBACK, imap_port, timeout=10)
            try:
                assert imap.welcome == b"* OK IMAP4 ready"
                typ, _ = imap.login("alice@example.com", "secret")
                assert typ == "OK"
                assert imap.select("INBOX") == ("OK", [b"1"])
                assert imap.fetch("1", "(BODY.PEEK[])")[1][0][1] == MESSAGE
            finally:
                imap.logout()
        assert "alice@example.com" in dovecot.log_text()
        assert "[emerg]" not in nginx.error_log_text()
