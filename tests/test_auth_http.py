"""auth_http request bytes and nginx's reading of replies (docs/behaviour.md §10)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from postern.proxy.auth_http import (
    AuthRequest,
    AuthServerError,
    build_request,
    escape,
    parse_response,
)
from postern.proxy.conf.settings import AuthHttp

from tests.dialogue_support import AUTH_HTTP

CONF = AUTH_HTTP


def test_escaping_only_controls_space_and_percent():
    assert escape(b"a b%c\r\n") == b"a%20b%25c%0D%0A"
    assert escape(b'+"\x7f\xc3\xa9') == b'+"\x7f\xc3\xa9'


def test_request_matches_nginx_capture():
    req = AuthRequest(method="plain", user=b'us er%"x', password=b"p\\w", protocol="imap",
                      attempt=1, client_ip="127.0.0.1")
    assert build_request(CONF, (), req) == (
        b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\n"
        b'Auth-User: us%20er%25"x\r\nAuth-Pass: p\\w\r\nAuth-Protocol: imap\r\n'
        b"Auth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n")


def test_salt_after_pass_and_custom_headers_last():
    req = AuthRequest(method="cram-md5", user=b"u", password=b"0" * 32, protocol="imap",
                      attempt=2, client_ip="::1", salt=b"<1.2@mx>\r\n")
    out = build_request(CONF, (("X-Secret", "s3"),), req)
    assert b"Auth-Pass: " + b"0" * 32 + b"\r\nAuth-Salt: <1.2@mx>\r\nAuth-Protocol" in out
    assert out.endswith(b"Client-IP: ::1\r\nX-Secret: s3\r\n\r\n")


def test_status_code_ignored_and_last_header_wins():
    r = parse_response(b"HTTP/1.0 500 Oops\r\nAuth-Status: OK\r\nAuth-Server: 10.0.0.1\r\n"
                       b"Auth-Server: 127.0.0.1\r\nAuth-Port: 143\r\n\r\nbody", "p")
    assert r.error is None and r.backend("p") == ("127.0.0.1", 143)


def test_headers_without_status_line_and_bare_lf():
    r = parse_response(b"auth-status: Bad  pass  \nAuth-Wait: 3\n\n", "p")
    assert r.error == b"Bad  pass" and r.wait == 3


def test_incomplete_returns_none():
    assert parse_response(b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n", "p") is None
    assert parse_response(b"HTT", "p") is None


@pytest.mark.parametrize("raw,msg", [
    (b"Auth_Status: OK\r\n\r\n", "sent invalid header in response"),
    (b"Auth-Status : OK\r\n\r\n", "sent invalid header in response"),
    (b"HTTP/1.0 200\rX", "sent invalid response"),
    (b"Auth-Status: OK\rX\r\n\r\n", "sent invalid header in response"),
])
def test_malformed_replies(raw, msg):
    with pytest.raises(AuthServerError, match=msg):
        parse_response(raw, "127.0.0.1:9000")


@pytest.mark.parametrize("server,port,msg", [
    (b"localhost", b"143", 'sent invalid server address:"localhost"'),
    (b"127.0.0.1", b"0", 'sent invalid server port:"0"'),
    (b"127.0.0.1", b"x", 'sent invalid server port:"x"'),
    (b"", b"143", "did not send server or port"),
])
def test_backend_validation(server, port, msg):
    r = parse_response(b"Auth-Status: OK\r\nAuth-Server: %s\r\nAuth-Port: %s\r\n\r\n"
                       % (server, port), "a")
    with pytest.raises(AuthServerError, match=msg):
        r.backend("a")


def test_wait_and_name_without_colon():
    r = parse_response(b"Auth-Status: WAIT\r\nAuth-Wait: x\r\nNoColon\r\n\r\n", "p")
    assert r.wait_status and r.wait == 0 and r.error is None


# -- query(): the I/O failures and nginx's log lines for them (docs/behaviour.md §10.6) -------------------

def _serve_once(reply: bytes | None, delay: float = 0.0):
    """A one-shot auth server on a free loopback port; returns (conf, server)."""
    import asyncio

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(delay)
        if reply is not None:
            writer.write(reply)
            await writer.drain()
        writer.close()

    async def start():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conf = AuthHttp(text=f"127.0.0.1:{port}/auth", host_header="127.0.0.1", uri="/auth",
                        addr="127.0.0.1", port=port)
        return conf, server
    return start


def _query(reply: bytes | None, delay: float = 0.0, timeout: float = 2.0):
    import asyncio

    from postern.proxy.auth_http import query

    async def main():
        conf, server = await _serve_once(reply, delay)()
        async with server:
            return await query(conf, b"GET /auth HTTP/1.0\r\n\r\n", timeout)
    return asyncio.run(main())


def test_query_reads_a_reply():
    r = _query(b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\n"
               b"Auth-Port: 143\r\n\r\n")
    assert r.backend("p") == ("127.0.0.1", 143)


@pytest.mark.parametrize("reply", [
    None,  # closed without a reply
    b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n",  # EOF inside the header block
    b"HTTP/1.0 200 OK\r\nX-Pad: " + b"x" * 1100 + b"\r\n\r\n",  # over the 1024-byte buffer
])
def test_query_eof_and_overflow_fail_without_a_log_line(reply):
    # nginx's recv() of 0 bytes: internal error, nothing logged
    with pytest.raises(AuthServerError) as err:
        _query(reply)
    assert str(err.value) == ""


def test_query_timeout_logs_etimedout():
    with pytest.raises(AuthServerError) as err:
        _query(b"Auth-Status: OK\r\n\r\n", delay=1.0, timeout=0.2)
    assert str(err.value).endswith(" timed out (110: Connection timed out)")
    assert str(err.value).startswith("auth http server 127.0.0.1:")


def test_query_refused_logs_like_nginx_recv():
    import asyncio
    import socket

    from postern.proxy.auth_http import query

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = AuthHttp(text=f"127.0.0.1:{port}", host_header="127.0.0.1", uri="/",
                    addr="127.0.0.1", port=port)
    with pytest.raises(AuthServerError) as err:
        asyncio.run(query(conf, b"GET / HTTP/1.0\r\n\r\n", 2.0))
    assert str(err.value) == "recv() failed (111: Connection refused)"


# the one-step reading of well-formed header lines must read exactly what the byte-by-byte
# reading (nginx's parser) reads, wherever it applies
_PIECES = [b"Auth-Status", b"Auth-Server", b"Auth-Port", b"X-a", b"-x", b"a_b", b":", b": ",
           b" ", b"OK", b"127.0.0.1", b"143", b"\r\n", b"\n", b"\r", b"\rx", b"\x00", b"%",
           b"HTTP/1.0 200 OK\r\n", b"\xff"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=14))
def test_header_lines_read_alike_in_one_step_and_byte_by_byte(pieces):
    import re

    from postern.proxy import auth_http

    data = b"".join(pieces)

    def outcome():
        try:
            return repr(auth_http.parse_response(data, "peer"))
        except auth_http.AuthServerError as exc:
            return f"error {exc}"

    fast = outcome()
    saved = auth_http._WELL_FORMED_LINE
    auth_http._WELL_FORMED_LINE = re.compile(rb"(?!)")  # never matches
    try:
        slow = outcome()
    finally:
        auth_http._WELL_FORMED_LINE = saved
    assert fast == slow
