"""proxy.access_log and proxy.conf.accesslog: format compilation, nginx's escapes, every
variable, the buffered file, and the directives' errors (texts as nginx 1.22.1's stream
module gives them; tests/test_access_log_vs_nginx.py compares them with the real one)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from types import SimpleNamespace

import pytest
from postern.proxy import access_log as al
from postern.proxy.conf import ConfigError, load_config
from postern.proxy.conf.accesslog import compile_format
from postern.proxy.conf.settings import LogFormat, LogVar
from postern.proxy.log import ErrorLog

# -- compiling -------------------------------------------------------------------------------


def test_words_are_joined_and_variables_found():
    fmt = compile_format("f", ["a $remote_addr", "-${LOGIN}x", "$end$pid", "$"[:0]])
    assert fmt == LogFormat("f", "default", ("a ", LogVar("remote_addr"), "-", LogVar("login"),
                                             "x", LogVar("end"), LogVar("pid")))


def test_escape_parameter():
    assert compile_format("f", ["escape=json", "$end"]).escape == "json"
    assert compile_format("f", ["escape=none"]).parts == ()
    with pytest.raises(ConfigError, match='unknown log format escaping "xml"'):
        compile_format("f", ["escape=xml", "x"])


@pytest.mark.parametrize(("word", "message"), [
    ("x$", 'invalid parameter "$"'),
    ("x$-y", 'invalid parameter "$-y"'),
    ("x${}", 'invalid parameter "${}"'),
    ("x${", 'invalid parameter "${"'),
    ("x${remote_addr", 'the closing bracket in "remote_addr" variable is missing'),
    ("x${remote_addr.y}", 'the closing bracket in "remote_addr" variable is missing'),
])
def test_format_errors(word, message):
    with pytest.raises(ConfigError) as info:
        compile_format("f", [word])
    assert str(info.value) == message


def test_used_variables_collected_once_lowercased():
    used: list[str] = []
    compile_format("f", ["$A $a ${b}", "$c"], used=used)
    assert used == ["a", "b", "c"]


# -- escaping --------------------------------------------------------------------------------

def test_default_escape_as_ngx_stream_log_escape():
    assert al.escape_default(b"plain text ~!") == b"plain text ~!"
    assert al.escape_default(b'a"b\\c\x00\x1f\x7f\x80\xff') == \
        b"a\\x22b\\x5Cc\\x00\\x1F\\x7F\\x80\\xFF"
    assert al.escape_default("é".encode()) == b"\\xC3\\xA9"


def test_json_escape_as_ngx_escape_json():
    assert al.escape_json(b'a"b\\c') == b'a\\"b\\\\c'
    assert al.escape_json(b"\n\r\t\b\f") == b"\\n\\r\\t\\b\\f"
    assert al.escape_json(b"\x00\x1f\x7f") == b"\\u0000\\u001F\x7f"
    assert al.escape_json("é".encode()) == "é".encode()  # not escaped, as nginx


# -- variables -------------------------------------------------------------------------------

class _Tls:
    established = True
    protocol_version = "TLSv1.3"
    cipher = "TLS_AES_128_GCM_SHA256"

    def __init__(self, cert=None, rc=0):
        self.cert, self.rc = cert, rc

    def peer_certificate(self):
        return self.cert

    def verify_result(self):
        return self.rc


class _Session(al.AccessLogged):
    """What the variables read of a session."""

    def __init__(self, **kw):
        self.rt = SimpleNamespace(loop=SimpleNamespace(time=lambda: 12.5), access_log=None)
        self.conf = SimpleNamespace(protocol="pop3", server_name="mx.test")
        self.client_ip, self.client_addr = "192.0.2.1", ("192.0.2.1", 40000)
        self.local_addr = ("127.0.0.1", 110)
        self.machine = SimpleNamespace(creds=SimpleNamespace(login=b"bob", password=b"pw"))
        self._exchange = SimpleNamespace(response=SimpleNamespace(
            error=None, wait_status=False))
        self.upstream_name = "127.0.0.1:1110"
        self.tls = None
        self.id = 7
        self.session_id = "42-7"
        self.started = 10.0
        self.transport = object()
        for key, value in kw.items():
            setattr(self, key, value)


def _value(name: str, session=None, now: float = 1700000000.25):
    return al.VARIABLES[name](session or _Session(), now)


def test_every_variable_of_a_relayed_session():
    s = _Session(bytes_received=30, bytes_sent=70, upstream_bytes_received=90,
                 upstream_login_sent=20, relay_mark=25, end="relayed")
    values = {name: _value(name, s) for name in al.VARIABLES}
    assert values == {
        "remote_addr": b"192.0.2.1", "remote_port": b"40000",
        "server_addr": b"127.0.0.1", "server_port": b"110",
        "protocol": b"pop3", "server_name": b"mx.test", "login": b"bob",
        "auth_status": b"OK", "upstream_addr": b"127.0.0.1:1110",
        "ssl_protocol": None, "ssl_cipher": None, "ssl_client_verify": None,
        "bytes_received": b"30", "bytes_sent": b"70", "upstream_bytes_received": b"90",
        "upstream_bytes_sent": b"25",  # 20 of login, 5 relayed
        "session_time": b"2.500", "session_id": b"42-7", "end": b"relayed",
        "connection": b"7", "pid": b"%d" % os.getpid(), "msec": b"1700000000.250",
        "time_local": values["time_local"], "time_iso8601": values["time_iso8601"],
    }


def test_times_in_nginx_forms_whatever_the_zone(monkeypatch):
    for zone, local, iso in (("UTC0", b"14/Nov/2023:22:13:20 +0000", b"2023-11-14T22:13:20+00:00"),
                             ("XXX-05:30", b"15/Nov/2023:03:43:20 +0530",
                              b"2023-11-15T03:43:20+05:30"),
                             ("XXX+03", b"14/Nov/2023:19:13:20 -0300",
                              b"2023-11-14T19:13:20-03:00")):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        assert (_value("time_local", now=1700000000.0),
                _value("time_iso8601", now=1700000000.0)) == (local, iso)
    monkeypatch.delenv("TZ")
    time.tzset()


def test_values_of_a_session_before_the_dialogue():
    s = _Session(machine=None, _exchange=None, upstream_name=None, client_addr=None,
                 local_addr=None, client_ip="unix:")
    assert [_value(n, s) for n in ("login", "auth_status", "upstream_addr", "remote_addr",
                                   "remote_port", "server_addr", "upstream_bytes_sent")] == \
        [None, None, None, b"unix:", None, None, b"0"]


def test_auth_status_texts():
    def status(error, wait=False):
        s = _Session(_exchange=SimpleNamespace(response=SimpleNamespace(
            error=error, wait_status=wait)))
        return _value("auth_status", s)
    assert status(None) == b"OK"
    assert status(b"Invalid login or password") == b"Invalid login or password"
    assert status(None, wait=True) == b"WAIT"


def test_tls_variables():
    s = _Session(tls=_Tls())
    assert (_value("ssl_protocol", s), _value("ssl_cipher", s),
            _value("ssl_client_verify", s)) == (b"TLSv1.3", b"TLS_AES_128_GCM_SHA256", b"NONE")
    assert _value("ssl_client_verify", _Session(tls=_Tls(cert=object()))) == b"SUCCESS"
    assert _value("ssl_client_verify", _Session(tls=_Tls(cert=object(), rc=10))) == \
        b"FAILED:certificate has expired"
    not_yet = _Tls()
    not_yet.established = False
    assert _value("ssl_protocol", _Session(tls=not_yet)) is None


def test_the_password_is_no_variable():
    assert not {"password", "passwd", "pass", "salt", "sasl"} & set(al.VARIABLES)


# -- rendering -------------------------------------------------------------------------------

def _render(words: list[str], session=None) -> bytes:
    return al.CompiledFormat(compile_format("f", words)).render(session or _Session(), 0.0)


def test_missing_values_per_escape():
    s = _Session(machine=None)
    assert _render(['"$login" $end'], s) == b'"-" -'
    assert _render(["escape=json", '"$login"'], s) == b'""'
    assert _render(["escape=none", '"$login"'], s) == b'""'


def test_values_escaped_literals_not():
    s = _Session(machine=SimpleNamespace(creds=SimpleNamespace(login=b'a"\xe9')))
    assert _render(['"é" $login'], s) == '"é" '.encode() + b"a\\x22\\xE9"
    assert _render(["escape=json", "$login"], s) == b'a\\"\xe9'
    assert _render(["escape=none", "$login"], s) == b'a"\xe9'


def test_default_format():
    s = _Session(bytes_received=3, bytes_sent=4, end="auth failed")
    line = al.CompiledFormat(compile_format("mail", [al.DEFAULT_FORMAT])).render(s, 0.0)
    stamp = _value("time_local", s, 0.0)
    assert line == (b'192.0.2.1:40000 [' + stamp + b'] pop3 127.0.0.1:110 "bob" "OK" '
                    b'127.0.0.1:1110 "auth failed" 3 4 2.500 - 42-7')


def test_end_reason_defaults_and_first_wins():
    s = _Session()
    s._ending(al.TIMEOUT)
    s._ending(al.INTERNAL_ERROR)
    assert s.end == "timeout"
    for relaying, quiet, end in ((True, False, "relayed"), (False, True, "client closed"),
                                 (False, False, "closed")):
        s = _Session()
        s._log_access(relaying, quiet)
        assert s.end == end


# -- files -----------------------------------------------------------------------------------

class _Loop:
    """call_later recorded, run by hand."""

    def __init__(self):
        self.timers = []

    def call_later(self, delay, callback):
        handle = asyncio.TimerHandle(0, callback, (), asyncio.new_event_loop())
        self.timers.append((delay, handle))
        return handle


def test_unbuffered_file_writes_each_line(tmp_path):
    f = al.LogFile(str(tmp_path / "a.log"), 0, 0.0, _Loop(), ErrorLog([]))
    f.write(b"one\n")
    assert (tmp_path / "a.log").read_bytes() == b"one\n"
    f.close()


def test_buffer_fills_then_writes_and_flush_timer(tmp_path):
    path, loop = tmp_path / "a.log", _Loop()
    f = al.LogFile(str(path), 10, 2.0, loop, ErrorLog([]))
    f.write(b"12345\n")
    assert path.read_bytes() == b"" and [d for d, _ in loop.timers] == [2.0]
    f.write(b"123\n")  # fits: 10 bytes buffered, no new timer
    assert path.read_bytes() == b"" and len(loop.timers) == 1
    f.write(b"x\n")  # does not fit: the buffer goes out first
    assert path.read_bytes() == b"12345\n123\n"
    assert loop.timers[0][1].cancelled() and len(loop.timers) == 2
    loop.timers[1][1]._run()  # the flush timer
    assert path.read_bytes() == b"12345\n123\nx\n"
    f.write(b"longer than the buffer\n")  # written at once
    assert path.read_bytes().endswith(b"longer than the buffer\n")
    f.close()


def test_reopen_flushes_and_follows_a_rename(tmp_path):
    path = tmp_path / "a.log"
    f = al.LogFile(str(path), 100, 0.0, _Loop(), ErrorLog([]))
    f.write(b"old\n")
    os.rename(path, tmp_path / "a.log.1")
    f.reopen()
    f.write(b"new\n")
    f.close()
    assert (tmp_path / "a.log.1").read_bytes() == b"old\n"
    assert path.read_bytes() == b"new\n"


def test_gzip_writes_members_zcat_reads(tmp_path):
    """gzip[=level]: a 64k buffer by default, each write one gzip member."""
    import gzip
    [srv] = _load(tmp_path, "", "access_log logs/a.log mail gzip=9 flush=1m;").servers
    spec = srv.access_logs[0]
    assert (spec.buffer, spec.flush, spec.gzip) == (65536, 60.0, 9)
    f = al.LogFile(spec.path, spec.buffer, spec.flush, _Loop(), ErrorLog([]), spec.gzip)
    f.write(b"one\n")
    f.flush()
    f.write(b"two\n" * 1000)
    f.close()
    raw = (tmp_path / "logs/a.log").read_bytes()
    assert raw.startswith(b"\x1f\x8b") and raw.count(b"\x1f\x8b\x08") >= 2
    assert gzip.decompress(raw) == b"one\n" + b"two\n" * 1000


def test_write_failure_is_one_alert(tmp_path):
    errors = tmp_path / "error.log"
    from postern.proxy.conf.settings import LogTarget
    log = ErrorLog([LogTarget("file", "alert", str(errors))])
    f = al.LogFile(str(tmp_path / "a.log"), 0, 0.0, _Loop(), log)
    os.close(f.fd)  # the next write fails with EBADF
    f.write(b"x\n")
    f.write(b"y\n")
    assert errors.read_text().count(f'write() to "{tmp_path}/a.log" failed (9: ') == 1
    f.fd = -1


# -- configuration ---------------------------------------------------------------------------

def _conf(tmp_path, mail: str, server: str = "") -> str:
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nmail {\n  auth_http 127.0.0.1:9000/auth;\n" + mail +
                    "\n  server {\n    listen 127.0.0.1:1143; protocol imap;\n" + server +
                    "\n  }\n}\n")
    return str(conf)


def _load(tmp_path, mail: str, server: str = ""):
    (tmp_path / "logs").mkdir(exist_ok=True)
    return load_config(_conf(tmp_path, mail, server), prefix=f"{tmp_path}/")


def _error(tmp_path, mail: str, server: str = "") -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, mail, server)
    return str(info.value).replace(f"{tmp_path}/", "")


def test_off_by_default(tmp_path):
    assert _load(tmp_path, "").servers[0].access_logs == ()


def test_inherited_overridden_and_off(tmp_path):
    conf = _conf(tmp_path, "log_format f $end;\naccess_log logs/m.log f;",
                 "access_log logs/s.log mail buffer=8k flush=2s;\naccess_log logs/t.log;")
    (tmp_path / "logs").mkdir()
    [srv] = load_config(conf, prefix=f"{tmp_path}/").servers
    assert [(a.path, a.format.name, a.buffer, a.flush) for a in srv.access_logs] == [
        (f"{tmp_path}/logs/s.log", "mail", 8192, 2.0), (f"{tmp_path}/logs/t.log", "mail", 0, 0.0)]
    [srv] = _load(tmp_path, "log_format f $end;\naccess_log logs/m.log F;").servers
    assert [(a.path, a.format.name) for a in srv.access_logs] == [
        (f"{tmp_path}/logs/m.log", "f")]  # names match regardless of case, as nginx
    [srv] = _load(tmp_path, "access_log logs/m.log;", "access_log off;").servers
    assert srv.access_logs == ()
    [srv] = _load(tmp_path, "", "access_log off; access_log logs/a.log;").servers
    assert srv.access_logs == ()  # off wins at its level


def test_syslog_destination(tmp_path):
    """access_log syslog:...: one datagram per line, the severity= parameter (info by
    default) as its severity, the facility and tag as given; USR1 starts a new socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        port = rx.getsockname()[1]
        [srv] = _load(tmp_path, "log_format f '$login $end';",
                      f"access_log syslog:server=127.0.0.1:{port} f;\n"
                      f"access_log syslog:server=127.0.0.1:{port},facility=mail,severity=crit,"
                      "tag=pst,nohostname f;").servers
        logs = al.AccessLogs([srv], _Loop(), ErrorLog([]))
        server_log = logs.for_server(srv)
        server_log.write(_Session(end="relayed"))
        first, second = rx.recv(4096), rx.recv(4096)
        logs.reopen()
        server_log.write(_Session(end="timeout"))
        third = rx.recv(4096)
        logs.close()
    host = socket.gethostname().lower().encode()
    assert re.fullmatch(rb"<190>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d " + re.escape(host) +
                        rb" nginx: bob relayed", first), first
    assert re.fullmatch(rb"<18>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d pst: bob relayed",
                        second), second
    assert third.endswith(b" nginx: bob timeout"), third


