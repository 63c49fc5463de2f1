"""MockAuthServer: exact requests in, exact replies out, over raw sockets."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme
from postern.fakes.auth import AuthRequest, Faults, MockAuthServer, Reply, User, cli, unescape
from postern.fakes.script import build_auth, parse_script

from tests.fake_support import ask

ROOT = Path(__file__).resolve().parents[1]
IMAP = ("127.0.0.1", 1143)
POP3 = ("127.0.0.1", 1110)
SMTP = ("127.0.0.1", 1025)
SALT = "<4711.1700000000@mx.test>"
OK_IMAP = b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 1143\r\n\r\n"
FAIL = b"HTTP/1.0 200 OK\r\nAuth-Status: Invalid login or password\r\n\r\n"


def nginx_escape(value: str) -> str:
    """nginx's escaping of Auth-User/Auth-Pass: CTLs, space and % as uppercase %XX."""
    return "".join(f"%{b:02X}" if b <= 0x20 or b == 0x25 else chr(b)
                   for b in value.encode("utf-8")).encode("latin-1").decode("utf-8")


def nginx_request(user: str = "alice", password: str = "secret", method: str = "plain",
                  protocol: str = "imap", attempt: int = 1, salt: str | None = None,
                  extra: tuple[str, ...] = ()) -> bytes:
    """The request exactly as nginx writes it (docs/behaviour.md §10.1 order)."""
    lines = ["GET /auth HTTP/1.0", "Host: localhost", f"Auth-Method: {method}",
             f"Auth-User: {nginx_escape(user)}", f"Auth-Pass: {nginx_escape(password)}"]
    if salt is not None:
        lines.append(f"Auth-Salt: {salt}")
    lines += [f"Auth-Protocol: {protocol}", f"Auth-Login-Attempt: {attempt}",
              "Client-IP: 127.0.0.1", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()



@pytest.fixture
def auth():
    users = {"alice": User("secret", backends={"imap": IMAP, "pop3": POP3, "smtp": SMTP}),
             "bob": "hunter2"}
    with MockAuthServer(users=users, backends={"imap": ("127.0.0.1", 2143), "smtp": SMTP}) as srv:
        yield srv


def test_url_and_loopback_port(auth):
    assert auth.host == "127.0.0.1" and auth.port > 0
    assert auth.url == f"http://127.0.0.1:{auth.port}/auth" and auth.uri_path == "/auth"


def test_plain_success_exact_bytes_and_recording(auth):
    request = nginx_request()
    assert ask(auth, request) == OK_IMAP
    [req] = auth.wait_requests(1)
    assert req.raw == request
    assert (req.method, req.uri, req.version) == ("GET", "/auth", "HTTP/1.0")
    assert req.headers[:5] == [("Host", "localhost"), ("Auth-Method", "plain"),
                               ("Auth-User", "alice"), ("Auth-Pass", "secret"),
                               ("Auth-Protocol", "imap")]
    assert req.header("auth-login-attempt") == "1" and req.header("Nope") is None
    assert req.reply == OK_IMAP
    assert "secret" not in repr(req)


def test_plain_failure_and_fail_wait():
    with MockAuthServer(users={"alice": "secret"}, fail_wait=3) as auth:
        assert ask(auth, nginx_request(password="wrong")) == (
            b"HTTP/1.0 200 OK\r\nAuth-Status: Invalid login or password\r\nAuth-Wait: 3\r\n\r\n")
        assert ask(auth, nginx_request(user="nobody")).startswith(FAIL[:-2])


def test_unknown_user_and_default_backend(auth):
    assert ask(auth, nginx_request(user="mallory")) == FAIL
    # bob has no backends of his own: the server-wide ones apply.
    assert ask(auth, nginx_request(user="bob", password="hunter2")) == OK_IMAP.replace(
        b"1143", b"2143")
    assert ask(auth, nginx_request(user="bob", password="hunter2", protocol="pop3")) == (
        b"HTTP/1.0 200 OK\r\nAuth-Status: No pop3 backend for this user\r\n\r\n")


def test_smtp_error_code_only_for_smtp():
    with MockAuthServer(users={"alice": "secret"}, smtp_error_code="535 5.7.8") as auth:
        assert ask(auth, nginx_request(password="x", protocol="smtp", extra=(
            "Client-Host: [UNAVAILABLE]",))) == (
            b"HTTP/1.0 200 OK\r\nAuth-Status: Invalid login or password\r\n"
            b"Auth-Error-Code: 535 5.7.8\r\n\r\n")
        assert ask(auth, nginx_request(password="x")) == FAIL


def test_escaped_credentials_are_unescaped():
    user, password = "a b%c", "p\tw %\r\n"
    with MockAuthServer(users={user: User(password, backends={"imap": IMAP})}) as auth:
        request = nginx_request(user=user, password=password)
        assert b"Auth-User: a%20b%25c\r\n" in request
        assert b"Auth-Pass: p%09w%20%25%0D%0A\r\n" in request
        assert ask(auth, request) == OK_IMAP
        req = auth.requests[0]
        assert req.header("Auth-User") == "a%20b%25c" and req.user == user
        assert req.password == password
    assert unescape("%41%62c%2") == "Abc%2"


def test_utf8_login_passes_through(auth):
    auth.add_user("jürgen", "pässwörd", backends={"imap": IMAP})
    assert ask(auth, nginx_request(user="jürgen", password="pässwörd")) == OK_IMAP
    assert auth.requests[0].user == "jürgen"


def test_apop_returns_plaintext_password(auth):
    digest = hashlib.md5((SALT + "secret").encode()).hexdigest()
    request = nginx_request(method="apop", password=digest, protocol="pop3", salt=SALT)
    assert ask(auth, request) == (b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n"
                                  b"Auth-Server: 127.0.0.1\r\nAuth-Port: 1110\r\n"
                                  b"Auth-Pass: secret\r\n\r\n")
    assert auth.requests[0].salt == SALT
    bad = nginx_request(method="apop", password="0" * 32, protocol="pop3", salt=SALT)
    assert ask(auth, bad) == FAIL
    garbage = nginx_request(method="apop", password="dïgest", protocol="pop3", salt=SALT)
    assert ask(auth, garbage) == FAIL


def test_cram_md5(auth):
    digest = hmac.new(b"secret", SALT.encode(), hashlib.md5).hexdigest()
    request = nginx_request(method="cram-md5", password=digest, salt=SALT)
    assert ask(auth, request) == OK_IMAP[:-2] + b"Auth-Pass: secret\r\n\r\n"
    wrong = hmac.new(b"other", SALT.encode(), hashlib.md5).hexdigest()
    assert ask(auth, nginx_request(method="cram-md5", password=wrong, salt=SALT)) == FAIL


def test_external_accepts_known_user(auth):
    assert ask(auth, nginx_request(method="external", password="")) == (
        OK_IMAP[:-2] + b"Auth-Pass: secret\r\n\r\n")
    assert ask(auth, nginx_request(user="eve", method="external", password="")) == FAIL


def test_smtp_none_uses_smtp_backend(auth):
    request = nginx_request(user="", password="", method="none", protocol="smtp", extra=(
        "Client-Host: [UNAVAILABLE]", "Auth-SMTP-Helo: client.test",
        "Auth-SMTP-From: MAIL FROM:<a@example.test>", "Auth-SMTP-To: RCPT TO:<b@example.test>"))
    assert b"Auth-User: \r\nAuth-Pass: \r\n" in request
    assert ask(auth, request) == (b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n"
                                  b"Auth-Server: 127.0.0.1\r\nAuth-Port: 1025\r\n\r\n")
    req = auth.requests[0]
    assert req.header("Auth-User") == ""
    assert req.header("Auth-SMTP-To") == "RCPT TO:<b@example.test>"


def test_always_send_pass_and_rewrites():
    users = {"alice": User("secret", backends={"imap": IMAP}, backend_user="alice@backend",
                           backend_password="b4ck")}
    with MockAuthServer(users=users) as auth:
        assert ask(auth, nginx_request()) == (OK_IMAP[:-2] + b"Auth-User: alice@backend\r\n"
                                              b"Auth-Pass: b4ck\r\n\r\n")
    with MockAuthServer(users={"alice": User("secret", backends={"imap": IMAP})},
                        always_send_pass=True) as auth:
        assert ask(auth, nginx_request()) == OK_IMAP[:-2] + b"Auth-Pass: secret\r\n\r\n"


def test_per_user_replies_in_order_then_default(auth):
    auth.users["alice"].replies = [Reply.fail("Try later", wait=1), Reply.retry(wait=0)]
    assert ask(auth, nginx_request()) == (b"HTTP/1.0 200 OK\r\nAuth-Status: Try later\r\n"
                                          b"Auth-Wait: 1\r\n\r\n")
    assert ask(auth, nginx_request()) == (b"HTTP/1.0 200 OK\r\nAuth-Status: WAIT\r\n"
                                          b"Auth-Wait: 0\r\n\r\n")
    assert ask(auth, nginx_request()) == OK_IMAP
    assert ask(auth, nginx_request(user="bob", password="hunter2")).endswith(b"2143\r\n\r\n")


def test_per_user_by_attempt(auth):
    auth.users["alice"].by_attempt = {1: Reply.fail("first"), 3: Reply.ok("127.0.0.2", 9)}
    assert b"Auth-Status: first\r\n" in ask(auth, nginx_request(attempt=1))
    assert ask(auth, nginx_request(attempt=2)) == OK_IMAP
    assert ask(auth, nginx_request(attempt=3)) == (
        b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.2\r\nAuth-Port: 9\r\n\r\n")


def test_global_script_overrides_everything(auth):
    auth.users["alice"].replies = [Reply.fail("per-user")]
    auth.handler = lambda req: Reply.fail("handler")
    auth.push(Reply.ok("127.0.0.9", 1), Reply(status="anything", server="x", port="y",
                                            user="u", password="p", wait="w", error_code="e"))
    assert ask(auth, nginx_request(user="mallory", password="")).endswith(
        b"Auth-Server: 127.0.0.9\r\nAuth-Port: 1\r\n\r\n")
    assert ask(auth, nginx_request()) == (
        b"HTTP/1.0 200 OK\r\nAuth-Status: anything\r\nAuth-Server: x\r\nAuth-Port: y\r\n"
        b"Auth-User: u\r\nAuth-Pass: p\r\nAuth-Wait: w\r\nAuth-Error-Code: e\r\n\r\n")
    assert b"Auth-Status: handler" in ask(auth, nginx_request())
    auth.handler = None
    assert b"Auth-Status: per-user" in ask(auth, nginx_request())


def test_handler_sees_request(auth):
    seen: list[AuthRequest] = []
    auth.handler = lambda req: seen.append(req) or None  # falls through to the default
    assert ask(auth, nginx_request()) == OK_IMAP
    assert seen[0].user == "alice" and seen[0].protocol == "imap"


def test_reply_shapes(auth):
    auth.push(Reply.default(headers=["X-Extra: 1", "Bad_Name: 2"], http_status="HTTP/1.0 500 Oops"),
              Reply.ok("127.0.0.1", 1143, http_status=None, eol="\n", body=b"ignored"),
              Reply.verbatim(b"Auth-Status: OK\rjunk"),
              Reply(server="127.0.0.1", port=1143))
    assert ask(auth, nginx_request()) == (
        b"HTTP/1.0 500 Oops\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 1143\r\n"
        b"X-Extra: 1\r\nBad_Name: 2\r\n\r\n")
    assert ask(auth, nginx_request()) == (
        b"Auth-Status: OK\nAuth-Server: 127.0.0.1\nAuth-Port: 1143\n\nignored")
    assert ask(auth, nginx_request()) == b"Auth-Status: OK\rjunk"
    assert ask(auth, nginx_request()) == (
        b"HTTP/1.0 200 OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 1143\r\n\r\n")


def test_default_with_overrides_keeps_checking_credentials(auth):
    auth.push(Reply.default(wait=2), Reply.default(status="WAIT"))
    assert ask(auth, nginx_request(password="bad")) == (
        b"HTTP/1.0 200 OK\r\nAuth-Status: Invalid login or password\r\nAuth-Wait: 2\r\n\r\n")
    assert ask(auth, nginx_request()) == OK_IMAP.replace(b"Status: OK", b"Status: WAIT")


def test_oversize_pads_past_nginx_buffer(auth):
    auth.push(Reply.default(oversize=True), Reply.default(oversize=1024),
              Reply.default(oversize=1025))
    big = ask(auth, nginx_request())
    assert len(big) == 1100 and big.startswith(b"HTTP/1.0 200 OK\r\nX-Padding: xxx")
    assert big.endswith(b"\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 1143\r\n\r\n")
    assert len(ask(auth, nginx_request())) == 1024
    assert len(ask(auth, nginx_request())) == 1025
    with pytest.raises(ValueError):
        Reply.ok("127.0.0.1", 1, oversize=80).render()  # 6 bytes short: no room


def test_drop_and_close_early(auth):
    auth.push(Reply.hang_up(), Reply.default(close_early=10), Reply.default(close_early=True))
    assert ask(auth, nginx_request()) == b""
    assert ask(auth, nginx_request()) == OK_IMAP[:10]
    assert ask(auth, nginx_request()) == OK_IMAP[:len(OK_IMAP) // 2]
    assert [r.reply for r in auth.requests] == [b"", OK_IMAP[:10], OK_IMAP[:len(OK_IMAP) // 2]]


def test_delay_and_trickle(auth):
    auth.push(Reply.default(delay=0.3), Reply.fail("slow", trickle=0.002))
    with socket.create_connection((auth.host, auth.port), timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(nginx_request())
        sock.settimeout(0.1)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # nothing before the delay ends
        sock.settimeout(5)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert data == OK_IMAP and time.monotonic() - start >= 0.3
    # The request is recorded before the delayed answer goes out.
    assert auth.wait_requests(1)[0].reply == OK_IMAP
    assert ask(auth, nginx_request()) == b"HTTP/1.0 200 OK\r\nAuth-Status: slow\r\n\r\n"


def test_wait_requests_times_out(auth):
    with pytest.raises(TimeoutError):
        auth.wait_requests(1, timeout=0.1)


def test_requests_log_masks_password_and_logs_never_show_it(tmp_path, caplog):
    path = tmp_path / "requests.jsonl"
    caplog.set_level(logging.DEBUG, logger="postern.fakes.auth")
    with MockAuthServer(users={"alice": User("s3cr3t!", backends={"imap": IMAP})},
                        requests_log=path) as auth:
        ask(auth, nginx_request(password="s3cr3t!"))
        ask(auth, nginx_request(password="wr0ng!"))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["status"] for x in lines] == ["OK", "Invalid login or password"]
    assert ["Auth-Pass", "***"] in lines[0]["headers"]
    assert lines[0]["headers"][0] == ["Host", "localhost"] and lines[0]["uri"] == "/auth"
    text = path.read_text() + caplog.text
    assert "s3cr3t!" not in text and "wr0ng!" not in text
    assert "alice" in caplog.text


def test_async_start_stop_in_running_loop():
    async def scenario() -> list[AuthRequest]:
        srv = MockAuthServer(users={"alice": User("secret", backends={"imap": IMAP})})
        await srv.start()
        try:
            reader, writer = await asyncio.open_connection(srv.host, srv.port)
            writer.write(nginx_request())
            assert await reader.read() == OK_IMAP
            writer.close()
            return await srv.async_wait_requests(1)
        finally:
            await srv.stop()

    assert asyncio.run(scenario())[0].user == "alice"


def test_cli(tmp_path):
    log = tmp_path / "req.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "postern.fakes.auth", "--listen", "127.0.0.1:0", "--user", "alice:pa:ss",
         "--backend", "imap=127.0.0.1:1143", "--requests-log", str(log), "--fail-wait", "2",
         "--token", "alice:tok-a"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        banner = proc.stdout.readline().decode()
        assert banner.startswith("auth_http listening on http://127.0.0.1:")
        port = int(banner.rsplit(":", 1)[1].split("/")[0])
        srv = MockAuthServer(port=port)  # only for ask()'s host/port
        assert ask(srv, nginx_request(password="pa:ss")) == OK_IMAP
        assert ask(srv, nginx_request(password="nope")).endswith(b"Auth-Wait: 2\r\n\r\n")
        assert ask(srv, nginx_request(password="tok-a", method="xoauth2")) == OK_IMAP
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert b"pa:ss" not in out + err and b"nope" not in out + err and b"tok-a" not in out + err
    assert len(log.read_text().splitlines()) == 3
    assert "tok-a" not in log.read_text()


def test_fail_wait_stops_after_the_given_attempts():
    """nginx's advice: Auth-Wait keeps the client for a retry; past N attempts none is sent,
    so the proxy closes the connection."""
    with MockAuthServer(users={"alice": "secret"}, fail_wait=1, fail_wait_attempts=2) as auth:
        for attempt in (1, 2):
            assert b"Auth-Wait: 1\r\n" in ask(auth, nginx_request(password="x", attempt=attempt))
        assert ask(auth, nginx_request(password="x", attempt=3)) == (
            b"HTTP/1.0 200 OK\r\nAuth-Status: Invalid login or password\r\n\r\n")


@pytest.mark.parametrize("method", ["xoauth2", "oauthbearer"])
def test_bearer_tokens_from_the_user_or_the_token_table(method):
    users = {"alice": User("secret", backends={"imap": IMAP}, tokens=["tok-a"]),
             "bob": User("hunter2", backends={"imap": IMAP})}
    with MockAuthServer(users=users, tokens={"tok-b": "bob"}) as srv:
        assert ask(srv, nginx_request("alice", "tok-a", method)) == OK_IMAP
        assert ask(srv, nginx_request("alice", "secret", method)) == FAIL  # not a token
        assert ask(srv, nginx_request("bob", "tok-b", method)) == OK_IMAP
        assert ask(srv, nginx_request("alice", "tok-b", method)) == FAIL  # bob's token
        assert ask(srv, nginx_request("alice", "tok-a", "plain")) == FAIL
        # no user (an OAUTHBEARER without authzid): the token names it, Auth-User says whom
        assert ask(srv, nginx_request("", "tok-b", method)) == (
            OK_IMAP[:-2] + b"Auth-User: bob\r\n\r\n")
        assert ask(srv, nginx_request("", "tok-a", method)) == FAIL


# -- beyond nginx's client: keep-alive and its close_after fault ----------------------------

def _read_reply(sock: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes]:
    """One Content-Length-framed reply (and what came after it)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            return buf, b""
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(rest) < length:
        rest += sock.recv(4096)
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


def http11(req: bytes) -> bytes:
    return req.replace(b" HTTP/1.0\r\n", b" HTTP/1.1\r\n", 1)


def test_keepalive_answers_http11_requests_on_one_connection():
    with MockAuthServer({"alice": User("secret", backends={"imap": IMAP})},
                        keepalive=True) as srv, \
            socket.create_connection((srv.host, srv.port), timeout=5) as sock:
        buf = b""
        for _ in range(3):
            sock.sendall(http11(nginx_request()))
            reply, buf = _read_reply(sock, buf)
            assert reply == OK_IMAP.replace(b"HTTP/1.0", b"HTTP/1.1").replace(
                b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n")
        assert srv.connections == 1 and len(srv.requests) == 3


@pytest.mark.parametrize("keepalive,request_bytes", [
    (False, http11(nginx_request())),  # the switch is off: one reply, then close
    (True, nginx_request()),  # HTTP/1.0: closed as nginx expects
    (True, http11(nginx_request()).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")),
])
def test_keepalive_only_when_switched_on_and_asked_for(keepalive, request_bytes):
    with MockAuthServer({"alice": User("secret", backends={"imap": IMAP})},
                        keepalive=keepalive) as srv:
        reply = ask(srv, request_bytes)
        assert b"Content-Length" not in reply and reply.startswith(b"HTTP/1.0 200 OK\r\n")


def test_close_after_fault_closes_unannounced():
    with MockAuthServer({"alice": User("secret", backends={"imap": IMAP})}, keepalive=True,
                        faults=Faults(close_after=2)) as srv, \
            socket.create_connection((srv.host, srv.port), timeout=5) as sock:
        buf = b""
        for _ in range(2):
            sock.sendall(http11(nginx_request()))
            reply, buf = _read_reply(sock, buf)
            assert b"Connection: close" not in reply
        assert sock.recv(100) == b""  # closed after the second reply


def test_script_keys_for_keepalive_and_close_after():
    script = parse_script({"auth": {"keepalive": True, "faults": {"close_after": 3}}})
    assert script.auth.keepalive and script.auth.faults.close_after == 3
    srv = build_auth(script)
    assert srv.keepalive and srv.faults.close_after == 3


def test_auth_mock_command_line_keepalive_and_https(tmp_path, capsys):
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    args = ["--listen", "127.0.0.1:9100", "--keepalive", "--close-after", "5",
            "--tls-cert", str(tmp_path / "c.pem"), "--tls-key", str(tmp_path / "k.pem")]
    srv = cli._server(cli.build_parser().parse_args(args))
    assert srv.keepalive and srv.faults.close_after == 5 and srv.ssl_context is not None
    assert cli.main([*args, "--print-nginx"]) == 0
    assert capsys.readouterr().out == "auth_http https://127.0.0.1:9100/auth;\n"
    assert cli.main(["--tls-cert", str(tmp_path / "c.pem"), "--print-nginx"]) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err
