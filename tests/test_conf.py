"""proxy.conf: nginx.conf -> MainSettings, without an nginx binary."""

from __future__ import annotations

import ipaddress
import os
import socket
import textwrap

import pytest
from postern.proxy.conf import ConfigError, dump_config, load_config
from postern.proxy.conf.lexer import BLOCK_DONE, BLOCK_START, FILE_DONE, OK, Reader
from postern.proxy.conf.settings import AuthHttp, Listen, LogTarget, Resolver
from postern.proxy.conf.values import parse_size, parse_time

from tests.conf_support import write_certificate

HOST = socket.gethostname().lower()


def write(tmp_path, text, name="nginx.conf"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def load(tmp_path, text, **kw):
    return load_config(write(tmp_path, text), prefix=f"{tmp_path}/", **kw)


def error(tmp_path, text, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kw)
    return str(info.value).replace(str(tmp_path), "T")


MINIMAL = """
    events {}
    mail {
        auth_http 127.0.0.1:9000/auth;
        server { listen 127.0.0.1:1143; protocol imap; }
    }
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    write_certificate(d, "mail.example.com", "server.crt", "server.key", "ca.crt")
    return d


# --- values ------------------------------------------------------------------------

def test_oauth_methods_are_listed_only_when_asked(tmp_path):
    """xoauth2 and oauthbearer (Postern's) join nginx's method names, off by default."""
    s = load(tmp_path, """
        events {}
        mail {
            auth_http 127.0.0.1:9000/auth;
            imap_auth plain XOAUTH2 oauthbearer; pop3_auth oauthbearer; smtp_auth xoauth2;
            server { listen 127.0.0.1:1143; protocol imap; }
        }
    """)
    (srv,) = s.servers
    assert srv.imap_auth == frozenset({"plain", "xoauth2", "oauthbearer"})
    assert (srv.pop3_auth, srv.smtp_auth) == (frozenset({"oauthbearer"}),
                                              frozenset({"xoauth2"}))
    (srv,) = load(tmp_path, MINIMAL).servers
    assert not {"xoauth2", "oauthbearer"} & (srv.imap_auth | srv.pop3_auth | srv.smtp_auth)


@pytest.mark.parametrize("text,is_sec,expected", [
    ("60", False, 60000), ("60", True, 60), ("500ms", False, 500), ("1h 30m", False, 5400000),
    ("1h30m", False, 5400000), ("2d", True, 172800), ("1w", True, 604800),
    ("1M", True, 2592000), ("1y", True, 31536000), ("0", False, 0), ("1s500ms", False, 1500),
    ("1M", False, None), ("1y", False, None), ("1ms", True, None), ("30m1h", False, None),
    ("", False, None), ("s", False, None), ("-1", False, None), ("1x", False, None),
    ("5 s", False, None), ("99999999999999999999", True, None),
])
def test_parse_time(text, is_sec, expected):
    assert parse_time(text, is_sec) == expected


@pytest.mark.parametrize("text,expected", [
    ("4096", 4096), ("4k", 4096), ("4K", 4096), ("1m", 1048576), ("1M", 1048576),
    ("1g", None), ("", None), ("k", None), ("-1", None), ("1.5k", None),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


# --- lexer -------------------------------------------------------------------------

def statements(text):
    reader = Reader(text.encode(), "/f.conf")
    out = []
    while True:
        rc, words = reader.read()
        out.append((rc, words, reader.line))
        if rc == FILE_DONE:
            return out


def test_lexer_words_quotes_escapes():
    got = statements('a "b c" \'d\' e\\;f "g\\"h" i\\tj x\\q {\n}\n# c\nk ("x");')
    assert got == [(BLOCK_START, ["a", "b c", "d", "e\\;f", 'g"h', "i\tj", "x\\q"], 1),
                   (BLOCK_DONE, [], 2), (OK, ["k", '("x")'], 4), (FILE_DONE, [], 4)]


def test_lexer_variable_braces_and_brace_in_word():
    assert statements("a ${b}c d}e;")[0] == (OK, ["a", "${b}c", "d}e"], 1)


@pytest.mark.parametrize("text,message", [
    ('a "b"c;', 'unexpected "c" in /f.conf:1'),
    ("a\n;\n;", 'unexpected ";" in /f.conf:3'),
    ("{", 'unexpected "{" in /f.conf:1'),
    ("a b }", 'unexpected "}" in /f.conf:1'),
    ("a\nb", 'unexpected end of file, expecting ";" or "}" in /f.conf:2'),
    ('a "b\n\n', 'unexpected end of file, expecting ";" or "}" in /f.conf:3'),
    ("a " + "x" * 4096 + ";", 'too long parameter "xxxxxxxxxx..." started in /f.conf:1'),
])
def test_lexer_errors(text, message):
    with pytest.raises(ConfigError) as info:
        statements(text)
    assert str(info.value) == message


# --- valid configurations ------------------------------------------------------------

def test_minimal(tmp_path):
    s = load(tmp_path, MINIMAL)
    assert s.conf_file == f"{tmp_path}/nginx.conf" and s.prefix == f"{tmp_path}/"
    assert s.worker_processes == 1 and s.daemon and s.master_process
    assert s.pid == f"{tmp_path}/logs/nginx.pid"
    assert s.error_logs == () and s.worker_connections == 512 and s.warnings == ()
    (srv,) = s.servers
    assert (srv.file, srv.line, srv.protocol) == (f"{tmp_path}/nginx.conf", 5, "imap")
    assert srv.listens == (Listen(text="127.0.0.1:1143", host="127.0.0.1", port=1143),)
    assert srv.auth_http == AuthHttp(text="127.0.0.1:9000", host_header="127.0.0.1",
                                     uri="/auth", addr="127.0.0.1", port=9000)
    assert srv.server_name == HOST
    assert (srv.timeout, srv.resolver, srv.resolver_timeout, srv.max_errors) == (
        60.0, None, 30.0, 5)
    assert (srv.imap_auth, srv.imap_capabilities) == (frozenset({"plain"}),
                                                      ("IMAP4", "IMAP4rev1", "UIDPLUS"))
    assert (srv.pop3_auth, srv.smtp_auth) == (frozenset({"plain"}),
                                              frozenset({"plain", "login"}))
    assert (srv.proxy_buffer, srv.proxy_timeout, srv.xclient, srv.proxy_protocol) == (
        4096, 86400.0, True, "off")
    assert srv.ssl.protocols == ("TLSv1.2", "TLSv1.3") and srv.ssl.starttls == "off"


def test_every_mail_directive(tmp_path, pki):
    (tmp_path / "logs").mkdir()
    s = load(tmp_path, f"""
        worker_processes 3; daemon off; master_process off; pid run/p.pid;
        worker_shutdown_timeout 10s; worker_rlimit_nofile 4096;
        error_log logs/e.log warn; error_log stderr;
        events {{ worker_connections 64; use epoll; multi_accept on; }}
        mail {{
            server_name mx.test;
            auth_http unix:{tmp_path}/auth.sock:/check;
            auth_http_header X-Auth-Key "sec ret";
            auth_http_header X-Other v;
            auth_http_timeout 5s;
            auth_http_pass_client_cert on;
            timeout 30s; resolver 127.0.0.1 [::1]:5353 valid=30s ipv6=off;
            resolver_timeout 5s; max_errors 3;
            proxy on; proxy_buffer 8k; proxy_timeout 1h; proxy_pass_error_message on;
            xclient off; proxy_smtp_auth on; proxy_protocol v2;
            imap_auth plain login cram-md5 external; imap_capabilities IMAP4rev1;
            imap_client_buffer 16k;
            pop3_auth apop; pop3_auth cram-md5; pop3_capabilities TOP;
            smtp_auth none; smtp_capabilities "SIZE 10485760" 8BITMIME;
            smtp_client_buffer 2k; smtp_greeting_delay 500ms;
            starttls only;
            ssl_certificate {pki}/server.crt; ssl_certificate_key {pki}/server.key;
            ssl_protocols TLSv1.3; ssl_ciphers HIGH; ssl_prefer_server_ciphers on;
            ssl_ecdh_curve X25519; ssl_session_cache builtin:1000 shared:MAIL:1m;
            ssl_session_tickets off; ssl_session_timeout 10m;
            ssl_verify_client optional; ssl_verify_depth 2;
            ssl_client_certificate {pki}/ca.crt; ssl_trusted_certificate {pki}/ca.crt;
            ssl_conf_command Options -SessionTicket;
            set_real_ip_from 192.0.2.0/24; set_real_ip_from unix:;
            error_log logs/mail.log info;
            server {{ listen 127.0.0.1:1025 proxy_protocol; protocol smtp; }}
        }}
    """)
    assert (s.worker_processes, s.daemon, s.master_process) == (3, False, False)
    assert s.pid == f"{tmp_path}/run/p.pid" and s.worker_shutdown_timeout == 10.0
    assert s.worker_rlimit_nofile == 4096 and s.worker_connections == 64
    assert s.error_logs == (LogTarget(kind="file", level="warn", path=f"{tmp_path}/logs/e.log"),
                            LogTarget(kind="stderr"))
    (srv,) = s.servers
    assert srv.server_name == "mx.test"
    assert srv.auth_http == AuthHttp(text=f"unix:{tmp_path}/auth.sock", host_header="localhost",
                                     uri="/check", unix_path=f"{tmp_path}/auth.sock")
    assert srv.auth_http_headers == (("X-Auth-Key", "sec ret"), ("X-Other", "v"))
    assert (srv.auth_http_timeout, srv.auth_http_pass_client_cert) == (5.0, True)
    assert srv.resolver == Resolver((("127.0.0.1", 53), ("::1", 5353)), 30.0, True, False)
    assert (srv.timeout, srv.resolver_timeout, srv.max_errors) == (30.0, 5.0, 3)
    assert (srv.proxy_buffer, srv.proxy_timeout, srv.proxy_pass_error_message) == (
        8192, 3600.0, True)
    assert (srv.xclient, srv.proxy_smtp_auth, srv.proxy_protocol) == (False, True, "v2")
    assert srv.imap_auth == frozenset({"plain", "login", "cram-md5", "external"})
    assert srv.imap_capabilities == ("IMAP4rev1",) and srv.imap_client_buffer == 16384
    assert srv.pop3_auth == frozenset({"apop", "cram-md5"}) and srv.pop3_capabilities == ("TOP",)
    assert srv.smtp_auth == frozenset({"none"})
    assert srv.smtp_capabilities == ("SIZE 10485760", "8BITMIME")
    assert (srv.smtp_client_buffer, srv.smtp_greeting_delay) == (2048, 0.5)
    assert srv.listens[0].proxy_protocol and not srv.listens[0].ssl
    assert srv.error_logs == (LogTarget(kind="file", level="info",
                                        path=f"{tmp_path}/logs/mail.log"),)
    assert srv.set_real_ip_from == (ipaddress.ip_network("192.0.2.0/24"), "unix:")
    t = srv.ssl
    assert t.starttls == "only" and t.certificates == (f"{pki}/server.crt",)
    assert t.certificate_keys == (f"{pki}/server.key",)
    assert (t.protocols, t.ciphers, t.prefer_server_ciphers, t.ecdh_curve) == (
        ("TLSv1.3",), "HIGH", True, "X25519")
    assert (t.session_cache, t.session_tickets, t.session_timeout) == (
        "builtin:1000 shared:MAIL:1m", False, 600.0)
    assert (t.verify_client, t.verify_depth) == ("optional", 2)
    assert t.client_certificate == t.trusted_certificate == f"{pki}/ca.crt"
    assert t.conf_commands == (("Options", "-SessionTicket"),)
    assert os.path.exists(f"{tmp_path}/logs/mail.log")  # opened at load time, as nginx -t


def test_inheritance_replaces_lists(tmp_path):
    s = load(tmp_path, """
        events {}
        mail {
            auth_http 127.0.0.1:9000;
            imap_capabilities A B;
            auth_http_header X-A 1;
            smtp_auth login;
            timeout 5s;
            server { listen 127.0.0.1:1143; protocol imap; }
            server { listen 127.0.0.1:1144; protocol imap; imap_capabilities C;
                     auth_http_header X-B 2; auth_http_header X-C 3; timeout 7s; }
            server { listen 127.0.0.1:1025; protocol smtp; smtp_auth plain;
                     auth_http 127.0.0.2:80; }
        }
    """)
    a, b, c = s.servers
    assert a.imap_capabilities == ("A", "B") and b.imap_capabilities == ("C",)
    assert a.auth_http_headers == (("X-A", "1"),)
    assert b.auth_http_headers == (("X-B", "2"), ("X-C", "3"))
    assert (a.timeout, b.timeout) == (5.0, 7.0)
    assert a.smtp_auth == frozenset({"login"}) and c.smtp_auth == frozenset({"plain"})
    assert c.auth_http.addr == "127.0.0.2" and a.auth_http.port == 9000


def test_proxy_client_identity_is_off_by_default_and_inherited(tmp_path):
    plain = load(tmp_path, MINIMAL)
    assert plain.servers[0].proxy_client_identity is False
    s = load(tmp_path, """
        events {}
        mail {
            auth_http 127.0.0.1:9000;
            proxy_client_identity on;
            server { listen 127.0.0.1:1144; protocol imap; }
            server { listen 127.0.0.1:1110; protocol pop3; proxy_client_identity off; }
        }
    """)
    assert [srv.proxy_client_identity for srv in s.servers] == [True, False]


def test_auth_values_or_together_with_duplicate_warning(tmp_path):
    s = load(tmp_path, """
        events {}
        mail {
            auth_http 127.0.0.1;
            server { listen 127.0.0.1:1110; protocol pop3;
                     pop3_auth plain APOP;
                     pop3_auth apop; }
        }
    """)
    assert s.servers[0].pop3_auth == frozenset({"plain", "apop"})
    assert s.warnings == (f'duplicate value "apop" in {tmp_path}/nginx.conf:7',)


@pytest.mark.parametrize("port,protocol", [(143, "imap"), (993, "imap"), (110, "pop3"),
                                           (995, "pop3"), (25, "smtp"), (465, "smtp"),
                                           (587, "smtp")])
def test_protocol_from_port(tmp_path, port, protocol):
    s = load(tmp_path, f"events {{}} mail {{ auth_http 127.0.0.1; server {{ listen {port}; }} }}")
    assert s.servers[0].protocol == protocol
    assert s.servers[0].listens[0].text == f"0.0.0.0:{port}"


def test_protocol_detection_order(tmp_path):
    s = load(tmp_path, """
        events {} mail { auth_http 127.0.0.1;
            server { listen 127.0.0.1:1; listen 127.0.0.1:25; listen 127.0.0.1:110; }
            server { listen 127.0.0.2:143; protocol pop3; }
            server { protocol smtp; listen 127.0.0.3:143; }
        }
    """)
    assert [srv.protocol for srv in s.servers] == ["smtp", "pop3", "smtp"]


def test_listen_forms(tmp_path):
    s = load(tmp_path, f"""
        events {{}} mail {{ auth_http 127.0.0.1; server {{ protocol imap;
            listen 1143; listen *:1144; listen 127.0.0.1:1145 bind backlog=7;
            listen [::1]:1146 ipv6only=off rcvbuf=8k sndbuf=1m so_keepalive=30m::10;
            listen [::]:1147; listen unix:{tmp_path}/imap.sock proxy_protocol; }} }}
    """)
    ls = s.servers[0].listens
    assert [x.text for x in ls] == ["0.0.0.0:1143", "0.0.0.0:1144", "127.0.0.1:1145",
                                    "[::1]:1146", "[::]:1147", f"unix:{tmp_path}/imap.sock"]
    assert ls[2] == Listen(text="127.0.0.1:1145", host="127.0.0.1", port=1145, backlog=7,
                           bind=True)
    assert ls[3] == Listen(text="[::1]:1146", host="::1", port=1146, ipv6only=False,
                           rcvbuf=8192, sndbuf=1048576, so_keepalive="30m::10", bind=True)
    assert ls[5] == Listen(text=f"unix:{tmp_path}/imap.sock", host=None, port=None,
                           unix_path=f"{tmp_path}/imap.sock", proxy_protocol=True)


def test_seed_example_needs_events(tmp_path, pki):
    seed = SEED.replace("/etc/ssl/certs/", f"{pki}/")
    assert error(tmp_path, seed) == 'no "events" section in configuration'


def test_seed_complete_example(tmp_path, pki):
    s = load(tmp_path, "events {}\n" + SEED.replace("/etc/ssl/certs/", f"{pki}/"))
    assert s.worker_processes == os.cpu_count()
    smtp, pop3, imap = s.servers
    assert [x.protocol for x in s.servers] == ["smtp", "pop3", "imap"]
    assert [x.listens for x in s.servers] == [
        (Listen(text=f"0.0.0.0:{p}", host="0.0.0.0", port=p, ssl=True),) for p in (25, 110, 143)]
    for srv in s.servers:
        assert srv.server_name == "mail.example.com"
        assert srv.auth_http.host_header == "localhost"
        assert srv.auth_http.uri == "/cgi-bin/nginxauth.cgi" and srv.auth_http.port == 9000
        assert srv.auth_http.addr == socket.getaddrinfo("localhost", None, socket.AF_INET)[0][4][0]
        assert srv.proxy_pass_error_message
        assert srv.ssl.certificates == (f"{pki}/server.crt",)
        assert srv.ssl.protocols == ("TLSv1", "TLSv1.1", "TLSv1.2")
        assert srv.ssl.session_cache == "shared:SSL:10m" and srv.ssl.session_timeout == 600.0
    assert smtp.smtp_auth == frozenset({"login", "plain", "cram-md5"})
    assert pop3.pop3_auth == frozenset({"plain", "apop", "cram-md5"})
    assert imap.imap_auth == frozenset({"plain"})
    assert s.warnings == (
        ('the "ssl" directive is deprecated, use the "listen ... ssl" directive instead '
         f"in {tmp_path}/nginx.conf:10"),)


SEED = """\
worker_processes auto;

mail {
    server_name mail.example.com;
    auth_http   localhost:9000/cgi-bin/nginxauth.cgi;

    proxy_pass_error_message on;

    ssl                 on;
    ssl_certificate     /etc/ssl/certs/server.crt;
    ssl_certificate_key /etc/ssl/certs/server.key;
    ssl_protocols       TLSv1 TLSv1.1 TLSv1.2;
    ssl_ciphers         HIGH:!aNULL:!MD5;
    ssl_session_cache   shared:SSL:10m;
    ssl_session_timeout 10m;

    server {
        listen     25;
        protocol   smtp;
        smtp_auth  login plain cram-md5;
    }

    server {
        listen    110;
        protocol  pop3;
        pop3_auth plain apop cram-md5;
}

     server {
        listen   143;
        protocol imap;
    }
}
"""


def test_command_line_directives(tmp_path):
    s = load(tmp_path, MINIMAL, directives="daemon off; worker_processes 2; pid off;")
    assert (s.daemon, s.worker_processes, s.pid) == (False, 2, None)
    assert error(tmp_path, MINIMAL + "daemon on;", directives="daemon off;") == (
        '"daemon" directive is duplicate in T/nginx.conf:7')
    assert error(tmp_path, MINIMAL, directives="mail {}") == (
        "block directives are not supported in -g option in command line")
    assert error(tmp_path, MINIMAL, directives="timeout 1;") == (
        '"timeout" directive is not allowed here in command line')


def test_includes(tmp_path):
    write(tmp_path, "server { listen 127.0.0.1:1110; protocol pop3; }\n", "conf.d/20-pop3.conf")
    write(tmp_path, "server { listen 127.0.0.1:1143; protocol imap; }\n", "conf.d/10-imap.conf")
    write(tmp_path, "auth_http 127.0.0.1;\n", "auth.inc")
    path = write(tmp_path, "events {}\nmail {\n include auth.inc;\n include conf.d/*.conf;\n}\n")
    s = load_config(path, prefix="/nonexistent-prefix/")  # includes follow the conf dir
    assert [x.protocol for x in s.servers] == ["imap", "pop3"]
    assert s.servers[0].file == f"{tmp_path}/conf.d/10-imap.conf"
    assert dump_config(path, prefix="/nonexistent-prefix/") == "".join(
        f"# configuration file {tmp_path}/{name}:\n{(tmp_path / name).read_text()}\n"
        for name in ("nginx.conf", "auth.inc", "conf.d/10-imap.conf", "conf.d/20-pop3.conf"))


def test_relative_conf_path_and_default_prefix(tmp_path, monkeypatch):
    write(tmp_path, MINIMAL)
    monkeypatch.chdir(tmp_path)
    s = load_config("nginx.conf")
    assert s.prefix == f"{os.getcwd()}/" and s.conf_file == f"{os.getcwd()}/nginx.conf"


def test_missing_main_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "nope.conf"))
    e = info.value
    assert (e.file, e.line) == (None, None)
    assert str(e) == f'open() "{tmp_path}/nope.conf" failed (2: No such file or directory)'


def test_error_attributes(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "events {}\nmail {\n  foo;\n}\n")
    e = info.value
    assert (e.message, e.file, e.line) == ('unknown directive "foo"', f"{tmp_path}/nginx.conf", 3)


def test_errors_keep_earlier_warnings(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "events {}\nmail { imap_auth plain plain; timeout x; }\n")
    assert info.value.warnings == (f'duplicate value "plain" in {tmp_path}/nginx.conf:2',)


@pytest.mark.parametrize("block", ["http", "stream"])
def test_other_subsystems_are_skipped_with_a_warning(tmp_path, block):
    settings = load(tmp_path, f"events {{}}\n{block} {{ include {tmp_path}/missing.conf;\n"
                              "  server { listen 80; location / { bogus; } } }\n")
    assert settings.servers == ()
    assert settings.warnings == (
        (f'"{block}" block skipped: postern proxies mail only, its content and includes are '
        f"not read in {tmp_path}/nginx.conf:2"),)


@pytest.mark.parametrize("text,expected", [
    ("events {} mail { server { listen 127.0.0.1:1; protocol imap; } }",
     'no "auth_http" is defined for server in T/nginx.conf:1'),
    ("events {} mail { auth_http 127.0.0.1; server { listen 127.0.0.1:1; } }",
     "unknown mail protocol for server in T/nginx.conf:1"),
    ("events {} mail { auth_http 127.0.0.1; server { protocol imap; } }",
     'no "listen" is defined for server in T/nginx.conf:1'),
    ("events {} mail { auth_http 127.0.0.1; server { listen 143; } server { listen *:143; } }",
     'duplicate "0.0.0.0:143" address and port pair in T/nginx.conf:1'),
    ("events {} mail { auth_http 127.0.0.1; server { listen 143 deferred; } }",
     'the invalid "deferred" parameter in T/nginx.conf:1'),
    ("events {} mail { auth_http 127.0.0.1; server { listen 993 ssl; } }",
     'no "ssl_certificate" is defined for the "listen ... ssl" directive in T/nginx.conf:1'),
    ("events {} mail { auth_http 127.0.0.1; imap_auth apop; }",
     'invalid value "apop" in T/nginx.conf:1'),
    ("events {} mail { proxy_protocol maybe; }",
     ('invalid value "maybe" in "proxy_protocol" directive, it must be "on" or "off" in '
      "T/nginx.conf:1")),
    ("events {} mail { resolver 127.0.0.1 ipv4=off ipv6=off; }",
     '"ipv4" and "ipv6" cannot both be "off" in T/nginx.conf:1'),
    (("events {} mail { auth_http 127.0.0.1; starttls on; ssl_certificate a; "
      "ssl_certificate_key b; ssl_verify_client on; server { listen 143; } }"),
     ('cannot load certificate "T/a": BIO_new_file() failed (SSL: error:80000002:system '
      "library::No such file or directory:calling fopen(T/a, r) error:10000080:BIO "
      "routines::no such file)")),
    ("events {} include self.conf;", "too deep include nesting in T/self.conf:1"),
])
def test_errors(tmp_path, text, expected):
    write(tmp_path, "include self.conf;\n", "self.conf")
    assert error(tmp_path, text) == expected


def test_verify_client_needs_a_ca(tmp_path, pki):
    assert error(tmp_path, f"""events {{}} mail {{ auth_http 127.0.0.1; starttls on;
        ssl_certificate {pki}/server.crt; ssl_certificate_key {pki}/server.key;
        ssl_verify_client on; server {{ listen 143; }} }}""") == (
        "no ssl_client_certificate or ssl_trusted_certificate for ssl_verify_client")


def test_memory_log_is_ignored_with_warning(tmp_path):
    s = load(tmp_path, "events {} error_log memory:1m debug;")
    assert s.error_logs == ()
    assert s.warnings == ((f'error log "memory:1m" is not supported, ignored in '
                           f"{tmp_path}/nginx.conf:1"),)


def test_syslog_target(tmp_path):
    s = load(tmp_path, "events {} error_log syslog:server=[::1]:5514,facility=mail,"
                       "severity=crit,tag=pm,nohostname debug_mail;"
                       "error_log syslog:server=unix:/dev/log;")
    assert s.error_logs == (
        LogTarget(kind="syslog", level="debug", syslog_host="::1", syslog_port=5514,
                  syslog_facility="mail", syslog_severity="crit", syslog_tag="pm",
                  syslog_nohostname=True),
        LogTarget(kind="syslog", syslog_unix_path="/dev/log"))


def test_worker_connections_counts_bound_sockets(tmp_path):
    body = ("mail { auth_http 127.0.0.1; server { protocol imap; listen 1; "
            "listen 127.0.0.1:1; listen 127.0.0.2:1 bind; listen 127.0.0.1:2; } }")
    assert error(tmp_path, "events { worker_connections 3; } " + body) == (
        "3 worker_connections are not enough for 3 listening sockets")
    assert load(tmp_path, "events { worker_connections 4; } " + body).worker_connections == 4


# --- metrics_listen (Postern's own) -----------------------------------------------------

def _metrics(directive: str) -> str:
    return f"""
        events {{}}
        mail {{
            auth_http 127.0.0.1:9000/auth;
            {directive}
            server {{ listen 127.0.0.1:1143; protocol imap; }}
        }}
    """


def test_metrics_listen_is_off_by_default(tmp_path):
    assert load(tmp_path, MINIMAL).metrics_listen is None


@pytest.mark.parametrize("word,text,host,port", [
    ("127.0.0.1:9145", "127.0.0.1:9145", "127.0.0.1", 9145),
    ("9145", "0.0.0.0:9145", "0.0.0.0", 9145),
    ("*:9145", "0.0.0.0:9145", "0.0.0.0", 9145),
    ("[::1]:9145", "[::1]:9145", "::1", 9145),
])
def test_metrics_listen_forms(tmp_path, word, text, host, port):
    listen = load(tmp_path, _metrics(f"metrics_listen {word};")).metrics_listen
    assert (listen.text, listen.host, listen.port) == (text, host, port)


@pytest.mark.parametrize("directive,expected", [
    ("metrics_listen 127.0.0.1;", 'no port in "127.0.0.1" of the "metrics_listen" directive'),
    ("metrics_listen 127.0.0.1:70000;",
     'invalid port in "127.0.0.1:70000" of the "metrics_listen" directive'),
    ("metrics_listen unix:/tmp/m.sock;",
     'unix domain sockets are not supported in "metrics_listen unix:/tmp/m.sock"'),
    ("metrics_listen 127.0.0.1:1 127.0.0.1:2;",
     'invalid number of arguments in "metrics_listen" directive'),
    ("metrics_listen 127.0.0.1:1; metrics_listen 127.0.0.1:2;",
     '"metrics_listen" directive is duplicate'),
])
def test_metrics_listen_errors(tmp_path, directive, expected):
    assert error(tmp_path, _metrics(directive)) == f"{expected} in T/nginx.conf:5"


def test_metrics_listen_belongs_in_mail(tmp_path):
    text = MINIMAL.replace("protocol imap;", "protocol imap; metrics_listen 9145;")
    assert error(tmp_path, text).startswith('"metrics_listen" directive is not allowed here')


def test_record_sessions_is_off_by_default_and_inherited(tmp_path):
    """Postern's record_sessions (proxy/recorder.py): a path off the prefix, "off", inherited
    from mail{} into server{}, not allowed twice in one context."""
    assert load(tmp_path, MINIMAL).servers[0].record_sessions is None
    text = MINIMAL.replace("auth_http 127.0.0.1:9000/auth;",
                           "auth_http 127.0.0.1:9000/auth; record_sessions logs/rec.jsonl;")
    text = text.replace("protocol imap; }", "protocol imap; }\n"
                        "server { listen 127.0.0.1:1110; protocol pop3; record_sessions off; }")
    (tmp_path / "logs").mkdir()
    imap, pop3 = load(tmp_path, text).servers
    assert imap.record_sessions == f"{tmp_path}/logs/rec.jsonl" and pop3.record_sessions is None
    assert (tmp_path / "logs" / "rec.jsonl").exists()  # opened at start, as nginx's logs
    nowhere = MINIMAL.replace("protocol imap;", "protocol imap; record_sessions no/such/f;")
    assert error(tmp_path, nowhere).startswith(
        'open() "T/no/such/f" failed (2: No such file or directory) in T/nginx.conf:')
    twice = MINIMAL.replace("protocol imap;", "protocol imap; record_sessions logs/a; "
                            "record_sessions logs/b;")
    assert '"record_sessions" directive is duplicate' in error(tmp_path, twice)
