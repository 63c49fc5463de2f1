"""The directives of the auth_http client beyond nginx (proxy/conf/authclient.py): their
values, their defaults (nginx's behaviour) and their [emerg] texts."""

from __future__ import annotations

import textwrap

import pytest
from postern.proxy.conf import ConfigError, load_config
from postern.proxy.conf.settings import AuthHttp

from tests.conf_support import write_certificate


def load(tmp_path, mail: str, server: str = ""):
    path = tmp_path / "nginx.conf"
    path.write_text(textwrap.dedent(f"""
        events {{}}
        mail {{
            {mail}
            server {{ listen 127.0.0.1:1143; protocol imap; {server} }}
        }}
    """))
    return load_config(str(path), prefix=f"{tmp_path}/").servers[0]


def error(tmp_path, mail: str, server: str = "") -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, mail, server)
    return str(info.value).replace(str(tmp_path), "T")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("authpki")
    write_certificate(d, "auth.example", "client.pem", "client.key", "ca.pem")
    (d / "garbage.pem").write_text("garbage\n")
    return d


def test_defaults_are_nginx(tmp_path):
    srv = load(tmp_path, "auth_http 127.0.0.1:9000/auth;")
    assert srv.auth_http == AuthHttp(text="127.0.0.1:9000", host_header="127.0.0.1",
                                     uri="/auth", addr="127.0.0.1", port=9000)
    assert not srv.auth_http.ssl
    assert (srv.auth_http_backups, srv.auth_http_keepalive, srv.auth_http_server_names) == (
        (), 0, False)


def test_https_url_keepalive_and_backups(tmp_path):
    srv = load(tmp_path, """
        auth_http https://127.0.0.1/auth;
        auth_http_keepalive 8;
        auth_http_keepalive_timeout 30s;
        auth_http_backup 127.0.0.2:9001/b max_fails=3 fail_timeout=1m;
        auth_http_backup https://[::1]/c;
        auth_http_ssl_verify off;
    """)
    assert (srv.auth_http.ssl, srv.auth_http.port, srv.auth_http.host_header) == (
        True, 443, "127.0.0.1")
    assert (srv.auth_http_keepalive, srv.auth_http_keepalive_timeout) == (8, 30.0)
    b1, b2 = srv.auth_http_backups
    assert (b1.text, b1.uri, b1.ssl, b1.max_fails, b1.fail_timeout) == (
        "127.0.0.2:9001", "/b", False, 3, 60.0)
    assert (b2.text, b2.port, b2.ssl, b2.max_fails, b2.fail_timeout) == (
        "[::1]:443", 443, True, 1, 10.0)
    assert srv.auth_http_ssl_verify is False


def test_server_level_backups_replace_mail_level(tmp_path):
    srv = load(tmp_path, "auth_http 127.0.0.1; auth_http_backup 127.0.0.2;",
               "auth_http_backup 127.0.0.3;")
    assert [b.addr for b in srv.auth_http_backups] == ["127.0.0.3"]


def test_tls_material_paths_are_absolute_and_loaded(tmp_path, pki):
    srv = load(tmp_path, f"""
        auth_http https://127.0.0.1/;
        auth_http_ssl_trusted_certificate {pki}/ca.pem;
        auth_http_ssl_certificate {pki}/client.pem;
        auth_http_ssl_certificate_key {pki}/client.key;
        auth_http_ssl_name auth.example;
    """)
    assert srv.auth_http_ssl_trusted_certificate == f"{pki}/ca.pem"
    assert srv.auth_http_ssl_name == "auth.example"


@pytest.mark.parametrize("mail,expected", [
    ("auth_http https://127.0.0.1:0/;", ('invalid port in auth_http "https://127.0.0.1:0/" in '
     "T/nginx.conf:4")),
    ("auth_http 127.0.0.1; auth_http_backup 127.0.0.1:x;",
     'invalid port in auth_http_backup "127.0.0.1:x" in T/nginx.conf:4'),
    ("auth_http 127.0.0.1; auth_http_backup 127.0.0.2 max_fails=x;",
     'invalid parameter "max_fails=x" in T/nginx.conf:4'),
    ("auth_http 127.0.0.1; auth_http_backup 127.0.0.2 weight=2;",
     'invalid parameter "weight=2" in T/nginx.conf:4'),
    ("auth_http 127.0.0.1; auth_http_keepalive x;",
     '"auth_http_keepalive" directive invalid number in T/nginx.conf:4'),
    ("auth_http 127.0.0.1; auth_http_server_names on;",
     'no "resolver" is defined for "auth_http_server_names" in T/nginx.conf:5'),
    ("auth_http https://127.0.0.1; auth_http_ssl_trusted_certificate missing.pem;",
     ('cannot load "auth_http_ssl_trusted_certificate" "T/missing.pem" (2: No such file or '
     "directory) in T/nginx.conf:5")),
    ("auth_http https://127.0.0.1; auth_http_ssl_certificate PKI/client.pem;",
     ('no "auth_http_ssl_certificate_key" is defined for certificate "PKI/client.pem" in '
     "T/nginx.conf:5")),
    (("auth_http https://127.0.0.1; auth_http_ssl_certificate PKI/garbage.pem; "
     "auth_http_ssl_certificate_key PKI/client.key;"),
     'cannot load "auth_http_ssl_certificate" "PKI/garbage.pem" with key "PKI/client.key" ('),
])
def test_errors(tmp_path, pki, mail, expected):
    text = error(tmp_path, mail.replace("PKI", str(pki))).replace(str(pki), "PKI")
    assert text.startswith(expected), text


def test_tls_material_is_not_loaded_without_https(tmp_path):
    srv = load(tmp_path, "auth_http 127.0.0.1; auth_http_ssl_trusted_certificate missing.pem;")
    assert not srv.auth_http.ssl
