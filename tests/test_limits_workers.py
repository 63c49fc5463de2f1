"""Limits with `worker_processes 4`: one count for all workers, given back when sessions end
or a worker dies, kept across a reload."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from postern.scenarios.kit.real.common import free_port

from tests.fake_support import alice_on_fake_imap

ROOT = Path(__file__).resolve().parent.parent
GREETING = b"* OK IMAP4 ready\r\n"
LIMITED = b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
LIMIT = 5


def wait_for(check, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached")


class Proxy:
    """postern with four workers and a limit_conn of LIMIT sessions per address."""

    def __init__(self, tmp: Path, auth_port: int, mail: str, server: str) -> None:
        self.port = free_port()
        self.log = tmp / "error.log"
        self.conf = tmp / "postern.conf"
        self.pid_file = tmp / "postern.pid"
        self.conf.write_text(f"""daemon off;
worker_processes 4;
pid {self.pid_file};
error_log {self.log} info;
events {{}}
mail {{
    auth_http 127.0.0.1:{auth_port}/auth;
    {mail}
    server {{ listen 127.0.0.1:{self.port}; protocol imap; {server} }}
}}
""")
        self.proc = subprocess.Popen([sys.executable, "-m", "postern", "-p", f"{tmp}/", "-c",
                                      str(self.conf)], cwd=ROOT, stderr=subprocess.PIPE)
        wait_for(lambda: self.pid_file.exists() or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.proc.stderr.read()
        wait_for(lambda: self.log_text().count("start worker process ") >= 4)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def open(self) -> tuple[socket.socket, bool]:
        """A new session: (its socket, whether it was greeted; a refused one is closed)."""
        return self.first_line(socket.create_connection(("127.0.0.1", self.port), timeout=10))

    @staticmethod
    def first_line(s: socket.socket) -> tuple[socket.socket, bool]:
        line = b""
        while not line.endswith(b"\r\n"):
            chunk = s.recv(200)
            assert chunk, line
            line += chunk
        assert line in (GREETING, LIMITED), line
        if line == LIMITED:
            assert s.recv(100) == b""
            s.close()
        return s, line == GREETING

    def worker_of(self, s: socket.socket) -> int:
        """The pid of the worker that accepted this session (its "connected" log line)."""
        where = f"client 127.0.0.1:{s.getsockname()[1]} connected"

        def find():
            for line in self.log_text().splitlines():
                if where in line:
                    return int(re.search(r" (\d+)#\d+: ", line).group(1))
            return None
        return wait_for(find, what=where)

    def fill(self, tries: int = 40) -> tuple[list[socket.socket], set[int], int]:
        """Open `tries` sessions at once (so that several workers wake to take them), keep
        the greeted ones: (greeted, the workers that greeted any, how many were refused)."""
        opened = [socket.create_connection(("127.0.0.1", self.port), timeout=10)
                  for _ in range(tries)]
        held = [s for s, greeted in map(self.first_line, opened) if greeted]
        return held, {self.worker_of(s) for s in held}, tries - len(held)

    def greets(self, n: int, extra: int = 0) -> list[socket.socket] | None:
        """`n + extra` sessions at once: the n greeted ones when exactly n are (and the
        others refused), else None with every one closed."""
        held, _, refused = self.fill(n + extra)
        if len(held) == n and refused == extra:
            return held
        close_all(held)
        return None

    def refusals_since(self, mark: int, count: int) -> set[int]:
        """The workers that wrote the `count` refusal lines after offset `mark`."""
        def lines():
            text = self.log_text()[mark:]
            return text.count("limiting connections") >= count and text
        return {int(m) for m in re.findall(r' (\d+)#\d+: \*\d+ limiting connections by '
                                           r'zone "addr"', wait_for(lines))}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(15)
        self.proc.stderr.close()


@pytest.fixture
def auth():
    with alice_on_fake_imap() as auth:
        yield auth


@pytest.fixture
def proxy(tmp_path, auth):
    p = Proxy(tmp_path, auth.port, "limit_conn_zone $binary_remote_addr zone=addr:1m;",
              f"limit_conn addr {LIMIT};")
    yield p
    p.stop()


def close_all(sockets) -> None:
    for s in sockets:
        s.close()


def test_limit_conn_is_exact_across_workers(proxy):
    """Sessions spread over the workers; exactly LIMIT are greeted at once, every other is
    refused whichever worker takes it, and closing them gives the places back. Rounds
    repeat until the sessions of one round went to more than one worker."""
    for _ in range(10):
        mark = len(proxy.log_text())
        held, workers, refused = proxy.fill()
        try:
            assert len(held) == LIMIT and refused == 40 - LIMIT
            workers |= proxy.refusals_since(mark, refused)
        finally:
            close_all(held)
        close_all(wait_for(lambda: proxy.greets(LIMIT), what="places freed by closed sessions"))
        if len(workers) >= 2:
            break
    assert len(workers) >= 2, "all sessions of every round went to one worker"
    close_all(wait_for(lambda: proxy.greets(LIMIT, 3), what="the limit after the rounds"))


def test_a_dead_workers_sessions_are_reclaimed(proxy):
    """A worker killed with its sessions open does not keep them counted: the master
    forgets them when it reaps the worker."""
    held, _, _ = proxy.fill(LIMIT + 2)
    assert len(held) == LIMIT
    victim = proxy.worker_of(held[0])
    killed = [s for s in held if proxy.worker_of(s) == victim]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: f"worker process {victim} exited" in proxy.log_text())
    close_all(killed)
    alive = [s for s in held if s not in killed]
    more = wait_for(lambda: proxy.greets(len(killed), 2), what="the dead worker's places freed")
    close_all(alive + more)


def test_a_reload_keeps_the_counts(proxy):
    """SIGHUP with the zone unchanged: the new workers see the sessions the old ones still
    serve, and the places come back when those end."""
    held, _, _ = proxy.fill(LIMIT)
    try:
        assert len(held) == LIMIT
        old = {int(p) for p in re.findall(r"start worker process (\d+)", proxy.log_text())}
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(re.findall(r"start worker process ", proxy.log_text()))
                 >= len(old) + 4)

        def refused_by_a_new_worker() -> bool:
            _, greeted = proxy.open()
            assert not greeted  # old workers, until they stop listening, refuse too
            refuser = re.findall(r" (\d+)#\d+: \*\d+ limiting connections",
                                 proxy.log_text())[-1]
            return int(refuser) not in old

        wait_for(refused_by_a_new_worker, what="a refusal by a new worker")
    finally:
        close_all(held)
    close_all(wait_for(lambda: proxy.greets(LIMIT), what="places freed after the reload"))


def test_limit_req_and_limit_auth_across_workers(tmp_path, auth):
    """limit_req: at 1r/m with burst=3 nodelay, 4 sessions in all are greeted whichever
    worker takes them. limit_auth: 3 failures in all block the address in every worker,
    until the block ends."""
    proxy = Proxy(tmp_path, auth.port,
                  "limit_req_zone $binary_remote_addr zone=rate:1m rate=1r/m;"
                  "limit_auth_zone $binary_remote_addr zone=fail:1m failures=3 block=2s;",
                  "limit_req zone=rate burst=3 nodelay; limit_auth zone=fail;")
    try:
        held, _, refused = proxy.fill(20)
        assert (len(held), refused) == (4, 16)
        close_all(held)
    finally:
        proxy.stop()
    proxy = Proxy(tmp_path, auth.port,
                  "limit_auth_zone $binary_remote_addr zone=fail:1m failures=3 block=2s;",
                  "limit_auth zone=fail;")
    try:
        def attempt(password: bytes) -> bytes:
            s, greeted = proxy.open()
            assert greeted
            with s:
                s.sendall(b"a1 LOGIN alice " + password + b"\r\n")
                return s.recv(200)

        for _ in range(3):
            assert attempt(b"wrong") == b"a1 NO Invalid login or password\r\n"
        asked = len(auth.requests)
        for _ in range(6):  # whichever worker takes them
            assert attempt(b"secret") == b"a1 NO Temporary authentication failure\r\n"
        assert len(auth.requests) == asked
        wait_for(lambda: attempt(b"secret").startswith(b"a1 OK"), what="the block's end")
    finally:
        proxy.stop()
