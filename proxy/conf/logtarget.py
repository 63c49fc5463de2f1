"""`error_log` arguments -> LogTarget (ngx_log_set_log, ngx_syslog_process_conf)."""

from __future__ import annotations

import dataclasses
import socket

from .addr import UrlError, parse_url
from .settings import LogTarget

LEVELS = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
DEBUG_LEVELS = ("debug_core", "debug_alloc", "debug_mutex", "debug_event", "debug_http",
                "debug_mail", "debug_stream")
FACILITIES = ("kern", "user", "mail", "daemon", "auth", "intern", "lpr", "news", "uucp",
              "clock", "authpriv", "ftp", "ntp", "audit", "alert", "cron", "local0",
              "local1", "local2", "local3", "local4", "local5", "local6", "local7")
SEVERITIES = LEVELS


class LogTargetError(ValueError):
    """Message in nginx's words; the caller adds the location."""


def parse_level(words: list[str]) -> str:
    """ngx_log_set_levels: one level, or debug_* masks (which mean "debug")."""
    if not words:
        return "error"
    level: str | None = None
    debug_mask = False
    for word in words:
        if word in LEVELS:
            if level is not None or debug_mask:
                raise LogTargetError(f'duplicate log level "{word}"')
            level = word
            continue
        if word in DEBUG_LEVELS:
            if level is not None:
                raise LogTargetError(f'invalid log level "{word}"')
            debug_mask = True
            continue
        raise LogTargetError(f'invalid log level "{word}"')
    return "debug" if debug_mask else level or "error"


def _syslog(spec: str, level: str) -> LogTarget:
    fields: dict = {}
    for part in spec.split(","):
        if part.startswith("server="):
            if "server" in fields:
                raise LogTargetError('duplicate syslog "server"')
            try:
                url = parse_url(part[7:], default_port=514)
            except UrlError as e:
                raise LogTargetError(f'{e} in syslog server "{part[7:]}"') from None
            addr = url.addrs[0]
            fields["server"] = True
            if addr.family == socket.AF_UNIX:
                fields["syslog_unix_path"] = addr.unix_path
            else:
                fields.update(syslog_host=addr.ip, syslog_port=addr.port)
        elif part.startswith(("facility=", "severity=")):
            name, value = part[:8], part[9:]
            if "syslog_" + name in fields:
                raise LogTargetError(f'duplicate syslog "{name}"')
            if value not in (FACILITIES if name == "facility" else SEVERITIES):
                raise LogTargetError(f'unknown syslog {name} "{value}"')
            fields["syslog_" + name] = value
        elif part.startswith("tag="):
            if "syslog_tag" in fields:
                raise LogTargetError('duplicate syslog "tag"')
            tag = part[4:]
            if len(tag) > 32:
                raise LogTargetError("syslog tag length exceeds 32")
            if not all(c.isascii() and (c.isalnum() or c == "_") for c in tag):
                raise LogTargetError(
                    'syslog "tag" only allows alphanumeric characters and underscore')
            fields["syslog_tag"] = tag
        elif part == "nohostname":
            fields["syslog_nohostname"] = True
        else:
            raise LogTargetError(f'unknown syslog parameter "{part}"')
    if not fields.pop("server", False):
        raise LogTargetError("no syslog server specified")
    return LogTarget(kind="syslog", level=level, **fields)


def parse_error_log(words: list[str], prefix: str) -> LogTarget | None:
    """`error_log file|stderr|syslog:...|memory:size [level...]`.

    Returns None for memory:, a debugging aid of nginx's debug builds that has no
    counterpart here.
    """
    name = words[0]
    if name == "stderr":
        target = LogTarget(kind="stderr")
    elif name.startswith("memory:"):
        target = None
    elif name.startswith("syslog:"):
        # the level is checked after the destination, as nginx does
        target = _syslog(name[7:], "error")
    else:
        path = name if name.startswith("/") else prefix + name
        target = LogTarget(kind="file", path=path)
    level = parse_level(words[1:])
    if target is None:
        return None
    return dataclasses.replace(target, level=level)
