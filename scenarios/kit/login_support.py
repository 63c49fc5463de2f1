"""What the IMAP and POP3 scenarios share about a login that fails the same way in both
protocols: an auth server reply that is an internal error, a silent or stalling upstream, a
closed port, a line longer than proxy_buffer; and the context nginx appends to a proxied
session's log lines.

The session's fake upstream (lab.imap, lab.pop3, its faults reset per scenario) plays the
backend; scenarios that need byte-level control of the backend's side use a one-connection
ScriptedBackend instead. `kit` is the protocol's support module (imap_support or pop3_support): its PROTOCOL, login()
and INTERNAL_ERROR."""

from __future__ import annotations

import time

from postern.fakes.auth import Reply
from postern.scenarios.kit.client import Client
from postern.scenarios.kit.real.common import free_port
from postern.scenarios.kit.support import LogWatch, auth_peer


def session_context(proxy, upstream_port: int, login: str = "alice") -> str:
    """The tail of nginx's log lines about a session that has an upstream."""
    return (f'client: 127.0.0.1, server: 127.0.0.1:{proxy.port}, login: "{login}", '
            f"upstream: 127.0.0.1:{upstream_port}")


def logs_in_through(lab, proxy, kit, backend, reply: bytes, *credentials: bytes) -> bytes:
    """The auth server sends the client to `backend` (a ScriptedBackend); `kit.login` (with
    `credentials`, if any) ends with `reply`. Returns what the backend received."""
    lab.auth.push(Reply.ok("127.0.0.1", backend.port))
    with kit.login(proxy, *credentials) as c:
        c.expect(reply)
    return backend.join()


def expect_after_timeout(c: Client, line: bytes) -> None:
    """`line` arrives once a 1 s `timeout` has run out (with slack for a busy machine), then
    the connection closes."""
    start = time.monotonic()
    c.expect(line, timeout=5)
    assert 0.7 <= time.monotonic() - start <= 2.8
    c.expect_closed()


def silent_backend_times_out(lab, kit) -> None:
    """An upstream that never greets → "upstream timed out" at [info] → internal error."""
    proxy = lab.proxy(server="timeout 1s;", protocol=kit.PROTOCOL)
    upstream = getattr(lab, kit.PROTOCOL)
    log = LogWatch(proxy)
    upstream.faults.greeting = None
    with kit.login(proxy) as c:
        expect_after_timeout(c, kit.INTERNAL_ERROR)
    line = log.line("upstream timed out (110: Connection timed out) while connecting to "
                    "upstream, " + session_context(proxy, upstream.port))
    assert "[info]" in line, line


def stalling_backend_times_out(lab, kit, sending: str) -> None:
    """An upstream that greets, then never answers the first login command (`sending` is
    nginx's name for it) is cut off once `timeout` runs out."""
    proxy = lab.proxy(server="timeout 1s;", protocol=kit.PROTOCOL)
    log = LogWatch(proxy)
    getattr(lab, kit.PROTOCOL).faults.stall = True
    with kit.login(proxy) as c:
        expect_after_timeout(c, kit.INTERNAL_ERROR)
    log.wait_for(f"upstream timed out (110: Connection timed out) while sending {sending} to "
                 "upstream")


def closed_port_is_an_internal_error(lab, kit) -> None:
    """The auth server names a port nobody listens on → internal error, logged at [error]."""
    proxy = lab.proxy(protocol=kit.PROTOCOL)
    log = LogWatch(proxy)
    closed = free_port()
    lab.auth.push(Reply.ok("127.0.0.1", closed))
    with kit.login(proxy) as c:
        c.expect(kit.INTERNAL_ERROR).expect_closed()
    line = log.line("recv() failed (111: Connection refused) while reading response from "
                    "upstream, " + session_context(proxy, closed))
    assert "[error]" in line, line


def too_long_line_is_an_internal_error(lab, kit, ok: bytes) -> None:
    """A greeting (`ok` and 300 x) that fills proxy_buffer 128 without CRLF → "upstream sent
    too long response line" → internal error."""
    proxy = lab.proxy(server="proxy_buffer 128;", protocol=kit.PROTOCOL)
    log = LogWatch(proxy)
    getattr(lab, kit.PROTOCOL).faults.greeting = ok + b" " + b"x" * 300
    with kit.login(proxy) as c:
        c.expect(kit.INTERNAL_ERROR).expect_closed()
    log.wait_for(f'upstream sent too long response line: "{ok.decode()} xxxx')


def auth_reply_is_an_internal_error(lab, kit, reply: Reply | None, logged: str,
                                    server: str = "") -> str:
    """The auth server answers `reply` (None: the one `server` names is down) → the
    client's login gets the internal-error line and close; returns the new error log line
    containing `logged`, in which `{auth}` stands for the auth server's address and
    `{proxy.port}` for the proxy's port."""
    proxy = lab.proxy(server=server, protocol=kit.PROTOCOL)
    log = LogWatch(proxy)
    if reply is not None:
        lab.auth.push(reply)
    with kit.login(proxy) as c:
        c.expect(kit.INTERNAL_ERROR).expect_closed()
    return log.line(logged.format(proxy=proxy, auth=auth_peer(lab)))


def auth_timeout_is_an_internal_error(lab, kit) -> str:
    """The auth server answers after 3 s, auth_http_timeout is 1 s → internal error once
    the timeout runs out; returns nginx's error log line about it."""
    proxy = lab.proxy(server="auth_http_timeout 1s;", protocol=kit.PROTOCOL)
    log = LogWatch(proxy)
    lab.auth.push(Reply.default(delay=3))
    with kit.login(proxy) as c:
        expect_after_timeout(c, kit.INTERNAL_ERROR)
    return log.line(f"auth http server {auth_peer(lab)} timed out (110: Connection timed out) "
                    "while in http auth state")
