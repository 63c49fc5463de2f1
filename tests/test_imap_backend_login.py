"""The IMAP backend login machine, bytes in and outcomes out (docs/behaviour.md §11.1, §11.3)."""

import pytest
from postern.proxy.backend_login import LoggedIn, LoginFailed, SendToBackend
from postern.proxy.client_identity import ClientIdentity
from postern.proxy.imap.backend_login import ImapBackendLogin, id_command, quoted


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


# -- proxy_client_identity: ID before LOGIN ------------------------------------------------

IDENTITY = ClientIdentity(session_id="4242-7", client_ip="192.0.2.7", client_port=50123,
                          local_ip="127.0.0.1", local_port=1143)
ID_LINE = (b'I ID ("x-originating-ip" "192.0.2.7" "x-originating-port" "50123" '
           b'"x-connected-ip" "127.0.0.1" "x-connected-port" "1143" '
           b'"x-session-ext-id" "4242-7")\r\n')


def with_identity(identity=IDENTITY, proxy_buffer=4096):
    return ImapBackendLogin(b"a1 ", b"al ice", b"p\r\nw", proxy_buffer, False,
                            identity=identity)


def test_id_goes_first_and_its_replies_are_dropped():
    m = with_identity()
    assert m.receive_data(b"* OK [CAPABILITY IMAP4rev1 ID] hi\r\n") == SendToBackend(ID_LINE)
    assert m.action == "sending ID command to upstream"
    assert m.receive_data(b'* ID ("name" "Dovecot")\r\n') is None
    assert m.receive_data(b"I OK ID completed.\r\n") == SendToBackend(b"a1 LOGIN {6}\r\n")
    assert m.action == "sending LOGIN command to upstream"
    assert m.receive_data(b"+ go\r\n") == SendToBackend(b"al ice {4}\r\n")
    assert m.receive_data(b"+ go\r\n") == SendToBackend(b"p\r\nw\r\n")
    assert m.receive_data(b"a1 OK in\r\n") == LoggedIn(b"a1 OK in\r\n")


def test_id_reply_in_pieces_and_in_one_read():
    m = with_identity()
    m.receive_data(b"* OK hi\r\n")
    for piece in (b"* ID NIL\r", b"\n* OK other\r\n", b"I O", b"K done\r"):
        assert m.receive_data(piece) is None
    assert m.receive_data(b"\n") == SendToBackend(b"a1 LOGIN {6}\r\n")
    m = with_identity()
    m.receive_data(b"* OK hi\r\n")
    assert m.receive_data(b"* ID NIL\r\nI OK done\r\n") == SendToBackend(b"a1 LOGIN {6}\r\n")


def test_many_untagged_lines_never_fill_the_buffer():
    m = with_identity(proxy_buffer=32)
    m.receive_data(b"* OK hi\r\n")
    assert m.receive_data(b"* ID NIL\r\n" * 20) is None
    assert m.receive_data(b"I ok\r\n") == SendToBackend(b"a1 LOGIN {6}\r\n")


@pytest.mark.parametrize("reply", [b"I NO not allowed", b"I BAD Unknown command ID"])
def test_refused_id_is_logged_and_the_login_goes_on(reply):
    m = with_identity()
    m.receive_data(b"* OK hi\r\n")
    shown = reply[2:].decode()
    assert m.receive_data(reply + b"\r\n") == SendToBackend(
        b"a1 LOGIN {6}\r\n",
        ("warn", f'upstream rejected ID, client identity not sent: "{shown}"'))
    assert m.receive_data(b"+ go\r\n") == SendToBackend(b"al ice {4}\r\n")


def test_too_long_line_in_the_id_reply():
    m = with_identity(proxy_buffer=16)
    m.receive_data(b"* OK hi\r\n")
    assert m.receive_data(b"* ID " + b"x" * 20) == LoginFailed(
        None, "error", 'upstream sent too long response line: "* ID xxxxxxxxxx"')


def test_bad_greeting_is_still_rejected_before_id():
    assert with_identity().receive_data(b"* BYE go away\r\n") == LoginFailed(
        None, "error", 'upstream sent invalid response: "* BYE go away"')


def test_id_values_are_quoted_and_escaped():
    odd = ClientIdentity(session_id='a"b\\c', client_ip="2001:db8::7", client_port=1,
                         local_ip="::1", local_port=None)
    assert id_command(odd) == (b'I ID ("x-originating-ip" "2001:db8::7" '
                               b'"x-originating-port" "1" "x-connected-ip" "::1" '
                               b'"x-session-ext-id" "a\\"b\\\\c")\r\n')
    assert quoted("a\r\nb") == b"NIL" and quoted("caf\u00e9") == b"NIL"
    assert id_command(ClientIdentity(session_id="1-2")) == b'I ID ("x-session-ext-id" "1-2")\r\n'
