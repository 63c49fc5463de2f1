"""The auth_http exchange without sockets: request bytes out, reply bytes in, decisions out
(proxy.auth_exchange), for the rules nginx's ngx_mail_auth_http_module applies to a reply."""

from __future__ import annotations

import base64

import pytest
from postern.proxy.auth_exchange import (
    WAIT_REPEATS_AT_ONCE,
    AuthExchange,
    Fail,
    InternalError,
    Proceed,
    Retry,
)
from postern.proxy.conf.settings import ServerSettings
from postern.proxy.imap.dialogue import ImapDialogue
from postern.proxy.pop3.dialogue import Pop3Dialogue
from postern.proxy.protocols import PROTOCOLS
from postern.proxy.smtp.dialogue import SmtpDialogue

from tests.dialogue_support import AUTH_HTTP, server_settings, until_authenticate

PEER = "127.0.0.1:9000"


def _conf(protocol: str, **kw) -> ServerSettings:
    return server_settings(protocol, 1000, **kw)



def _exchange(protocol: str = "imap", data: bytes = b"a1 LOGIN alice secret\r\n",
              timeout: float = 60.0, **conf) -> AuthExchange:
    cls = {"imap": ImapDialogue, "pop3": Pop3Dialogue, "smtp": SmtpDialogue}[protocol]
    machine = until_authenticate(cls(_conf(protocol, **conf)), data)
    return AuthExchange(AUTH_HTTP, (), PROTOCOLS[protocol], machine, "192.0.2.7", None, timeout)


