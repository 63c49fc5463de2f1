"""The auth_http client beyond nginx (proxy/auth_pool.py): kept-alive connections, backup
servers, https; against the mock auth server in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import socket
import ssl
from collections.abc import AsyncIterator

import dns.rcode
import pytest
import trustme
from postern.fakes.auth import Faults, MockAuthServer, Reply
from postern.proxy import auth_pool
from postern.proxy.auth_http import AuthResponse, AuthServerError, ResponseReader, request_head
from postern.proxy.conf.settings import AuthHttp, Resolver, ServerSettings
from postern.scenarios.kit.scripted_dns import ScriptedDns

BACKEND = ("127.0.0.1", 1143)


def peer(port: int, *, ssl_on: bool = False, host: str = "127.0.0.1", **kw) -> AuthHttp:
    return AuthHttp(text=f"127.0.0.1:{port}", host_header=host, uri="/auth",
                    addr="127.0.0.1", port=port, ssl=ssl_on, **kw)


def settings(primary: AuthHttp, **kw) -> ServerSettings:
    return ServerSettings(file="nginx.conf", line=1, listens=(), protocol="imap",
                          auth_http=primary, server_name="mx", **kw)


def request(conf: ServerSettings, user: str = "alice") -> bytes:
    return request_head(conf.auth_http) + (
        f"Auth-Method: plain\r\nAuth-User: {user}\r\nAuth-Pass: secret\r\n"
        "Auth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n"
    ).encode()


async def ask(conf: ServerSettings, timeout: float = 5.0, log=None):
    return await auth_pool.query(conf, request(conf), timeout,
                                 ResponseReader(conf.auth_http.text), log)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mock(**kw) -> MockAuthServer:
    return MockAuthServer({"alice": "secret"}, backends={"imap": BACKEND}, use_uvloop=False,
                          **kw)


@contextlib.asynccontextmanager
async def serving(**kw) -> AsyncIterator[MockAuthServer]:
    """The mock auth server started in the test's loop, stopped however the test ends."""
    srv = mock(**kw)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def run(coro):
    return asyncio.run(coro)


def test_plain_settings_are_nginx_path():
    conf = settings(peer(9000))
    assert not auth_pool.beyond_nginx(conf)
    assert auth_pool.beyond_nginx(dataclasses.replace(conf, auth_http_keepalive=1))
    assert auth_pool.beyond_nginx(dataclasses.replace(conf, auth_http_backups=(peer(1),)))
    assert auth_pool.beyond_nginx(settings(peer(9000, ssl_on=True)))


def test_fifty_requests_over_one_kept_connection():
    async def main():
        async with serving(keepalive=True) as srv:
            conf = settings(peer(srv.port), auth_http_keepalive=2)
            for _ in range(50):
                resp = await ask(conf)
                assert resp.backend("x") == BACKEND
            assert srv.connections == 1
            assert {r.version for r in srv.requests} == {"HTTP/1.1"}
            assert auth_pool.client_for(conf).connects == 1
    run(main())


def test_without_keepalive_one_http10_connection_per_request():
    async def main():
        async with serving(keepalive=True) as srv:
            conf = settings(peer(srv.port), auth_http_backups=(peer(closed_port()),))
            for _ in range(3):
                await ask(conf)
            assert srv.connections == 3
            assert {r.version for r in srv.requests} == {"HTTP/1.0"}
    run(main())


@pytest.mark.parametrize("close_after", [1, 2])
def test_server_closing_kept_connections_fails_no_login(close_after):
    async def main():
        async with serving(keepalive=True, faults=Faults(close_after=close_after)) as srv:
            conf = settings(peer(srv.port), auth_http_keepalive=4)
            for _ in range(6):
                assert (await ask(conf)).backend("x") == BACKEND
                await asyncio.sleep(0.01)  # let the close arrive, sometimes
            assert len(srv.requests) == 6
            assert srv.connections == 6 // close_after
    run(main())


def test_kept_connection_closed_mid_request_is_retried_once_fresh():
    async def main():
        async with serving(keepalive=True) as srv:
            conf = settings(peer(srv.port), auth_http_keepalive=1)
            await ask(conf)
            srv.push(Reply.hang_up())  # reads the next request and closes without a byte
            assert (await ask(conf)).backend("x") == BACKEND
            assert srv.connections == 2 and len(srv.requests) == 3
    run(main())


