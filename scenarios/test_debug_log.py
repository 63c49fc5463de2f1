"""`error_log FILE debug`: nginx (built --with-debug, as Debian's is) writes [debug] lines
for each step of a mail session; Postern writes the same steps in nginx's words, and never
a password, a SASL blob or Auth-Pass (nginx 1.22 logs `imap login:"..." passwd:"..."` and
the whole auth request at debug; Postern masks or leaves them out).
"""

from __future__ import annotations

import base64
import ssl
import time
from pathlib import Path

from postern.fakes.auth import User
from postern.scenarios.kit.tls_support import client_context, pki, tls_connect

__all__ = ["pki"]

PASSWORD = b"correct horse"
# the client's password in every form it travels, and the backend password the auth
# server hands back in Auth-Pass
SECRETS = [PASSWORD, b"correct%20horse", b"correct+horse",
           base64.b64encode(b"\0carol\0" + PASSWORD), base64.b64encode(PASSWORD),
           b"secret"]


def _session(lab, tmp_path_factory, level: str) -> str:
    log = Path(tmp_path_factory.mktemp("debuglog")) / "debug.log"
    log.parent.chmod(0o777)
    proxy = lab.proxy(server=f"error_log {log} {level};")
    alice = lab.auth.users["alice"]
    lab.auth.users["carol"] = User(PASSWORD.decode(), backends=alice.backends,
                                   backend_user="alice", backend_password="secret")
    with proxy.connect() as c:
        c.expect(b"* OK IMAP4 ready\r\n")
        c.send(b"a1 CAPABILITY\r\n").readline()
        c.readline()
        blob = base64.b64encode(b"\0carol\0" + PASSWORD)
        c.send(b"a2 AUTHENTICATE PLAIN " + blob + b"\r\n")
        assert c.readline().startswith(b"a2 OK")
        c.send(b"a3 LOGOUT\r\n")
        c.read_all(timeout=5)
    for _ in range(50):  # the close is logged after the client sees EOF
        if log.exists() and b"close mail connection" in log.read_bytes() or level != "debug":
            break
        time.sleep(0.1)
    time.sleep(0.2)
    return log.read_bytes().decode("latin-1")


STEPS = ["imap auth state", "mail auth http", "mail proxy", "close mail connection"]


def test_debug_lines_for_each_step(lab, tmp_path_factory, target):
    """nginx error_log debug: the session's steps appear as [debug] lines with the
    connection number (*N), and on Postern none holds the password in any form."""
    text = _session(lab, tmp_path_factory, "debug")
    debug = [line for line in text.splitlines() if "[debug]" in line]
    for step in STEPS:
        assert any(step in line for line in debug), f"{step!r} missing:\n{text}"
    assert any(" *" in line for line in debug)
    if target == "postern":
        for step in ("accept: 127.0.0.1:", 'SSL:', "connect to 127.0.0.1:",
                     "mail proxy relay start", 'mail auth http header: "Auth-Pass: xxxxxxxx"'):
            if step == "SSL:":
                continue  # plain IMAP: no handshake in this session
            assert any(step in line for line in debug), f"{step!r} missing:\n{text}"
        for secret in SECRETS:
            assert secret.decode() not in text, f"{secret!r} logged:\n{text}"


def test_no_debug_lines_at_info(lab, tmp_path_factory):
    """nginx error_log info: no [debug] line is written."""
    text = _session(lab, tmp_path_factory, "info")
    assert "client logged in" in text
    assert "[debug]" not in text


def test_debug_line_for_the_tls_handshake(lab, pki, tmp_path_factory):
    """nginx error_log debug (ngx_ssl_handshake_log): `SSL: TLSv1.2, cipher: "..."` once
    the handshake is done."""
    log = Path(tmp_path_factory.mktemp("debugtls")) / "debug.log"
    log.parent.chmod(0o777)
    proxy = lab.proxy(server=pki.server() + f"error_log {log} debug;", listen_params="ssl")
    ctx = client_context(version=ssl.TLSVersion.TLSv1_2)
    with tls_connect(proxy, ctx) as c:
        c.expect(b"* OK IMAP4 ready\r\n")
    for _ in range(50):
        if log.exists() and b"SSL: TLSv1.2, cipher: " in log.read_bytes():
            break
        time.sleep(0.1)
    assert b"SSL: TLSv1.2, cipher: \"ECDHE-" in log.read_bytes()