def _reply(*headers: str) -> bytes:
    return ("HTTP/1.0 200 OK\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


OK = _reply("Auth-Status: OK", "Auth-Server: 127.0.0.1", "Auth-Port: 143")


def test_request_bytes_and_a_success():
    ex = _exchange()
    assert ex.request() == (
        b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: alice\r\n"
        b"Auth-Pass: secret\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\n"
        b"Client-IP: 192.0.2.7\r\n\r\n")
    assert ex.receive_data(OK) == Proceed("127.0.0.1", 143, b"alice", b"secret")


def test_a_reply_in_pieces_decides_once_whole():
    ex = _exchange()
    ex.request()
    for i in range(len(OK) - 1):
        assert ex.receive_data(OK[i:i + 1]) is None
    assert isinstance(ex.receive_data(OK[-1:]), Proceed)
    assert ex.response is not None and ex.response.port == b"143"


def test_auth_user_and_auth_pass_rewrite_the_credentials():
    ex = _exchange()
    ex.request()
    reply = _reply("Auth-Status: WAIT", "Auth-Wait: 1", "Auth-User: a%20b", "Auth-Pass: other")
    assert ex.receive_data(reply) == Retry(1)
    assert b"Auth-User: a%2520b\r\nAuth-Pass: other\r\n" in ex.request()
    assert ex.receive_data(OK) == Proceed("127.0.0.1", 143, b"a%20b", b"other")


SMTP_PLAIN = b"EHLO c\r\nAUTH PLAIN " + base64.b64encode(b"\0u\0p") + b"\r\n"


@pytest.mark.parametrize(("protocol", "data", "headers", "line", "status"), [
    ("imap", b"a1 LOGIN alice secret\r\n", ["Auth-Status: Bad login"], b"a1 NO Bad login\r\n",
     b"Bad login"),
    ("imap", b"a1 LOGIN alice secret\r\n", ["Auth-Status:"], b"a1 NO \r\n", b""),
    ("pop3", b"USER bob\r\nPASS x\r\n", ["Auth-Status: No way"], b"-ERR No way\r\n",
     b"No way"),
    ("smtp", SMTP_PLAIN, ["Auth-Status: Bad"], b"535 5.7.0 Bad\r\n", b"Bad"),
    ("smtp", SMTP_PLAIN, ["Auth-Status: Bad", "Auth-Error-Code: 451 4.3.0"],
     b"451 4.3.0 Bad\r\n", b"Bad"),
])
def test_failure_lines(protocol, data, headers, line, status):
    ex = _exchange(protocol, data)
    ex.request()
    assert ex.receive_data(_reply(*headers)) == Fail(line, status, 0)


def test_failure_after_auth_wait_and_failure_with_wait():
    ex = _exchange()
    ex.request()
    assert ex.receive_data(_reply("Auth-Status: Bad", "Auth-Wait: 3")) == \
        Fail(b"a1 NO Bad\r\n", b"Bad", 3, retry=False)
    # Auth-Status said WAIT, then (the last one wins for the text) a failure: nginx sleeps,
    # then asks again
    ex.request()
    reply = _reply("Auth-Status: WAIT", "Auth-Status: Bad", "Auth-Wait: 2")
    assert ex.receive_data(reply) == Fail(b"a1 NO Bad\r\n", b"Bad", 2, retry=True)
    assert ex.auth_wait is False


def test_smtp_empty_status_is_no_failure():
    """nginx's SMTP takes an empty Auth-Status for a success and looks for the backend."""
    ex = _exchange("smtp", SMTP_PLAIN)
    ex.request()
    assert ex.receive_data(_reply("Auth-Status:")) == InternalError(
        f"auth http server {PEER} did not send server or port")


def test_wait_without_auth_wait_is_bounded():
    ex = _exchange(timeout=3.0)
    wait = _reply("Auth-Status: WAIT")
    decisions = []
    for _ in range(WAIT_REPEATS_AT_ONCE + 4):
        ex.request()
        decisions.append(ex.receive_data(wait))
    assert decisions == [Retry(0)] * WAIT_REPEATS_AT_ONCE + [Retry(1.0)] * 3 + [
        InternalError(f"auth http server {PEER} kept answering WAIT without Auth-Wait")]


def test_a_delayed_wait_starts_the_count_again():
    ex = _exchange(timeout=3.0)
    for _ in range(WAIT_REPEATS_AT_ONCE):
        ex.request()
        assert ex.receive_data(_reply("Auth-Status: WAIT")) == Retry(0)
    ex.request()
    assert ex.receive_data(_reply("Auth-Status: WAIT", "Auth-Wait: 1")) == Retry(1)
    for _ in range(WAIT_REPEATS_AT_ONCE):
        ex.request()
        assert ex.receive_data(_reply("Auth-Status: WAIT")) == Retry(0)
    ex.request()
    assert ex.receive_data(_reply("Auth-Status: WAIT")) == Retry(1.0)


def test_a_failure_without_auth_wait_closes_even_after_wait():
    ex = _exchange()
    ex.request()
    reply = _reply("Auth-Status: WAIT", "Auth-Status: Bad")
    assert ex.receive_data(reply) == Fail(b"a1 NO Bad\r\n", b"Bad", 0, retry=False)


def test_wait_flag_sticks_until_a_sleep():
    """s->auth_wait is cleared only by a sleep: after a WAIT without Auth-Wait even an OK is
    asked again, until a reply with Auth-Wait."""
    ex = _exchange()
    ex.request()
    assert ex.receive_data(_reply("Auth-Status: WAIT")) == Retry(0)
    ex.request()
    assert ex.receive_data(OK) == Retry(0)
    ex.request()
    assert ex.receive_data(_reply("Auth-Wait: 1")) == Retry(1)
    ex.request()
    assert isinstance(ex.receive_data(OK), Proceed)


def test_password_forgotten_once_the_salt_was_sent():
    conf = {"pop3_auth": frozenset({"plain", "apop"})}
    ex = _exchange("pop3", b"APOP bob " + b"0" * 32 + b"\r\n", **conf)
    request = ex.request()
    assert b"Auth-Method: apop\r\n" in request and b"Auth-Salt: <" in request
    assert ex.creds.password is None
    assert ex.receive_data(OK) == InternalError(
        f"auth http server {PEER} did not send password")
    ex.request()
    assert ex.receive_data(OK[:-2] + b"Auth-Pass: pw\r\n\r\n") == \
        Proceed("127.0.0.1", 143, b"bob", b"pw")


def test_smtp_needs_no_password():
    ex = _exchange("smtp", b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n",
                   smtp_auth=frozenset({"none"}))
    request = ex.request()
    assert b"Auth-Method: none\r\nAuth-User: \r\nAuth-Pass: \r\n" in request
    assert b"Auth-SMTP-Helo: c\r\n" in request and b"Client-Host: [UNAVAILABLE]\r\n" in request
    assert ex.receive_data(OK) == Proceed("127.0.0.1", 143, b"", None)


@pytest.mark.parametrize(("headers", "decision"), [
    (["Auth-Status: OK", "Auth-Server: 127.0.0.1", "Auth-Port: +143"],
     InternalError(f'auth http server {PEER} sent invalid server port:"+143"')),
    (["Auth-Status: OK", "Auth-Server: 127.0.0.1", "Auth-Port: \u0661\u0664\u0663"],
     InternalError(f'auth http server {PEER} sent invalid server port:"'
                   + "\u0661\u0664\u0663".encode().decode("latin-1") + '"')),
    # ngx_atoi() refuses these: the Auth-Wait is ignored and the failure closes at once
    (["Auth-Status: Bad", "Auth-Wait: \u0663"], Fail(b"a1 NO Bad\r\n", b"Bad", 0)),
    (["Auth-Status: Bad", "Auth-Wait: 9223372036854775808"], Fail(b"a1 NO Bad\r\n", b"Bad", 0)),
    (["Auth-Status: Bad", "Auth-Wait: 9223372036854775807"],
     Fail(b"a1 NO Bad\r\n", b"Bad", 9223372036854775807)),
    (["Auth Status: OK"], InternalError(f"auth http server {PEER} sent invalid header in response")),
])
def test_ngx_atoi_and_header_rules(headers, decision):
    ex = _exchange()
    ex.request()
    assert ex.receive_data(_reply(*headers)) == decision


def test_overflow_and_eof_end_without_a_log_line():
    ex = _exchange()
    ex.request()
    assert ex.receive_data(b"HTTP/1.0 200 OK\r\nX-Pad: " + b"x" * 1100) == InternalError("")
    ex.request()
    assert ex.receive_data(b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n") is None
    assert ex.receive_eof() == InternalError("")


def test_proxy_protocol_and_ssl_headers_go_into_the_request():
    machine = until_authenticate(ImapDialogue(_conf("imap")), b"a1 LOGIN alice secret\r\n")
    ex = AuthExchange(AUTH_HTTP, (("X-Extra", "1"),), PROTOCOLS["imap"], machine, "192.0.2.7",
                      ("198.51.100.1", 5000, "203.0.113.2", 143), 60.0)
    request = ex.request([("Auth-SSL", b"on")])
    assert request.endswith(
        b"Client-IP: 192.0.2.7\r\nProxy-Protocol-Addr: 198.51.100.1\r\n"
        b"Proxy-Protocol-Port: 5000\r\nProxy-Protocol-Server-Addr: 203.0.113.2\r\n"
        b"Proxy-Protocol-Server-Port: 143\r\nAuth-SSL: on\r\nX-Extra: 1\r\n\r\n")
