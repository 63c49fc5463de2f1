"""Script files (fakes/script.py): every example is loaded and exercised, the stack of fakes
(fakes/stack.py) runs from them, and format mistakes are reported with their key path."""

from __future__ import annotations

import asyncio
import imaplib
import json
import logging
import os
import poplib
import re
import signal
import smtplib
import socket
import struct
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest
from postern.fakes import script as script_module
from postern.fakes import stack as stack_module
from postern.fakes.auth import MockAuthServer, Reply
from postern.fakes.auth import cli as auth_module
from postern.fakes.script import ScriptError, build_auth, load_script, parse_script
from postern.fakes.stack import FakeStack
from postern.proxy.auth_http import (
    AuthRequest,
    AuthServerError,
    build_request,
    parse_response,
    query,
)
from postern.proxy.conf.settings import AuthHttp
from postern.scenarios.kit.real.common import free_ports
from postern.scenarios.kit.real.nginx import NginxInstance

from tests.conf_support import load_error
from tests.fake_support import ask as ask_raw

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
MESSAGE = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nHello.\r\n"


def conf_for(auth: MockAuthServer) -> AuthHttp:
    return AuthHttp(text=f"{auth.host}:{auth.port}", host_header=auth.host,
                    uri=auth.uri_path, addr=auth.host, port=auth.port)


def request(auth: MockAuthServer, user: str = "alice", password: str = "secret",
            protocol: str = "imap", attempt: int = 1, method: str = "plain") -> bytes:
    """The request exactly as the proxy builds it."""
    req = AuthRequest(method=method, user=user.encode(), password=password.encode(),
                      protocol=protocol, attempt=attempt, client_ip="127.0.0.1",
                      client_host="[UNAVAILABLE]" if protocol == "smtp" else None,
                      smtp_helo=b"client.test", smtp_from=b"MAIL FROM:<a@example.test>",
                      smtp_to=b"RCPT TO:<b@example.test>")
    return build_request(conf_for(auth), (), req)


def ask(auth: MockAuthServer, *args, timeout: float = 10.0, **kw):
    """Send one request the way the proxy does and read the answer with its parser."""
    return asyncio.run(query(conf_for(auth), request(auth, *args, **kw), timeout))



# -- examples/auth-mock.toml ----------------------------------------------------------------------

@pytest.fixture
def mock(tmp_path):
    script = load_script(EXAMPLES / "auth-mock.toml")
    with build_auth(script, listen=("127.0.0.1", 0),
                    requests_log=tmp_path / "requests.jsonl") as auth:
        yield auth


def test_auth_mock_example_plain_user_and_settings(mock):
    for proto, port in (("imap", 1143), ("pop3", 1110), ("smtp", 2525)):
        resp = ask(mock, protocol=proto)
        assert resp.error is None and resp.backend("peer") == ("127.0.0.1", port)
    wrong = ask(mock, password="nope")
    assert (wrong.error, wrong.wait) == (b"Invalid login or password", 2)
    assert ask(mock, password="nope", protocol="smtp").error_code == b"535 5.7.8"
    late = ask(mock, password="nope", attempt=4)
    assert (late.error, late.wait) == (b"Too many failed logins, try again later", 5)


def test_auth_mock_example_rewrite_locked_wait_and_smtp_code(mock):
    bob = ask(mock, "bob", "hunter2")
    assert bob.user == b"bob@example.test" and bob.backend("p") == ("127.0.0.1", 1143)
    locked = ask(mock, "carol", "correct horse")
    assert (locked.error, locked.wait) == (b"Mailbox is locked by another session", 3)
    assert ask(mock, "carol", "correct horse", attempt=2).backend("p") == ("127.0.0.1", 1143)
    first = ask(mock, "dave", "letmein", protocol="pop3")
    assert first.wait_status and first.wait == 1 and first.error is None
    again = ask(mock, "dave", "letmein", protocol="pop3")  # nginx repeats the same request
    assert not again.wait_status and again.backend("p") == ("127.0.0.1", 1110)
    erin = ask(mock, "erin", "s3cret", protocol="smtp")
    assert (erin.error, erin.error_code, erin.wait) == (b"Sending quota exceeded",
                                                        b"451 4.7.1", 1)
    assert ask(mock, "erin", "s3cret", protocol="smtp").backend("p") == ("127.0.0.1", 2525)


