"""The command line and the process model, run as an operator would run them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from postern.scenarios.kit.real.common import free_port, proc_stats

from tests.fake_support import alice_on_fake_imap

ROOT = Path(__file__).resolve().parent.parent


def postern(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "postern", *args], capture_output=True, check=False,
                          text=True, timeout=30, cwd=ROOT, **kw)


def config(tmp: Path, auth_port: int, ports: list[int], extra_main: str = "",
           extra_server: str = "") -> Path:
    servers = "\n".join(f"    server {{ listen 127.0.0.1:{p}; protocol imap; {extra_server} }}"
                        for p in ports)
    conf = tmp / "postern.conf"
    conf.write_text(f"""daemon off;
worker_processes 1;
pid {tmp}/postern.pid;
error_log {tmp}/error.log info;
{extra_main}
events {{}}
mail {{
    server_name mx.test;
    auth_http 127.0.0.1:{auth_port}/auth;
{servers}
}}
""")
    return conf


def edited(conf: Path, old: str, new: str) -> Path:
    """`conf` with the first `old` (which must be there) replaced by `new`."""
    text = conf.read_text()
    assert old in text, old
    conf.write_text(text.replace(old, new, 1))
    return conf


def greeting(port: int, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        return s.recv(100)


def wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def children(pid: int) -> list[int]:
    """The live children of pid, read from /proc (no procps needed on a bare machine)."""
    return sorted(child for child, (state, ppid, *_) in proc_stats()
                  if int(ppid) == pid and state != "Z")


class Running:
    def __init__(self, conf: Path) -> None:
        self.conf = conf
        self.pid_file = conf.parent / "postern.pid"
        self.proc = subprocess.Popen([sys.executable, "-m", "postern", "-p", f"{conf.parent}/",
                                      "-c", str(conf)], cwd=ROOT, stderr=subprocess.PIPE,
                                     text=True)
        wait_for(lambda: self.pid_file.exists() or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.proc.stderr.read()

    def workers(self) -> list[int]:
        return children(self.proc.pid)

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(15)


@pytest.fixture
def auth():
    with alice_on_fake_imap() as auth:
        yield auth


def test_version_and_help():
    out = postern("-v")
    assert out.returncode == 0 and out.stderr.startswith("postern version: postern/")
    assert "-c filename" in postern("-h").stdout


def test_config_test_ok_and_dump(tmp_path):
    conf = config(tmp_path, 9, [free_port()])
    out = postern("-t", "-c", str(conf))
    assert out.returncode == 0
    assert f"the configuration file {conf} syntax is ok" in out.stderr
    assert f"configuration file {conf} test is successful" in out.stderr
    dump = postern("-T", "-q", "-c", str(conf))
    assert dump.stderr == "" and dump.stdout.startswith(f"# configuration file {conf}:\n")


def test_config_error_exits_before_binding(tmp_path):
    port = free_port()
    conf = config(tmp_path, 9, [port], extra_server="bogus_directive on;")
    out = postern("-c", str(conf))
    assert out.returncode == 1
    line = conf.read_text().splitlines().index(
        next(l for l in conf.read_text().splitlines() if "bogus" in l)) + 1
    assert out.stderr.strip() == f'postern: [emerg] unknown directive "bogus_directive" ' \
                                 f"in {conf}:{line}"
    assert not (tmp_path / "postern.pid").exists()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing was left bound


def test_http_block_is_skipped_with_a_warning(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("events {}\nhttp { }\n")
    out = postern("-t", "-c", str(conf))
    assert out.returncode == 0 and '[warn] "http" block skipped' in out.stderr


def test_serve_stop_signal_and_nothing_left(tmp_path, auth):
    port = free_port()
    run = Running(config(tmp_path, auth.port, [port]))
    try:
        assert greeting(port) == b"* OK IMAP4 ready\r\n"
        assert int(run.pid_file.read_text()) == run.proc.pid
        workers = run.workers()
        assert len(workers) == 1
        out = postern("-s", "stop", "-c", str(run.conf))
        assert out.returncode == 0
        assert run.proc.wait(15) == 0
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists()
        assert not run.pid_file.exists()
    finally:
        run.stop()


def test_worker_processes(tmp_path, auth):
    port = free_port()
    run = Running(edited(config(tmp_path, auth.port, [port]),
                         "worker_processes 1;", "worker_processes 2;"))
    try:
        wait_for(lambda: len(run.workers()) == 2)
        assert greeting(port) == b"* OK IMAP4 ready\r\n"
    finally:
        run.stop()


def test_reload_adds_listener_and_bad_config_keeps_old(tmp_path, auth):
    p1, p2 = free_port(), free_port()
    conf = config(tmp_path, auth.port, [p1])
    run = Running(conf)
    try:
        assert greeting(p1) == b"* OK IMAP4 ready\r\n"
        old_workers = run.workers()
        config(tmp_path, auth.port, [p1, p2])
        run.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: not set(old_workers) & set(run.workers()) and run.workers())
        assert greeting(p1) == b"* OK IMAP4 ready\r\n"
        assert greeting(p2) == b"* OK IMAP4 ready\r\n"
        workers = run.workers()
        edited(conf, "protocol imap;", "protocol imap; nope 1;")
        run.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: 'unknown directive "nope"' in (tmp_path / "error.log").read_text())
        assert run.workers() == workers
        assert greeting(p2) == b"* OK IMAP4 ready\r\n"
    finally:
        run.stop()


@contextlib.contextmanager
def draining(tmp_path, auth, timeout: str):
    """A proxied session that still works after QUIT (nginx drains, no longer accepting)."""
    port = free_port()
    run = Running(config(tmp_path, auth.port, [port], f"worker_shutdown_timeout {timeout};"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            f = s.makefile("rwb", buffering=0)
            assert f.readline() == b"* OK IMAP4 ready\r\n"
            f.write(b"a1 LOGIN alice secret\r\n")
            assert f.readline().startswith(b"a1 OK")
            run.proc.send_signal(signal.SIGQUIT)
            time.sleep(0.5)
            with pytest.raises(OSError):  # no longer accepting
                greeting(port, timeout=1)
            f.write(b"a2 NOOP\r\n")
            assert f.readline().startswith(b"a2 OK")
            yield run, f
    finally:
        run.stop()


def test_quit_is_graceful(tmp_path, auth):
    with draining(tmp_path, auth, "10s") as (run, f):
        f.write(b"a3 LOGOUT\r\n")
        assert run.proc.wait(15) == 0


def test_term_after_quit_ends_the_drain(tmp_path, auth):
    """nginx: a TERM while the workers drain after QUIT is a fast shutdown."""
    with draining(tmp_path, auth, "60s") as (run, f):
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(10) == 0
        assert f.read(100) in (b"", None)  # closed


def test_usr1_reopens_logs(tmp_path, auth):
    port = free_port()
    run = Running(config(tmp_path, auth.port, [port]))
    try:
        log = tmp_path / "error.log"
        greeting(port)
        wait_for(lambda: "connected to" in log.read_text())
        os.rename(log, tmp_path / "error.log.1")
        run.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: log.exists())
        greeting(port)
        wait_for(lambda: "connected to" in log.read_text())
    finally:
        run.stop()


def test_daemon_on_detaches_and_quits_on_signal(tmp_path):
    port = free_port()
    conf = edited(config(tmp_path, 9, [port]), "daemon off;", "daemon on;")
    out = postern("-c", str(conf))
    assert out.returncode == 0  # the foreground process returns once the master detached
    pid_file = tmp_path / "postern.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
    pid = int(pid_file.read_text())
    try:
        assert greeting(port) == b"* OK IMAP4 ready\r\n"
        assert postern("-s", "quit", "-c", str(conf)).returncode == 0
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or
                 "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2])
        assert not pid_file.exists()
    finally:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def test_worker_connections_bound_sessions(tmp_path, auth):
    port = free_port()
    run = Running(edited(config(tmp_path, auth.port, [port]),
                         "events {}", "events { worker_connections 3; }"))
    try:
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        for s in held:
            assert s.recv(100) == b"* OK IMAP4 ready\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            assert extra.recv(100) == b""  # one listener + two sessions fill the three slots
        wait_for(lambda: "3 worker_connections are not enough" in
                 (tmp_path / "error.log").read_text())
        for s in held:
            s.close()
    finally:
        run.stop()