def test_fresh_connection_closed_without_reply_is_nginx_silent_error():
    async def main():
        async with serving(keepalive=True, script=[Reply.hang_up()]) as srv:
            conf = settings(peer(srv.port), auth_http_keepalive=1)
            with pytest.raises(AuthServerError, match="^$"):
                await ask(conf)
            assert srv.connections == 1
    run(main())


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_chunked_and_close_delimited_replies(framing):
    ok = ["Auth-Status: OK", f"Auth-Server: {BACKEND[0]}", f"Auth-Port: {BACKEND[1]}"]
    if framing == "chunked":
        reply = Reply(http_status="HTTP/1.1 200 OK", headers=ok + ["Transfer-Encoding: chunked"],
                      body=b"3\r\nabc\r\n0\r\n\r\n")
        expected_connections = 1
    else:
        reply = Reply.verbatim(("HTTP/1.0 200 OK\r\n" + "\r\n".join(ok) + "\r\n\r\nbody")
                               .encode())
        expected_connections = 2

    async def main():
        async with serving(keepalive=True, script=[reply, dataclasses.replace(reply)]) as srv:
            conf = settings(peer(srv.port), auth_http_keepalive=1)
            for _ in range(2):
                assert (await ask(conf)).backend("x") == BACKEND
            assert srv.connections == expected_connections
    run(main())


def test_idle_connections_close_after_keepalive_timeout():
    async def main():
        async with serving(keepalive=True) as srv:
            conf = settings(peer(srv.port), auth_http_keepalive=1,
                            auth_http_keepalive_timeout=0.05)
            await ask(conf)
            client = auth_pool.client_for(conf)
            assert len(client.peers[0].idle) == 1
            await asyncio.sleep(0.2)
            assert len(client.peers[0].idle) == 0
            await ask(conf)
            assert srv.connections == 2
    run(main())


def test_dead_primary_fails_over_and_is_skipped_for_fail_timeout():
    async def main():
        lines = []
        async with serving() as srv:
            dead = closed_port()
            conf = settings(peer(dead, fail_timeout=30.0), auth_http_backups=(peer(srv.port),))
            for _ in range(3):
                resp = await ask(conf, log=lambda level, text: lines.append((level, text)))
                assert resp.backend("x") == BACKEND
            assert lines == [("error", (f"connect() to 127.0.0.1:{dead} failed (111: Connection "
                                       f"refused), trying auth http server 127.0.0.1:{srv.port}"))]
            assert len(srv.requests) == 3
    run(main())


def test_timing_out_primary_fails_over():
    async def main():
        lines = []
        async with serving(faults=Faults(stall=True)) as slow, serving() as backup:
            conf = settings(peer(slow.port, max_fails=2), auth_http_backups=(peer(backup.port),))
            for _ in range(3):
                resp = await ask(conf, timeout=0.2, log=lambda *a: lines.append(a[1]))
                assert resp.backend("x") == BACKEND
            assert len(slow.requests) == 2  # max_fails=2: then skipped
            assert len(backup.requests) == 3
            assert lines[0].startswith(f"auth http server 127.0.0.1:{slow.port} timed out")
    run(main())


def test_all_servers_dead_gives_the_last_error():
    async def main():
        a, b = closed_port(), closed_port()
        conf = settings(peer(a), auth_http_backups=(peer(b),))
        with pytest.raises(AuthServerError, match=f"connect\\(\\) to 127.0.0.1:{b} failed"):
            await ask(conf)
        # both marked down: still tried rather than refusing every login
        with pytest.raises(AuthServerError, match=f"127.0.0.1:{b}"):
            await ask(conf)
    run(main())