def test_requests_log_is_what_the_proxy_sent_with_the_password_masked(mock, tmp_path):
    sent = request(mock, "bob", "hunter2", protocol="smtp")
    ask_raw(mock, sent)
    ask_raw(mock, request(mock, "b\xf6b", "x").replace("b\xf6b".encode(), b"b\xf6b"))
    lines = (tmp_path / "requests.jsonl").read_text(encoding="utf-8").splitlines()
    entry = json.loads(lines[0])
    headers = [line.split(": ", 1) for line in sent.decode().split("\r\n")[1:] if line]
    assert entry["headers"] == [[n, "***" if n == "Auth-Pass" else v] for n, v in headers]
    assert (entry["method"], entry["uri"], entry["status"]) == ("GET", "/auth", "OK")
    assert "hunter2" not in lines[0]
    # a login that is not UTF-8 (nginx passes bytes >= 0x80 through) is still logged
    odd = json.loads(lines[1])
    assert ["Auth-User", "b\udcf6b"] in odd["headers"]


def test_auth_mock_cli_runs_a_script(tmp_path):
    log = tmp_path / "req.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "postern", "auth-mock", "--script",
         str(EXAMPLES / "auth-mock.toml"), "--listen", "127.0.0.1:0", "--requests-log",
         str(log), "--quiet"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        banner = proc.stdout.readline().decode()
        nginx_line = proc.stdout.readline().decode()
        assert banner.startswith("auth_http listening on http://127.0.0.1:")
        url = banner.split()[-1]
        assert nginx_line.strip() == f"nginx: auth_http {url};"
        srv = MockAuthServer(port=int(url.rsplit(":", 1)[1].split("/")[0]))
        resp = ask(srv, "carol", "correct horse")
        assert resp.error == b"Mailbox is locked by another session"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert b"correct horse" not in out + err
    assert len(log.read_text().splitlines()) == 1


def test_auth_mock_print_nginx(capsys):
    script = str(EXAMPLES / "auth-mock.toml")
    assert auth_module.main(["--script", script, "--print-nginx"]) == 0
    assert capsys.readouterr().out == "auth_http http://127.0.0.1:9000/auth;\n"
    assert auth_module.main(["--script", script, "--listen", "127.0.0.1:9100", "--uri", "/a",
                             "--print-nginx"]) == 0
    assert capsys.readouterr().out == "auth_http http://127.0.0.1:9100/a;\n"
    assert auth_module.main(["--listen", "127.0.0.1:0", "--print-nginx"]) == 2
    assert "chosen at start" in capsys.readouterr().err


# -- examples/fakes-basic.toml --------------------------------------------------------------------

@pytest.fixture(scope="module")
def basic():
    with FakeStack(load_script(EXAMPLES / "fakes-basic.toml")) as stack:
        yield stack


def test_basic_stack_content_is_shared_between_imap_and_pop3(basic):
    imap = imaplib.IMAP4(basic.imap.host, basic.imap.port, timeout=10)
    imap.login("alice", "secret")
    typ, data = imap.select("INBOX", readonly=True)
    assert typ == "OK" and int(data[0]) == 11  # 10 generated + the 1 MiB one
    _, fetched = imap.fetch("1", "(BODY.PEEK[])")
    _, sizes = imap.fetch("11", "(RFC822.SIZE)")
    imap.logout()
    assert b"RFC822.SIZE 1048576" in sizes[0]
    pop = poplib.POP3(basic.pop3.host, basic.pop3.port, timeout=10)
    pop.user("alice")
    pop.pass_("secret")
    assert pop.stat()[0] == 11
    assert b"\r\n".join(pop.retr(1)[1]) + b"\r\n" == fetched[0][1]
    pop.quit()


def test_basic_stack_upstream_logins_follow_the_rewrite(basic):
    bob = ask(basic.auth, "bob", "hunter2")
    assert bob.user == b"bob@example.test"
    imap = imaplib.IMAP4(basic.imap.host, basic.imap.port, timeout=10)
    assert imap.login("bob@example.test", "hunter2")[0] == "OK"
    imap.logout()
    with pytest.raises(imaplib.IMAP4.error):
        imaplib.IMAP4(basic.imap.host, basic.imap.port, timeout=10).login("bob", "hunter2")


