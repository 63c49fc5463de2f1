"""The limit directives: zones in mail{}, limits in mail{} or server{}, their errors."""

from __future__ import annotations

import math

import pytest
from postern.proxy.conf import ConfigError, load_config


def load(tmp_path, mail: str, server: str = ""):
    path = tmp_path / "nginx.conf"
    path.write_text(f"""events {{}}
mail {{
    auth_http 127.0.0.1:9000/auth;
    {mail}
    server {{ listen 127.0.0.1:1143; protocol imap; {server} }}
    server {{ listen 127.0.0.1:1144; protocol imap; }}
}}
""")
    return load_config(str(path), prefix=f"{tmp_path}/")


def error(tmp_path, mail: str, server: str = "") -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, mail, server)
    return str(info.value).replace(str(tmp_path), "T")


def test_off_by_default(tmp_path):
    settings = load(tmp_path, "")
    srv = settings.servers[0]
    assert settings.limit_zones == ()
    assert (srv.limit_conn, srv.limit_req, srv.limit_auth) == ((), (), ())
    assert srv.limit_conn_log_level == srv.limit_req_log_level == "error"


def test_zones_and_limits(tmp_path):
    settings = load(tmp_path, """
        limit_conn addr 3;
        limit_conn_zone $binary_remote_addr zone=addr:1m;
        limit_req_zone $remote_addr zone=rps:64k rate=30r/m;
        limit_auth_zone $login zone=authfail:1m failures=5 window=60s delay=2s block=5m;
        limit_auth zone=authfail;
        limit_req_log_level warn;""",
        "limit_req zone=rps burst=5 nodelay; limit_conn addr 1; limit_conn_log_level info;")
    addr, rps, authfail = settings.limit_zones
    assert (addr.name, addr.kind, addr.key, addr.size) == ("addr", "conn",
                                                           "$binary_remote_addr", 1 << 20)
    assert (rps.kind, rps.key, rps.size, rps.rate) == ("req", "$remote_addr", 65536, 0.5)
    assert (authfail.failures, authfail.window, authfail.delay, authfail.block) == \
        (5, 60.0, 2.0, 300.0)
    first, second = settings.servers
    # a server's own limits replace the mail-level ones, as nginx merges them
    assert [(r.zone.name, r.number) for r in first.limit_conn] == [("addr", 1)]
    assert [(r.zone.name, r.burst, r.delay) for r in first.limit_req] == [("rps", 5, math.inf)]
    assert [(r.zone.name, r.number) for r in second.limit_conn] == [("addr", 3)]
    assert second.limit_req == ()
    assert [r.zone.name for r in first.limit_auth] == ["authfail"]
    assert (first.limit_conn_log_level, first.limit_req_log_level) == ("info", "warn")
    assert second.limit_conn_log_level == "error"


def test_limit_req_delay_and_defaults(tmp_path):
    settings = load(tmp_path, "limit_req_zone $login zone=z:32k;", "limit_req zone=z delay=2 "
                    "burst=4;")
    rule = settings.servers[0].limit_req[0]
    assert (rule.zone.rate, rule.burst, rule.delay) == (1.0, 4, 2.0)


@pytest.mark.parametrize("mail, server, message", [
    ("limit_conn_zone $host zone=a:1m;", "",
     ('unsupported key "$host" in "limit_conn_zone", use one of $binary_remote_addr, '
     "$remote_addr, $login in T/nginx.conf:4")),
    ("limit_conn_zone $login zone=a;", "", 'invalid zone size "zone=a" in T/nginx.conf:4'),
    ("limit_conn_zone $login zone=a:4k;", "", 'zone "a" is too small in T/nginx.conf:4'),
    ("limit_conn_zone $login;", "",
     'invalid number of arguments in "limit_conn_zone" directive in T/nginx.conf:4'),
    ("limit_conn_zone $login rate=1r/s;", "", 'invalid parameter "rate=1r/s" in T/nginx.conf:4'),
    ("limit_req_zone $login zone=a:1m rate=1r/h;", "", 'invalid rate "rate=1r/h" in T/nginx.conf:4'),
    ("limit_req_zone $login rate=1r/s;", "",
     '"limit_req_zone" must have "zone" parameter in T/nginx.conf:4'),
    ("limit_auth_zone $login zone=a:1m failures=0;", "",
     'invalid parameter "failures=0" in T/nginx.conf:4'),
    ("limit_auth_zone $login zone=a:1m block=x;", "",
     'invalid parameter "block=x" in T/nginx.conf:4'),
    ("limit_conn_zone $login zone=a:1m; limit_req_zone $login zone=a:1m;", "",
     'limit_req_zone "a" is already bound to key "$login" in T/nginx.conf:4'),
    ("ssl_session_cache shared:z:1m; limit_conn_zone $login zone=z:1m;", "",
     'the shared memory zone "z" is already declared for a different use in T/nginx.conf:4'),
    ("", "limit_conn nowhere 1;", 'zero size shared memory zone "nowhere"'),
    ("limit_req_zone $login zone=r:1m;", "limit_conn r 1;",
     ('"r" is a req zone, not a conn zone ("limit_conn" needs a "limit_conn_zone") '
     "in T/nginx.conf:5")),
    ("limit_conn_zone $login zone=a:1m;", "limit_conn a 0;",
     'invalid number of connections "0" in T/nginx.conf:5'),
    ("limit_conn_zone $login zone=a:1m;", "limit_conn a 1; limit_conn a 2;",
     '"limit_conn" directive is duplicate in T/nginx.conf:5'),
    ("limit_req_zone $login zone=r:1m;", "limit_req zone=r burst=x;",
     'invalid burst value "burst=x" in T/nginx.conf:5'),
    ("limit_req_zone $login zone=r:1m;", "limit_req burst=1;",
     '"limit_req" must have "zone" parameter in T/nginx.conf:5'),
    ("limit_auth_zone $login zone=f:1m;", "limit_auth f;",
     'invalid parameter "f" in T/nginx.conf:5'),
    ("", "limit_conn_zone $login zone=a:1m;",
     '"limit_conn_zone" directive is not allowed here in T/nginx.conf:5'),
    ("limit_conn_log_level debug;", "", 'invalid value "debug" in T/nginx.conf:4'),
])
def test_errors(tmp_path, mail, server, message):
    assert error(tmp_path, mail, server) == message
