"""Implicit TLS (`listen ... ssl`): the greeting inside TLS, the certificate served, ALPN,
TLS after a PROXY header, the Auth-SSL headers, the relay through TLS, and how the proxy ends
TLS (docs/behaviour.md §2.7, §4.1, §4.4, §10.1, §13; RFC 8314 implicit TLS, RFC 7301 ALPN).
"""

from __future__ import annotations

import socket
import ssl
import time

import pytest
from postern.scenarios.kit.imap_support import read_tagged
from postern.scenarios.kit.tls_support import (
    GREETINGS,
    client_context,
    ends_with_close_notify,
    handshake_fails,
    pki,
    tls_connect,
)

__all__ = ["pki"]

PROTOCOLS = ("imap", "pop3", "smtp")


def _proxy(lab, pki, protocol="imap", extra="", listen="ssl"):
    return lab.proxy(server=pki.server() + extra, protocol=protocol, listen_params=listen)


def _memory_tls():
    """A client TLS object over memory BIOs, so a test decides what goes on the wire."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context().wrap_bio(incoming, outgoing, server_hostname="mx.test")
    return tls, incoming, outgoing


def _read_imap_greeting(sock, tls, incoming, outgoing):
    """Drive the handshake over `sock` until the IMAP greeting arrives; return the plaintext."""
    plain = b""
    while GREETINGS["imap"] not in plain:
        try:
            tls.do_handshake()
            plain += tls.read(1024)
        except ssl.SSLWantReadError:
            pass
        out = outgoing.read()
        if out:
            sock.sendall(out)
        if GREETINGS["imap"] not in plain:
            data = sock.recv(65536)
            assert data, "closed during the handshake"
            incoming.write(data)
    return plain


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_greeting_inside_tls_with_the_configured_certificate(lab, pki, protocol):
    """RFC 8314 §3: the handshake comes first, then the protocol's greeting inside TLS; the
    client verifies the certificate of ssl_certificate against its CA."""
    proxy = _proxy(lab, pki, protocol)
    with tls_connect(proxy, client_context(pki)) as c:
        c.expect(GREETINGS[protocol])
        assert c.sock.getpeercert(binary_form=True) == pki.der(pki.ecdsa_cert)
        assert c.sock.version() == "TLSv1.3"


@pytest.mark.nginx_min("1.23.4", "TLSv1.3 joined the default ssl_protocols")
def test_default_protocols_include_tls13(lab, pki):
    """docs/behaviour.md §2.7: the default ssl_protocols is `TLSv1.2 TLSv1.3` (1.23.4+)."""
    proxy = lab.proxy(server=pki.server(protocols=None), listen_params="ssl")
    with tls_connect(proxy) as c:
        c.expect(GREETINGS["imap"])
        assert c.sock.version() == "TLSv1.3"


def test_login_and_relay_through_tls(lab, pki):
    """§10.1: the auth request of a TLS client carries Auth-SSL: on, the protocol and the cipher (no
    Auth-SSL-Verify without ssl_verify_client); the backend's replies come back encrypted."""
    proxy = _proxy(lab, pki)
    with tls_connect(proxy) as c:
        lab.login(c)
        c.send(b"a2 NOOP\r\n")
        assert c.readline().startswith(b"a2 OK")
        c.send(b"a3 LOGOUT\r\n")
        assert c.readline().startswith(b"* BYE")
        assert c.readline().startswith(b"a3 OK")
        # §12: the backend closed; the proxy ends the client's TLS with close_notify
        assert ends_with_close_notify(c)
    req = lab.auth.requests[0]
    assert [(k, v) for k, v in req.headers if k.startswith("Auth-SSL")] == [
        ("Auth-SSL", "on"), ("Auth-SSL-Protocol", "TLSv1.3"),
        ("Auth-SSL-Cipher", "TLS_AES_256_GCM_SHA384")]
    # the TLS headers come after Client-IP and before auth_http_header lines
    names = [k for k, _ in req.headers]
    assert names.index("Client-IP") < names.index("Auth-SSL")


