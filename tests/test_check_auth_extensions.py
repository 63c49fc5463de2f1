"""check-auth and Postern's auth_http client extensions: https:// URLs, whether a server
keeps HTTP/1.1 connections alive, whether it names backends by host name."""

from __future__ import annotations

from dataclasses import replace

import pytest
from postern.fakes.pki import https_server

from tests.check_auth_support import (
    broken_server,
    check,
    correct_server,
    failing,
    on_success,
)


def test_plain_server_closes_after_each_reply_and_names_addresses(capsys):
    with correct_server() as srv:
        status, checks = check(srv, capsys, burst="0")
    assert status == 0 and failing(checks) == {}
    keep = checks["ext.keepalive"]
    assert keep["verdict"] == "pass" and "closes the connection after each reply" in \
        keep["reason"]
    assert "by IP address" in checks["ext.server-names"]["reason"]
    assert "ext.https" not in checks
    assert {r.version for r in srv.requests} == {"HTTP/1.0", "HTTP/1.1"}


def test_kept_alive_server_is_recognised(capsys):
    with correct_server(keepalive=True) as srv:
        status, checks = check(srv, capsys, burst="0")
    assert status == 0
    assert checks["ext.keepalive"]["reason"].startswith(
        "keeps HTTP/1.1 connections alive: 2 replies on one connection (Content-Length)")


def test_misframed_keepalive_reply_warns(capsys):
    def lying_length(req, reply):
        if req.version == "HTTP/1.1":
            return replace(reply, headers=[*reply.headers, "Content-Length: 10"])
        return None

    with broken_server(lying_length) as srv:
        srv.keepalive = True
        status, checks = check(srv, capsys, "--timeout", "1s", burst="0")
    keep = checks["ext.keepalive"]
    assert keep["verdict"] == "warn" and "do not use auth_http_keepalive" in keep["reason"]
    assert status == 0


def test_host_name_in_auth_server(capsys):
    with broken_server(on_success(server="imap.example.test")) as srv:
        status, checks = check(srv, capsys, burst="0")
    assert status == 1  # nginx refuses it: the nginx checks fail as before
    assert 'sent invalid server address:"imap.example.test"' in \
        checks["imap.plain.right"]["reason"]
    names = checks["ext.server-names"]
    assert names["verdict"] == "pass" and "auth_http_server_names on" in names["reason"]


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("check-auth-tls")
    return d, https_server(d, "127.0.0.1", "auth.example.test")


def test_https_url_with_its_ca(tls, capsys):
    d, ctx = tls
    with correct_server(ssl_context=ctx, keepalive=True) as srv:
        assert srv.url.startswith("https://")
        status, checks = check(srv, capsys, "--cafile", str(d / "ca.pem"), "--tls-name",
                               "auth.example.test", burst="2")
    assert status == 0, failing(checks)
    https = checks["ext.https"]
    assert https["verdict"] == "pass" and https["reason"].startswith("TLSv1.")
    assert "certificate verified" in https["reason"]
    assert checks["ext.keepalive"]["reason"].startswith("keeps HTTP/1.1 connections alive")


def test_https_url_with_another_ca_stops_at_connect(tls, capsys):
    d, ctx = tls
    with correct_server(ssl_context=ctx) as srv:
        status, checks = check(srv, capsys, "--cafile", str(d / "other-ca.pem"))
        assert srv.requests == []
    assert status == 1
    assert "SSL handshake with auth http server" in checks["connect"]["reason"]
    assert "CERTIFICATE_VERIFY_FAILED" in checks["connect"]["reason"]


def test_https_url_without_verification_warns(tls, capsys):
    _, ctx = tls
    with correct_server(ssl_context=ctx) as srv:
        status, checks = check(srv, capsys, "--no-verify", burst="0")
    assert status == 0
    assert checks["ext.https"]["verdict"] == "warn"
