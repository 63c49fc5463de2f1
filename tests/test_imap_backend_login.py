"""The IMAP backend login machine, bytes in and outcomes out (docs/behaviour.md §11.1, §11.3)."""

import pytest
from postern.proxy.backend_login import LoggedIn, LoginFailed, SendToBackend
from postern.proxy.imap.backend_login import ImapBackendLogin


def machine(pass_error_message=False, proxy_buffer=4096, tolerate_untagged=True):
    return ImapBackendLogin(b"a1 ", b"al ice", b"p\r\nw", proxy_buffer, pass_error_message,
                            tolerate_untagged)


def logged_in_after(m, final: bytes):
    assert m.receive_data(b"* OK hi\r\n") == SendToBackend(b"a1 LOGIN {6}\r\n")
    assert m.receive_data(b"+ go\r\n") == SendToBackend(b"al ice {4}\r\n")
    assert m.receive_data(b"+ go\r\n") == SendToBackend(b"p\r\nw\r\n")
    return m.receive_data(final)


def test_sequence_uses_the_client_tag_and_literals():
    assert logged_in_after(machine(), b"a1 OK done\r\n") == LoggedIn(b"a1 OK done\r\n")


def test_reply_is_judged_only_at_crlf():
    m = machine()
    assert m.receive_data(b"* O") is None
    assert m.receive_data(b"K hi\r") is None
    assert isinstance(m.receive_data(b"\n"), SendToBackend)


def test_one_untagged_line_is_tolerated_and_relayed():
    m = machine()
    assert logged_in_after(m, b"* CAPABILITY X\r\n") is None
    assert m.receive_data(b"a1 OK go\r\n") == LoggedIn(b"* CAPABILITY X\r\na1 OK go\r\n")


def test_untagged_line_rejected_when_not_tolerated():
    """tolerate_untagged=False (nginx before it skipped one untagged line in the passwd
    state): the untagged line is the invalid response; a tagged OK alone still logs in."""
    out = logged_in_after(machine(tolerate_untagged=False), b"* CAPABILITY X\r\na1 OK go\r\n")
    assert out == LoginFailed(None, "error",
                              'upstream sent invalid response: "* CAPABILITY X\r\na1 OK go"')
    assert logged_in_after(machine(tolerate_untagged=False), b"a1 OK go\r\n") == \
        LoggedIn(b"a1 OK go\r\n")


def test_two_untagged_lines_are_rejected():
    out = logged_in_after(machine(), b"* A\r\n* B\r\na1 OK go\r\n")
    assert out == LoginFailed(None, "error", 'upstream sent invalid response: "* B\r\na1 OK go"')


@pytest.mark.parametrize("reply,shown", [
    (b"a1 NO nope\r\n", "NO nope"),  # nginx logs from after a matching tag
    (b"a2 OK other tag\r\n", "a2 OK other tag"),
    (b"* OK x\r\na1 BAD no\r\n", "BAD no"),
])
def test_rejection_log_starts_where_nginx_stopped(reply, shown):
    out = logged_in_after(machine(), reply)
    assert out == LoginFailed(None, "error", f'upstream sent invalid response: "{shown}"')


def test_pass_error_message_relays_every_byte_and_logs_at_info():
    out = logged_in_after(machine(pass_error_message=True), b"* OK x\r\na1 NO nope\r\n")
    assert out == LoginFailed(b"* OK x\r\na1 NO nope\r\n", "info",
                              'upstream sent invalid response: "NO nope"')


def test_preauth_greeting_is_rejected():
    out = machine().receive_data(b"* PREAUTH in\r\n")
    assert out == LoginFailed(None, "error", 'upstream sent invalid response: "* PREAUTH in"')


def test_too_long_line():
    out = machine(proxy_buffer=16).receive_data(b"* OK " + b"x" * 20)
    assert out == LoginFailed(None, "error",
                              'upstream sent too long response line: "* OK xxxxxxxxxx"')
