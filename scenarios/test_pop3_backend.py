"""POP3 after the auth server said yes: the backend login (docs/behaviour.md §11.1, §11.2, §11.6) and the
relay (§12), on every target, exact bytes.

The upstream is lab.pop3 or a ScriptedBackend (see scenarios/kit/login_support.py).
"""

from __future__ import annotations

import socket
import time

import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit import login_support, pop3_support
from postern.scenarios.kit.pop3_support import (
    GREETING,
    INTERNAL_ERROR,
    OK,
    auth_request,
    backend_login,
    expect_internal_error,
    logged_in,
    login,
    pop3,
)
from postern.scenarios.kit.support import LogWatch, ScriptedBackend, upstream_bytes, wait_until

PASS_ERROR = "proxy_pass_error_message on;"


def read_multiline(c) -> bytes:
    """One multi-line POP3 response (RFC 1939 §3): the status line up to the `.` line."""
    out = c.readline()
    assert out.startswith(b"+OK"), out
    while (line := c.readline()) != b".\r\n":
        out += line
    return out + line


def direct(lab, user: bytes, password: bytes, commands: list[bytes]) -> bytes:
    """What the fake upstream answers to multi-line `commands` on a direct connection."""
    with socket.create_connection(("127.0.0.1", lab.pop3.port), timeout=10) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"USER " + user + b"\r\nPASS " + password + b"\r\n")
        f.readline(), f.readline()
        out = b""
        for command in commands:
            sock.sendall(command)
            out += f.readline()
            while (line := f.readline()) != b".\r\n":
                out += line
            out += line
        sock.sendall(b"QUIT\r\n")
        return out


# -- the login sequence -------------------------------------------------------------------------

def test_backend_receives_user_then_pass(lab):
    """§11.2: after the upstream's `+OK` greeting nginx sends `USER <login>`, then
    `PASS <password>`, each after a `+OK`; the upstream's last `+OK` line is the client's
    answer to PASS."""
    proxy = pop3(lab)
    backend = ScriptedBackend(
        ("send", b"+OK hi\r\n"), ("recv", 12), ("send", b"+OK\r\n"), ("recv", 25),
        ("send", b"+OK welcome, 2 messages\r\n"))
    received = login_support.logs_in_through(lab, proxy, pop3_support, backend,
                                             b"+OK welcome, 2 messages\r\n")
    assert received == b"USER alice\r\nPASS secret\r\n"


def test_login_reply_split_across_packets(lab):
    """§11.1: a reply is judged only once it ends with CRLF, so `+OK` lines arriving in
    pieces are fine and every byte of the last one reaches the client."""
    proxy = pop3(lab)
    backend = ScriptedBackend(
        ("send", b"+O"), ("sleep", 0.2), ("send", b"K hi\r\n"), ("recv", 12),
        ("send", b"+OK\r"), ("sleep", 0.2), ("send", b"\n"), ("recv", 25),
        ("send", b"+OK "), ("sleep", 0.2), ("send", b"in\r\n"))
    received = login_support.logs_in_through(lab, proxy, pop3_support, backend,
                                             b"+OK in\r\n")
    assert received == b"USER alice\r\nPASS secret\r\n"


def test_credentials_reach_the_backend_raw(lab):
    """§11.2: login and password are sent raw — spaces (USER/PASS keep them, docs/behaviour.md §8.2), `%`,
    quotes and backslashes — while the auth request has them %-escaped (§10.2)."""
    proxy = pop3(lab)
    user, password = b'a b%"c', b'p\\w %d '
    expected = b"USER " + user + b"\r\nPASS " + password + b"\r\n"
    backend = ScriptedBackend(
        ("send", b"+OK hi\r\n"), ("recv", len(user) + 7), ("send", b"+OK\r\n"),
        ("recv", len(expected)), ("send", b"+OK in\r\n"))
    received = login_support.logs_in_through(lab, proxy, pop3_support, backend,
                                             b"+OK in\r\n", user, password)
    assert received == expected
    assert lab.auth.requests[0].raw == auth_request(b'a%20b%25"c', b"p\\w%20%25d%20")


def test_auth_user_and_pass_replace_the_backend_credentials(lab):
    """§10.3 Auth-User/Auth-Pass: the upstream gets the auth server's login and password, not
    the client's."""
    proxy = pop3(lab)
    lab.auth.push(Reply.ok("127.0.0.1", lab.pop3.port, user="bob", password="hunter2"))
    with login(proxy, b"alice", b"whatever") as c:
        c.expect(logged_in(lab, "bob"))
    assert lab.pop3.commands == backend_login(b"bob", b"hunter2")


def test_ok_matched_on_its_three_bytes(lab):
    """§11.2: a reply passes when it starts with `+OK` (case-sensitive, nothing after it is
    looked at): `+OKAY` is fine."""
    proxy = pop3(lab)
    lab.pop3.faults.greeting = b"+OKAY here"
    with login(proxy) as c:
        c.expect(logged_in(lab))


