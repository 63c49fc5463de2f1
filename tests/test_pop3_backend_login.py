"""Logging into a POP3 backend for the client, bytes in and outcomes out (docs/behaviour.md §11.1, §11.2)."""

import pytest
from postern.proxy.backend_login import LoggedIn, LoginFailed, SendToBackend
from postern.proxy.client_identity import ClientIdentity
from postern.proxy.pop3.backend_login import Pop3BackendLogin, xclient_command


def machine(login=b"user", password=b"secret", proxy_buffer=4096, pass_error_message=False):
    return Pop3BackendLogin(login, password, proxy_buffer, pass_error_message)


def test_user_then_pass_then_relay_with_the_backends_ok_line():
    m = machine()
    assert m.start() is None  # the backend speaks first
    assert m.action == "reading response from upstream"
    assert m.receive_data(b"+OK Dovecot ready.\r\n") == SendToBackend(b"USER user\r\n")
    assert m.action == "sending user name to upstream"
    assert m.receive_data(b"+OK\r\n") == SendToBackend(b"PASS secret\r\n")
    assert m.action == "sending password to upstream"
    assert m.receive_data(b"+OK Logged in.\r\n") == LoggedIn(b"+OK Logged in.\r\n")


def test_login_and_password_are_sent_raw():
    m = machine(b"us er%", b" p\"a\\s s ")
    assert m.receive_data(b"+OK hi\r\n") == SendToBackend(b"USER us er%\r\n")
    assert m.receive_data(b"+OK\r\n") == SendToBackend(b'PASS  p"a\\s s \r\n')


def test_replies_split_across_reads_wait_for_crlf():
    m = machine()
    for chunk in (b"+", b"OK", b" ready", b"\r"):
        assert m.receive_data(chunk) is None
    assert m.receive_data(b"\n") == SendToBackend(b"USER user\r\n")
    assert m.receive_data(b"+OK\r") is None
    assert m.receive_data(b"\n") == SendToBackend(b"PASS secret\r\n")
    assert m.receive_data(b"+OK done\r\n") == LoggedIn(b"+OK done\r\n")


def test_short_reply_is_not_judged_before_four_bytes():
    m = machine()
    assert m.receive_data(b"+\r\n") is None  # 3 bytes: nginx waits for more
    assert m.receive_data(b"\r\n") == LoginFailed(
        None, "error", 'upstream sent invalid response: "+\r\n"')


def test_only_the_first_line_is_checked_and_everything_is_forwarded():
    m = machine()
    m.receive_data(b"+OK\r\n")
    m.receive_data(b"+OK\r\n")
    final = b"+OK Logged in.\r\n* extra line\r\n"
    assert m.receive_data(final) == LoggedIn(final)


def test_ok_is_matched_case_sensitively_on_three_bytes():
    m = machine()
    assert m.receive_data(b"+OKAY\r\n") == SendToBackend(b"USER user\r\n")
    assert isinstance(m.receive_data(b"+ok\r\n"), LoginFailed)


@pytest.mark.parametrize("step", [0, 1, 2])
def test_rejection_without_pass_error_message_is_an_internal_error(step):
    m = machine()
    for _ in range(step):
        m.receive_data(b"+OK\r\n")
    assert m.receive_data(b"-ERR nope\r\n") == LoginFailed(
        None, "error", 'upstream sent invalid response: "-ERR nope"')


def test_rejection_with_pass_error_message_is_relayed():
    # docs/behaviour.md §18: the client got exactly the backend's PASS reply, then EOF
    m = machine(b"user", b"bad", pass_error_message=True)
    assert m.receive_data(b"+OK POP3 ready\r\n") == SendToBackend(b"USER user\r\n")
    assert m.receive_data(b"+OK\r\n") == SendToBackend(b"PASS bad\r\n")
    assert m.receive_data(b"-ERR backend says no\r\n") == LoginFailed(
        b"-ERR backend says no\r\n", "info",
        'upstream sent invalid response: "-ERR backend says no"')


