"""IMAP after the auth server said yes: the backend login (docs/behaviour.md §11.1, §11.3, §11.6) and the
relay (§12), on every target, exact bytes.

The upstream is lab.imap or a ScriptedBackend (see scenarios/kit/login_support.py).
"""

from __future__ import annotations

import random
import socket
import time
import uuid

import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit import imap_support, login_support
from postern.scenarios.kit.imap_support import GREETING, INTERNAL_ERROR, login, read_tagged
from postern.scenarios.kit.support import LogWatch, ScriptedBackend, upstream_bytes, wait_until

LOGGED_IN = b"a1 OK Logged in\r\n"
FAKE_GREETING_START = b"* OK [CAPABILITY "



# -- the login sequence ---------------------------------------------------------------------

def test_backend_receives_nginx_login_sequence(lab):
    """§11.3: `<tag>LOGIN {n}`, `+`, `<login> {m}`, `+`, `<password>` with the client's tag,
    always synchronising literals; the backend's tagged OK is the client's answer."""
    proxy = lab.proxy()
    conn = len(lab.imap.connections)
    with login(proxy, b"alice", b'"secret"') as c:
        c.expect(LOGGED_IN)
    assert upstream_bytes(lab.imap, conn) == b"a1 LOGIN {5}\r\nalice {6}\r\nsecret\r\n"


def test_login_literals_carry_any_byte(lab):
    """§11.3: because nginx always uses literals, a space in the login and quotes, braces,
    CR/LF and NUL in the password reach the backend raw; the auth request has them
    %-escaped (§10.2)."""
    proxy = lab.proxy()
    password = b'p"\\{1}\r\n\x00x'
    expected = b"A.1 LOGIN {6}\r\nal ice {%d}\r\n" % len(password) + password + b"\r\n"
    first = expected.index(b"\r\n") + 2
    second = expected.index(b"\r\n", first) + 2
    backend = ScriptedBackend(
        ("send", b"* OK hi\r\n"), ("recv", first), ("send", b"+ go\r\n"),
        ("recv", second), ("send", b"+ go\r\n"), ("recv", len(expected)),
        ("send", b"A.1 OK welcome\r\n"))
    lab.auth.push(Reply.ok("127.0.0.1", backend.port))
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b'A.1 LOGIN "al ice" {%d}\r\n' % len(password)).expect(b"+ OK\r\n")
        c.send(password + b"\r\n")
        c.expect(b"A.1 OK welcome\r\n")
    assert backend.join() == expected
    assert lab.auth.requests[0].header("Auth-Pass") == 'p"\\{1}%0D%0A%00x'


def test_login_reply_split_across_packets(lab):
    """§11.1: a reply is judged only once it ends with CRLF, so a tagged OK arriving in
    pieces is fine, and every byte of it reaches the client."""
    proxy = lab.proxy()
    backend = ScriptedBackend(
        ("send", b"* OK"), ("sleep", 0.2), ("send", b" hi\r\n"), ("recv", 14),
        ("send", b"+"), ("sleep", 0.2), ("send", b" go\r\n"), ("recv", 25),
        ("send", b"+ go\r\n"), ("recv", 33),
        ("send", b"a1 O"), ("sleep", 0.2), ("send", b"K done\r\n"))
    received = login_support.logs_in_through(lab, proxy, imap_support, backend,
                                             b"a1 OK done\r\n")
    assert received == b"a1 LOGIN {5}\r\nalice {6}\r\nsecret\r\n"


def test_pipelined_commands_follow_the_login(lab):
    """§11.6 + §5.2: commands pipelined after LOGIN are held during auth and login, then
    forwarded once the relay starts; the backend answers them after its LOGIN OK."""
    proxy = lab.proxy()
    conn = len(lab.imap.connections)
    with login(proxy, extra=b"a2 NOOP\r\na3 CAPABILITY\r\n") as c:
        c.expect(LOGGED_IN + b"a2 OK NOOP completed\r\n"
                 b"* CAPABILITY IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN IDLE\r\n"
                 b"a3 OK CAPABILITY completed\r\n")
    assert upstream_bytes(lab.imap, conn) == (b"a1 LOGIN {5}\r\nalice {6}\r\nsecret\r\n"
                                         b"a2 NOOP\r\na3 CAPABILITY\r\n")


# -- login errors -----------------------------------------------------------------------------

def test_backend_without_greeting_times_out(lab):
    """§11.1: one `timeout` (1 s here) covers the whole backend login; a silent backend →
    "upstream timed out" → internal error."""
    login_support.silent_backend_times_out(lab, imap_support)


