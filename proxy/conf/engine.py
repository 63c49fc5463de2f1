"""Directive dispatch: the ngx_conf_parse() / ngx_conf_handler() loop.

Statements are handled as soon as they are read, in file order, and `include` is
expanded in place, so the first error reported is the one nginx reports.
"""

from __future__ import annotations

import errno as errno_mod
import glob
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import COMMAND_LINE, ConfigError, where
from .lexer import BLOCK_DONE, BLOCK_START, FILE_DONE, OK, Reader
from .settings import Listen

# directives whose values nginx uses with their length (sent to clients, headers), NUL included
_LENGTH_BASED = frozenset({"server_name", "smtp_capabilities", "imap_capabilities",
                           "pop3_capabilities", "auth_http_header"})
MAX_INCLUDE_DEPTH = 64  # nginx has no limit and would recurse until it fails


@dataclass
class Stmt:
    """One directive as read: name, arguments and the location nginx reports for it
    (the line of its terminating ";" or "{")."""

    name: str
    args: list[str]
    file: str
    line: int
    reader: Reader

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, self.file, self.line)


@dataclass
class Level:
    """Raw values of one context (main, events, mail or one mail server).

    A key present in `values` means the directive was given at this level; that is all
    inheritance and duplicate detection need.
    """

    kind: str
    file: str | None = None  # for a server: where its "{" is
    line: int | None = None
    values: dict[str, Any] = field(default_factory=dict)
    # mail server only
    listens: list[Listen] = field(default_factory=list)
    protocol: str | None = None
    ssl_listen: bool = False  # a `listen ... ssl` in this server
    ssl_file: str | None = None  # where TLS was asked for, for the "no ssl_certificate" text
    ssl_line: int | None = None


@dataclass(frozen=True)
class Directive:
    """One row of the directive table."""

    name: str
    contexts: frozenset[str]  # "main", "events", "mail", "server"; "any" for include
    min_args: int
    max_args: int | None  # None: no upper bound (NGX_CONF_1MORE / 2MORE)
    handler: Callable[[Parser, Level, Stmt], None]
    block: bool = False
    field: str | None = None  # key in Level.values; inherited mail -> server when set
    default: Any = None


class Parser:
    def __init__(self, table: dict[str, Directive], known: frozenset[str],
                 prefix: str, conf_prefix: str):
        self.table = table
        self.known = known  # names some nginx module defines: "not allowed here", not unknown
        self.prefix = prefix
        self.conf_prefix = conf_prefix
        self.warnings: list[str] = []
        self.files: list[tuple[str, bytes]] = []  # every file read, first read first
        self.depth = 0
        self.state: dict[str, Any] = {}  # cross-level data kept by handlers

    def warn(self, message: str, file: str | None, line: int | None) -> None:
        self.warnings.append(message + where(file, line))

    # --- reading --------------------------------------------------------------------

    def parse_file(self, path: str, level: Level, at: Stmt | None = None) -> None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            message = f'open() "{path}" failed ({os_error_text(e)})'
            if at is None:
                raise ConfigError(message) from None
            raise at.error(message) from None
        if all(name != path for name, _ in self.files):
            self.files.append((path, data))
        if self.depth >= MAX_INCLUDE_DEPTH:
            raise at.error("too deep include nesting") if at else ConfigError(
                "too deep include nesting")
        self.depth += 1
        try:
            self._parse(Reader(data, path), level, "file")
        finally:
            self.depth -= 1

    def parse_param(self, text: str, level: Level) -> None:
        self._parse(Reader(text, COMMAND_LINE), level, "param")

    def parse_block(self, reader: Reader, level: Level) -> None:
        self._parse(reader, level, "block")

    def skip_block(self, reader: Reader) -> None:
        """Read to the "}" that closes the current block, nested blocks included, handling
        nothing (the lexer still reports broken syntax, as nginx would)."""
        depth = 1
        while depth:
            rc, _ = reader.read()
            if rc == BLOCK_START:
                depth += 1
            elif rc == BLOCK_DONE:
                depth -= 1
            elif rc == FILE_DONE:
                raise reader.error('unexpected end of file, expecting "}"')

    def _parse(self, reader: Reader, level: Level, kind: str) -> None:
        while True:
            rc, words = reader.read()
            if rc == BLOCK_DONE:
                if kind != "block":
                    raise reader.error('unexpected "}"')
                return
            if rc == FILE_DONE:
                if kind == "block":
                    raise reader.error('unexpected end of file, expecting "}"')
                return
            if rc == BLOCK_START and kind == "param":
                raise reader.error("block directives are not supported in -g option")
            self._handle(reader, level, words, rc)

    def _handle(self, reader: Reader, level: Level, words: list[str], rc: str) -> None:
        name = words[0]
        spec = self.table.get(name)
        if spec is None or not (level.kind in spec.contexts or "any" in spec.contexts):
            if spec is not None or name in self.known:
                raise reader.error(f'"{name}" directive is not allowed here')
            raise reader.error(f'unknown directive "{name}"')
        if not spec.block and rc != OK:
            raise reader.error(f'directive "{name}" is not terminated by ";"')
        if spec.block and rc != BLOCK_START:
            raise reader.error(f'directive "{name}" has no opening "{{"')
        nargs = len(words) - 1
        if nargs < spec.min_args or (spec.max_args is not None and nargs > spec.max_args):
            raise reader.error(f'invalid number of arguments in "{name}" directive')
        args = words[1:]
        if name not in _LENGTH_BASED:
            # nginx hands these values to C functions (open(), getpwnam(), OpenSSL), which
            # stop at the first NUL byte
            args = [arg.split("\x00", 1)[0] for arg in args]
        stmt = Stmt(name, args, reader.name, reader.line, reader)
        try:
            spec.handler(self, level, stmt)
        except (ValueError, UnicodeError) as exc:  # a value no check foresaw: no traceback
            if isinstance(exc, ConfigError):
                raise
            raise stmt.error(f'invalid value in "{name}" directive ({exc})') from None

    # --- helpers for handlers ---------------------------------------------------------

    def full_name(self, name: str, conf_prefix: bool = False) -> str:
        """ngx_conf_full_name: relative names hang off the prefix (-p) or, for files
        nginx reads as configuration (include, ssl_*), off the directory of the -c file."""
        if name.startswith("/"):
            return name
        return (self.conf_prefix if conf_prefix else self.prefix) + name

    def include(self, level: Level, stmt: Stmt) -> None:
        pattern = self.full_name(stmt.args[0], conf_prefix=True)
        if not any(c in pattern for c in "*?["):
            self.parse_file(pattern, level, stmt)
            return
        # glob(3) sorts in byte order and skips dot files like Python's glob
        for path in sorted(glob.glob(pattern), key=os.fsencode):
            self.parse_file(path, level, stmt)


def os_error_text(e: OSError) -> str:
    """nginx's "(errno: strerror)" suffix."""
    code = e.errno if e.errno is not None else errno_mod.EIO
    return f"{code}: {os.strerror(code)}"