def test_only_the_first_line_of_a_reply_is_judged(lab):
    """§11.1: nginx checks only the first line of what it has read; the rest of a greeting is
    dropped with the buffer when USER goes out, while everything read with the final `+OK`
    reaches the client."""
    proxy = pop3(lab)
    backend = ScriptedBackend(
        ("send", b"+OK hi\r\n-ERR ignored\r\n"), ("recv", 12), ("send", b"+OK\r\n"),
        ("recv", 25), ("send", b"+OK in\r\n* not POP3 at all\r\n"))
    lab.auth.push(Reply.ok("127.0.0.1", backend.port))
    with login(proxy) as c:
        c.expect(b"+OK in\r\n* not POP3 at all\r\n")
        c.expect_silence(0.2)
    assert backend.join() == b"USER alice\r\nPASS secret\r\n"


def test_reply_must_end_with_crlf(lab):
    """§11.1: a reply is judged only once the data ends with CRLF; a greeting ending in a
    bare LF is never complete, so the login runs into `timeout` (1 s here)."""
    proxy = pop3(lab, "timeout 1s;")
    lab.pop3.faults.greeting = b"+OK bare line feed\n"
    with login(proxy) as c:
        start = time.monotonic()
        c.expect(INTERNAL_ERROR, timeout=5)
        assert 0.7 <= time.monotonic() - start <= 2.8
        c.expect_closed()
    assert lab.pop3.commands == []


# -- login errors ----------------------------------------------------------------------------------

def test_pass_rejected_passes_the_error_message(lab):
    """§18 capture [verified]: the upstream answers `-ERR backend says no` to PASS with
    proxy_pass_error_message on → the client gets exactly that line and EOF; the upstream saw
    USER and the Auth-Pass of the auth server."""
    proxy = pop3(lab, PASS_ERROR)
    lab.ok("pop3", password="bad")
    lab.pop3.faults.reject_pass = "backend says no"
    with login(proxy) as c:
        c.expect(b"-ERR backend says no\r\n").expect_closed()
    assert lab.pop3.commands == backend_login(b"alice", b"bad")


def test_pass_rejected_is_an_internal_error(lab):
    """§11.1 + §13: with proxy_pass_error_message off the upstream's `-ERR` is only logged;
    the client gets `-ERR internal server error`, then close."""
    proxy = pop3(lab)
    log = LogWatch(proxy)
    lab.pop3.faults.reject_pass = "backend says no"
    with login(proxy) as c:
        expect_internal_error(c)
    line = log.line('upstream sent invalid response: "-ERR backend says no"')
    assert "[error]" in line and f"upstream: 127.0.0.1:{lab.pop3.port}" in line, line
    assert 'login: "alice"' in line, line


def test_user_rejected_by_the_backend(lab):
    """§11.2: a `-ERR` answer to USER is an error too — relayed with
    proxy_pass_error_message on, the internal-error line otherwise; PASS is never sent."""
    on, off = pop3(lab, PASS_ERROR), pop3(lab)
    lab.pop3.faults.reject_user = "no such user"
    with login(on) as c:
        c.expect(b"-ERR no such user\r\n").expect_closed()
    with login(off) as c:
        expect_internal_error(c)
    assert lab.pop3.commands == [b"USER alice", b"USER alice"]


def test_bad_greeting(lab):
    """§11.2: the greeting must start with `+OK` (so `+ok` fails): relayed verbatim with
    proxy_pass_error_message on, else the internal-error line; nothing is sent upstream."""
    on, off = pop3(lab, PASS_ERROR), pop3(lab)
    lab.pop3.faults.greeting = b"+ok lower case"
    with login(on) as c:
        c.expect(b"+ok lower case\r\n").expect_closed()
    lab.pop3.faults.greeting = b"-ERR [SYS/TEMP] busy"
    with login(off) as c:
        expect_internal_error(c)
    assert lab.pop3.commands == []


def test_backend_without_greeting_times_out(lab):
    """§11.1: one `timeout` (1 s here) covers the whole backend login; a silent upstream →
    "upstream timed out" → internal error."""
    login_support.silent_backend_times_out(lab, pop3_support)


def test_backend_stalling_after_user_times_out(lab):
    """§11.1: the login timer is not re-armed per reply; an upstream that greets but never
    answers USER is cut off after `timeout`."""
    login_support.stalling_backend_times_out(lab, pop3_support, "user name")
    assert lab.pop3.commands == [b"USER alice"]


def test_backend_closing_during_login_is_an_internal_error(lab):
    """§11.1: upstream EOF during login → internal error, even with
    proxy_pass_error_message on (that only relays complete unexpected replies)."""
    proxy = pop3(lab, PASS_ERROR)
    backend = ScriptedBackend(("send", b"+OK hi\r\n"), ("recv", 12), ("close",))
    lab.auth.push(Reply.ok("127.0.0.1", backend.port))
    with login(proxy) as c:
        expect_internal_error(c)
    assert backend.join() == b"USER alice\r\n"


