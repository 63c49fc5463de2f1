"""metrics_listen (README: Metrics): the Prometheus exposition and the health check, fed by
real sessions through every worker and kept across a reload. Postern-only: nginx's mail
module has no metrics."""

from __future__ import annotations

import os
import re
import socket
import time

import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit.client import Client
from postern.scenarios.kit.metrics_support import (
    WHY,
    health,
    metrics_directive,
    value,
    wait_value,
)
from postern.scenarios.kit.real.common import free_port

pytestmark = pytest.mark.postern_only(WHY)

GREETING = b"* OK IMAP4 ready\r\n"


def _login(lab, proxy, password=b"secret"):
    c = proxy.connect()
    c.expect(GREETING)
    c.send(b"a1 LOGIN alice " + password + b"\r\n")
    return c


def _logged_in_and_out(lab, proxy) -> None:
    lab.ok()
    with _login(lab, proxy) as c:
        assert c.readline().startswith(b"a1 OK"), c.dump()
        c.send(b"a2 LOGOUT\r\n")
        c.read_all()


def _two_workers(lab, tmp_path):
    directive, port = metrics_directive()
    listen = free_port()
    mail = (f"auth_http 127.0.0.1:{lab.auth.port}/auth;\n{directive}\n"
            f"server {{\n    listen 127.0.0.1:{listen};\n    protocol imap;\n}}\n")
    instance = lab.stack.start_target(mail, tmp_path / "postern", name="postern",
                                      main="worker_processes 2;")
    return instance, _Listener(listen), port


class _Listener:
    """What the helpers need of a proxy: its port and a connection to it."""

    def __init__(self, port: int) -> None:
        self.port = port

    def connect(self) -> Client:
        return Client("127.0.0.1", self.port, timeout=5.0)


def _workers_seen(error_log: str) -> set[str]:
    """The pids that logged a session (`[info] PID#PID: *N client ... connected`)."""
    return set(re.findall(r"\[info\] (\d+)#\d+: \*\d+ client \S+ connected", error_log))


def test_counts_sum_over_workers_and_survive_a_reload(lab, tmp_path):
    """metrics_listen with worker_processes 2: sessions served by both workers add up in one
    exposition; after SIGHUP (new workers) nothing is reset."""
    instance, proxy, port = _two_workers(lab, tmp_path)
    try:
        sessions = 0
        while len(_workers_seen(instance.error_log_text())) < 2:
            assert sessions < 40, "one worker took every connection"
            _logged_in_and_out(lab, proxy)
            sessions += 1
        lab.auth.push(Reply.fail("Invalid login or password"))
        with _login(lab, proxy, b"wrong") as c:
            assert c.readline().startswith(b"a1 NO"), c.dump()
        server = {"server": f"127.0.0.1:{proxy.port}", "protocol": "imap"}
        wait_value(port, "postern_auth_requests_total", sessions, outcome="ok", **server)
        assert value(port, "postern_auth_requests_total", outcome="failed", **server) == 1
        assert value(port, "postern_connections_accepted_total", **server) == sessions + 1
        assert value(port, "postern_backend_login_duration_seconds_count", **server) == sessions
        assert value(port, "postern_relayed_bytes_total", direction="backend_to_client") > 0
        assert health(port) == (200, {"status": "ok", "workers": {"running": 2, "expected": 2},
                                      "auth_http": {f"127.0.0.1:{lab.auth.port}": "up"}})
        old = _workers_seen(instance.error_log_text())
        mark = len(instance.error_log_text())
        instance.reload()
        deadline = time.monotonic() + 10
        while any(_alive(int(pid)) for pid in old):  # the old workers finish and exit
            assert time.monotonic() < deadline, instance.error_log_text()[mark:]
            time.sleep(0.05)
        _logged_in_and_out(lab, proxy)
        assert _workers_seen(instance.error_log_text()[mark:]) - old, "no new worker served"
        wait_value(port, "postern_auth_requests_total", sessions + 1, outcome="ok", **server)
        assert value(port, "postern_auth_requests_total", outcome="failed", **server) == 1
        assert value(port, "postern_connections_accepted_total", **server) == sessions + 2
    finally:
        instance.stop()


def test_a_reload_moves_the_listener_and_keeps_the_counts(lab, tmp_path):
    """metrics_listen moved by a reload: the new address serves the same counts, the old one
    is closed (no worker kept it open); a reload to an address in use is refused and the old
    configuration goes on."""
    instance, proxy, port = _two_workers(lab, tmp_path)
    try:
        server = {"server": f"127.0.0.1:{proxy.port}", "protocol": "imap"}
        _logged_in_and_out(lab, proxy)
        wait_value(port, "postern_auth_requests_total", 1, outcome="ok", **server)
        moved, new_port = metrics_directive()
        instance.reload(instance.mail.replace(f"metrics_listen 127.0.0.1:{port};", moved))
        deadline = time.monotonic() + 10
        while not _serves(new_port) or _serves(port):
            assert time.monotonic() < deadline, instance.error_log_text()[-2000:]
            time.sleep(0.05)
        assert value(new_port, "postern_auth_requests_total", outcome="ok", **server) == 1
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            busy = taken.getsockname()[1]
            mark = len(instance.error_log_text())
            instance.reload(instance.mail.replace(moved, f"metrics_listen 127.0.0.1:{busy};"))
            deadline = time.monotonic() + 10
            while f"bind() to 127.0.0.1:{busy} failed (98: " not in \
                    instance.error_log_text()[mark:]:
                assert time.monotonic() < deadline, instance.error_log_text()[mark:]
                time.sleep(0.05)
        assert "[emerg]" in instance.error_log_text()[mark:]
        assert health(new_port)[0] == 200
    finally:
        instance.stop()


