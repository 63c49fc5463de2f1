"""Configuration text nginx takes as C strings: a NUL byte ends the value there (open(),
getpwnam() and OpenSSL stop at it), non-UTF-8 bytes reach OpenSSL and the log as they are.
`postern -t` answers as `nginx -t` does, never with a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from postern.scenarios.kit.real.common import free_port

from tests.conf_support import MODULE, NGINX, outcome, require_nginx, tls_files

__all__ = ["tls_files"]

require_nginx()

E = b"events {}\n"
A = b"auth_http 127.0.0.1:9000/auth;"


def _server(extra: bytes = b"", listen: bytes = b"") -> bytes:
    return b"server { listen 127.0.0.1:{P}%s; protocol imap; %s }" % (listen, extra)


TLS_SERVER = _server(b"ssl_certificate cert.pem; ssl_certificate_key key.pem;", b" ssl")

CASES = {
    "nul_in_certificate_path": E + b"mail { " + A + _server(
        b'ssl_certificate "cert.pem\x00junk"; ssl_certificate_key key.pem;', b" ssl") + b" }",
    "non_utf8_certificate_path": E + b"mail { " + A + _server(
        b'ssl_certificate "\xff.pem"; ssl_certificate_key key.pem;', b" ssl") + b" }",
    "nul_in_user": b'user "no\x00body";\n' + E + b"mail { " + A + _server() + b" }",
    "non_utf8_user": b"user \xffnobody;\n" + E + b"mail { " + A + _server() + b" }",
    "nul_in_ciphers": E + b'mail { ' + A + b' ssl_ciphers "HIGH\x00x"; ' + TLS_SERVER + b" }",
    "non_utf8_ciphers": E + b'mail { ' + A + b' ssl_ciphers "HIGH\xff"; ' + TLS_SERVER + b" }",
    "nul_in_error_log": b'error_log "{D}/e\x00.log";\n' + E + b"mail { " + A + _server() + b" }",
}


def _run(cmd: list[str]) -> list[str]:
    proc = subprocess.run(cmd, check=False, capture_output=True, timeout=60)
    return proc.stderr.decode("utf-8", "surrogateescape").splitlines()


@pytest.mark.parametrize("name", sorted(CASES))
def test_postern_t_answers_as_nginx_t(name, tmp_path, tls_files):
    for f in tls_files.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    text = CASES[name].replace(b"{P}", str(free_port()).encode()).replace(
        b"{D}", str(tmp_path).encode())
    conf = tmp_path / "nginx.conf"
    conf.write_bytes(b"load_module %s;\n" % MODULE.encode() + text + b"\n")
    common = ["-t", "-q", "-p", f"{tmp_path}/", "-c", str(conf)]
    nginx = _run([NGINX, *common, "-e", str(tmp_path / "nginx-error.log")])
    ours = _run([sys.executable, "-m", "postern", *common, "-e", str(tmp_path / "p-error.log")])
    assert not any("Traceback" in line for line in ours), ours
    ours = [line.replace("postern: ", "nginx: ", 1) for line in ours]
    assert outcome(ours) == outcome(nginx)


def test_bind_failure_names_the_address():
    import socket

    from postern.proxy.conf.settings import Listen
    from postern.proxy.master import _new_socket
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        with pytest.raises(OSError) as info:
            _new_socket(Listen(f"127.0.0.1:{port}", "127.0.0.1", port))
    finally:
        holder.close()
    assert str(info.value) == f"bind() to 127.0.0.1:{port} failed (98: Address already in use)"