def test_basic_stack_auth_points_at_the_fakes(basic):
    for proto in ("imap", "pop3", "smtp"):
        leg = basic.leg(proto)
        assert ask(basic.auth, protocol=proto).backend("p") == (leg.host, leg.port)
    relay = ask(basic.auth, "", "", protocol="smtp", method="none")
    assert relay.backend("p") == (basic.smtp.host, basic.smtp.port)
    wrong = ask(basic.auth, password="nope", protocol="smtp")
    assert (wrong.error, wrong.wait, wrong.error_code) == (b"Invalid login or password", 1,
                                                           b"535 5.7.8")
    with smtplib.SMTP(basic.smtp.host, basic.smtp.port, timeout=10) as smtp:
        smtp.login("alice", "secret")
        smtp.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
    assert basic.smtp.messages[-1].login == "alice"


def test_banner_lists_every_leg_and_the_mail_block(basic):
    text = basic.banner()
    for proto in ("imap", "pop3", "smtp"):
        leg = basic.leg(proto)
        assert f"{proto:<10} {leg.host}:{leg.port}" in text
    assert f"auth_http {basic.auth.url};" in text
    assert "seed 42: 10 INBOX, 3 Sent, 5 Archive per user" in text
    assert "listen 127.0.0.1:8110;" in text and "smtp_auth login plain;" in text
    assert "secret" not in text and "hunter2" not in text


def _mail_block(stack: FakeStack, ports: list[int]) -> str:
    return stack.nginx_directives({p: f"127.0.0.1:{port}"
                                   for p, port in zip(("imap", "pop3", "smtp"), ports)})


def test_snippet_passes_nginx_t(basic, tmp_path):
    reason = NginxInstance.unavailable_reason()
    if reason:
        pytest.skip(reason)
    mail = _mail_block(basic, free_ports(3))
    status, output = NginxInstance.test_config(NginxInstance.render(mail, tmp_path), tmp_path)
    assert status == 0, output


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def test_postern_runs_the_printed_snippet(basic, tmp_path):
    ports = free_ports(3)
    conf = tmp_path / "postern.conf"
    conf.write_text(f"daemon off;\nworker_processes 1;\npid {tmp_path}/postern.pid;\n"
                    f"error_log {tmp_path}/error.log info;\nevents {{}}\n"
                    f"mail {{\n{_mail_block(basic, ports)}}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "postern", "-p", f"{tmp_path}/", "-c",
                             str(conf)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        for port in ports:
            _wait_listening(port, proc)
        imap = imaplib.IMAP4("127.0.0.1", ports[0], timeout=10)
        imap.login("bob", "hunter2")  # the upstream sees bob@example.test
        assert imap.select("INBOX", readonly=True)[0] == "OK"
        imap.logout()
        pop = poplib.POP3("127.0.0.1", ports[1], timeout=10)
        pop.user("alice")
        pop.pass_("secret")
        assert pop.stat()[0] == 11
        pop.quit()
        with smtplib.SMTP("127.0.0.1", ports[2], timeout=10) as smtp:
            smtp.login("alice", "secret")
            smtp.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
        assert basic.smtp.messages[-1].login == "alice"
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_fakes_cli_prints_the_table_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "postern.fakes.stack", "--script",
                             str(EXAMPLES / "fakes-basic.toml"), "--quiet", "--mail-dir",
                             str(tmp_path / "mail")], cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while (line := proc.stdout.readline()) and line != "}\n":
            lines.append(line)
        text = "".join(lines)
        auth_row = next(x for x in lines if x.startswith("  auth_http"))
        host, port = auth_row.split()[1].split(":")
        assert ask(MockAuthServer(host=host, port=int(port)), "bob", "hunter2").user == \
            b"bob@example.test"
        assert "mail {" in text and f"auth_http http://{host}:{port}/auth;" in text
        smtp_row = next(x for x in lines if x.startswith("  smtp "))
        assert f"every message to {tmp_path}/mail/" in smtp_row
        host, port = smtp_row.split()[1].split(":")
        with smtplib.SMTP(host, int(port), timeout=10) as s:
            s.sendmail("a@example.test", ["x@example.test"], b"Subject: kept\r\n\r\nx\r\n")
        assert (tmp_path / "mail" / "00001.eml").read_bytes() == b"Subject: kept\r\n\r\nx\r\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert proc.returncode == 0


# -- examples/fakes-faulty.toml -------------------------------------------------------------------

@pytest.fixture(scope="module")
def faulty():
    with FakeStack(load_script(EXAMPLES / "fakes-faulty.toml")) as stack:
        yield stack


