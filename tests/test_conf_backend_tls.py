"""proxy_ssl*: TLS towards the backends (not in nginx's mail module; named and checked as
nginx's stream proxy does, ngx_stream_proxy_set_ssl)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from postern.proxy.conf import ConfigError, load_config
from postern.proxy.conf.settings import BackendTlsSettings

from tests.conf_support import write_certificate


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    write_certificate(d, "client.example", "client.crt", "client.key", "ca.crt")
    return d


def conf_text(mail: str = "", server: str = "") -> str:
    return textwrap.dedent(f"""
        events {{}}
        mail {{
            auth_http 127.0.0.1:9000/auth;
            {mail}
            server {{ listen 127.0.0.1:1143; protocol imap; {server} }}
        }}
    """)


def load(tmp_path, mail="", server=""):
    path = tmp_path / "nginx.conf"
    path.write_text(conf_text(mail, server))
    return load_config(str(path), prefix=f"{tmp_path}/").servers[0].proxy_ssl


def error(tmp_path, mail="", server="") -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, mail, server)
    return str(info.value).replace(str(tmp_path), "T")


def test_off_by_default_with_nginx_streams_defaults(tmp_path):
    got = load(tmp_path)
    assert got == BackendTlsSettings()
    assert (got.mode, got.verify, got.server_name, got.session_reuse, got.verify_depth,
            got.ciphers, got.used) == ("off", False, False, True, 1, "DEFAULT", False)
    assert got.protocols == ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


def test_every_directive_inherited_from_mail_and_overridden_in_server(tmp_path, pki):
    got = load(tmp_path, mail=f"""
        proxy_ssl on; proxy_ssl_verify on; proxy_ssl_trusted_certificate {pki}/ca.crt;
        proxy_ssl_name imap.internal; proxy_ssl_server_name on;
        proxy_ssl_certificate {pki}/client.crt; proxy_ssl_certificate_key {pki}/client.key;
        proxy_ssl_protocols TLSv1.3 TLSv1.2; proxy_ssl_ciphers HIGH;
        proxy_ssl_session_reuse off; proxy_ssl_verify_depth 3; proxy_ssl_auth_header on;""",
        server="proxy_ssl starttls;")
    assert got == BackendTlsSettings(
        mode="starttls", auth_header=True, verify=True,
        trusted_certificate=f"{pki}/ca.crt", name="imap.internal", server_name=True,
        certificate=f"{pki}/client.crt", certificate_key=f"{pki}/client.key",
        protocols=("TLSv1.2", "TLSv1.3"), ciphers="HIGH", session_reuse=False,
        verify_depth=3)


def test_relative_files_are_under_the_conf_prefix(tmp_path, pki):
    (tmp_path / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    got = load(tmp_path, "proxy_ssl on; proxy_ssl_verify on; proxy_ssl_trusted_certificate ca.crt;")
    assert got.trusted_certificate == f"{tmp_path}/ca.crt"


@pytest.mark.parametrize("mail,message", [
    ("proxy_ssl yes;", 'invalid value "yes" in T/nginx.conf:5'),
    ("proxy_ssl_verify maybe;",
     ('invalid value "maybe" in "proxy_ssl_verify" directive, it must be "on" or "off" '
     "in T/nginx.conf:5")),
    ("proxy_ssl_protocols TLSv9;", 'invalid value "TLSv9" in T/nginx.conf:5'),
    ("proxy_ssl_verify_depth x;", ('"proxy_ssl_verify_depth" directive invalid number in '
     "T/nginx.conf:5")),
    ("proxy_ssl on; proxy_ssl on;", '"proxy_ssl" directive is duplicate in T/nginx.conf:5'),
    ("proxy_ssl on; proxy_ssl_verify on;",
     "no proxy_ssl_trusted_certificate for proxy_ssl_verify"),
    ("proxy_ssl_auth_header on; proxy_ssl_verify on;",
     "no proxy_ssl_trusted_certificate for proxy_ssl_verify"),
    ("proxy_ssl starttls; proxy_ssl_certificate /x/c.pem;",
     'no "proxy_ssl_certificate_key" is defined for certificate "/x/c.pem"'),
    ("proxy_ssl on; proxy_ssl_certificate /x/c.pem; proxy_ssl_certificate_key /x/k.pem;",
     ('cannot load certificate "/x/c.pem": BIO_new_file() failed (SSL: error:80000002:system '
     "library::No such file or directory:calling fopen(/x/c.pem, r) error:10000080:BIO "
     "routines::no such file)")),
    ("proxy_ssl on; proxy_ssl_verify on; proxy_ssl_trusted_certificate /x/ca.pem;",
     ('SSL_CTX_load_verify_locations("/x/ca.pem") failed (SSL: error:80000002:system '
     "library::No such file or directory:calling fopen(/x/ca.pem, r) error:10000080:BIO "
     "routines::no such file error:05880002:x509 certificate routines::system lib)")),
    ("proxy_ssl on; proxy_ssl_ciphers NOPE;",
     ('SSL_CTX_set_cipher_list("NOPE") failed (SSL: error:0A0000B9:SSL routines::'
     "no cipher match)")),
])
def test_wrong_settings_are_emerg(tmp_path, mail, message):
    assert error(tmp_path, mail) == message


def test_unused_settings_are_not_checked(tmp_path):
    """As nginx: only a server that will talk TLS to its backend loads the material."""
    got = load(tmp_path, "proxy_ssl_verify on; proxy_ssl_certificate /x/c.pem;")
    assert got.verify and not got.used


def test_emerg_line_of_the_command(tmp_path):
    path = tmp_path / "nginx.conf"
    path.write_text(conf_text("proxy_ssl on; proxy_ssl_verify on;"))
    out = subprocess.run([sys.executable, "-m", "postern", "-t", "-p", f"{tmp_path}/", "-c",
                          str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert "postern: [emerg] no proxy_ssl_trusted_certificate for proxy_ssl_verify\n" in \
        out.stderr
