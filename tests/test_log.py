"""proxy.log.ErrorLog: nginx's line format, level filtering, targets, robustness."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time

import postern.proxy.log as proxy_log
import pytest
from postern.proxy.conf.settings import LogTarget
from postern.proxy.log import ErrorLog

T0 = time.mktime((2024, 5, 1, 12, 0, 7, 0, 0, -1))  # local time, as nginx logs


@pytest.fixture
def ident(monkeypatch):
    monkeypatch.setattr(proxy_log, "_ident", lambda: "4242#4242")


def file_log(tmp_path, level="info"):
    path = tmp_path / "error.log"
    return path, ErrorLog([LogTarget(kind="file", path=str(path), level=level)],
                          clock=lambda: T0)


def test_line_format(tmp_path, ident):
    path, log = file_log(tmp_path)
    log.log("info", "client logged in", conn=7)
    log.log("error", "no password available")
    assert path.read_bytes() == (
        b"2024/05/01 12:00:07 [info] 4242#4242: *7 client logged in\n"
        b"2024/05/01 12:00:07 [error] 4242#4242: no password available\n")


def test_real_pid_and_thread_id(tmp_path):
    path, log = file_log(tmp_path)
    log.log("warn", "x")
    pid = os.getpid()
    assert path.read_text() == f"2024/05/01 12:00:07 [warn] {pid}#{threading.get_native_id()}: x\n"
    assert threading.get_native_id() == pid  # main thread: nginx prints the pid twice


def test_level_filter(tmp_path, ident):
    path, log = file_log(tmp_path, level="warn")
    for level in proxy_log.LEVELS:
        log.log(level, level)
    assert [ln.split("] ")[0].split("[")[1] for ln in path.read_text().splitlines()] == [
        "emerg", "alert", "crit", "error", "warn"]
    assert log.enabled("warn") and not log.enabled("notice")


def test_each_target_has_its_own_level(tmp_path, ident):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    log = ErrorLog([LogTarget(kind="file", path=str(a), level="error"),
                    LogTarget(kind="file", path=str(b), level="debug")], clock=lambda: T0)
    log.log("info", "detail")
    log.log("crit", "bad")
    assert a.read_text().count("\n") == 1 and "bad" in a.read_text()
    assert b.read_text().count("\n") == 2


def test_long_line_truncated_like_nginx(tmp_path, ident):
    path, log = file_log(tmp_path)
    log.log("info", "x" * 5000)
    data = path.read_bytes()
    assert len(data) == 2048 and data.endswith(b"x\n")


def test_non_utf8_bytes_survive(tmp_path, ident):
    path, log = file_log(tmp_path)
    log.log("info", b'login: "\xff\xfe"'.decode("utf-8", "surrogateescape"))
    assert path.read_bytes().endswith(b'login: "\xff\xfe"\n')


def test_reopen_after_rotation(tmp_path, ident):
    path, log = file_log(tmp_path)
    log.log("info", "one")
    path.rename(tmp_path / "error.log.1")
    log.log("info", "two")  # still the rotated file until reopened
    log.reopen()
    log.log("info", "three")
    assert (tmp_path / "error.log.1").read_text().count("\n") == 2
    assert path.read_text().endswith("three\n")


def test_stderr_target(capfd, ident):
    log = ErrorLog([LogTarget(kind="stderr", level="notice")], clock=lambda: T0)
    log.log("notice", "start worker processes")
    log.log("info", "hidden")
    assert capfd.readouterr().err == (
        "2024/05/01 12:00:07 [notice] 4242#4242: start worker processes\n")


def test_never_raises(tmp_path, ident):
    """Broken targets (a file in a missing directory, syslog to a closed UDP port and to a
    missing socket) cost nothing but their own lines: every call returns, and the working
    target listed after them still gets each line, before and after reopen; a bogus level is
    dropped, a message that cannot be encoded is written with replacements."""
    good = tmp_path / "good.log"
    log = ErrorLog([
        LogTarget(kind="file", path=str(tmp_path / "missing-dir" / "x.log"), level="debug"),
        LogTarget(kind="syslog", syslog_host="127.0.0.1", syslog_port=9, level="debug"),
        LogTarget(kind="syslog", syslog_unix_path=str(tmp_path / "no-socket"), level="debug"),
        LogTarget(kind="file", path=str(good), level="debug"),
    ], clock=lambda: T0)
    results = [log.log("error", "nobody listens") for _ in range(3)]
    results.append(log.log("bogus-level", "ignored"))
    results.append(log.log("info", "\udcff\ud800 lone surrogates"))
    results.append(log.reopen())
    results.append(log.log("warn", "after reopen"))
    results.append(log.close())
    results.append(log.log("error", "after close"))
    assert results == [None] * len(results)
    head = b"2024/05/01 12:00:07 [%s] 4242#4242: "
    assert good.read_bytes() == (
        (head % b"error" + b"nobody listens\n") * 3
        + head % b"info" + b"?? lone surrogates\n"
        + head % b"warn" + b"after reopen\n")
    assert not (tmp_path / "missing-dir").exists()


def test_full_disk_is_swallowed(ident):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    log = ErrorLog([LogTarget(kind="file", path="/dev/full", level="info")], clock=lambda: T0)
    log.log("info", "no space")
    log.log("info", "skipped for the rest of the second")


def udp_receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


def test_syslog_packet(ident):
    with udp_receiver() as rx:
        port = rx.getsockname()[1]
        log = ErrorLog([
            LogTarget(kind="syslog", syslog_host="127.0.0.1", syslog_port=port, level="info"),
            LogTarget(kind="syslog", syslog_host="127.0.0.1", syslog_port=port, level="info",
                      syslog_facility="mail", syslog_tag="abc_1", syslog_nohostname=True,
                      syslog_severity="crit"),
        ], hostname="mx", clock=lambda: time.mktime((2024, 5, 6, 9, 4, 5, 0, 0, -1)))
        log.log("info", "client logged in", conn=3)
        first, second = rx.recv(4096), rx.recv(4096)
    line = b"2024/05/06 09:04:05 [info] 4242#4242: *3 client logged in"
    assert first == b"<190>May  6 09:04:05 mx nginx: " + line
    assert second == b"<22>May  6 09:04:05 abc_1: " + line  # severity= is not used


def test_syslog_unix_socket(tmp_path, ident):
    path = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(path)
        rx.settimeout(5)
        log = ErrorLog([LogTarget(kind="syslog", syslog_unix_path=path, level="warn")],
                       hostname="h", clock=lambda: T0)
        log.log("warn", "w")
        assert rx.recv(4096) == b"<188>May  1 12:00:07 h nginx: 2024/05/01 12:00:07 [warn] " \
            b"4242#4242: w"


def test_syslog_recovers_after_receiver_appears(ident):
    with udp_receiver() as probe:
        port = probe.getsockname()[1]
    log = ErrorLog([LogTarget(kind="syslog", syslog_host="127.0.0.1", syslog_port=port,
                              level="info")], hostname="h", clock=lambda: T0)
    for _ in range(3):
        log.log("info", "lost")  # ECONNREFUSED comes back on a later send: swallowed
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", port))
        rx.settimeout(5)
        # a pending error may still eat one message; then the socket is made anew
        log.log("info", "a")
        log.log("info", "b")
        assert rx.recv(4096).endswith((b": a", b": b"))


# --- against the real nginx ----------------------------------------------------------

NGINX = shutil.which("nginx")


def syslog_host(packet: bytes) -> str:
    """The HOST field of an RFC 3164 header "<PRI>Mmm dd hh:mm:ss HOST TAG". The time stamp is
    fixed-width with a space-padded day ("Dec  5"), so HOST is found after it, never by
    counting spaces."""
    header = re.match(rb"<\d+>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d (\S*) ", packet)
    assert header, packet
    return header.group(1).decode()


@pytest.mark.parametrize("day", [5, 25])
def test_syslog_host_is_read_on_any_day(day):
    packet = f"<190>Dec {day:2d} 09:04:05 mx nginx: 2026/12/{day:02d} 09:04:05 [info] x".encode()
    assert syslog_host(packet) == "mx"


@pytest.mark.skipif(not NGINX and not os.environ.get("CI"), reason="nginx is not installed")
def test_same_bytes_as_nginx(tmp_path, monkeypatch):
    """Start nginx with a file and two syslog logs, take its first notice, and rebuild
    the same bytes with ErrorLog from that line's time, pid and text."""
    assert NGINX, "nginx is required in CI"
    with udp_receiver() as rx1, udp_receiver() as rx2:
        p1, p2 = rx1.getsockname()[1], rx2.getsockname()[1]
        (tmp_path / "nginx.conf").write_text(
            "daemon off; master_process off; pid nginx.pid;\n"
            "error_log err.log notice;\n"
            f"error_log syslog:server=127.0.0.1:{p1} notice;\n"
            f"error_log syslog:server=127.0.0.1:{p2},facility=mail,tag=pm_1,nohostname "
            "notice;\nevents {}\n")
        proc = subprocess.Popen([NGINX, "-p", f"{tmp_path}/", "-c", str(tmp_path / "nginx.conf"),
                                 "-e", str(tmp_path / "startup.log")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            theirs1, theirs2 = rx1.recv(4096), rx2.recv(4096)
            deadline = time.time() + 5
            while not (tmp_path / "err.log").exists() or not (tmp_path / "err.log").read_bytes():
                assert time.time() < deadline
                time.sleep(0.05)
        finally:
            proc.kill()  # a SIGTERM that lands before its event loop starts goes unseen
            proc.wait(10)
    their_file_line = (tmp_path / "err.log").read_bytes().splitlines(keepends=True)[0]
    m = re.match(rb"(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d) \[notice\] (\d+#\d+): (.*)\n",
                 their_file_line)
    assert m, their_file_line
    stamp = time.mktime(tuple(int(x) for x in m.groups()[:6]) + (0, 0, -1))
    monkeypatch.setattr(proxy_log, "_ident", lambda: m.group(7).decode())
    host = syslog_host(theirs1)  # nginx's own (lowercased) host name

    ours_file = tmp_path / "ours.log"
    with udp_receiver() as o1, udp_receiver() as o2:
        log = ErrorLog([
            LogTarget(kind="file", path=str(ours_file), level="notice"),
            LogTarget(kind="syslog", syslog_host="127.0.0.1", syslog_port=o1.getsockname()[1],
                      level="notice"),
            LogTarget(kind="syslog", syslog_host="127.0.0.1", syslog_port=o2.getsockname()[1],
                      level="notice", syslog_facility="mail", syslog_tag="pm_1",
                      syslog_nohostname=True),
        ], hostname=host, clock=lambda: stamp)
        log.log("notice", m.group(8).decode())
        ours1, ours2 = o1.recv(4096), o2.recv(4096)
    assert ours_file.read_bytes() == their_file_line
    if host:  # nginx leaves the host name empty in packets sent before it is known
        assert ours1 == theirs1
    assert ours2 == theirs2


def test_masked_header_lines_hide_auth_pass():
    from postern.proxy.log import masked_header_lines

    block = (b"GET /auth HTTP/1.0\r\nAuth-User: carol\r\nauth-pass: correct%20horse\r\n"
             b"Auth-Salt: <1.2@mx>\r\n\r\n")
    assert masked_header_lines(block) == ["GET /auth HTTP/1.0", "Auth-User: carol",
                                          "auth-pass: xxxxxxxx", "Auth-Salt: <1.2@mx>"]
