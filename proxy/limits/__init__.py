"""Limits that hold across workers: limit_conn, limit_req and limit_auth (off by default).

The master creates the zones (install(), or prepare() and commit() for a reload) before it forks, so every worker shares them;
a reload keeps a zone whose name, kind, key and size are unchanged, as nginx keeps a shared
zone. The driver calls in once per event and carries out the verdict:

- on_accept(session): before the greeting, once the client's address is final (after the
  PROXY header and an implicit TLS handshake, so realip applies and the refusal can be
  written); address-keyed limit_req and limit_conn. -> Refuse | Delay | None
- on_login(session): the credentials are complete, before the auth server is asked; a
  blocked key (limit_auth) is answered without asking, then $login-keyed limit_req and
  limit_conn. -> Refuse | Delay | Deny | None
- on_auth_result(session, decision): a failure counts in limit_auth zones.
- on_close(session): the session's connections are uncounted.
- reclaim(pid): the master forgets the sessions of a worker that died (its slots carry its
  pid), so a crashed worker does not keep its connections counted for ever.

Zones: proxy.limits.zones (the algorithms) over proxy.limits.store (the shared table).
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from postern.proxy import metrics
from postern.proxy.auth_exchange import Fail
from postern.proxy.limits.store import SharedTable, digest
from postern.proxy.limits.zones import ACCEPTED, AuthZone, ConnZone, Outcome, ReqZone

if TYPE_CHECKING:
    from postern.proxy.conf.settings import LimitRule, LimitZone, MainSettings

clock = time.monotonic  # shared by every process of the machine; tests replace it

_KINDS = {"conn": ConnZone, "req": ReqZone, "auth": AuthZone}
_zones: dict[str, tuple[LimitZone, Any]] = {}  # name -> (spec, zone)

# what a refused login gets: the protocol's auth-failure line; SMTP's code is RFC 4954's
# temporary failure, since trying later may succeed
BLOCKED = SimpleNamespace(error=b"Temporary authentication failure", error_code=b"454 4.7.0")
_LESS = {"error": "warn", "warn": "notice", "notice": "info", "info": "info"}


@dataclass(frozen=True)
class Refuse:
    """Write the protocol's refusal line and close."""

    line: bytes


@dataclass(frozen=True)
class Delay:
    """Go on after this many seconds (limit_req's burst without nodelay)."""

    seconds: float


@dataclass(frozen=True)
class Deny:
    """A blocked login: after `wait` seconds, the auth-failure line and the dialogue again."""

    line: bytes
    wait: float


class Hold:
    """What one session keeps for its limits: the conn-zone entries it counts in, to give
    back when it ends, and its keys' digests, computed once (the address's at accept, the
    login's once per login)."""

    __slots__ = ("address", "digests", "login", "login_digest", "login_key")

    def __init__(self) -> None:
        self.address: list[tuple[ConnZone, bytes]] = []  # (zone, digest)
        self.login: list[tuple[ConnZone, bytes]] = []
        self.digests: dict[str, bytes] = {}  # address keys: spec.key -> digest (b"": none)
        self.login_key = b""
        self.login_digest = b""


class Plan:
    """A server's limit rules sorted once per configuration by the event they apply at,
    each with its zone: (rule, zone) pairs."""

    __slots__ = ("address_conn", "address_req", "auth", "login_conn", "login_req")

    def __init__(self, conf) -> None:
        def pairs(rules, by_login):
            return tuple((r, zone(r.zone)) for r in rules if _by_login(r) == by_login)
        self.address_req = pairs(conf.limit_req, False)
        self.address_conn = pairs(conf.limit_conn, False)
        self.login_req = pairs(conf.limit_req, True)
        self.login_conn = pairs(conf.limit_conn, True)
        self.auth = tuple((r, zone(r.zone)) for r in conf.limit_auth)


_plans: dict[int, tuple[Any, Plan]] = {}  # id(server settings) -> (settings, plan)


def _plan(conf) -> Plan:
    found = _plans.get(id(conf))
    if found is None or found[0] is not conf:
        found = _plans[id(conf)] = (conf, Plan(conf))
    return found[1]


# -- zones, in the master --------------------------------------------------------------
def _same(a: LimitZone, b: LimitZone) -> bool:
    return (a.kind, a.key, a.size) == (b.kind, b.key, b.size)