def test_tls12_cipher_names_are_openssl_names(lab, pki):
    """docs/behaviour.md §10.1: SSL_get_version / SSL_get_cipher_name, e.g. TLSv1.2 and
    ECDHE-ECDSA-AES256-GCM-SHA384."""
    proxy = _proxy(lab, pki)
    ctx = client_context(version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384")
    with tls_connect(proxy, ctx) as c:
        lab.login(c)
    req = lab.auth.requests[0]
    assert (req.header("Auth-SSL-Protocol"), req.header("Auth-SSL-Cipher")) == (
        "TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384")



def test_large_relay_both_ways(lab, pki):
    """docs/behaviour.md §12 over TLS: a literal bigger than several TLS records reaches the backend
    whole, and a FETCH of every message comes back byte for byte as the backend sends it."""
    proxy = _proxy(lab, pki)
    blob = bytes(range(256)) * 400  # 100 KiB: several TLS records each way
    with tls_connect(proxy) as c:
        lab.login(c)
        c.send(b"a2 NOOP {%d+}\r\n" % len(blob) + blob + b"\r\n")
        assert c.readline().startswith(b"a2 ")
        c.send(b"a3 SELECT INBOX\r\n")
        read_tagged(c, b"a3")
        c.send(b"a4 FETCH 1:* BODY.PEEK[]\r\n")
        through_proxy = read_tagged(c, b"a4")
    assert any(blob in cmd for cmd in lab.imap.commands)
    from postern.scenarios.kit.client import Client
    with Client("127.0.0.1", lab.imap.port) as direct:
        direct.readline()
        direct.send(b"a1 LOGIN alice secret\r\n")
        read_tagged(direct, b"a1")
        direct.send(b"a3 SELECT INBOX\r\n")
        read_tagged(direct, b"a3")
        direct.send(b"a4 FETCH 1:* BODY.PEEK[]\r\n")
        assert read_tagged(direct, b"a4") == through_proxy
    assert len(through_proxy) > 3 * 16384


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_alpn_protocol_is_selected(lab, pki, protocol):
    """nginx 1.21.4: the server's protocol id (imap, pop3, smtp) is selected from the client's
    ALPN list."""
    proxy = _proxy(lab, pki, protocol)
    with tls_connect(proxy, client_context(alpn=["h2", protocol])) as c:
        assert c.sock.selected_alpn_protocol() == protocol
        c.expect(GREETINGS[protocol])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_alpn_without_our_protocol_is_refused(lab, pki, protocol):
    """RFC 7301 §3.2 / docs/behaviour.md §2.7: an ALPN list without the server's protocol ends the
    handshake with a fatal no_application_protocol alert; no greeting."""
    proxy = _proxy(lab, pki, protocol)
    others = [p for p in PROTOCOLS if p != protocol] + ["http/1.1"]
    error = handshake_fails(proxy, client_context(alpn=others))
    assert "NO_APPLICATION_PROTOCOL" in error.upper().replace(" ", "_"), error
    assert lab.auth.requests == []


def test_no_alpn_is_fine(lab, pki):
    """§2.7: a client sending no ALPN extension is served as before 1.21.4."""
    proxy = _proxy(lab, pki)
    with tls_connect(proxy) as c:
        assert c.sock.selected_alpn_protocol() is None
        c.expect(GREETINGS["imap"])


def test_plaintext_on_a_tls_port_is_dropped(lab, pki):
    """docs/behaviour.md §4.4: a handshake failure closes the connection without a protocol word (OpenSSL
    may answer with an alert record, never with the greeting)."""
    proxy = _proxy(lab, pki)
    with proxy.connect() as c:
        c.send(b"a1 CAPABILITY\r\n")
        rest = c.read_all()
        assert b"IMAP" not in rest and b"OK" not in rest


def test_logout_ends_tls_with_close_notify(lab, pki):
    """RFC 8446 §6.1, nginx: a TLS session it closes itself ends with close_notify
    (ngx_ssl_shutdown)."""
    proxy = _proxy(lab, pki)
    with tls_connect(proxy) as c:
        c.expect(GREETINGS["imap"])
        c.send(b"a1 LOGOUT\r\n").expect(b"* BYE\r\na1 OK completed\r\n")
        assert ends_with_close_notify(c)


def test_auth_failure_line_inside_tls(lab, pki):
    """docs/behaviour.md §10.4: the failure line goes out encrypted, then close_notify."""
    from postern.fakes.auth import Reply
    proxy = _proxy(lab, pki)
    lab.auth.push(Reply.fail("nope"))
    with tls_connect(proxy) as c:
        c.expect(GREETINGS["imap"])
        c.send(b"a1 LOGIN alice wrong\r\n").expect(b"a1 NO nope\r\n")
        assert ends_with_close_notify(c)


def test_tls_after_proxy_protocol_header(lab, pki):
    """docs/behaviour.md §4.1: PROXY header first, then the handshake, then the greeting; realip and the
    TLS headers both reach the auth request."""
    proxy = _proxy(lab, pki, extra="set_real_ip_from 127.0.0.1;\n", listen="ssl proxy_protocol")
    c = proxy.connect()
    c.send(b"PROXY TCP4 192.0.2.9 192.0.2.10 4000 993\r\n")
    from postern.scenarios.kit.tls_support import start_tls
    with start_tls(c) as c:
        lab.login(c)
    req = lab.auth.requests[0]
    assert req.header("Client-IP") == "192.0.2.9"
    assert req.header("Auth-SSL") == "on"


def test_proxy_header_and_client_hello_in_one_segment(lab, pki):
    """§4.1, §4.2: the bytes after the PROXY header in the same read are the start of the
    ClientHello."""
    proxy = _proxy(lab, pki, listen="ssl proxy_protocol")
    tls, incoming, outgoing = _memory_tls()
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
    try:
        sock.sendall(b"PROXY TCP4 192.0.2.9 192.0.2.10 4000 993\r\n" + outgoing.read())
        assert _read_imap_greeting(sock, tls, incoming, outgoing) == GREETINGS["imap"]
    finally:
        sock.close()


def test_silent_client_times_out_during_the_handshake(lab, pki):
    """§5.4: `timeout` also bounds the handshake; a client that never sends a ClientHello is
    closed without a byte."""
    proxy = _proxy(lab, pki, extra="timeout 1s;")
    with proxy.connect(timeout=10) as c:
        start = time.monotonic()
        assert c.read_all(timeout=8) == b""
        assert 0.5 < time.monotonic() - start < 6


def test_client_close_notify_ends_the_session(lab, pki):
    """§5.1: the client's close_notify is its EOF: the proxy closes, and (nginx:
    no_send_shutdown after the peer's close_notify) sends nothing more."""
    proxy = _proxy(lab, pki)
    tls, incoming, outgoing = _memory_tls()
    sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
    try:
        _read_imap_greeting(sock, tls, incoming, outgoing)
        with pytest.raises(ssl.SSLWantReadError):
            tls.unwrap()  # sends our close_notify
        sock.sendall(outgoing.read())
        rest = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            rest += data
        incoming.write(rest)
        with pytest.raises(ssl.SSLWantReadError):
            tls.unwrap()  # no close_notify came back
    finally:
        sock.close()
