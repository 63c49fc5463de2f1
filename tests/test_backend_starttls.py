"""STARTTLS towards the backend (proxy_ssl starttls): each protocol's steps, bytes in and
outcomes out (RFC 3501 §6.2.1, RFC 2595 §4, RFC 3207)."""

import pytest
from postern.proxy.backend_login import LoginFailed, SendToBackend
from postern.proxy.backend_starttls import TlsNow
from postern.proxy.imap.backend_starttls import ImapBackendStartTls
from postern.proxy.pop3.backend_starttls import Pop3BackendStartTls
from postern.proxy.smtp.backend_starttls import SmtpBackendStartTls


def failed(message):
    return LoginFailed(None, "error", message)


def test_imap_greeting_starttls_tagged_ok():
    m = ImapBackendStartTls(4096)
    assert m.start() is None
    assert m.receive_data(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\n") == \
        SendToBackend(b"s1 STARTTLS\r\n")
    assert m.action == "sending STARTTLS to upstream"
    assert m.receive_data(b"* CAPABILITY IMAP4rev1\r\n") is None  # untagged: skipped
    assert m.receive_data(b"s1 OK Begin TLS negotiation now.\r\n") == TlsNow()


def test_imap_reply_in_pieces_and_greeting_without_capabilities():
    m = ImapBackendStartTls(4096)
    assert m.receive_data(b"* OK ready") is None
    assert m.receive_data(b"\r\n") == SendToBackend(b"s1 STARTTLS\r\n")
    assert m.receive_data(b"s1 O") is None
    assert m.receive_data(b"K go\r\n") == TlsNow()


def test_imap_backend_without_starttls_is_refused_before_asking():
    m = ImapBackendStartTls(4096)
    assert m.receive_data(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n") == failed(
        'upstream does not offer STARTTLS: "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi"')


@pytest.mark.parametrize("reply", [b"s1 BAD Unknown command\r\n", b"s1 NO not now\r\n"])
def test_imap_backend_refusing_starttls(reply):
    m = ImapBackendStartTls(4096)
    m.receive_data(b"* OK hi\r\n")
    assert m.receive_data(reply) == failed(
        f'upstream refused STARTTLS: "{reply[:-2].decode()}"')


def test_imap_bad_greeting():
    m = ImapBackendStartTls(4096)
    assert m.receive_data(b"* BYE go away\r\n") == failed(
        'upstream sent invalid response: "* BYE go away"')


@pytest.mark.parametrize("machine,steps", [
    (lambda: ImapBackendStartTls(4096), [b"* OK hi\r\n", b"s1 OK go\r\n"]),
    (lambda: Pop3BackendStartTls(4096), [b"+OK hi\r\n", b"+OK go\r\n"]),
    (lambda: SmtpBackendStartTls(4096, "mx"), [b"220 hi\r\n", b"250-mx\r\n250 STARTTLS\r\n",
                                               b"220 go\r\n"]),
])
def test_plaintext_after_the_go_ahead_is_refused(machine, steps):
    """CVE-2011-0411: bytes after the STARTTLS reply were never protected."""
    m = machine()
    for step in steps[:-1]:
        assert isinstance(m.receive_data(step), SendToBackend)
    assert m.receive_data(steps[-1] + b"* injected\r\n") == failed(
        "upstream sent data after its STARTTLS reply")


def test_pop3_greeting_stls_ok():
    m = Pop3BackendStartTls(4096)
    assert m.receive_data(b"+OK Dovecot ready.\r\n") == SendToBackend(b"STLS\r\n")
    assert m.receive_data(b"+OK Begin TLS negotiation now.\r\n") == TlsNow()


def test_pop3_refusals():
    m = Pop3BackendStartTls(4096)
    assert m.receive_data(b"-ERR busy\r\n") == failed('upstream sent invalid response: "-ERR busy"')
    m = Pop3BackendStartTls(4096)
    m.receive_data(b"+OK hi\r\n")
    assert m.receive_data(b"-ERR Unknown command\r\n") == failed(
        'upstream refused STARTTLS: "-ERR Unknown command"')


def test_smtp_greeting_ehlo_starttls():
    m = SmtpBackendStartTls(4096, "mx.test")
    assert m.receive_data(b"220-first\r\n") is None  # a multi-line greeting
    assert m.receive_data(b"220 mail ESMTP\r\n") == SendToBackend(b"EHLO mx.test\r\n")
    assert m.action == "sending EHLO to upstream"
    assert m.receive_data(b"250-mail\r\n250-PIPELINING\r\n") is None
    assert m.receive_data(b"250-starttls\r\n250 8BITMIME\r\n") == SendToBackend(b"STARTTLS\r\n")
    assert m.receive_data(b"220 2.0.0 Ready to start TLS\r\n") == TlsNow()


def test_smtp_backend_without_starttls():
    m = SmtpBackendStartTls(4096, "mx.test")
    m.receive_data(b"220 hi\r\n")
    assert m.receive_data(b"250-mail\r\n250 AUTH PLAIN\r\n") == failed(
        "upstream does not offer STARTTLS")


def test_smtp_backend_refusing_starttls():
    m = SmtpBackendStartTls(4096, "mx.test")
    m.receive_data(b"220 hi\r\n")
    m.receive_data(b"250 STARTTLS\r\n")
    assert m.receive_data(b"454 4.7.0 TLS not available\r\n") == failed(
        'upstream refused STARTTLS: "454 4.7.0 TLS not available"')


def test_too_long_reply():
    m = Pop3BackendStartTls(16)
    assert m.receive_data(b"+OK " + b"x" * 20) == failed(
        'upstream sent too long response line: "+OK xxxxxxxxxxx"')
