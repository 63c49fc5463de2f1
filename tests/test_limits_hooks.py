"""proxy.limits' driver hooks on a stand-in session, with a fake clock: the verdicts, the
log lines and the counts a session takes and gives back."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import SimpleNamespace

import pytest
from postern.proxy import limits
from postern.proxy.auth_exchange import Fail
from postern.proxy.conf.settings import LimitRule, LimitZone, ServerSettings
from postern.proxy.imap import IMAP
from postern.proxy.limits.store import HEADER_SIZE, SLOT

from tests.dialogue_support import server_settings

LIMITED = IMAP.limited


@dataclass
class FakeSession:
    conf: ServerSettings
    client_ip: str = "192.0.2.1"
    login: bytes = b""
    proto = IMAP
    limit_hold: limits.Hold | None = None
    lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def machine(self):
        return SimpleNamespace(creds=SimpleNamespace(login=self.login),
                               auth_failure=lambda resp: b"a1 NO " + resp.error + b"\r\n")

    def log(self, level: str, message: str) -> None:
        self.lines.append((level, message))


@pytest.fixture
def now(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(limits, "clock", lambda: clock[0])
    return clock


def conf(**limit_fields) -> ServerSettings:
    """Server settings with these limits (zones are named per test: a process keeps them)."""
    return replace(server_settings("imap", 1143), **limit_fields)


def zone(name: str, kind: str, key: str = "$binary_remote_addr", size: int = 65536,
         **kw) -> LimitZone:
    return LimitZone(f"hooks-{name}", kind, key, size, **kw)


def test_no_limits_no_work():
    s = FakeSession(server_settings("imap", 1143))
    assert limits.on_accept(s) is None and limits.on_login(s) is None
    limits.on_auth_result(s, Fail(b"x", b"x", 0))
    limits.on_close(s)
    assert s.lines == [] and s.limit_hold is None


def test_limit_conn_refuses_and_gives_back():
    c = conf(limit_conn=(LimitRule(zone("conn", "conn"), number=2),))
    a, b, third = FakeSession(c), FakeSession(c), FakeSession(c)
    assert limits.on_accept(a) is None and limits.on_accept(b) is None
    assert limits.on_accept(third) == limits.Refuse(LIMITED)
    assert third.lines == [("error", 'limiting connections by zone "hooks-conn"')]
    assert limits.on_accept(FakeSession(c, client_ip="192.0.2.2")) is None
    limits.on_close(a)
    limits.on_close(a)  # twice: counted once
    assert limits.on_accept(FakeSession(c)) is None
    assert limits.on_accept(FakeSession(c)) == limits.Refuse(LIMITED)


def test_limit_conn_refusal_gives_back_what_earlier_rules_took():
    wide = LimitRule(zone("wide", "conn", "$remote_addr"), number=10)
    narrow = LimitRule(zone("narrow", "conn"), number=1)
    c = conf(limit_conn=(wide, narrow))
    assert limits.on_accept(FakeSession(c)) is None
    assert isinstance(limits.on_accept(FakeSession(c)), limits.Refuse)
    assert limits.zone(wide.zone).count(b"192.0.2.1") == 1


def test_unix_clients_have_no_binary_address():
    c = conf(limit_conn=(LimitRule(zone("unix", "conn"), number=1),))
    assert limits.on_accept(FakeSession(c, client_ip="unix:")) is None
    assert limits.on_accept(FakeSession(c, client_ip="unix:")) is None


def test_limit_conn_memory_full_is_an_alert_and_a_refusal():
    tiny = zone("tiny", "conn", size=HEADER_SIZE + 4 * SLOT.size)  # 3 entries
    c = conf(limit_conn=(LimitRule(tiny, number=5),))
    for n in range(3):
        assert limits.on_accept(FakeSession(c, client_ip=f"192.0.2.{n}")) is None
    s = FakeSession(c, client_ip="192.0.2.9")
    assert limits.on_accept(s) == limits.Refuse(LIMITED)
    assert s.lines == [("alert", 'could not allocate node in limit_conn zone "hooks-tiny"')]


def test_limit_req_delay_then_refusal(now):
    rule = LimitRule(zone("req", "req", rate=2.0), burst=2)
    c = conf(limit_req=(rule,), limit_req_log_level="warn")
    verdicts = [limits.on_accept(FakeSession(c)) for _ in range(3)]
    assert verdicts == [None, limits.Delay(0.5), limits.Delay(1.0)]
    s = FakeSession(c)
    assert limits.on_accept(s) == limits.Refuse(LIMITED)
    assert s.lines == [("warn", 'limiting requests, excess: 3.000 by zone "hooks-req"')]
    now[0] += 1.0  # two requests leaked away
    s = FakeSession(c)
    assert limits.on_accept(s) == limits.Delay(0.5)
    assert s.lines == [("notice", 'delaying request, excess: 1.000, by zone "hooks-req"')]


def test_login_keys_wait_for_the_login(now):
    rule = LimitRule(zone("login-req", "req", "$login", rate=1 / 60), burst=0)
    c = conf(limit_req=(rule,))
    s = FakeSession(c)
    assert limits.on_accept(s) is None  # no login yet
    s.login = b"alice"
    assert limits.on_login(s) is None
    assert limits.on_login(s) == limits.Refuse(LIMITED)  # a second attempt within the minute
    assert limits.on_login(FakeSession(c, login=b"bob")) is None


def test_limit_conn_by_login_is_given_back_when_the_login_fails():
    rule = LimitRule(zone("login-conn", "conn", "$login"), number=1)
    c = conf(limit_conn=(rule,))
    first = FakeSession(c, login=b"alice")
    assert limits.on_login(first) is None
    assert limits.on_login(FakeSession(c, login=b"alice")) == limits.Refuse(LIMITED)
    limits.on_auth_result(first, Fail(b"a1 NO x\r\n", b"x", 3))
    assert limits.on_login(FakeSession(c, login=b"alice")) is None


def test_limit_auth_blocks_then_expires(now):
    spec = zone("auth", "auth", failures=3, window=60.0, delay=2.0, block=300.0)
    c = conf(limit_auth=(LimitRule(spec),), limit_auth_log_level="warn")
    s = FakeSession(c, login=b"alice")
    for _ in range(2):
        assert limits.on_login(s) is None
        limits.on_auth_result(s, Fail(b"a1 NO x\r\n", b"x", 0))
        now[0] += 1
    limits.on_auth_result(s, object())  # anything but a failure counts nothing
    assert limits.on_login(s) is None
    limits.on_auth_result(s, Fail(b"a1 NO x\r\n", b"x", 0))
    assert s.lines[-1] == ("warn", ('limiting authentication by zone "hooks-auth": 3 failures, '
                                   "blocked for 300s"))
    now[0] += 100
    other = FakeSession(c, login=b"alice")
    assert limits.on_login(other) == limits.Deny(
        b"a1 NO Temporary authentication failure\r\n", 2.0)
    assert other.lines == [("warn", ('limiting authentication by zone "hooks-auth", blocked '
                                    "for 200s more"))]
    now[0] += 200
    assert limits.on_login(other) is None


def test_limit_auth_window_expiry(now):
    spec = zone("window", "auth", failures=2, window=10.0, block=60.0)
    c = conf(limit_auth=(LimitRule(spec),))
    s = FakeSession(c)
    limits.on_auth_result(s, Fail(b"", b"x", 0))
    now[0] += 10  # the window is over: the next failure opens a new one
    limits.on_auth_result(s, Fail(b"", b"x", 0))
    assert limits.on_login(s) is None
    limits.on_auth_result(s, Fail(b"", b"x", 0))
    assert isinstance(limits.on_login(s), limits.Deny)


def test_a_reload_keeps_unchanged_zones():
    kept = zone("reload-kept", "conn")
    changed = zone("reload-changed", "conn")
    settings = SimpleNamespace(limit_zones=(kept, changed))
    limits.install(settings)
    before = {name: z for name, (_, z) in limits._zones.items()}
    limits.zone(kept).acquire(b"k", 5, 1)
    limits.install(SimpleNamespace(limit_zones=(replace(kept, rate=1.0),
                                                replace(changed, size=2 * 65536))))
    assert limits.zone(kept) is before[kept.name]
    assert limits.zone(kept).count(b"k") == 1
    assert limits.zone(replace(changed, size=2 * 65536)) is not before[changed.name]
    limits.install(SimpleNamespace(limit_zones=()))
    assert limits._zones == {}