def test_a_reload_switches_metrics_on(lab, tmp_path):
    """metrics_listen added by a reload: the master starts serving, and the new workers
    record (the directory is created then)."""
    listen = free_port()
    mail = (f"auth_http 127.0.0.1:{lab.auth.port}/auth;\n"
            f"server {{\n    listen 127.0.0.1:{listen};\n    protocol imap;\n}}\n")
    instance = lab.stack.start_target(mail, tmp_path / "postern", name="postern")
    try:
        directive, port = metrics_directive()
        assert not _serves(port)
        instance.reload(directive + "\n" + mail)
        deadline = time.monotonic() + 10
        while not _serves(port):
            assert time.monotonic() < deadline, instance.error_log_text()[-2000:]
            time.sleep(0.05)
        proxy = _Listener(listen)
        server = {"server": f"127.0.0.1:{listen}", "protocol": "imap"}
        deadline = time.monotonic() + 10
        while value(port, "postern_auth_requests_total", outcome="ok", **server) == 0:
            # an old worker (metrics off) may still take a connection while it stops
            assert time.monotonic() < deadline, "no new worker recorded a login"
            _logged_in_and_out(lab, proxy)
            time.sleep(1.2)  # a worker writes once a second
    finally:
        instance.stop()


def _serves(port: int) -> bool:
    try:
        return health(port)[0] in (200, 503)
    except OSError:
        return False


def test_sessions_by_phase(lab):
    """metrics_listen, postern_sessions: a relayed session is counted in phase `relay` while it lasts."""
    directive, port = metrics_directive()
    proxy = lab.proxy(mail=directive)
    server = {"server": f"127.0.0.1:{proxy.port}", "protocol": "imap"}
    lab.ok()
    with _login(lab, proxy) as c:
        assert c.readline().startswith(b"a1 OK"), c.dump()
        wait_value(port, "postern_sessions", 1, phase="relay", **server)
        idle = proxy.connect()
        idle.expect(GREETING)
        wait_value(port, "postern_sessions", 1, phase="dialogue", **server)
        idle.close()
    wait_value(port, "postern_sessions", 0, phase="relay", **server)
    wait_value(port, "postern_sessions", 0, **server)


def test_protocol_errors_and_max_errors_close(lab):
    """max_errors 2: two invalid commands close the session; both are protocol errors and
    the close is counted."""
    directive, port = metrics_directive()
    proxy = lab.proxy(mail=directive, server="max_errors 2;")
    server = {"server": f"127.0.0.1:{proxy.port}", "protocol": "imap"}
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b"a1 FROB\r\na2 FROB\r\n")
        c.read_all()
    wait_value(port, "postern_max_errors_closes_total", 1, **server)
    assert value(port, "postern_protocol_errors_total", **server) == 2


def test_backend_connect_failure(lab):
    """metrics_listen: an Auth-Server that refuses the connection counts in
    postern_backend_failures_total{stage="connect"}, the auth request itself as ok."""
    directive, port = metrics_directive()
    proxy = lab.proxy(mail=directive)
    server = {"server": f"127.0.0.1:{proxy.port}", "protocol": "imap"}
    lab.auth.push(Reply.ok("127.0.0.1", free_port()))
    with _login(lab, proxy) as c:
        c.expect(b"* BAD internal server error\r\n").expect_closed()
    wait_value(port, "postern_backend_failures_total", 1, stage="connect", **server)
    assert value(port, "postern_auth_requests_total", outcome="ok", **server) == 1


def test_health_fails_while_the_auth_server_is_down(lab):
    """metrics_listen, /health: 503 and the auth server named `down` when it refuses
    connections; the workers are still reported up."""
    directive, port = metrics_directive()
    dead = free_port()
    lab.proxy(mail=directive, server=f"auth_http 127.0.0.1:{dead}/auth;")
    status, report = health(port)
    assert status == 503
    assert report == {"status": "fail", "workers": {"running": 1, "expected": 1},
                      "auth_http": {f"127.0.0.1:{dead}": "down"}}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_limit_hits(lab):
    """limit_conn 1 per address: the second concurrent session is refused and counted in
    postern_limit_hits_total{zone, kind="conn"}."""
    directive, port = metrics_directive()
    proxy = lab.proxy(mail=directive + "\nlimit_conn_zone $binary_remote_addr zone=perip:1m;",
                      server="limit_conn perip 1;")
    with proxy.connect() as first:
        first.expect(GREETING)
        with proxy.connect() as second:
            second.expect(b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n")
            second.expect_closed()
    wait_value(port, "postern_limit_hits_total", 1, zone="perip", kind="conn")
