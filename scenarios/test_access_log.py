"""`access_log` and `log_format` (Postern; nginx's mail module has no access log): one line
per session at its end, in the style of nginx's stream module, for IMAP, POP3 and SMTP, with
TLS and without, after auth failures and timeouts; buffered lines, reopened on USR1, and
never a password or a SASL blob in any line.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
from pathlib import Path

import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit.real.common import free_port
from postern.scenarios.kit.smtp_support import AUTH_OK, EHLO_DEFAULT, GREETING, START_TLS, plain
from postern.scenarios.kit.support import wait_until
from postern.scenarios.kit.tls_support import client_context, pki, tls_connect

__all__ = ["pki"]

pytestmark = pytest.mark.postern_only("nginx's mail module has no access log")

# every variable, as JSON (escape=json: a missing value is empty)
VARIABLES = ["remote_addr", "remote_port", "server_addr", "server_port", "protocol", "server_name", "login", "auth_status", "upstream_addr", "ssl_protocol", "ssl_cipher", "ssl_client_verify", "bytes_received", "bytes_sent", "upstream_bytes_received", "upstream_bytes_sent", "session_time", "session_id", "end", "connection", "pid", "msec", "time_local", "time_iso8601"]
JSON_FORMAT = "log_format all escape=json '{" + ",".join(
    f'"{name}":"${name}"' for name in VARIABLES) + "}';"


def _log_path(tmp_path_factory, name: str = "access.log") -> Path:
    d = Path(tmp_path_factory.mktemp("accesslog"))
    d.chmod(0o777)
    return d / name


def _lines(path: Path, count: int = 1) -> list[str]:
    """The log's lines once it has `count` (a session is logged after its client sees EOF)."""
    wait_until(lambda: path.exists() and path.read_bytes().count(b"\n") >= count,
               what=f"{count} line(s) in {path}")
    return path.read_text("latin-1").splitlines()


def _greeted_and_logged_out(proxy) -> None:
    """One IMAP session that says only LOGOUT: one access log line."""
    with proxy.connect() as c:
        c.expect(b"* OK IMAP4 ready\r\n")
        c.send(b"a1 LOGOUT\r\n")
        c.read_all(timeout=5)


def _entries(path: Path, count: int = 1) -> list[dict]:
    return [json.loads(line) for line in _lines(path, count)]


def _json_proxy(lab, tmp_path_factory, server: str = "", protocol: str = "imap",
                listen_params: str = ""):
    path = _log_path(tmp_path_factory)
    proxy = lab.proxy(server=f"access_log {path} all;\n" + server, mail=JSON_FORMAT,
                      protocol=protocol, listen_params=listen_params)
    return proxy, path


def test_imap_session_relayed(lab, tmp_path_factory):
    """access_log: a relayed IMAP session's line carries its addresses, login, the auth
    server's OK, the backend, byte counts both ways and how it ended."""
    proxy, path = _json_proxy(lab, tmp_path_factory)
    with proxy.connect() as c:
        lab.login(c)
        c.send(b"a2 LOGOUT\r\n")
        c.read_all(timeout=5)
    [e] = _entries(path)
    assert (e["protocol"], e["login"], e["auth_status"], e["end"]) == \
        ("imap", "alice", "OK", "relayed"), e
    assert e["remote_addr"] == "127.0.0.1" and int(e["remote_port"]) > 0, e
    assert (e["server_addr"], e["server_port"]) == ("127.0.0.1", str(proxy.port)), e
    assert e["server_name"] == "mx.test", e
    assert e["upstream_addr"] == f"127.0.0.1:{lab.imap.port}", e
    assert e["ssl_protocol"] == e["ssl_cipher"] == e["ssl_client_verify"] == "", e
    sent = len(b"a1 LOGIN alice secret\r\na2 LOGOUT\r\n")
    assert int(e["bytes_received"]) == sent, e
    assert int(e["bytes_sent"]) > len(b"* OK IMAP4 ready\r\n"), e
    assert int(e["upstream_bytes_received"]) > 0 and int(e["upstream_bytes_sent"]) > 0, e
    assert re.fullmatch(r"\d+\.\d{3}", e["session_time"]), e
    assert re.fullmatch(r"\d+\.\d{3}", e["msec"]), e
    assert e["session_id"] == f"{e['pid']}-{e['connection']}", e
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}", e["time_local"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", e["time_iso8601"])
    # the session id is the one of the error log's lines: "PID#TID: *N"
    assert re.search(rf"{e['pid']}#\d+: \*{e['connection']} ", proxy.error_log())