def test_faulty_imap_late_greeting_untagged_line_and_reset(faulty):
    start = time.monotonic()
    with socket.create_connection((faulty.imap.host, faulty.imap.port), timeout=10) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"* OK ")
        assert time.monotonic() - start >= 0.5  # greeting_delay 1.0
        sock.sendall(b"a1 LOGIN alice secret\r\n")
        assert f.readline() == b"* OK [ALERT] Maintenance tonight at 22:00\r\n"
        assert f.readline().startswith(b"a1 OK")
        for tag in (b"a2", b"a3"):
            sock.sendall(tag + b" NOOP\r\n")
            assert f.readline().startswith(tag + b" OK")
        sock.sendall(b"a4 NOOP\r\n")
        with pytest.raises(ConnectionResetError):  # reset after the 4th command (the RST
            while f.readline():                    # may swallow that command's reply)
                pass


def test_faulty_pop3_rejects_after_user(faulty):
    pop = poplib.POP3(faulty.pop3.host, faulty.pop3.port, timeout=10)
    assert pop.user("alice").startswith(b"+OK")
    with pytest.raises(poplib.error_proto, match=r"IN-USE\] Mailbox is locked"):
        pop.pass_("secret")
    pop.close()


def test_faulty_smtp_drops_after_the_message(faulty):
    start = time.monotonic()
    smtp = smtplib.SMTP(faulty.smtp.host, faulty.smtp.port, timeout=10)
    assert time.monotonic() - start >= 0.2  # greeting_delay 0.5
    with pytest.raises(smtplib.SMTPServerDisconnected):
        smtp.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
    smtp.close()


def test_faulty_auth_stall_close_early_oversize(faulty):
    auth = faulty.auth
    with socket.create_connection((auth.host, auth.port), timeout=0.5) as sock:
        sock.sendall(request(auth, "slow"))
        with pytest.raises(TimeoutError):
            sock.recv(100)  # stalled: no answer, connection kept open
    cut = ask_raw(auth, request(auth, "cut"))
    assert len(cut) == 30 and parse_response(cut, "p") is None  # incomplete for nginx
    with pytest.raises(AuthServerError):
        ask(auth, "big")  # 1100 bytes: past nginx's 1024-byte buffer
    assert len(ask_raw(auth, request(auth, "big"))) < 1024  # the next one is normal
    for user in ("slow", "cut"):
        assert ask(auth, user).backend("p") == (faulty.imap.host, faulty.imap.port)


def test_faulty_auth_trickles_every_second_answer(faulty):
    auth = faulty.auth
    before = len(auth.requests)
    for _ in range(4):
        assert ask(auth).error is None
    trickled = [r.decision.trickle for r in auth.requests[before:]]
    assert sorted(trickled, key=str) == sorted([0.002, 0.002, None, None], key=str)