def test_if_condition(tmp_path):
    [srv] = _load(tmp_path, "", "access_log logs/a.log mail if=$login;").servers
    cond = al.CompiledFormat(srv.access_logs[0].condition)
    assert cond.render(_Session(), 0.0) == b"bob"
    assert cond.render(_Session(machine=None), 0.0) == b""


@pytest.mark.parametrize(("mail", "server", "message"), [
    ("log_format a $nope;", "", 'unknown "nope" variable'),
    ("log_format a x;\nlog_format a y;", "", 'duplicate "log_format" name "a" in nginx.conf:5'),
    ("log_format mail x;", "", 'duplicate "log_format" name "mail" in nginx.conf:4'),
    ("log_format a escape=xml x;", "", 'unknown log format escaping "xml" in nginx.conf:4'),
    ("log_format a;", "", ('invalid number of arguments in "log_format" directive in '
     "nginx.conf:4")),
    ("", "log_format a x;", '"log_format" directive is not allowed here in nginx.conf:7'),
    ("access_log logs/a.log b;", "", 'unknown log format "b" in nginx.conf:4'),
    ("access_log logs/a.log mail flush=1s;", "",
     'no buffer is defined for access_log "logs/a.log" in nginx.conf:4'),
    ("access_log logs/a.log mail buffer=0;", "", 'invalid buffer size "0" in nginx.conf:4'),
    ("access_log logs/a.log mail buffer=1k flush=0;", "",
     'invalid flush time "0" in nginx.conf:4'),
    ("access_log logs/a.log mail foo;", "", 'invalid parameter "foo" in nginx.conf:4'),
    ("access_log off mail;", "", 'invalid parameter "mail" in nginx.conf:4'),
    ("access_log logs/a.log mail buffer=1k;\naccess_log logs/a.log mail buffer=2k;", "",
     'access_log "logs/a.log" already defined with conflicting parameters in nginx.conf:5'),
    ("access_log logs/a.log mail if=$x;", "", 'unknown "x" variable'),
    ("access_log /nonexistent/a.log;", "",
     'open() "/nonexistent/a.log" failed (2: No such file or directory)'),
    # what Postern does not do: a clear [emerg]
    ("access_log logs/a.log mail gzip=0;", "", 'invalid compression level "0" in nginx.conf:4'),
    ("access_log logs/a.log mail gzip=x;", "", 'invalid compression level "x" in nginx.conf:4'),
    ("access_log logs/a.log mail gzip;\naccess_log logs/a.log mail buffer=64k;", "",
     'access_log "logs/a.log" already defined with conflicting parameters in nginx.conf:5'),
    ("access_log syslog:server=127.0.0.1 mail buffer=1k;", "",
     "logs to syslog cannot be buffered in nginx.conf:4"),
    ("access_log syslog:server=127.0.0.1,foo=1;", "",
     'unknown syslog parameter "foo=1" in nginx.conf:4'),
    ("access_log syslog:tag=x;", "", "no syslog server specified in nginx.conf:4"),
    ("access_log logs/$login.log;", "",
     'variables in the "access_log" path are not supported in nginx.conf:4'),
])
def test_errors(tmp_path, mail, server, message):
    assert _error(tmp_path, mail, server) == message


def test_unknown_variable_after_other_block_errors(tmp_path):
    """nginx checks variables after the block is merged: a server without auth_http wins."""
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nmail {\n log_format a $nope;\n"
                    " server { listen 127.0.0.1:1143; protocol imap; }\n}\n")
    with pytest.raises(ConfigError, match='no "auth_http" is defined for server'):
        load_config(str(conf), prefix=f"{tmp_path}/")
