"""PROXY protocol in front of the proxy and towards the backend (nginx: `listen ...
proxy_protocol`, `set_real_ip_from`, `proxy_protocol on`; docs/behaviour.md §4.2, §4.3, §11.5)."""

from __future__ import annotations

import socket
import threading

import pytest
from postern.proxy.proxy_protocol import v2_header


def _proxy(lab, server: str = ""):
    """A server whose listen socket expects a PROXY header."""
    return lab.proxy(server=server, protocol="imap", listen_params="proxy_protocol")


def _login(c):
    c.expect(b"* OK IMAP4 ready\r\n")
    c.send(b"a1 LOGIN alice secret\r\n")
    return c.readline()


def test_v1_header_with_realip_replaces_client_ip(lab):
    """nginx: set_real_ip_from trusts the peer, so Client-IP is the PROXY source and the
    Proxy-Protocol-* headers carry the header's four fields."""
    proxy = _proxy(lab, "set_real_ip_from 127.0.0.1;")
    with proxy.connect() as c:
        c.send(b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 143\r\n")
        assert _login(c).startswith(b"a1 OK")
    req = lab.auth.requests[0]
    assert req.header("Client-IP") == "192.0.2.1"
    assert [(k, v) for k, v in req.headers if k.startswith("Proxy-Protocol")] == [
        ("Proxy-Protocol-Addr", "192.0.2.1"), ("Proxy-Protocol-Port", "40000"),
        ("Proxy-Protocol-Server-Addr", "192.0.2.2"), ("Proxy-Protocol-Server-Port", "143")]


def test_v1_header_without_realip_keeps_peer_address(lab):
    """nginx: without set_real_ip_from the TCP peer stays the client; the PROXY fields are
    still passed to the auth server."""
    proxy = _proxy(lab)
    with proxy.connect() as c:
        c.send(b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 143\r\n")
        assert _login(c).startswith(b"a1 OK")
    req = lab.auth.requests[0]
    assert req.header("Client-IP") == "127.0.0.1"
    assert req.header("Proxy-Protocol-Addr") == "192.0.2.1"


def test_v2_header_is_read(lab):
    """nginx listen proxy_protocol (docs/behaviour.md §4.2): PROXY protocol v2 (binary) with a TCP4
    address block."""
    proxy = _proxy(lab, "set_real_ip_from 127.0.0.0/8;")
    with proxy.connect() as c:
        c.send(v2_header(("198.51.100.7", 5555), ("198.51.100.8", 993)))
        assert _login(c).startswith(b"a1 OK")
    req = lab.auth.requests[0]
    assert (req.header("Client-IP"), req.header("Proxy-Protocol-Port")) == ("198.51.100.7", "5555")


def test_unknown_header_records_nothing(lab):
    """docs/behaviour.md §4.2: `PROXY UNKNOWN` is skipped to CRLF, no Proxy-Protocol-* headers, no realip."""
    proxy = _proxy(lab, "set_real_ip_from 127.0.0.1;")
    with proxy.connect() as c:
        c.send(b"PROXY UNKNOWN\r\n")
        assert _login(c).startswith(b"a1 OK")
    req = lab.auth.requests[0]
    assert req.header("Client-IP") == "127.0.0.1" and req.header("Proxy-Protocol-Addr") is None


@pytest.mark.parametrize("garbage", [b"a1 NOOP\r\n", b"PROXY TCP4 bad\r\n"])
def test_broken_header_closes_silently(lab, garbage):
    """nginx: a broken header is logged (`broken header: "..."`) and the connection closed
    without a word."""
    proxy = _proxy(lab)
    with proxy.connect() as c:
        c.send(garbage)
        c.expect_closed(lenient=True)
        assert all(who == "C" for who, _ in c.transcript)  # not even a greeting
    assert "broken header" in proxy.error_log()


class _RecordingBackend:
    """An IMAP backend that first reads the PROXY line nginx sends, then logs the user in."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.first_lines: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                f = conn.makefile("rwb", buffering=0)
                self.first_lines.append(self._read_header(f))
                f.write(b"* OK ready\r\n")
                tag = f.readline().split(b" ")[0]
                f.write(b"+ go\r\n")
                f.readline()
                f.write(b"+ go\r\n")
                f.readline()
                f.write(tag + b" OK logged in\r\n")
                f.readline()

    def _read_header(self, f) -> bytes:
        """What the proxy sends first: the PROXY v1 line."""
        return f.readline()


def test_proxy_protocol_on_sends_v1_to_backend(lab):
    """nginx `proxy_protocol on`: `PROXY TCP4 <client> <proxy's listen address> <client port>
    <listen port>` before anything else, with the realip-substituted client."""
    backend = _RecordingBackend()
    from postern.fakes.auth import Reply
    lab.auth.push(Reply.ok("127.0.0.1", backend.port))
    proxy = _proxy(lab, "set_real_ip_from 127.0.0.1; proxy_protocol on;")
    with proxy.connect() as c:
        c.send(b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 143\r\n")
        assert _login(c) == b"a1 OK logged in\r\n"
    assert backend.first_lines[0] == b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 %d\r\n" % proxy.port
    backend.sock.close()


class _RawRecordingBackend(_RecordingBackend):
    """Reads a fixed number of header bytes instead of a line (PROXY v2 is binary)."""

    def __init__(self, header_len: int) -> None:
        self.header_len = header_len
        super().__init__()

    def _read_header(self, f) -> bytes:
        return f.read(self.header_len)


@pytest.mark.nginx_min("1.31.4", "proxy_protocol v2 towards the backend")
def test_proxy_protocol_v2_to_backend(lab):
    """nginx `proxy_protocol v2`: the binary v2 header with the realip client and the
    proxy's listening address (docs/behaviour.md §11.5)."""
    from postern.fakes.auth import Reply
    expected_len = 16 + 12  # signature, version/family/length, two IPv4 addresses and ports
    backend = _RawRecordingBackend(expected_len)
    lab.auth.push(Reply.ok("127.0.0.1", backend.port))
    proxy = _proxy(lab, "set_real_ip_from 127.0.0.1; proxy_protocol v2;")
    with proxy.connect() as c:
        c.send(b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 143\r\n")
        assert _login(c) == b"a1 OK logged in\r\n"
    assert backend.first_lines[0] == v2_header(("192.0.2.1", 40000), ("127.0.0.1", proxy.port))
    backend.sock.close()