def test_imap_implicit_tls_default_format(lab, pki, tmp_path_factory):
    """access_log PATH (the default format "mail"): a TLS session names its protocol."""
    path = _log_path(tmp_path_factory)
    proxy = lab.proxy(server=pki.server() + f"access_log {path};", listen_params="ssl")
    with tls_connect(proxy, client_context()) as c:
        lab.login(c)
        c.send(b"a2 LOGOUT\r\n")
        c.read_all(timeout=5)
    [line] = _lines(path)
    pattern = (rf'127\.0\.0\.1:\d+ \[[^]]+\] imap 127\.0\.0\.1:{proxy.port} "alice" "OK" '
               rf'127\.0\.0\.1:{lab.imap.port} "relayed" \d+ \d+ \d+\.\d{{3}} TLSv1\.[23] '
               r'\d+-\d+')
    assert re.fullmatch(pattern, line), line


def test_tls_failures(lab, pki, tmp_path_factory):
    """access_log: plaintext sent to a `listen ... ssl` port ends as "tls error", a client
    that never starts its handshake as "timeout"."""
    proxy, path = _json_proxy(lab, tmp_path_factory, pki.server() + "timeout 1s;",
                              listen_params="ssl")
    with proxy.connect() as c:
        c.send(b"a1 LOGIN alice secret\r\n")
        c.read_all(timeout=5)
    with proxy.connect() as c:
        c.read_all(timeout=5)
    first, second = _entries(path, 2)
    assert (first["end"], first["login"], first["ssl_protocol"]) == ("tls error", "", ""), first
    assert second["end"] == "timeout", second


def test_pop3_stls_session(lab, pki, tmp_path_factory):
    """access_log: a POP3 session that logs in after STLS has the TLS values."""
    proxy, path = _json_proxy(lab, tmp_path_factory, "starttls on;\n" + pki.server(),
                              protocol="pop3")
    with proxy.connect() as c:
        c.expect(b"+OK POP3 ready\r\n")
        c.send(b"STLS\r\n").expect(b"+OK\r\n")
        c.starttls(client_context())
        c.send(b"USER alice\r\n").expect(b"+OK\r\n")
        c.send(b"PASS secret\r\n").expect(b"+OK")
        c.send(b"QUIT\r\n")
        c.read_all(timeout=5)
    [e] = _entries(path)
    assert (e["protocol"], e["login"], e["end"]) == ("pop3", "alice", "relayed"), e
    assert e["ssl_protocol"].startswith("TLSv1."), e
    assert e["ssl_cipher"] and e["ssl_client_verify"] == "NONE", e


def test_smtp_session_relayed(lab, tmp_path_factory):
    """access_log: an SMTP session after AUTH PLAIN."""
    proxy, path = _json_proxy(lab, tmp_path_factory, protocol="smtp")
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b"EHLO client.example\r\n").expect(EHLO_DEFAULT)
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(AUTH_OK)
        c.send(b"QUIT\r\n")
        c.read_all(timeout=5)
    [e] = _entries(path)
    assert (e["protocol"], e["login"], e["auth_status"], e["end"]) == \
        ("smtp", "alice", "OK", "relayed"), e
    assert e["upstream_addr"] == f"127.0.0.1:{lab.smtp.port}", e


