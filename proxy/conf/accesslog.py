"""`log_format` and `access_log`: the per-session access log, in the words of nginx's stream
module (ngx_stream_log_set_format, ngx_stream_log_compile_format, ngx_stream_log_set_log).

nginx's mail module has no access log; these directives are Postern's, off by default. Where
the stream module has an error text for a case, the same text is given here; what Postern
does not support (variables in the path) is a clear [emerg] instead.
"""

from __future__ import annotations

from postern.proxy.access_log import DEFAULT_FORMAT, DEFAULT_FORMAT_NAME, VARIABLES

from .engine import Level, Parser, Stmt
from .errors import ConfigError
from .logtarget import LogTargetError, parse_error_log
from .settings import AccessLog, LogFormat, LogVar
from .values import atoi, parse_size, parse_time

ESCAPES = ("default", "json", "none")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def compile_format(name: str, words: list[str], stmt: Stmt | None = None,
                   used: list[str] | None = None) -> LogFormat:
    """ngx_stream_log_compile_format: the words are joined as they are (no separator);
    `$name` and `${name}` are variables, names lowercased. Names are collected in `used`
    for the check at the end of the mail block (nginx reports an unknown variable there)."""
    def error(message: str) -> ConfigError:
        return stmt.error(message) if stmt is not None else ConfigError(message)

    escape = "default"
    if words and words[0].startswith("escape="):
        escape = words[0][7:]
        if escape not in ESCAPES:
            raise error(f'unknown log format escaping "{escape}"')
        words = words[1:]
    parts: list[str | LogVar] = []
    for word in words:
        i, n = 0, len(word)
        while i < n:
            if word[i] != "$":
                j = word.find("$", i)
                j = n if j < 0 else j
                if parts and isinstance(parts[-1], str):
                    parts[-1] += word[i:j]
                else:
                    parts.append(word[i:j])
                i = j
                continue
            start = i
            i += 1
            bracket = i < n and word[i] == "{"
            if bracket:
                i += 1
            if i >= n:
                raise error(f'invalid parameter "{word[start:]}"')
            j = i
            while j < n and word[j] in _NAME_CHARS:
                j += 1
            var = word[i:j]
            if bracket:
                if j >= n or word[j] != "}":
                    raise error(f'the closing bracket in "{var}" variable is missing')
                j += 1
            if not var:
                raise error(f'invalid parameter "{word[start:]}"')
            var = var.lower()
            if used is not None and var not in used:
                used.append(var)
            parts.append(LogVar(var))
            i = j
    return LogFormat(name, escape, tuple(parts))


def _formats(parser: Parser) -> dict[str, LogFormat]:
    formats = parser.state.get("log_formats")
    if formats is None:
        formats = parser.state["log_formats"] = {
            DEFAULT_FORMAT_NAME: compile_format(DEFAULT_FORMAT_NAME, [DEFAULT_FORMAT])}
    return formats


def log_format(parser: Parser, level: Level, stmt: Stmt) -> None:
    formats = _formats(parser)
    name = stmt.args[0]
    if name in formats:
        raise stmt.error(f'duplicate "log_format" name "{name}"')
    formats[name] = compile_format(name, stmt.args[1:], stmt,
                                   parser.state.setdefault("log_variables", []))


def access_log(parser: Parser, level: Level, stmt: Stmt) -> None:
    args = stmt.args
    if args[0] == "off":
        if len(args) > 1:
            raise stmt.error(f'invalid parameter "{args[1]}"')
        level.values["access_logs"] = []
        level.values["access_log_off"] = True
        return
    syslog = None
    if args[0].startswith("syslog:"):
        try:
            syslog = parse_error_log([args[0]], parser.prefix)
        except LogTargetError as err:
            raise stmt.error(str(err)) from None
        path = ""
    elif "$" in args[0]:
        raise stmt.error('variables in the "access_log" path are not supported')
    else:
        path = parser.full_name(args[0])
    formats = _formats(parser)
    name = args[1] if len(args) > 1 else DEFAULT_FORMAT_NAME
    fmt = next((f for key, f in formats.items() if key.lower() == name.lower()), None)
    if fmt is None:
        raise stmt.error(f'unknown log format "{name}"')
    size, flush, gzip, condition = 0, 0.0, 0, None
    for word in args[2:]:
        if word.startswith("buffer="):
            size = parse_size(word[7:])
            if not size:
                raise stmt.error(f'invalid buffer size "{word[7:]}"')
        elif word.startswith("flush="):
            msec = parse_time(word[6:], is_sec=False)
            if not msec:
                raise stmt.error(f'invalid flush time "{word[6:]}"')
            flush = msec / 1000.0
        elif word.startswith("if="):
            condition = compile_format("if", ["escape=none", word[3:]], stmt,
                                       parser.state.setdefault("log_variables", []))
        elif word == "gzip" or word.startswith("gzip="):
            size = size or 64 * 1024
            gzip = 1 if word == "gzip" else (atoi(word[5:]) or 0)
            if not 1 <= gzip <= 9:
                raise stmt.error(f'invalid compression level "{word[5:]}"')
        else:
            raise stmt.error(f'invalid parameter "{word}"')
    if flush and not size:
        raise stmt.error(f'no buffer is defined for access_log "{args[0]}"')
    if size and syslog is not None:
        raise stmt.error("logs to syslog cannot be buffered")
    buffers: dict[str, tuple[int, float, int]] = parser.state.setdefault("access_log_buffers", {})
    if size:
        if buffers.get(path, (size, flush, gzip)) != (size, flush, gzip):
            raise stmt.error(f'access_log "{args[0]}" already defined with conflicting '
                             "parameters")
        buffers[path] = (size, flush, gzip)
    if path:
        parser.state.setdefault("log_files", []).append(path)
    if not level.values.get("access_log_off"):  # "off" at a level wins over its logs
        level.values.setdefault("access_logs", []).append(
            AccessLog(path, fmt, size, flush, condition, syslog, gzip))


def check_variables(parser: Parser) -> None:
    """ngx_stream_variables_init_vars: the first unknown name, after the block is read."""
    for name in parser.state.get("log_variables", ()):
        if name not in VARIABLES:
            raise ConfigError(f'unknown "{name}" variable')

