"""Differential checks of `log_format` and `access_log`: nginx's mail module has no access
log, so the oracle is its stream module (Debian's libnginx-mod-stream). The same directive
lines go into a `stream {}` block for `nginx -t` and into a `mail {}` block for
load_config(), at the same line numbers; the [emerg] texts must be identical.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from postern.proxy.conf import ConfigError, load_config
from postern.scenarios.kit.real.common import free_port

from tests.conf_support import NGINX, outcome, require_nginx

require_nginx()

STREAM_MODULE = os.environ.get("POSTERN_NGINX_STREAM_MODULE",
                               "/usr/lib/nginx/modules/ngx_stream_module.so")
if not os.path.exists(STREAM_MODULE):
    reason = f"nginx's stream module ({STREAM_MODULE}, libnginx-mod-stream) is not installed"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)

CASES = {
    "unknown_variable": "log_format a $nope;",
    "unknown_variable_in_if": "log_format a x;\naccess_log logs/a.log a if=$x;",
    "variable_names_ignore_case": "log_format a $REMOTE_ADDR;\naccess_log logs/a.log a;",
    "duplicate_format": "log_format a x;\nlog_format a y;",
    "unknown_escaping": "log_format a escape=xml x;",
    "empty_json_format": "log_format a escape=json;",
    "missing_bracket": 'log_format a "x${remote_addr";',
    "missing_bracket_mid_word": 'log_format a "x${remote_addr.y}";',
    "lone_dollar": 'log_format a "x$";',
    "dollar_then_no_name": 'log_format a "x$-y";',
    "empty_brackets": 'log_format a "x${}";',
    "format_without_string": "log_format a;",
    "unknown_format": "access_log logs/a.log b;",
    "format_name_ignores_case": "log_format a x;\naccess_log logs/a.log A;",
    "flush_without_buffer": "log_format a x;\naccess_log logs/a.log a flush=1s;",
    "zero_buffer": "log_format a x;\naccess_log logs/a.log a buffer=0;",
    "bad_buffer": "log_format a x;\naccess_log logs/a.log a buffer=1x;",
    "zero_flush": "log_format a x;\naccess_log logs/a.log a buffer=1k flush=0;",
    "size_as_flush": "log_format a x;\naccess_log logs/a.log a buffer=1k flush=1k;",
    "unknown_parameter": "log_format a x;\naccess_log logs/a.log a foo;",
    "off_with_more": "log_format a x;\naccess_log off a;",
    "conflicting_buffers": "log_format a x;\naccess_log logs/a.log a buffer=1k;\n"
                           "access_log logs/a.log a buffer=2k;",
    "same_buffers": "log_format a x;\naccess_log logs/a.log a buffer=1k;\n"
                    "access_log logs/a.log a buffer=1k;",
    "buffered_then_not": "log_format a x;\naccess_log logs/a.log a buffer=1k;\n"
                         "access_log logs/a.log a;",
    "unopenable_file": "log_format a x;\naccess_log /nonexistent/a.log a;",
    "access_log_no_args": "access_log;",
    "gzip_default_buffer": "log_format a x;\naccess_log logs/a.log a gzip;\n"
                           "access_log logs/a.log a buffer=64k gzip=1;",
    "gzip_other_level": "log_format a x;\naccess_log logs/a.log a gzip;\n"
                        "access_log logs/a.log a gzip=2;",
    "gzip_bad_level": "log_format a x;\naccess_log logs/a.log a gzip=10;",
    "gzip_word_level": "log_format a x;\naccess_log logs/a.log a gzip=fast;",
    "gzip_glued": "log_format a x;\naccess_log logs/a.log a gzipx;",
    "syslog_buffered": "log_format a x;\naccess_log syslog:server=127.0.0.1 a buffer=1k;",
    "syslog_bad_parameter": "log_format a x;\naccess_log syslog:server=127.0.0.1,foo=1 a;",
    "syslog_without_server": "log_format a x;\naccess_log syslog:tag=t a;",
    "syslog_bad_facility": "log_format a x;\naccess_log syslog:server=127.0.0.1,facility=x a;",
    "syslog_fine": "log_format a x;\naccess_log syslog:server=127.0.0.1,severity=crit a;",
    "every_variable": "log_format a '$remote_addr $remote_port $server_addr $server_port "
                      "$bytes_received $bytes_sent $ssl_protocol $ssl_cipher "
                      "$ssl_client_verify $upstream_addr $upstream_bytes_sent "
                      "$upstream_bytes_received $session_time $connection $pid $msec "
                      "$time_local $time_iso8601';\naccess_log logs/a.log a;",
}


def _nginx(tmp_path, lines: str, port: int) -> str | None:
    conf = tmp_path / "stream.conf"
    conf.write_text(f"load_module {STREAM_MODULE};\nevents {{}}\nstream {{\n{lines}\n"
                    f"  server {{ listen 127.0.0.1:{port}; return x; }}\n}}\n")
    proc = subprocess.run([NGINX, "-t", "-q", "-p", f"{tmp_path}/", "-c", str(conf),
                           "-e", str(tmp_path / "nginx-error.log")],
                          check=False, capture_output=True, text=True, timeout=30)
    text = outcome(proc.stderr.splitlines())[0]
    return None if text is None else text.replace(str(conf), "CONF")


def _postern(tmp_path, lines: str, port: int) -> str | None:
    conf = tmp_path / "mail.conf"
    conf.write_text(f"# line 1\nevents {{}}\nmail {{\n{lines}\n  server {{ listen "
                    f"127.0.0.1:{port}; protocol imap; auth_http 127.0.0.1:9/a; }}\n}}\n")
    try:
        load_config(str(conf), prefix=f"{tmp_path}/")
    except ConfigError as err:
        return str(err).replace(str(conf), "CONF")
    return None


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_error_as_the_stream_module(tmp_path, name):
    (tmp_path / "logs").mkdir()
    port = free_port()
    nginx = _nginx(tmp_path, CASES[name], port)
    assert _postern(tmp_path, CASES[name], port) == nginx


def test_the_check_can_fail(tmp_path):
    """The two sides really differ where Postern departs on purpose: a format is optional
    (the default "mail"), where the stream module wants one."""
    (tmp_path / "logs").mkdir()
    port = free_port()
    lines = "access_log logs/a.log;"
    assert _nginx(tmp_path, lines, port) == "log format is not specified in CONF:4"
    assert _postern(tmp_path, lines, port) is None