def test_max_fails_zero_never_marks_down():
    p = auth_pool.Peer(peer(1, max_fails=0))
    for _ in range(5):
        p.failed(100.0)
    assert p.available(100.0)
    q = auth_pool.Peer(peer(1, max_fails=2, fail_timeout=10.0))
    q.failed(100.0)
    assert q.available(100.0)
    q.failed(101.0)
    assert not q.available(105.0) and q.available(111.0)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("authtls")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "auth.example")
    client = ca.issue_cert("postern-client")
    server.configure_cert(srv_ctx := ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    other.cert_pem.write_to_path(str(d / "other.pem"))
    client.cert_chain_pems[0].write_to_path(str(d / "client.pem"))
    client.private_key_pem.write_to_path(str(d / "client.key"))
    mtls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(mtls)
    ca.configure_trust(mtls)
    mtls.verify_mode = ssl.CERT_REQUIRED
    return d, srv_ctx, mtls


@pytest.mark.parametrize("case,ok", [
    ({"auth_http_ssl_trusted_certificate": "ca.pem"}, True),
    ({"auth_http_ssl_trusted_certificate": "ca.pem", "auth_http_ssl_name": "auth.example"},
     True),
    ({"auth_http_ssl_trusted_certificate": "other.pem"}, False),
    ({"auth_http_ssl_trusted_certificate": "ca.pem", "auth_http_ssl_name": "wrong.example"},
     False),
    ({"auth_http_ssl_trusted_certificate": "other.pem", "auth_http_ssl_verify": False}, True),
])
def test_https_verifies_the_server(pki, case, ok):
    d, srv_ctx, _ = pki
    case = {k: str(d / v) if k.endswith("certificate") else v for k, v in case.items()}

    async def main():
        async with serving(ssl_context=srv_ctx) as srv:
            conf = settings(peer(srv.port, ssl_on=True), **case)
            if ok:
                assert (await ask(conf)).backend("x") == BACKEND
                assert srv.requests[0].header("Host") == "127.0.0.1"
            else:
                with pytest.raises(AuthServerError,
                                   match="SSL handshake with auth http server .* failed "
                                         r"\(CERTIFICATE_VERIFY_FAILED\)"):
                    await ask(conf)
                assert srv.requests == []
    run(main())


def test_https_client_certificate(pki):
    d, _, mtls = pki

    async def main():
        async with serving(ssl_context=mtls, keepalive=True) as srv:
            base = {"auth_http_ssl_trusted_certificate": str(d / "ca.pem"),
                        "auth_http_keepalive": 1}
            with pytest.raises(AuthServerError):
                await ask(settings(peer(srv.port, ssl_on=True), **base))
            conf = settings(peer(srv.port, ssl_on=True), **base,
                            auth_http_ssl_certificate=str(d / "client.pem"),
                            auth_http_ssl_certificate_key=str(d / "client.key"))
            for _ in range(3):
                assert (await ask(conf)).backend("x") == BACKEND
            assert len(srv.requests) == 3
    run(main())


# -- auth_http_server_names ---------------------------------------------------------------

@pytest.mark.parametrize("server,names,expected", [
    (b"127.0.0.1", True, ("127.0.0.1", 143)),
    (b"Mail.Example.TEST", True, ("mail.example.test", 143)),
    (b"localhost", True, ("localhost", 143)),
    (b"localhost", False, 'invalid server address:"localhost"'),
    (b"bad_name", True, 'invalid server address:"bad_name"'),
    (b"-x.example", True, 'invalid server address:"-x.example"'),
    (b"10.0.0.1.2", True, 'invalid server address:"10.0.0.1.2"'),
    (b"mail.example.", True, 'invalid server address:"mail.example."'),
    (b"a..example", True, 'invalid server address:"a..example"'),
    (b"x" * 64 + b".example", True, "invalid server address"),
    (b"a" * 63 + b".example", True, ("a" * 63 + ".example", 143)),
])
def test_auth_server_names_only_with_the_switch(server, names, expected):
    resp = AuthResponse(server=server, port=b"143")
    if isinstance(expected, tuple):
        assert resp.backend("p", names) == expected
    else:
        with pytest.raises(AuthServerError, match=re.escape(expected)):
            resp.backend("p", names)


def test_server_name_resolved_through_the_resolver_and_cached():
    script = {("mail.example.test.", "A"): [("mail.example.test.", 300, "A", "127.0.0.7")],
              ("mail.example.test.", "AAAA"): [],
              ("gone.example.test.", "A"): dns.rcode.NXDOMAIN,
              ("gone.example.test.", "AAAA"): dns.rcode.NXDOMAIN}

    async def main():
        dns_server = ScriptedDns(script)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: dns_server,
                                                           local_addr=("127.0.0.1", 0))
        try:
            port = transport.get_extra_info("sockname")[1]
            conf = settings(peer(9000), auth_http_server_names=True,
                            resolver=Resolver((("127.0.0.1", port),)), resolver_timeout=2.0)
            lines = []
            log = lambda level, text: lines.append((level, text))
            for _ in range(2):
                assert await auth_pool.resolve_backend(conf, "mail.example.test", "p",
                                                       log) == "127.0.0.7"
            assert len(dns_server.queries) == 2  # A and AAAA once: the answer is cached
            assert await auth_pool.resolve_backend(conf, "gone.example.test", "p", log) is None
            assert lines == [("error", ('auth http server p sent server name "gone.example.test"'
                                       " that could not be resolved (3: Host not found)"))]
        finally:
            transport.close()
    run(main())


@pytest.mark.parametrize("declared,connections", [(None, 1), (40, 2)])
def test_body_after_the_decision_is_drained_before_reuse(declared, connections):
    """The decision comes with the header block; the connection is reused once the body is
    whole, and closed (after auth_http_keepalive_timeout) when the body never ends."""
    headers = [] if declared is None else [f"Content-Length: {declared}"]
    body = Reply.default(body=b"x" * 20, trickle=0.002, headers=headers)

    async def main():
        async with serving(keepalive=True, script=[body]) as srv:
            conf = settings(peer(srv.port), auth_http_keepalive=1,
                            auth_http_keepalive_timeout=2.0)
            assert (await ask(conf)).backend("x") == BACKEND
            await asyncio.sleep(0.3)  # the body's 20 bytes take about 0.05 s
            assert (await ask(conf)).backend("x") == BACKEND
            assert srv.connections == connections
    run(main())
