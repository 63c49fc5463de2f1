"""Generic directive handlers, one per ngx_conf_set_*_slot, with nginx's wording.

Each factory returns a handler(parser, level, stmt) storing into level.values[field].
Times are stored as float seconds, sizes as int bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .engine import Level, Parser, Stmt
from .values import atoi, parse_flag, parse_offset, parse_size, parse_time

Handler = Callable[[Parser, Level, Stmt], None]


def _check_dup(level: Level, key: str, stmt: Stmt) -> None:
    if key in level.values:
        raise stmt.error(f'"{stmt.name}" directive is duplicate')


def flag(key: str, after: Handler | None = None) -> Handler:
    def handler(parser: Parser, level: Level, stmt: Stmt) -> None:
        _check_dup(level, key, stmt)
        value = parse_flag(stmt.args[0])
        if value is None:
            raise stmt.error(f'invalid value "{stmt.args[0]}" in "{stmt.name}" directive, '
                             'it must be "on" or "off"')
        level.values[key] = value
        if after is not None:
            after(parser, level, stmt)
    return handler


def _parsed(key: str, parse: Callable[[str], object | None], invalid: str) -> Handler:
    """A one-argument slot: `parse` returns the stored value, None for nginx's `invalid`."""
    def handler(parser: Parser, level: Level, stmt: Stmt) -> None:
        _check_dup(level, key, stmt)
        value = parse(stmt.args[0])
        if value is None:
            raise stmt.error(f'"{stmt.name}" directive {invalid}')
        level.values[key] = value
    return handler


def _seconds(text: str, is_sec: bool) -> float | None:
    value = parse_time(text, is_sec=is_sec)
    if value is None:
        return None
    return float(value) if is_sec else value / 1000.0


def msec(key: str) -> Handler:
    return _parsed(key, lambda text: _seconds(text, is_sec=False), "invalid value")


def sec(key: str) -> Handler:
    return _parsed(key, lambda text: _seconds(text, is_sec=True), "invalid value")


def num(key: str) -> Handler:
    return _parsed(key, atoi, "invalid number")


def size(key: str, offset: bool = False) -> Handler:
    return _parsed(key, parse_offset if offset else parse_size, "invalid value")


def string(key: str) -> Handler:
    def handler(parser: Parser, level: Level, stmt: Stmt) -> None:
        _check_dup(level, key, stmt)
        level.values[key] = stmt.args[0]
    return handler


def str_array(key: str) -> Handler:
    def handler(parser: Parser, level: Level, stmt: Stmt) -> None:
        level.values.setdefault(key, []).append(stmt.args[0])
    return handler


def keyval(key: str) -> Handler:
    def handler(parser: Parser, level: Level, stmt: Stmt) -> None:
        level.values.setdefault(key, []).append((stmt.args[0], stmt.args[1]))
    return handler


def append_all(key: str) -> Handler:
    """ngx_mail_capabilities: every argument appended, repeated directives too."""
    def handler(parser: Parser, level: Level, stmt: Stmt) -> None:
        level.values.setdefault(key, []).extend(stmt.args)
    return handler


def bitmask(key: str, names: Sequence[str]) -> Handler:
    """ngx_conf_set_bitmask_slot: case-insensitive names OR-ed together across repeated
    directives of one level; a repeated name is only a warning."""
    lookup = {n.lower(): n for n in names}

    def handler(parser: Parser, level: Level, stmt: Stmt) -> None:
        current: set[str] = level.values.setdefault(key, set())
        for word in stmt.args:
            name = lookup.get(word.lower())
            if name is None:
                raise stmt.error(f'invalid value "{word}"')
            if name in current:
                parser.warn(f'duplicate value "{word}"', stmt.file, stmt.line)
            current.add(name)
    return handler


def enum(key: str, names: Sequence[str], after: Handler | None = None) -> Handler:
    """ngx_conf_set_enum_slot: one of names, case-insensitive."""
    lookup = {n.lower(): n for n in names}

    def handler(parser: Parser, level: Level, stmt: Stmt) -> None:
        _check_dup(level, key, stmt)
        name = lookup.get(stmt.args[0].lower())
        if name is None:
            raise stmt.error(f'invalid value "{stmt.args[0]}"')
        level.values[key] = name
        if after is not None:
            after(parser, level, stmt)
    return handler


def ignored(key: str | None = None) -> Handler:
    """Accepted for compatibility and otherwise ignored (duplicate-checked when keyed)."""
    def handler(parser: Parser, level: Level, stmt: Stmt) -> None:
        if key is not None:
            _check_dup(level, key, stmt)
            level.values[key] = stmt.args
    return handler