def test_backend_port_closed_is_an_internal_error(lab):
    """§11.1: connecting to the upstream fails → internal error."""
    login_support.closed_port_is_an_internal_error(lab, pop3_support)


def test_too_long_backend_line_is_an_internal_error(lab):
    """§11.1: a reply line that fills proxy_buffer without CRLF → "upstream sent too long
    response line" → internal error; one that fills it exactly with CRLF is fine."""
    login_support.too_long_line_is_an_internal_error(lab, pop3_support, b"+OK")
    lab.pop3.faults.greeting = b"+OK " + b"x" * 122  # 128 bytes with CRLF
    with login(pop3(lab, "proxy_buffer 128;")) as c:
        c.expect(logged_in(lab))


# -- hand-off and relay -------------------------------------------------------------------------

def test_commands_pipelined_after_pass_are_forwarded(lab):
    """§11.6 + §5.2: commands pipelined after PASS are held during auth and login, then
    forwarded once the relay starts; the upstream answers them after its `+OK`."""
    proxy = pop3(lab)
    conn = len(lab.pop3.connections)
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b"USER alice\r\nPASS secret\r\nSTAT\r\nNOOP\r\n")
        c.expect(OK + logged_in(lab))
        stat = c.readline()
        assert stat.startswith(b"+OK ") and stat.endswith(b"\r\n"), stat
        c.expect(OK)
    assert upstream_bytes(lab.pop3, conn) == b"USER alice\r\nPASS secret\r\nSTAT\r\nNOOP\r\n"


def test_pipeline_longer_than_the_buffer_after_pass(lab):
    """§11.6: what follows PASS is not parsed, so a pipeline longer than the 128-byte buffer
    is no "too long command" here: the buffered part and the rest the kernel held all reach
    the upstream, in order."""
    proxy = pop3(lab)
    conn = len(lab.pop3.connections)
    tail = b"".join(b"NOOP %d\r\n" % i for i in range(30))
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b"USER alice\r\nPASS secret\r\n" + tail)
        c.expect(OK + logged_in(lab) + OK * 30)
    assert upstream_bytes(lab.pop3, conn) == b"USER alice\r\nPASS secret\r\n" + tail


def test_relay_of_list_and_retr_is_byte_exact(lab):
    """§12 + RFC 1939 §5 LIST, RETR: after login the proxy copies bytes; the multi-line
    replies (dot-stuffed) are exactly what the upstream sends on a direct connection."""
    proxy = pop3(lab)
    commands = [b"LIST\r\n", b"RETR 1\r\n", b"UIDL\r\n", b"TOP 2 3\r\n"]
    with login(proxy, b"bob", b"hunter2") as c:
        c.expect(logged_in(lab, "bob"))
        got = b""
        for command in commands:
            c.send(command)
            got += read_multiline(c)
    assert got == direct(lab, b"bob", b"hunter2", commands)
    assert got.count(b"\r\n.\r\n") == len(commands)


def test_quit_through_the_relay_closes_after_the_upstream(lab):
    """§12: QUIT after login goes to the upstream; it answers and closes, and the client gets
    that answer, then EOF; nginx logs `proxied session done`."""
    proxy = pop3(lab)
    log = LogWatch(proxy)
    with login(proxy) as c:
        c.expect(logged_in(lab))
        c.send(b"QUIT\r\n")
        assert c.read_all() == b"+OK Logging out\r\n"
    line = log.line("proxied session done, " + login_support.session_context(proxy, lab.pop3.port))
    assert "[info]" in line, line


def test_upstream_dropping_after_login_closes_the_client(lab):
    """§12: when the upstream closes right after its `+OK`, the client still gets that line,
    then EOF."""
    proxy = pop3(lab)
    lab.pop3.faults.drop_after_login = True
    with login(proxy) as c:
        assert c.read_all() == logged_in(lab)


def test_client_close_closes_the_upstream(lab):
    """§12 (no half-close): when the client goes away the upstream connection is closed."""
    proxy = pop3(lab)
    conn = len(lab.pop3.connections)
    with login(proxy) as c:
        c.expect(logged_in(lab))
        c.send(b"NOOP\r\n").expect(OK)
    wait_until(lambda: lab.pop3.connections[conn].closed, what="the upstream connection closed")


@pytest.mark.parametrize("proxy_timeout", ["2s"])
def test_proxy_timeout_closes_an_idle_session(lab, proxy_timeout):
    """§12: after login an idle client is disconnected after proxy_timeout, silently."""
    proxy = pop3(lab, f"proxy_timeout {proxy_timeout};")
    with login(proxy) as c:
        c.expect(logged_in(lab))
        c.send(b"NOOP\r\n").expect(OK)
        start = time.monotonic()
        c.expect_closed(timeout=8)
        assert 1.5 <= time.monotonic() - start <= 4.5