def prepare(settings: MainSettings) -> dict[str, tuple[LimitZone, Any]]:
    """The configuration's zones: those a reload leaves unchanged are kept (their counts and
    states go on, with the new parameters: rate, failures, ...), the others are created.
    Nothing changes until commit(), so a reload that fails later keeps the old zones."""
    zones = {}
    for spec in settings.limit_zones:
        kept = _zones.get(spec.name)
        if kept is not None and _same(kept[0], spec):
            zones[spec.name] = (spec, kept[1])
        else:
            zones[spec.name] = (spec, _KINDS[spec.kind](SharedTable(spec.size)))
    return zones


def commit(zones: dict[str, tuple[LimitZone, Any]]) -> None:
    """Make the prepared zones the ones new workers inherit; the master lets go of the
    others (workers still serving them keep their own mapping)."""
    kept = {id(z) for _, z in zones.values()}
    for _, z in _zones.values():
        if id(z) not in kept:
            z.table.close()
    _zones.clear()
    _zones.update(zones)
    _plans.clear()


def install(settings: MainSettings) -> None:
    commit(prepare(settings))


def zone(spec: LimitZone):
    """The zone of a rule; made here when install() was not called (a process that serves
    without forking workers)."""
    found = _zones.get(spec.name)
    if found is None or not _same(found[0], spec):
        found = _zones[spec.name] = (spec, _KINDS[spec.kind](SharedTable(spec.size)))
        _plans.clear()  # plans made earlier may hold the zone this one replaces
    return found[1]


def reclaim(pid: int) -> None:
    for _, z in _zones.values():
        if isinstance(z, ConnZone):
            z.reclaim(pid)


# -- one session ---------------------------------------------------------------------
def _key(spec: LimitZone, session) -> bytes:
    """nginx's variables: an empty value is not limited (a unix socket's client has no
    $binary_remote_addr; a session before its login has no $login)."""
    if spec.key == "$login":
        return session.machine.creds.login if session.machine is not None else b""
    if spec.key == "$remote_addr":
        return session.client_ip.encode()
    ip = session.client_ip.partition("%")[0]  # an IPv6 zone is not part of the address
    try:  # inet_pton: what ipaddress.ip_address().packed gives, in C
        return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    except OSError:
        return b""


def _digest(spec: LimitZone, session, hold: Hold) -> bytes:
    """The digest of the session's key for this zone (b"": no key, not limited)."""
    if spec.key == "$login":
        key = _key(spec, session)
        if key != hold.login_key:
            hold.login_key, hold.login_digest = key, digest(key) if key else b""
        return hold.login_digest
    dig = hold.digests.get(spec.key)
    if dig is None:
        key = _key(spec, session)
        dig = hold.digests[spec.key] = digest(key) if key else b""
    return dig


def _by_login(rule: LimitRule) -> bool:
    return rule.zone.key == "$login"


def count_hit(kind: str, zone_name: str) -> None:
    """A limit refused or delayed a session: postern_limit_hits_total{zone,kind}."""
    metrics.limit_hit(zone_name, kind)


def _thousandths(excess: float) -> str:
    """nginx keeps the excess in thousandths and logs them truncated: "1.999"."""
    milli = int(excess * 1000)
    return f"{milli // 1000}.{milli % 1000:03d}"


def _requests(session, hold: Hold, pairs, now: float):
    """limit_req over these rules: Refuse, Delay (the longest asked) or None."""
    wait = 0.0
    for rule, z in pairs:
        spec = rule.zone
        dig = _digest(spec, session, hold)
        if not dig:
            continue
        result = z.request_digest(dig, now, spec.rate, rule.burst, rule.delay)
        if result is ACCEPTED:
            continue
        conf = session.conf
        if result.outcome is Outcome.NO_MEMORY:
            session.log("alert", f'could not allocate node in limit_req zone "{spec.name}"')
            count_hit("req", spec.name)
            return Refuse(session.proto.limited)
        if result.outcome is Outcome.LIMITED:
            session.log(conf.limit_req_log_level,
                        f'limiting requests, excess: {_thousandths(result.excess)} by zone '
                        f'"{spec.name}"')
            count_hit("req", spec.name)
            return Refuse(session.proto.limited)
        if result.delay > 0:
            session.log(_LESS[conf.limit_req_log_level],
                        f'delaying request, excess: {_thousandths(result.excess)}, by zone '
                        f'"{spec.name}"')
            count_hit("req", spec.name)
            wait = max(wait, result.delay)
    return Delay(wait) if wait > 0 else None


