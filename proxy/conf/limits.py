"""limit_conn_zone / limit_conn, limit_req_zone / limit_req, limit_auth_zone / limit_auth.

Modelled on nginx's http/stream limit_conn and limit_req modules (their argument syntax and
error texts); limit_auth is Postern's own. Zones are declared in mail{}; the limits, in
mail{} or server{}, name a zone that may be declared later in the block, so they are
resolved when the mail block closes (resolve()), as nginx resolves shared zones at the end
of the configuration.
"""

from __future__ import annotations

import math
from typing import Any

from .engine import Level, Parser, Stmt
from .errors import ConfigError
from .settings import LimitRule, LimitZone
from .values import PAGE_SIZE, atoi, parse_size, parse_time

KEYS = ("$binary_remote_addr", "$remote_addr", "$login")
KINDS = {"limit_conn_zone": "conn", "limit_req_zone": "req", "limit_auth_zone": "auth"}
LOG_LEVELS = ("info", "notice", "warn", "error")


def _seconds(stmt: Stmt, word: str, text: str) -> float:
    value = parse_time(text, is_sec=False)
    if value is None:
        raise stmt.error(f'invalid parameter "{word}"')
    return value / 1000.0


def _positive(stmt: Stmt, word: str, text: str) -> int:
    n = atoi(text)
    if n is None or n <= 0:
        raise stmt.error(f'invalid parameter "{word}"')
    return n


def zone(parser: Parser, level: Level, stmt: Stmt) -> None:
    """`limit_conn_zone key zone=name:size;`, `limit_req_zone key zone=name:size
    rate=Nr/s;`, `limit_auth_zone key zone=name:size [failures=N] [window=time]
    [delay=time] [block=time];`."""
    kind = KINDS[stmt.name]
    key = stmt.args[0]
    if key not in KEYS:
        raise stmt.error(f'unsupported key "{key}" in "{stmt.name}", use one of '
                         + ", ".join(KEYS))
    values: dict[str, Any] = {}
    name = size = None
    for word in stmt.args[1:]:
        param, eq, text = word.partition("=")
        if param == "zone" and eq:
            name, colon, size_text = text.partition(":")
            size = parse_size(size_text) if colon else None
            if not name or size is None:
                raise stmt.error(f'invalid zone size "{word}"')
            if size < 8 * PAGE_SIZE:
                raise stmt.error(f'zone "{name}" is too small')
        elif kind == "req" and param == "rate" and eq:
            per = 60.0 if text.endswith("r/m") else 1.0 if text.endswith("r/s") else 0.0
            n = atoi(text[:-3]) if per else None
            if not n:
                raise stmt.error(f'invalid rate "{word}"')
            values["rate"] = n / per
        elif kind == "auth" and param == "failures" and eq:
            values["failures"] = _positive(stmt, word, text)
        elif kind == "auth" and param in ("window", "delay", "block") and eq:
            values[param] = _seconds(stmt, word, text)
        else:
            raise stmt.error(f'invalid parameter "{word}"')
    if name is None:
        raise stmt.error(f'"{stmt.name}" must have "zone" parameter')
    if kind == "req" and "rate" not in values:
        values["rate"] = 1.0  # nginx's default when rate= is missing
    zones: dict[str, LimitZone] = parser.state.setdefault("limit_zones", {})
    if name in zones:
        raise stmt.error(f'{stmt.name} "{name}" is already bound to key "{zones[name].key}"')
    shm: dict[str, int] = parser.state.setdefault("shm_zones", {})
    if name in shm:
        raise stmt.error(f'the shared memory zone "{name}" is already declared for a '
                         "different use")
    shm[name] = size
    zones[name] = LimitZone(name, kind, key, size, **values)


def _rules(level: Level, stmt: Stmt, field: str, entry: tuple) -> None:
    rules = level.values.setdefault(field, [])
    if any(rule[0] == entry[0] for rule in rules):
        raise stmt.error(f'"{stmt.name}" directive is duplicate')
    rules.append(entry)


def limit_conn(parser: Parser, level: Level, stmt: Stmt) -> None:
    """`limit_conn zone number;`"""
    n = atoi(stmt.args[1])
    if n is None or n <= 0:
        raise stmt.error(f'invalid number of connections "{stmt.args[1]}"')
    _rules(level, stmt, "limit_conn", (stmt.args[0], "conn", {"number": n}, stmt.file,
                                       stmt.line))


def limit_req(parser: Parser, level: Level, stmt: Stmt) -> None:
    """`limit_req zone=name [burst=N] [nodelay | delay=N];`"""
    name, burst, delay = None, 0, 0.0
    for word in stmt.args:
        param, eq, text = word.partition("=")
        if param == "zone" and eq:
            name = text
        elif param == "burst" and eq:
            n = atoi(text)
            if not n:
                raise stmt.error(f'invalid burst value "{word}"')
            burst = n
        elif param == "delay" and eq:
            n = atoi(text)
            if n is None:
                raise stmt.error(f'invalid delay value "{word}"')
            delay = float(n)
        elif word == "nodelay":
            delay = math.inf
        else:
            raise stmt.error(f'invalid parameter "{word}"')
    if name is None:
        raise stmt.error('"limit_req" must have "zone" parameter')
    _rules(level, stmt, "limit_req", (name, "req", {"burst": burst, "delay": delay},
                                      stmt.file, stmt.line))


def limit_auth(parser: Parser, level: Level, stmt: Stmt) -> None:
    """`limit_auth zone=name;`"""
    param, eq, name = stmt.args[0].partition("=")
    if param != "zone" or not eq or not name:
        raise stmt.error(f'invalid parameter "{stmt.args[0]}"')
    _rules(level, stmt, "limit_auth", (name, "auth", {}, stmt.file, stmt.line))


def resolve(parser: Parser, merged: dict[str, Any]) -> None:
    """The server's limits with their zones (in place), once every zone is declared."""
    zones: dict[str, LimitZone] = parser.state.get("limit_zones", {})
    for field in ("limit_conn", "limit_req", "limit_auth"):
        rules = []
        for name, kind, params, file, line in merged[field] or ():
            found = zones.get(name)
            if found is None:
                if name in parser.state.get("shm_zones", {}):
                    raise ConfigError(f'the shared memory zone "{name}" is already declared '
                                      "for a different use", file, line)
                raise ConfigError(f'zero size shared memory zone "{name}"')
            if found.kind != kind:
                raise ConfigError(f'"{name}" is a {found.kind} zone, not a {kind} zone '
                                  f'("limit_{kind}" needs a "limit_{kind}_zone")', file, line)
            rules.append(LimitRule(found, **params))
        merged[field] = tuple(rules)