def test_backend_stalling_mid_login_times_out(lab):
    """§11.1: the login timer is not re-armed per reply; a backend that greets but never
    answers the LOGIN literal is cut off after `timeout`."""
    login_support.stalling_backend_times_out(lab, imap_support, "LOGIN command")


def test_preauth_greeting_is_an_error(lab):
    """§11.3: the greeting must start with `* OK`; `* PREAUTH` is an error."""
    proxy = lab.proxy()
    log = LogWatch(proxy)
    lab.imap.faults.greeting = b"* PREAUTH already in"
    with login(proxy) as c:
        c.expect(INTERNAL_ERROR).expect_closed()
    log.wait_for('upstream sent invalid response: "* PREAUTH already in" while reading '
                 "response from upstream")


def test_bad_greeting_is_relayed_with_pass_error_message(lab):
    """§11.1: with proxy_pass_error_message on, an unexpected greeting goes to the client
    as the backend sent it, then close."""
    proxy = lab.proxy(server="proxy_pass_error_message on;")
    lab.imap.faults.greeting = b"* BYE go away"
    with login(proxy) as c:
        c.expect(b"* BYE go away\r\n").expect_closed()


def test_rejected_login_is_an_internal_error(lab):
    """§11.1 + §13: the backend's tagged NO with proxy_pass_error_message off → the
    internal-error line (the NO is only logged), close."""
    proxy = lab.proxy()
    log = LogWatch(proxy)
    lab.imap.faults.reject_login = "no entry"
    with login(proxy) as c:
        c.expect(INTERNAL_ERROR).expect_closed()
    line = log.line('upstream sent invalid response: "NO no entry" while reading response '
                    "from upstream, " + login_support.session_context(proxy, lab.imap.port))
    assert "[error]" in line, line


def test_rejected_login_passes_the_error_message(lab):
    """§11.1 + §13: with proxy_pass_error_message on the client gets the backend's NO
    verbatim, then close."""
    proxy = lab.proxy(server="proxy_pass_error_message on;")
    lab.imap.faults.reject_login = "[AUTHENTICATIONFAILED] no entry"
    with login(proxy) as c:
        c.expect(b"a1 NO [AUTHENTICATIONFAILED] no entry\r\n").expect_closed()


def test_refused_literal_is_an_error(lab):
    """§11.3: the answer to `LOGIN {n}` must start with `+`; a NO there is an error."""
    proxy = lab.proxy(server="proxy_pass_error_message on;")
    lab.imap.faults.no_continuation = "no literals"
    with login(proxy) as c:
        c.expect(b"a1 NO no literals\r\n").expect_closed()


@pytest.mark.nginx_min("1.27.3", "one untagged line tolerated before the tagged LOGIN OK")
def test_one_untagged_line_before_login_ok_is_tolerated(lab):
    """§11.3 (1.27.3): one untagged line (e.g. CAPABILITY) may precede the tagged OK; both
    reach the client."""
    proxy = lab.proxy()
    lab.imap.faults.login_untagged = [b"* CAPABILITY IMAP4rev1 IDLE"]
    with login(proxy) as c:
        c.expect(b"* CAPABILITY IMAP4rev1 IDLE\r\n" + LOGGED_IN)
        c.send(b"a2 NOOP\r\n").expect(b"a2 OK NOOP completed\r\n")


def test_two_untagged_lines_before_login_ok_are_an_error(lab):
    """§11.3: more than one untagged line before the tagged OK → error."""
    proxy = lab.proxy()
    lab.imap.faults.login_untagged = [b"* CAPABILITY IMAP4rev1", b"* OK [ALERT] hello"]
    with login(proxy) as c:
        c.expect(INTERNAL_ERROR).expect_closed()


def test_backend_closing_during_login_is_an_internal_error(lab):
    """§11.1: backend EOF during login → internal error, even with
    proxy_pass_error_message on (that only relays complete unexpected replies)."""
    proxy = lab.proxy(server="proxy_pass_error_message on;")
    log = LogWatch(proxy)
    backend = ScriptedBackend(("send", b"* OK hi\r\n"), ("recv", 14), ("close",))
    lab.auth.push(Reply.ok("127.0.0.1", backend.port))
    with login(proxy) as c:
        c.expect(INTERNAL_ERROR).expect_closed()
    assert backend.join() == b"a1 LOGIN {5}\r\n"
    time.sleep(0.2)
    assert "[error]" not in log.wait_for("connected to"), log.text()  # EOF: no log line


def test_backend_port_closed_is_an_internal_error(lab):
    """§11.1: connecting to the backend fails → internal error."""
    login_support.closed_port_is_an_internal_error(lab, imap_support)