def _connections(session, hold: Hold, pairs, held: list) -> Refuse | None:
    """limit_conn over these rules, counting the session in each; on a refusal the
    counts taken so far are given back (ngx_http_limit_conn_cleanup_all)."""
    pid = os.getpid()
    taken = []
    for rule, z in pairs:
        dig = _digest(rule.zone, session, hold)
        if not dig:
            continue
        outcome = z.acquire_digest(dig, rule.number, pid)
        if outcome is Outcome.OK:
            taken.append((z, dig))
            continue
        for z2, dig2 in taken:
            z2.release_digest(dig2, pid)
        if outcome is Outcome.NO_MEMORY:
            session.log("alert", f'could not allocate node in limit_conn zone "{rule.zone.name}"')
        else:
            session.log(session.conf.limit_conn_log_level,
                        f'limiting connections by zone "{rule.zone.name}"')
        count_hit("conn", rule.zone.name)
        return Refuse(session.proto.limited)
    held.extend(taken)
    return None


def _hold(session) -> Hold:
    hold = session.limit_hold
    if hold is None:
        hold = session.limit_hold = Hold()
    return hold


def on_accept(session) -> Refuse | Delay | None:
    conf = session.conf
    if not conf.limit_conn and not conf.limit_req:
        return None
    plan = _plan(conf)
    hold = _hold(session)
    verdict = None
    if plan.address_req:
        verdict = _requests(session, hold, plan.address_req, clock())
        if isinstance(verdict, Refuse):
            return verdict
    if plan.address_conn:
        refused = _connections(session, hold, plan.address_conn, hold.address)
        if refused:
            return refused
    return verdict


def on_login(session) -> Refuse | Delay | Deny | None:
    conf = session.conf
    if not conf.limit_conn and not conf.limit_req and not conf.limit_auth:
        return None
    plan = _plan(conf)
    hold = _hold(session)
    _release(hold.login)  # a new login after a failed one
    now = clock()
    for rule, z in plan.auth:
        dig = _digest(rule.zone, session, hold)
        left = z.blocked_digest(dig, now) if dig else 0.0
        if left > 0:
            session.log(conf.limit_auth_log_level,
                        f'limiting authentication by zone "{rule.zone.name}", '
                        f"blocked for {math.ceil(left)}s more")
            count_hit("auth", rule.zone.name)
            return Deny(session.machine.auth_failure(BLOCKED), rule.zone.delay)
    verdict = None
    if plan.login_req:
        verdict = _requests(session, hold, plan.login_req, now)
        if isinstance(verdict, Refuse):
            return verdict
    if plan.login_conn:
        refused = _connections(session, hold, plan.login_conn, hold.login)
        if refused:
            return refused
    return verdict


def on_auth_result(session, decision) -> None:
    conf = session.conf
    if not isinstance(decision, Fail) or not (conf.limit_auth or conf.limit_conn):
        return
    hold = _hold(session)
    _release(hold.login)  # a failed login holds no $login connection
    now = clock()
    for rule, z in _plan(conf).auth:
        dig = _digest(rule.zone, session, hold)
        if not dig:
            continue
        spec = rule.zone
        started = z.failed_digest(dig, now, spec.failures, spec.window, spec.block)
        if started is Outcome.NO_MEMORY:
            session.log("alert", f'could not allocate node in limit_auth zone "{spec.name}"')
        elif started:
            session.log(conf.limit_auth_log_level,
                        f'limiting authentication by zone "{spec.name}": {spec.failures} '
                        f"failures, blocked for {spec.block:g}s")
            count_hit("auth", spec.name)


def _release(held: list) -> None:
    if not held:
        return
    pid = os.getpid()
    while held:
        z, dig = held.pop()
        z.release_digest(dig, pid)


def on_close(session) -> None:
    hold = session.limit_hold
    if hold is not None:
        _release(hold.address)
        _release(hold.login)