def test_smtp_starttls_session(lab, pki, tmp_path_factory):
    """access_log: an SMTP session after STARTTLS names the TLS version and cipher the client
    got."""
    proxy, path = _json_proxy(lab, tmp_path_factory, "starttls on;\n" + pki.server(),
                              protocol="smtp")
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b"EHLO client.example\r\n").expect(
            b"250-mx.test\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n")
        c.send(b"STARTTLS\r\n").expect(START_TLS)
        c.starttls(client_context())
        version, cipher = c.sock.version(), c.sock.cipher()[0]
        c.send(b"AUTH PLAIN " + plain() + b"\r\n").expect(AUTH_OK)
        c.send(b"QUIT\r\n")
        c.read_all(timeout=5)
    [e] = _entries(path)
    assert (e["protocol"], e["login"], e["end"]) == ("smtp", "alice", "relayed"), e
    assert (e["ssl_protocol"], e["ssl_cipher"]) == (version, cipher), e


def test_pop3_session_without_tls(lab, tmp_path_factory):
    """access_log: a plain POP3 session, its bytes counted on both sides."""
    proxy, path = _json_proxy(lab, tmp_path_factory, protocol="pop3")
    with proxy.connect() as c:
        c.expect(b"+OK POP3 ready\r\n")
        c.send(b"USER alice\r\n").expect(b"+OK\r\n")
        c.send(b"PASS secret\r\n").expect(b"+OK")
        c.send(b"QUIT\r\n")
        received = c.read_all(timeout=5)
    [e] = _entries(path)
    assert (e["protocol"], e["login"], e["end"], e["ssl_protocol"]) == \
        ("pop3", "alice", "relayed", ""), e
    assert int(e["bytes_received"]) == len(b"USER alice\r\nPASS secret\r\nQUIT\r\n"), e
    assert int(e["bytes_sent"]) >= len(b"+OK POP3 ready\r\n+OK\r\n+OK") + len(received), e


def test_relay_proxy_timeout(lab, tmp_path_factory):
    """access_log: a relayed session that goes quiet past proxy_timeout ends as "timeout"."""
    proxy, path = _json_proxy(lab, tmp_path_factory, "proxy_timeout 1s;")
    with proxy.connect() as c:
        lab.login(c)
        c.read_all(timeout=5)
    [e] = _entries(path)
    assert (e["login"], e["auth_status"], e["end"]) == ("alice", "OK", "timeout"), e
    assert e["upstream_addr"] == f"127.0.0.1:{lab.imap.port}", e


def test_backend_unreachable_is_an_internal_error(lab, tmp_path_factory):
    """access_log: a backend that refuses the connection ends the session with the
    internal error, and the line names the backend."""
    proxy, path = _json_proxy(lab, tmp_path_factory)
    port = free_port()
    lab.auth.push(Reply.ok("127.0.0.1", port))
    with proxy.connect() as c:
        c.expect(b"* OK IMAP4 ready\r\n")
        c.send(b"a1 LOGIN alice secret\r\n")
        c.read_all(timeout=5)
    [e] = _entries(path)
    assert (e["auth_status"], e["upstream_addr"], e["end"]) == \
        ("OK", f"127.0.0.1:{port}", "internal error"), e


def test_smtp_auth_failure(lab, tmp_path_factory):
    """access_log: the auth server's Auth-Status text, and the session ended by it."""
    proxy, path = _json_proxy(lab, tmp_path_factory, protocol="smtp")
    with proxy.connect() as c:
        c.expect(GREETING)
        c.send(b"EHLO client.example\r\n").expect(EHLO_DEFAULT)
        c.send(b"AUTH PLAIN " + plain(password=b"wrong") + b"\r\n")
        c.read_all(timeout=5)
    [e] = _entries(path)
    assert (e["login"], e["auth_status"], e["end"], e["upstream_addr"]) == \
        ("alice", "Invalid login or password", "auth failed", ""), e


