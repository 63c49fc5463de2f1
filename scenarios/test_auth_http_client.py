"""The auth_http client beyond nginx (README: Beyond nginx): kept-alive connections, backup
auth servers, https, and host names in Auth-Server, through IMAP logins.

Each scenario runs its own mock auth server(s) and points the server{} at them; without the
directives (the last scenario) a host name in Auth-Server is nginx's error on every target.
"""

from __future__ import annotations

import pytest
from postern.fakes.auth import Faults, MockAuthServer, Reply
from postern.fakes.pki import https_server
from postern.scenarios.kit.imap_support import expect_internal_error, login
from postern.scenarios.kit.scripted_dns import DnsServer

LOGGED_IN = b"a1 OK Logged in\r\n"
WHY = "nginx opens one HTTP/1.0 connection per login to one auth server, by address"


def auth_server(lab, **kw) -> MockAuthServer:
    return MockAuthServer({"alice": "secret"}, backends={"imap": ("127.0.0.1", lab.imap.port)},
                          **kw)


def logs_in(proxy) -> None:
    with login(proxy) as c:
        c.expect(LOGGED_IN)


def kept_alive_logins(lab, auth, count: int):
    """`count` logins, each one auth request, through a proxy keeping up to 4 connections
    to `auth` alive; returns the proxy."""
    proxy = lab.proxy(server=f"auth_http 127.0.0.1:{auth.port}/auth;\n"
                             "auth_http_keepalive 4;")
    for _ in range(count):
        logs_in(proxy)
    assert len(auth.requests) == count
    return proxy


@pytest.mark.postern_only(WHY)
def test_fifty_logins_over_one_kept_alive_connection(lab):
    """auth_http_keepalive: 50 logins, one TCP connection to the auth server, HTTP/1.1."""
    with auth_server(lab, keepalive=True) as auth:
        kept_alive_logins(lab, auth, 50)
        assert auth.connections == 1
        assert auth.requests[0].raw.startswith(b"GET /auth HTTP/1.1\r\nHost: 127.0.0.1\r\n")


@pytest.mark.postern_only(WHY)
def test_auth_server_closing_kept_connections_fails_no_login(lab):
    """auth_http_keepalive: a server that closes each connection after 3 replies (without
    saying so) costs a fresh connection, never a login."""
    with auth_server(lab, keepalive=True, faults=Faults(close_after=3)) as auth:
        proxy = kept_alive_logins(lab, auth, 12)
        assert auth.connections == 4
        assert "[error]" not in proxy.error_log()


@pytest.mark.postern_only(WHY)
def test_killed_primary_fails_over_to_the_backup(lab):
    """auth_http_backup: the primary dies; the login goes to the backup, one error line
    names both, and the next logins skip the primary (fail_timeout)."""
    backup = auth_server(lab).__enter__()
    primary = auth_server(lab).__enter__()
    try:
        proxy = lab.proxy(server=f"auth_http 127.0.0.1:{primary.port}/auth;\n"
                                 f"auth_http_backup 127.0.0.1:{backup.port}/auth "
                                 "fail_timeout=60s;")
        logs_in(proxy)
        assert (len(primary.requests), len(backup.requests)) == (1, 0)
        primary.__exit__(None, None, None)
        mark = len(proxy.error_log())
        for _ in range(3):
            logs_in(proxy)
        assert len(backup.requests) == 3
        errors = [ln for ln in proxy.error_log()[mark:].splitlines() if "[error]" in ln]
        assert len(errors) == 1, errors
        assert f"connect() to 127.0.0.1:{primary.port} failed (111: Connection refused), " \
               f"trying auth http server 127.0.0.1:{backup.port}" in errors[0]
    finally:
        primary.__exit__(None, None, None)
        backup.__exit__(None, None, None)


