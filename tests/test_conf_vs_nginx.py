"""Differential checks: the same configuration through `nginx -t` and load_config().

Every case is written to a fresh directory and given to the real nginx (Debian 1.22.1
with the dynamic mail module) and to Postern; the [emerg] text (or its absence) and the
[warn] lines must be identical. Cases where Postern deliberately follows current nginx
(the spec's target) instead of 1.22 are listed apart, with both outputs pinned.
One more difference is not testable without a non-local address: `nginx -t` binds the
listening sockets (and fails on an address the host does not have); load_config() does
not, binding is the master's job.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from postern.proxy.conf import ConfigError, load_config
from postern.scenarios.kit.real.common import free_port

from tests.conf_support import MODULE, NGINX, outcome, require_nginx, tls_files

__all__ = ["tls_files"]

require_nginx()


def run_both(tmp_path, tls_files, body: str, g: str | None = None, port: int | None = None):
    for name in os.listdir(tls_files):
        shutil.copy(tls_files / name, tmp_path / name)
    port = port or free_port()
    text = body.replace("{P}", str(port)).replace("{D}", str(tmp_path))
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"load_module {MODULE};\n{text}\n")
    cmd = [NGINX, "-t", "-q", "-p", f"{tmp_path}/", "-c", str(conf),
           "-e", str(tmp_path / "nginx-error.log")]
    if g is not None:
        cmd += ["-g", g]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30)
    nginx = outcome(proc.stderr.splitlines())
    try:
        settings = load_config(str(conf), prefix=f"{tmp_path}/", directives=g)
        ours = (None, list(settings.warnings))
    except ConfigError as e:
        ours = (str(e), list(e.warnings))
    return nginx, ours


E = "events {}\n"
A = "auth_http 127.0.0.1:9000/auth;"
IMAP = "server { listen 127.0.0.1:{P}; protocol imap; }"
TLS = "ssl_certificate cert.pem; ssl_certificate_key key.pem;"

SAME = {
    # --- syntax, as ngx_conf_read_token / ngx_conf_parse word it
    "eof_in_block": E + "mail {\n  server {\n",
    "eof_expecting_semicolon": E + "mail {}\ndaemon",
    "eof_after_backslash": E + "env a\\",
    "stray_close": E + "}\n",
    "close_inside_args": E + f"mail {{ {A} {IMAP} server {{ listen 1 }} }}",
    "lonely_semicolon": E + "mail { ; }",
    "lonely_brace": E + "{ }",
    "quote_glued": E + 'env "a"b;',
    "quote_paren": E + 'env "a"(b;',
    "quotes_and_escapes": E + "env \"A\\\"B\\\\C\\tD\\q\"; env 'x\\'y'; env a\\;b; env a}b;",
    "comment_mid_word": E + "env a#b; # trailing comment",
    "word_too_long": E + "env " + "a" * 4096 + ";",
    "word_longest": E + "env " + "a" * 4095 + ";",
    "quoted_too_long": E + 'env "' + "a" * 5000 + '";',
    "comment_too_long": E + "#" + "a" * 5000 + "\n",
    "multi_line_directive": E + "mail {\n  timeout\n    5x\n    ;\n}",
    "block_not_terminated": E + f"mail {{ {A} {IMAP} timeout {{}} }}",
    "no_opening_brace": E + "mail;",
    "unknown_directive": E + "mail { foo bar; }",
    "unknown_quoted_name": E + '"foo bar" 1;',
    "not_allowed_http_directive_in_mail": E + "mail { root /x; }",
    "not_allowed_listen_in_mail": E + "mail { listen 1143; }",
    "not_allowed_timeout_in_main": E + "timeout 1;",
    "not_allowed_server_in_main": E + "server {}",
    "not_allowed_mail_in_server": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}}; mail {{}} }} }}",
    "not_allowed_daemon_in_events": "events { daemon on; }",
    "arg_count": E + f"mail {{ {A} {IMAP} timeout 1 2; }}",
    "arg_count_zero": E + f"mail {{ {A} {IMAP} imap_capabilities; }}",
    "arg_count_header": E + f"mail {{ {A} {IMAP} auth_http_header X; }}",
    # --- main context
    "daemon_duplicate": E + "daemon on; daemon off;",
    "daemon_bad": E + "daemon maybe;",
    "worker_processes_bad": E + "worker_processes x;",
    "worker_processes_auto": E + "worker_processes auto;",
    "worker_rlimit_nofile_bad": E + "worker_rlimit_nofile x;",
    "worker_shutdown_timeout_bad": E + "worker_shutdown_timeout 1x;",
    "pid_args": E + "pid a b;",
    "user_args": E + "user a b c;",
    "user_duplicate": E + "user root; user root;",
    "user_unknown": E + "user nonexistentuser;",
    "user_group_default": E + "user nobody;",
    "master_process_bad": E + "master_process maybe;",
    "ignored_main": E + "env FOO=bar; pcre_jit on; thread_pool default threads=2;",
    "events_missing": "mail {}",
    "events_duplicate": E + E,
    "worker_connections_bad": "events { worker_connections x; }",
    "worker_connections_dup": "events { worker_connections 1; worker_connections 2; }",
    "worker_connections_too_few": "events { worker_connections 2; }\nmail { " + A +
        " server { listen 127.0.0.1:{P}; protocol imap; listen [::1]:{P}; } }",
    "use_bad": "events { use foo; }",
    "mail_duplicate": E + "mail {}\nmail {}",
    "include_missing": E + "include nonexist.conf;",
    "include_glob_no_match": E + "include nonexist*.conf;",
    "include_args": E + "include a b;",
    # --- mail core
    "no_listen": E + f"mail {{ {A}\n  server {{\n    protocol imap;\n  }}\n}}",
    "unknown_mail_protocol": E + f"mail {{ {A}\n  server\n  {{\n    listen 127.0.0.1:{{P}};\n  }}\n}}",
    "protocol_order_before_tls": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; "
        "protocol imap; } server { listen 127.0.0.2:{P}; } }",
    "protocol_bad": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}}; protocol IMAP; }} }}",
    "no_auth_http": E + "mail {\n  server { listen 127.0.0.1:{P}; protocol imap; }\n}",
    "timeout_bad": E + f"mail {{ {A} {IMAP} timeout 5x; }}",
    "timeout_month_in_msec_slot": E + f"mail {{ {A} {IMAP} timeout 1M; }}",
    "timeout_duplicate": E + f"mail {{ {A} {IMAP} timeout 1s; timeout 2s; }}",
    "timeouts_ok": E + f"mail {{ {A} {IMAP} timeout 1h30m; proxy_timeout 500ms; "
        "auth_http_timeout 0; smtp_greeting_delay 1; resolver_timeout 10s; }",
    "server_name_duplicate": E + f"mail {{ {A} {IMAP} server_name a; server_name b; }}",
    "max_errors_bad": E + f"mail {{ {A} {IMAP} max_errors -1; }}",
    "max_errors_duplicate": E + f"mail {{ {A} {IMAP} max_errors 1; max_errors 2; }}",
    "resolver_duplicate": E + f"mail {{ {A} {IMAP} resolver off; resolver 127.0.0.1; }}",
    "resolver_valid_bad": E + f"mail {{ {A} {IMAP} resolver 127.0.0.1 valid=x; }}",
    "resolver_ipv6_bad": E + f"mail {{ {A} {IMAP} resolver 127.0.0.1 ipv6=x; }}",
    "resolver_port_bad": E + f"mail {{ {A} {IMAP} resolver 127.0.0.1:99999; }}",
    "resolver_host_not_found": E + f"mail {{ {A} {IMAP} resolver foo.invalid; }}",
    "resolver_no_servers": E + f"mail {{ {A} {IMAP} resolver valid=30s; }}",
    "resolver_ok": E + f"mail {{ {A} {IMAP} resolver [::1]:5353 127.0.0.1 valid=30s "
        "ipv6=off; }",
    "error_log_level_bad": E + f"mail {{ {A} {IMAP} error_log x.log foo; }}",
    "error_log_level_dup": E + f"mail {{ {A} {IMAP} error_log x.log info debug; }}",
    "error_log_debug_mask": E + f"mail {{ {A} {IMAP} error_log x.log debug_mail; }}",
    "error_log_debug_mask_after_level": E + f"mail {{ {A} {IMAP} error_log x.log info "
        "debug_mail; }",
    "error_log_level_after_mask": E + f"mail {{ {A} {IMAP} error_log x.log debug_mail "
        "info; }",
    "error_log_open_fails": E + f"mail {{ {A} {IMAP} error_log /nonexistent/dir/x.log; }}",
    "syslog_param_bad": E + "error_log syslog:server=127.0.0.1,foo=bar;",
    "syslog_facility_bad": E + "error_log syslog:server=127.0.0.1,facility=foo;",
    "syslog_severity_bad": E + "error_log syslog:server=127.0.0.1,severity=foo;",
    "syslog_tag_bad": E + "error_log syslog:server=127.0.0.1,tag=a-b;",
    "syslog_tag_long": E + "error_log syslog:server=127.0.0.1,tag=" + "a" * 33 + ";",
    "syslog_no_server": E + "error_log syslog:facility=local0;",
    "syslog_dup_server": E + "error_log syslog:server=127.0.0.1,server=127.0.0.2;",
    "syslog_port_bad": E + "error_log syslog:server=127.0.0.1:99999;",
    "syslog_ok": E + "error_log syslog:server=127.0.0.1:5514,facility=mail,tag=pm,nohostname"
        " warn; error_log stderr;",
    # --- listen
    "listen_duplicate": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}}; protocol imap;\n"
        "  listen\n    127.0.0.1:{P}; } }",
    "listen_duplicate_across_servers": E + f"mail {{ {A} {IMAP} server {{ listen "
        "127.0.0.2:{P}; } server { listen 127.0.0.1:{P}; } }",
    "listen_duplicate_unix": E + f"mail {{ {A} server {{ listen UNIX:{{D}}/s; protocol imap; "
        "listen unix:{D}/s; } }",
    "listen_param_invalid": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} reuseport; }} }}",
    "listen_param_missing_semicolon": E + f"mail {{ {A} server {{ listen 1143 protocol imap; }}"
        " }",
    "listen_backlog_zero": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} backlog=0; }} }}",
    "listen_rcvbuf_bad": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} rcvbuf=x; }} }}",
    "listen_sndbuf_bad": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} sndbuf=1g; }} }}",
    "listen_ipv6only_bad": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ipv6only=onx; }} }}",
    "listen_ipv6only_unknown": E + f"mail {{ {A} server {{ listen [::1]:{{P}} ipv6only=x; }} }}",
    "listen_keepalive_bad": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} "
        "so_keepalive=1x::; } }",
    "listen_keepalive_empty": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} "
        "so_keepalive=::; } }",
    "listen_port_bad": E + f"mail {{ {A} server {{ listen 99999; }} }}",
    "listen_port_zero": E + f"mail {{ {A} server {{ listen 127.0.0.1:0; }} }}",
    "listen_host_not_found": E + f"mail {{ {A} server {{ listen foo.invalid:143; }} }}",
    "listen_v6_unclosed": E + f"mail {{ {A} server {{ listen [::1:143; }} }}",
    "listen_v6_garbage": E + f"mail {{ {A} server {{ listen [::1]x; }} }}",
    "listen_uri": E + f"mail {{ {A} server {{ listen 127.0.0.1:1/x; }} }}",
    "listen_no_host": E + f"mail {{ {A} server {{ listen :1; }} }}",
    "listen_unix_no_path": E + f"mail {{ {A} server {{ listen unix:; }} }}",
    "listen_unix_no_protocol": E + f"mail {{ {A} server {{ listen unix:{{D}}/s; }} }}",
    "listen_all_params": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} proxy_protocol "
        "backlog=10 rcvbuf=64k sndbuf=1m bind so_keepalive=30m::10; protocol smtp; } }",
    # --- auth_http
    "auth_http_no_host": E + "mail { auth_http http://; " + IMAP + " }",
    "auth_http_port_zero": E + "mail { auth_http 127.0.0.1:0/x; " + IMAP + " }",
    "auth_http_port_empty": E + "mail { auth_http 127.0.0.1:/x; " + IMAP + " }",
    "auth_http_host_not_found": E + "mail { auth_http foo.invalid; " + IMAP + " }",
    "auth_http_unix_no_path": E + "mail { auth_http unix:; " + IMAP + " }",
    "auth_http_v6_garbage": E + "mail { auth_http [::1]x; " + IMAP + " }",
    "auth_http_v6_bad": E + "mail { auth_http [zz]; " + IMAP + " }",
    "auth_http_v6_empty": E + "mail { auth_http []; " + IMAP + " }",
    "auth_http_twice": E + "mail { auth_http 127.0.0.1; auth_http 127.0.0.2:81/a?b; " + IMAP
        + " }",
    "auth_http_timeout_bad": E + f"mail {{ {A} {IMAP} auth_http_timeout -1; }}",
    "flag_duplicate": E + f"mail {{ {A} {IMAP} auth_http_pass_client_cert ON; "
        "auth_http_pass_client_cert off; }",
    "flag_bad": E + f"mail {{ {A} {IMAP} proxy_pass_error_message yes; }}",
    "proxy_duplicate": E + f"mail {{ {A} {IMAP} proxy on; proxy off; }}",
    # --- *_auth, capabilities, buffers
    "auth_duplicate_value": E + f"mail {{ {A} {IMAP} imap_auth plain PLAIN; }}",
    "auth_duplicate_directive": E + f"mail {{ {A} {IMAP} smtp_auth none; smtp_auth NONE "
        "login; }",
    "auth_invalid": E + f"mail {{ {A} {IMAP} imap_auth apop; }}",
    "auth_invalid_pop3": E + f"mail {{ {A} {IMAP} pop3_auth login; }}",
    "buffer_bad": E + f"mail {{ {A} {IMAP} imap_client_buffer 1x; }}",
    "buffer_giga": E + f"mail {{ {A} {IMAP} proxy_buffer 1g; }}",
    "buffer_duplicate": E + f"mail {{ {A} {IMAP} smtp_client_buffer 1k; "
        "smtp_client_buffer 2k; }",
    "capabilities_ok": E + f'mail {{ {A} {IMAP} smtp_capabilities "SIZE 100" 8BITMIME; '
        "imap_capabilities A; imap_capabilities B; }",
    # --- realip
    "realip_low_bits": E + f"mail {{ {A} {IMAP} set_real_ip_from 10.0.0.1/8; }}",
    "realip_bad": E + f"mail {{ {A} {IMAP} set_real_ip_from 10.0.0.0/33; }}",
    "realip_ok": E + f"mail {{ {A} {IMAP} set_real_ip_from unix:; set_real_ip_from localhost;"
        " set_real_ip_from ::1; set_real_ip_from 010.0.0.0/8; }",
    # --- ssl
    "ssl_listen_no_cert": E + f"mail {{ {A} server {{\n listen 127.0.0.1:{{P}}\n ssl\n ;\n"
        " protocol imap; } }",
    "ssl_on_no_cert": E + f"mail {{ {A}\n  ssl on;\n  server {{ listen 127.0.0.1:{{P}}; "
        "protocol imap; } }",
    "starttls_no_cert": E + f"mail {{ {A}\n  starttls on;\n  {IMAP}\n}}",
    "starttls_no_key": E + f"mail {{ {A} ssl_certificate cert.pem; starttls only; {IMAP} }}",
    "starttls_server_location": E + f"mail {{ {A}\n starttls off;\n server {{\n listen "
        "127.0.0.1:{P};\n protocol imap;\n starttls only;\n }\n}",
    "tls_listen_location_wins": E + f"mail {{ {A}\n starttls on;\n server {{\n listen "
        "127.0.0.1:{P} ssl;\n starttls on;\n protocol imap;\n }\n}",
    "tls_last_listen_location": E + f"mail {{ {A}\n server {{\n starttls on;\n listen "
        "127.0.0.1:{P} ssl;\n listen 127.0.0.2:{P} ssl;\n protocol imap; }\n}",
    "ssl_then_starttls": E + f"mail {{ {A} ssl on; starttls on; {IMAP} }}",
    "starttls_then_ssl": E + f"mail {{ {A} starttls on; ssl on; {IMAP} }}",
    "ssl_duplicate": E + f"mail {{ {A} ssl on; ssl on; {IMAP} }}",
    "ssl_off_starttls_on": E + f"mail {{ {A} ssl off; starttls on; {IMAP} }}",
    "ssl_on_off": E + f"mail {{ {A} ssl on; server {{ listen 127.0.0.1:{{P}}; ssl off; "
        "protocol imap; } }",
    "starttls_bad": E + f"mail {{ {A} {IMAP} starttls maybe; }}",
    "starttls_duplicate": E + f"mail {{ {A} {IMAP} starttls on; starttls off; }}",
    "enum_case_insensitive": E + f"mail {{ {A} {IMAP} starttls ON; ssl_verify_client OPTIONAL; ssl_client_certificate ca.pem;"
        f" {TLS} }}",
    "key_missing_for_second_cert": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; "
        "protocol imap; ssl_certificate cert.pem; ssl_certificate b.crt; "
        "ssl_certificate_key key.pem; } }",
    "cert_file_missing": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; "
        "protocol imap; ssl_certificate nonexistent.pem; ssl_certificate_key key.pem; } }",
    "key_file_missing": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; "
        "protocol imap; ssl_certificate cert.pem; ssl_certificate_key /nonexistent.key; } }",
    "cert_not_pem": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; protocol imap; "
        "ssl_certificate garbage.pem; ssl_certificate_key key.pem; } }",
    "key_not_pem": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; protocol imap; "
        "ssl_certificate cert.pem; ssl_certificate_key cert.pem; } }",
    "key_mismatch": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; protocol imap; "
        "ssl_certificate cert.pem; ssl_certificate_key otherkey.pem; } }",
    "ciphers_before_certificates": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; "
        "protocol imap; ssl_certificate nonexistent.pem; ssl_certificate_key key.pem; "
        "ssl_ciphers FOO; } }",
    "client_ca_missing": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; "
        f"protocol imap; {TLS} ssl_verify_client on; ssl_client_certificate /nonexistent; }} }}",
    "client_ca_not_pem": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; "
        f"protocol imap; {TLS} ssl_verify_client on; ssl_client_certificate garbage.pem; }} }}",
    "crl_missing": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; protocol imap; "
        f"{TLS} ssl_verify_client on; ssl_client_certificate ca.pem; ssl_crl /nonexistent; }} }}",
    "verify_optional_no_ca": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; "
        f"protocol imap; {TLS} ssl_verify_client optional_no_ca; }} }}",
    "verify_without_tls_is_fine": E + f"mail {{ {A} {IMAP} ssl_verify_client on; }}",
    "dhparam_missing": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; "
        f"protocol imap; {TLS} ssl_dhparam /x; ssl_session_ticket_key /y; }} }}",
    "dhparam_not_pem": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; "
        f"protocol imap; {TLS} ssl_dhparam garbage.pem; }} }}",
    "ticket_key_missing": E + f"mail {{ {A}\n server {{\n listen 127.0.0.1:{{P}} ssl;\n "
        f"protocol imap; {TLS}\n ssl_session_ticket_key /nonexistent;\n }}\n\n}}\n",
    "ticket_key_size": E + f"mail {{ {A}\n server {{\n listen 127.0.0.1:{{P}} ssl;\n "
        f"protocol imap; {TLS}\n ssl_session_ticket_key tk40;\n }}\n\n}}\n",
    "protocols_bad": E + f"mail {{ {A} {IMAP} ssl_protocols TLSv1.4; }}",
    "protocols_dup": E + f"mail {{ {A} {IMAP} ssl_protocols TLSv1.2 tlsv1.2; }}",
    "session_cache_bad": E + f"mail {{ {A} {IMAP} ssl_session_cache foo; }}",
    "session_cache_builtin_bad": E + f"mail {{ {A} {IMAP} ssl_session_cache builtin:; }}",
    "session_cache_no_size": E + f"mail {{ {A} {IMAP} ssl_session_cache shared:SSL; }}",
    "session_cache_no_name": E + f"mail {{ {A} {IMAP} ssl_session_cache shared::1m; }}",
    "session_cache_small": E + f"mail {{ {A} {IMAP} ssl_session_cache shared:SSL:1k; }}",
    "session_cache_zone_conflict": E + f"mail {{ {A} {IMAP} ssl_session_cache shared:A:1m "
        "shared:A:2m; }",
    "session_timeout_bad": E + f"mail {{ {A} {IMAP} ssl_session_timeout 1ms; }}",
    "verify_depth_bad": E + f"mail {{ {A} {IMAP} ssl_verify_depth x; }}",
    "conf_command_args": E + f"mail {{ {A} {IMAP} ssl_conf_command a; }}",
    # ssl_conf_command: SSL_CONF_cmd()'s refusals, with OpenSSL's error queue
    **{f"conf_command_{i}": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}}; "
       f"protocol imap; starttls on; {TLS} ssl_conf_command {cmd}; }} }}"
       for i, cmd in enumerate([
           "Foo bar", "SessionTicket on", "Options Bogus", "Options a,,b",
           "Options \"-SessionTicket, PrioritizeChaCha\"", "options -sessionticket",
           "Protocol -TLSv1.2", "CipherString nomatch", "Ciphersuites bogus",
           "Ciphersuites TLS_AES_128_GCM_SHA256", "Curves X25519:P-256", "MinProtocol bogus",
           "MinProtocol TLSv1.3", "MaxProtocol tlsv1.2", "SignatureAlgorithms bogus",
           "ClientSignatureAlgorithms bogus", "Certificate missing.pem",
           "PrivateKey missing.pem", "PrivateKey otherkey.pem", "VerifyCAFile missing.pem",
           "VerifyCAFile garbage.pem", "VerifyCAFile ca.pem", "ChainCAFile missing.pem",
           "RequestCAFile missing.pem", "RequestCAFile ca.pem", "DHParameters missing.pem",
           "DHParameters garbage.pem", "ServerInfoFile missing", "RecordPadding 70000",
           "RecordPadding x", "NumTickets -1", "NumTickets 2"])},
    "password_file_missing": E + f"mail {{ {A} {IMAP} ssl_password_file /nonexistent; }}",
    "password_file_duplicate": E + f"mail {{ {A} {IMAP} ssl_password_file /dev/null; "
        "ssl_password_file /dev/null; }",
    "tls_complete": E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; protocol pop3; "
        f"{TLS} ssl_verify_client on; ssl_client_certificate ca.pem; "
        "ssl_session_cache builtin:1000 shared:MAIL:1m; ssl_protocols TLSv1.2; } }",
}

COMMAND_LINE = {
    "g_unknown": ("foo;", E),
    "g_unterminated": ("daemon off", E),
    "g_duplicate": ("daemon off;daemon on;", E),
    "g_then_file": ("daemon off;", E + "daemon on;"),
    "g_block": ("events {}", E),
    "g_bad_value": ("daemon maybe;", E),
    "g_stray_close": ("daemon off; }", E),
    "g_args": ("worker_processes 2 3;", E),
    "g_ok": ("daemon off; master_process off; worker_processes 2;", E),
}


@pytest.mark.parametrize("name", sorted(SAME))
def test_same_as_nginx(name, tmp_path, tls_files):
    nginx, ours = run_both(tmp_path, tls_files, SAME[name])
    assert ours == nginx


@pytest.mark.parametrize("name", sorted(COMMAND_LINE))
def test_command_line_same_as_nginx(name, tmp_path, tls_files):
    g, body = COMMAND_LINE[name]
    nginx, ours = run_both(tmp_path, tls_files, body, g)
    assert ours == nginx


def test_include_chain_same_as_nginx(tmp_path, tls_files):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "a.conf").write_text("worker_processes 2;\n")
    (tmp_path / "conf.d" / "b.conf").write_text("\n\nworker_processes 3;\n")
    nginx, ours = run_both(tmp_path, tls_files, E + "include conf.d/*.conf;")
    assert nginx[0] is not None and nginx[0].endswith("conf.d/b.conf:3")
    assert ours == nginx


def test_included_file_context_same_as_nginx(tmp_path, tls_files):
    (tmp_path / "inc.conf").write_text("env x;\n")
    nginx, ours = run_both(tmp_path, tls_files, E + "mail { include inc.conf; }")
    assert ours == nginx


def test_prefix_and_conf_dir_differ(tmp_path, tls_files):
    """Logs and pid hang off -p; includes and TLS files off the directory of -c."""
    prefix, conf_dir = tmp_path / "prefix", tmp_path / "conf"
    (conf_dir / "inc").mkdir(parents=True)
    prefix.mkdir()
    for name in ("cert.pem", "key.pem"):
        shutil.copy(tls_files / name, conf_dir / name)
    (conf_dir / "inc" / "x.conf").write_text("env X;\n")
    conf = conf_dir / "nginx.conf"
    conf.write_text(f"load_module {MODULE};\n{E}include inc/x.conf;\nerror_log rel.log;\n"
                    f"mail {{ {A} server {{ listen 127.0.0.1:{free_port()} ssl; protocol imap; "
                    f"{TLS} }} }}\n")
    proc = subprocess.run([NGINX, "-t", "-q", "-p", f"{prefix}/", "-c", str(conf),
                           "-e", str(prefix / "e.log")], check=False, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert (prefix / "rel.log").exists()
    (prefix / "rel.log").unlink()
    settings = load_config(str(conf), prefix=f"{prefix}/")
    assert (prefix / "rel.log").exists()
    assert settings.error_logs[0].path == f"{prefix}/rel.log"
    assert settings.servers[0].ssl.certificates == (f"{conf_dir}/cert.pem",)


def test_dump_same_as_nginx(tmp_path, tls_files):
    from postern.proxy.conf import dump_config

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.conf").write_text("env A;")  # no final newline
    (tmp_path / "x" / "b.conf").write_text("env B;\n")
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"load_module {MODULE};\n{E}include x/a.conf;\ninclude x/*.conf;\n")
    proc = subprocess.run([NGINX, "-T", "-q", "-p", f"{tmp_path}/", "-c", str(conf),
                           "-e", str(tmp_path / "err.log")], check=False, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert dump_config(str(conf), prefix=f"{tmp_path}/") == proc.stdout


# Postern follows current nginx where the spec says so; both outputs are pinned here so
# that a change on either side is noticed.
DIFFERENT = {
    # 1.22 only accepts on/off; 1.31.4 adds PROXY protocol v2 towards backends
    "proxy_protocol_v2": (
        E + f"mail {{ {A} {IMAP} proxy_protocol v2; }}",
        'invalid value "v2" in "proxy_protocol" directive, it must be "on" or "off"',
        None,
    ),
    # ipv4= arrived in 1.23.1
    "resolver_ipv4_off": (
        E + f"mail {{ {A} {IMAP} resolver 127.0.0.1 ipv4=off; }}",
        'host not found in resolver "ipv4=off"',
        None,
    ),
    # 1.22 wants ssl_client_certificate even when ssl_trusted_certificate is given
    "verify_client_trusted_only": (
        E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; protocol imap; {TLS} "
        "ssl_verify_client on; ssl_trusted_certificate ca.pem; } }",
        "no ssl_client_certificate for ssl_verify_client",
        None,
    ),
    "verify_client_no_ca": (
        E + f"mail {{ {A} server {{ listen 127.0.0.1:{{P}} ssl; protocol imap; {TLS} "
        "ssl_verify_client on; } }",
        "no ssl_client_certificate for ssl_verify_client",
        "no ssl_client_certificate or ssl_trusted_certificate for ssl_verify_client",
    ),
    # beyond nginx: an https:// auth_http URL switches the auth requests to TLS
    "auth_http_https": (
        E + "mail { auth_http https://127.0.0.1/; " + IMAP + " }",
        'invalid port in auth_http "https://127.0.0.1/"',
        None,
    ),
    "auth_http_https_port_zero": (
        E + "mail { auth_http https://127.0.0.1:0/; " + IMAP + " }",
        'invalid port in auth_http "https://127.0.0.1:0/"',
        'invalid port in auth_http "https://127.0.0.1:0/" in {D}/nginx.conf:3',
    ),
    "auth_http_https_missing_ca": (
        E + "mail { auth_http https://127.0.0.1/; "
        "auth_http_ssl_trusted_certificate missing.pem; " + IMAP + " }",
        'invalid port in auth_http "https://127.0.0.1/"',
        ('cannot load "auth_http_ssl_trusted_certificate" "{D}/missing.pem" '
        "(2: No such file or directory) in {D}/nginx.conf:3"),
    ),
    # TLS to the backends is Postern's own (README "Beyond nginx")
    "proxy_ssl_in_mail": (
        E + f"mail {{ {A} {IMAP} proxy_ssl on; }}",
        'unknown directive "proxy_ssl"',
        None,
    ),
    # a mail proxy only: the blocks of the other nginx subsystems are skipped unread (with
    # a warning, see tests/test_conf.py), so what nginx would open inside them is not opened
    "http_block": (
        E + "http { include /nonexistent/x.conf; }",
        'open() "/nonexistent/x.conf" failed',
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(DIFFERENT))
def test_known_differences(name, tmp_path, tls_files):
    body, nginx_expected, ours_expected = DIFFERENT[name]
    port = free_port()
    nginx, ours = run_both(tmp_path, tls_files, body, port=port)

    def fill(text):
        return None if text is None else text.replace("{D}", str(tmp_path)).replace(
            "{P}", str(port))

    assert nginx[0] is not None and nginx[0].startswith(fill(nginx_expected)) \
        if nginx_expected else nginx[0] is None
    assert ours[0] == fill(ours_expected)