def test_imap_timeout(lab, tmp_path_factory):
    """access_log: a client that says nothing until `timeout` ends as "timeout", without a
    login or an auth status."""
    proxy, path = _json_proxy(lab, tmp_path_factory, "timeout 1s;")
    with proxy.connect() as c:
        c.expect(b"* OK IMAP4 ready\r\n")
        c.read_all(timeout=5)
    [e] = _entries(path)
    assert (e["end"], e["login"], e["auth_status"]) == ("timeout", "", ""), e


def test_client_closed_default_escaping(lab, tmp_path_factory):
    """log_format escape=default: a missing value is "-", `"` and non-ASCII bytes are \\xHH;
    a client that leaves mid-dialogue ends as "client closed"."""
    path = _log_path(tmp_path_factory)
    proxy = lab.proxy(server=f"access_log {path} esc;",
                      mail="log_format esc '$login|$auth_status|$upstream_addr|$end';")
    with proxy.connect() as c:
        c.expect(b"* OK IMAP4 ready\r\n")
    with proxy.connect() as c:
        c.expect(b"* OK IMAP4 ready\r\n")
        c.send(b'a1 LOGIN "al\\"i\xc3\xa9" nope\r\n')
        c.read_all(timeout=5)
    first, second = _lines(path, 2)
    assert first == "-|-|-|client closed", first
    assert second == "al\\x22i\\xC3\\xA9|Invalid login or password|-|auth failed", second


def test_no_secret_in_any_line(lab, tmp_path_factory):
    """access_log: no password, in any form, and no SASL blob reaches a line, whatever the
    format asks for."""
    path = _log_path(tmp_path_factory)
    proxy = lab.proxy(server=f"access_log {path} all;\naccess_log {path};", mail=JSON_FORMAT)
    blob = base64.b64encode(b"\0alice\0secret")
    with proxy.connect() as c:
        c.expect(b"* OK IMAP4 ready\r\n")
        c.send(b"a1 AUTHENTICATE PLAIN " + blob + b"\r\n")
        assert c.readline().startswith(b"a1 OK")
        c.send(b"a2 LOGOUT\r\n")
        c.read_all(timeout=5)
    with proxy.connect() as c:
        lab.login(c)
    text = "\n".join(_lines(path, 4))
    for secret in (b"secret", blob, base64.b64encode(b"secret")):
        assert secret.decode() not in text, f"{secret!r} logged:\n{text}"
    assert text.count('"login":"alice"') == 2, text


def test_buffered_lines_and_usr1_reopen(lab, tmp_path_factory):
    """access_log buffer=: lines wait in the worker's buffer; USR1 (as for the error log)
    writes them out and reopens the file, so after a rename the next line goes to a new
    file of the old name."""
    path = _log_path(tmp_path_factory)
    proxy = lab.proxy(server=f"access_log {path} mail buffer=64k;")
    _greeted_and_logged_out(proxy)
    # the line is written (or buffered) before the connection is closed
    assert path.read_bytes() == b"", "not buffered"
    rotated = path.with_name("access.log.1")
    os.rename(path, rotated)
    pid = int(Path(proxy.instance.pid_path).read_text())
    os.kill(pid, signal.SIGUSR1)
    wait_until(lambda: rotated.read_bytes().count(b"\n") == 1, what="the buffered line")
    wait_until(path.exists, what="the reopened file")
    _greeted_and_logged_out(proxy)
    os.kill(pid, signal.SIGUSR1)
    assert '"closed"' in _lines(path)[0]
    assert rotated.read_bytes().count(b"\n") == 1


def test_flush_timer_writes_a_waiting_line(lab, tmp_path_factory):
    """access_log buffer= flush=: a line that waits in the buffer is written once `flush`
    has passed, without USR1 or more lines."""
    path = _log_path(tmp_path_factory)
    proxy = lab.proxy(server=f"access_log {path} mail buffer=64k flush=1s;")
    _greeted_and_logged_out(proxy)
    assert path.read_bytes() == b"", "not buffered"
    assert '"closed"' in _lines(path)[0]