@pytest.mark.postern_only(WHY)
def test_stalling_primary_fails_over_after_auth_http_timeout(lab):
    """auth_http_backup: a primary that never answers times out (auth_http_timeout), then
    the backup answers the same login."""
    with auth_server(lab, faults=Faults(stall=True)) as primary, auth_server(lab) as backup:
        proxy = lab.proxy(server=f"auth_http 127.0.0.1:{primary.port}/auth;\n"
                                 "auth_http_timeout 500ms;\n"
                                 f"auth_http_backup 127.0.0.1:{backup.port}/auth;")
        with login(proxy) as c:
            c.expect(LOGGED_IN, timeout=5)
        assert (len(primary.requests), len(backup.requests)) == (1, 1)
        assert f"auth http server 127.0.0.1:{primary.port} timed out" in proxy.error_log()


@pytest.fixture(scope="module")
def auth_pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("auth-https")
    return d, https_server(d, "auth.example.test", "127.0.0.1")


@pytest.mark.postern_only("nginx rejects https:// in auth_http")
def test_https_auth_server_verified_with_its_ca(lab, auth_pki):
    """auth_http https://: the request goes over TLS, the certificate checked against
    auth_http_ssl_trusted_certificate and auth_http_ssl_name."""
    d, context = auth_pki
    with auth_server(lab, ssl_context=context, keepalive=True) as auth:
        proxy = lab.proxy(server=f"auth_http https://127.0.0.1:{auth.port}/auth;\n"
                                 f"auth_http_ssl_trusted_certificate {d}/ca.pem;\n"
                                 "auth_http_ssl_name auth.example.test;\n"
                                 "auth_http_keepalive 2;")
        for _ in range(3):
            logs_in(proxy)
        assert len(auth.requests) == 3 and auth.connections == 1


@pytest.mark.postern_only("nginx rejects https:// in auth_http")
def test_https_auth_server_with_an_unknown_ca_is_an_internal_error(lab, auth_pki):
    """auth_http https://: a certificate that does not verify is the internal-error line
    and an error line saying why; no request is sent."""
    d, context = auth_pki
    with auth_server(lab, ssl_context=context) as auth:
        proxy = lab.proxy(server=f"auth_http https://127.0.0.1:{auth.port}/auth;\n"
                                 f"auth_http_ssl_trusted_certificate {d}/other-ca.pem;")
        with login(proxy) as c:
            expect_internal_error(c)
        assert auth.requests == []
        assert f"SSL handshake with auth http server 127.0.0.1:{auth.port} failed " \
               "(CERTIFICATE_VERIFY_FAILED)" in proxy.error_log()


def _names_dns() -> DnsServer:
    return DnsServer({("imap.example.test.", "A"): [("imap.example.test.", 300, "A",
                                                     "127.0.0.1")],
                      ("imap.example.test.", "AAAA"): []}).start()


@pytest.mark.postern_only("nginx insists on an IP address in Auth-Server")
def test_host_name_in_auth_server_with_auth_http_server_names(lab):
    """auth_http_server_names on: Auth-Server names a host, resolved through `resolver`."""
    dns_server = _names_dns()
    try:
        proxy = lab.proxy(server=f"resolver 127.0.0.1:{dns_server.port};\n"
                                 "resolver_timeout 2s;\nauth_http_server_names on;")
        lab.auth.push(Reply.ok("imap.example.test", lab.imap.port))
        logs_in(proxy)
        lab.auth.push(Reply.ok("nowhere.example.test", lab.imap.port))
        with login(proxy) as c:
            expect_internal_error(c)
        assert 'sent server name "nowhere.example.test" that could not be resolved ' \
               "(3: Host not found)" in proxy.error_log()
    finally:
        dns_server.stop()


def test_host_name_in_auth_server_is_an_error_without_the_switch(lab):
    """nginx: Auth-Server must be an IP address; a name is "sent invalid server address"."""
    proxy = lab.proxy()
    lab.auth.push(Reply.ok("localhost", lab.imap.port))
    with login(proxy) as c:
        expect_internal_error(c)
    assert f'auth http server 127.0.0.1:{lab.auth.port} sent invalid server ' \
           'address:"localhost"' in proxy.error_log()