# -- format errors --------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ('[users.alice]\npassword = "x"\nreplies = [{ stauts = "OK" }]\n',
     "users.alice.replies[1].stauts: unknown key (did you mean 'status'?)"),
    ('[auth]\nfail_wait = "2"\n', "auth.fail_wait: expected an integer, got a string"),
    ('[imap.faults]\ngreeting_delay = "slow"\n',
     "imap.faults.greeting_delay: expected a number, got a string"),
    ("[imap.faults]\nstal = true\n", "imap.faults.stal: unknown key (did you mean 'stall'?)"),
    ('[smtp.faults]\nreplies = { EHLO = 421 }\n',
     "smtp.faults.replies.EHLO: expected a string, got an integer"),
    ('[users.alice]\npassword = "x"\nbackends = { imap = "nowhere" }\n',
     "users.alice.backends.imap: expected HOST:PORT, got 'nowhere'"),
    ('[users.alice]\npassword = "x"\nbackends = { lmtp = "127.0.0.1:24" }\n',
     "users.alice.backends.lmtp: unknown protocol"),
    ("[users.bob]\nreplies = []\n", "users.bob: 'password' is required"),
    ('[users."a b"]\npassword = 1\n', 'users."a b".password: expected a string, got an integer'),
    ('[users.alice]\npassword = "x"\n[users.alice.by_attempt]\nfirst = { status = "OK" }\n',
     "users.alice.by_attempt.first: by_attempt keys are attempt numbers"),
    ("[[queue]]\ndelay = -1\n", "queue[1].delay: must be at least 0, not -1"),
    ('[[queue]]\nbackend = "127.0.0.1:1"\nport = 2\n', "queue[1].backend: give backend or"),
    ("[[queue]]\nheaders = 3\n",
     "queue[1].headers: expected a list of strings or a table of strings, got an integer"),
    ('[content]\nlarge_message = "big"\n', "content.large_message: expected a size"),
    ("[smtp]\ncapabilities = []\n", "smtp.capabilities: unknown key"),
    ("[imapp]\n", "imapp: unknown key (did you mean 'imap'?)"),
    ("queue = 1\n", "queue: expected a list of tables, got an integer"),
    ("[auth.faults]\nevery = 0\n", "auth.faults.every: must be at least 1, not 0"),
    ('[nginx]\nlisten = { imap = "8143" }\n', "nginx.listen.imap: expected HOST:PORT"),
])
def test_format_errors_name_the_key_path(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    error = load_error(path, text, load_script, ScriptError)
    assert error.startswith(f"{path}: ")
    assert message in error


def test_toml_syntax_and_missing_file_errors(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[auth\n")
    with pytest.raises(ScriptError, match=r"broken.toml: .*line 1"):
        load_script(path)
    with pytest.raises(ScriptError, match="No such file"):
        load_script(tmp_path / "missing.toml")


def test_commands_report_script_errors(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[auth]\nfail_wait = "2"\n')
    assert auth_module.main(["--script", str(path)]) == 2
    assert "auth.fail_wait: expected an integer" in capsys.readouterr().err
    assert stack_module.main(["--script", str(path)]) == 2
    assert "auth.fail_wait: expected an integer" in capsys.readouterr().err
    assert stack_module.main(["--script", str(EXAMPLES / "fakes-faulty.toml"), "--check"]) == 0


def test_parsed_values_and_repeats():
    script = parse_script({
        "users": {"alice": {"password": "x", "replies": [
            {"status": "WAIT", "times": 2}, {"raw_hex": "48 54", "http_status": False}]}},
        "queue": [{"headers": {"X-A": "1"}, "status": "OK", "backend": "127.0.0.1:9"}],
        "smtp": {"faults": {"replies": {"ehlo": "421 busy"}, "drop_at": "rcpt"}},
        "imap": {"faults": {"greeting": False, "bad_login_reply": "{tag} OK"}},
    })
    replies = script.users["alice"].replies
    assert [r.status for r in replies] == ["WAIT", "WAIT", None]
    assert replies[2].raw == b"HT" and replies[2].http_status is None
    queued = script.queue[0]
    assert (queued.server, queued.port, queued.headers) == ("127.0.0.1", 9, ["X-A: 1"])
    assert not queued.fill_backend
    assert script.legs["smtp"].faults == {"replies": {"EHLO": "421 busy"}, "drop_at": "RCPT"}
    assert script.legs["imap"].faults == {"greeting": None, "bad_login_reply": b"{tag} OK"}


def test_documented_examples_are_valid_scripts():
    blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", script_module.__doc__)
    assert len(blocks) == 3
    for block in (blocks[0], blocks[2]):  # the middle one lists alternatives side by side
        parse_script(tomllib.loads(textwrap.dedent(block)))


def test_trickle_to_a_client_that_gave_up_is_quiet(caplog):
    caplog.set_level(logging.ERROR)
    with MockAuthServer(script=[Reply.fail("x" * 100, trickle=0.01)]) as auth:
        with socket.create_connection((auth.host, auth.port), timeout=5) as sock:
            sock.sendall(request(auth))
            assert sock.recv(1)
            # closed with a reset, as nginx does with unread data; the server trickles on
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        time.sleep(0.3)
        assert ask(auth, password="nope").error == b"Invalid login or password"
    assert "Unhandled exception" not in caplog.text and "Traceback" not in caplog.text


def test_stack_delivers_smtp_mail_to_the_inbox_and_mail_dir(tmp_path):
    script = parse_script({"users": {"alice": {"password": "secret"}},
                           "content": {"counts": {"INBOX": 2}},
                           "smtp": {"mail_dir": str(tmp_path / "mail")}})
    with FakeStack(script) as stack:
        content = b"Subject: to alice\r\n\r\nhello\r\n"
        with smtplib.SMTP(stack.smtp.host, stack.smtp.port, timeout=10) as s:
            s.sendmail("x@example.test", ["alice@example.test"], content)
        stack.smtp.wait_messages(1)
        imap = imaplib.IMAP4(stack.imap.host, stack.imap.port, timeout=10)
        imap.login("alice", "secret")
        assert imap.select("INBOX")[1] == [b"3"]
        assert imap.fetch("3", "(BODY.PEEK[])")[1][0][1] == content
        imap.logout()
        assert "every message to" in stack.table()
    assert (tmp_path / "mail" / "00001.eml").read_bytes() == content