def test_greeting_must_start_with_ok():
    m = machine(pass_error_message=True)
    assert m.receive_data(b"* OK IMAP4 ready\r\n") == LoginFailed(
        b"* OK IMAP4 ready\r\n", "info", 'upstream sent invalid response: "* OK IMAP4 ready"')


def test_too_long_response_line():
    m = machine(proxy_buffer=16)
    outcome = m.receive_data(b"+OK " + b"x" * 40)
    assert isinstance(outcome, LoginFailed) and outcome.to_client is None
    assert outcome.log.startswith("upstream sent too long response line: ")


def test_buffer_is_emptied_after_each_command():
    m = machine(proxy_buffer=16)
    # each reply fits on its own although together they would not
    assert m.receive_data(b"+OK 0123456789\r\n") == SendToBackend(b"USER user\r\n")
    assert m.receive_data(b"+OK 0123456789\r\n") == SendToBackend(b"PASS secret\r\n")
    assert m.receive_data(b"+OK 0123456789\r\n") == LoggedIn(b"+OK 0123456789\r\n")


# -- proxy_client_identity: XCLIENT before USER ---------------------------------------------

IDENTITY = ClientIdentity(session_id="4242-7", client_ip="192.0.2.7", client_port=50123,
                          local_ip="127.0.0.1", local_port=1110)
XCLIENT = (b"XCLIENT ADDR=192.0.2.7 PORT=50123 DESTADDR=127.0.0.1 DESTPORT=1110 "
           b"SESSION=4242-7\r\n")


def with_identity(identity=IDENTITY):
    return Pop3BackendLogin(b"user", b"secret", 4096, False, identity=identity)


def test_xclient_goes_first_when_the_greeting_offers_it():
    m = with_identity()
    assert m.receive_data(b"+OK [XCLIENT] Dovecot ready.\r\n") == SendToBackend(XCLIENT)
    assert m.action == "sending XCLIENT to upstream"
    assert m.receive_data(b"+OK Updated\r\n") == SendToBackend(b"USER user\r\n")
    assert m.action == "sending user name to upstream"
    assert m.receive_data(b"+OK\r\n") == SendToBackend(b"PASS secret\r\n")
    assert m.receive_data(b"+OK Logged in.\r\n") == LoggedIn(b"+OK Logged in.\r\n")


def test_no_xclient_without_the_greetings_sign():
    m = with_identity()
    assert m.receive_data(b"+OK Dovecot ready.\r\n") == SendToBackend(
        b"USER user\r\n", ("warn", "upstream greeting has no [XCLIENT], client identity not sent"))
    assert m.receive_data(b"+OK\r\n") == SendToBackend(b"PASS secret\r\n")


def test_refused_xclient_is_logged_and_the_login_goes_on():
    m = with_identity()
    m.receive_data(b"+OK [XCLIENT] hi\r\n")
    assert m.receive_data(b"-ERR Invalid parameters\r\n") == SendToBackend(
        b"USER user\r\n",
        ("warn", 'upstream rejected XCLIENT, client identity not sent: "-ERR Invalid parameters"'))
    assert m.receive_data(b"+OK\r\n") == SendToBackend(b"PASS secret\r\n")


def test_greeting_is_still_judged_first():
    assert with_identity().receive_data(b"-ERR [XCLIENT] busy\r\n") == LoginFailed(
        None, "error", 'upstream sent invalid response: "-ERR [XCLIENT] busy"')


def test_xclient_leaves_out_what_is_unknown_or_not_one_word():
    odd = ClientIdentity(session_id='a "b', client_ip="2001:db8::7", client_port=1,
                         local_ip=None, local_port=None)
    assert xclient_command(odd) == b"XCLIENT ADDR=2001:db8::7 PORT=1\r\n"
    assert xclient_command(ClientIdentity(session_id='q"\\x')) == b'XCLIENT SESSION=q"\\x\r\n'