def test_too_long_backend_line_is_an_internal_error(lab):
    """§11.1: a reply line that fills proxy_buffer without CRLF → "upstream sent too long
    response line" → internal error."""
    login_support.too_long_line_is_an_internal_error(lab, imap_support, b"* OK")


def test_reply_filling_proxy_buffer_exactly_is_judged(lab):
    """§11.1: the reply is judged once it ends with CRLF, even if it fills the buffer."""
    proxy = lab.proxy(server="proxy_buffer 128;")
    lab.imap.faults.greeting = b"* OK " + b"x" * 121  # 128 bytes with CRLF
    with login(proxy) as c:
        c.expect(LOGGED_IN)


# -- relay ----------------------------------------------------------------------------------

def test_backend_close_flushes_then_closes(lab):
    """§12: when the backend closes, the client gets everything it sent, then EOF."""
    proxy = lab.proxy()
    log = LogWatch(proxy)
    with login(proxy) as c:
        c.expect(LOGGED_IN)
        c.send(b"a2 LOGOUT\r\n")
        assert c.read_all() == b"* BYE Logging out\r\na2 OK LOGOUT completed\r\n"
    line = log.line("proxied session done, " + login_support.session_context(proxy, lab.imap.port))
    assert "[info]" in line, line


def test_client_half_close_closes_the_session(lab):
    """§12 [verified]: no half-close support; when the client shuts down its side the
    session ends (the backend's reply to the last command may be lost)."""
    proxy = lab.proxy()
    conn = len(lab.imap.connections)
    with login(proxy) as c:
        c.expect(LOGGED_IN)
        c.send(b"a2 NOOP\r\n").half_close()
        rest = c.read_all()
        assert rest in (b"", b"a2 OK NOOP completed\r\n"), rest
    wait_until(lambda: lab.imap.connections[conn].closed, what="the backend connection closed")


def test_proxy_timeout_counts_only_client_activity(lab):
    """§12 QUIRK 17 [verified]: proxy_timeout 2s with a silent client and a backend pushing
    a line every 0.4 s → closed ~2 s after the client's last command although data flows."""
    proxy = lab.proxy(server="proxy_timeout 2s;")
    log = LogWatch(proxy)
    lab.imap.faults.chatter = 0.4
    with login(proxy) as c:
        c.expect(LOGGED_IN)
        time.sleep(0.5)
        c.send(b"a2 NOOP\r\n")
        last_command = time.monotonic()
        rest = c.read_all(timeout=8)
        closed_after = time.monotonic() - last_command
    lines = rest.splitlines(keepends=True)
    assert b"a2 OK NOOP completed\r\n" in lines
    ticks = [line for line in lines if line.startswith(b"* OK still here ")]
    assert len(ticks) >= 3, rest
    assert 1.5 <= closed_after <= 3.5, closed_after
    log.wait_for("client timed out (110: Connection timed out) while proxying")


def test_large_fetch_is_relayed_byte_exact(lab):
    """§12: plain byte copy; a 5 MiB message comes through exactly as the backend sends it
    directly (compared with a connection straight to the backend)."""
    proxy = lab.proxy()
    rnd = random.Random(12)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body = b"".join(bytes(rnd.choices(alphabet, k=76)) + b"\r\n" for _ in range(5 * 2**20 // 78))
    message = b"Subject: big one\r\nFrom: a@example.com\r\n\r\n" + body
    box = f"Big-{uuid.uuid4().hex[:8]}"
    lab.imap.deliver("bob", box, message)
    wait_until(lambda: box in lab.imap.store.mailboxes("bob"), what="delivery")
    commands = (b"a2 SELECT " + box.encode() + b"\r\n", b"a3 FETCH 1 (BODY.PEEK[])\r\n")
    with login(proxy, b"bob", b"hunter2") as c:
        c.expect(LOGGED_IN)
        c.send(commands[0])
        read_tagged(c, b"a2")
        c.send(commands[1])
        header = c.readline()
        assert header == b"* 1 FETCH (BODY[] {%d}\r\n" % len(message), header
        assert c.read(len(message), timeout=30) == message
        c.expect(b")\r\na3 OK FETCH completed\r\n")
    with socket.create_connection(("127.0.0.1", lab.imap.port), timeout=10) as direct:
        f = direct.makefile("rb")
        f.readline()
        direct.sendall(b"a1 LOGIN bob hunter2\r\n" + commands[0])
        while not f.readline().startswith(b"a2 "):
            pass
        direct.sendall(commands[1])
        assert f.readline() + f.read(len(message)) + f.readline() + f.readline() == \
            header + message + b")\r\na3 OK FETCH completed\r\n"
