"""nginx.conf -> frozen MainSettings.

    settings = load_config("/etc/postern/nginx.conf", prefix="/etc/postern/",
                           directives="daemon off;")

Errors raise ConfigError, whose str() is what nginx prints after "[emerg] ". Warnings
(nginx's "[warn]" lines) are in settings.warnings, in the order they were produced.
"""

from __future__ import annotations

import os

from .build import build_main
from .engine import Level, Parser
from .errors import ConfigError
from .settings import (
    AuthHttp,
    Listen,
    LogTarget,
    MainSettings,
    Resolver,
    ServerSettings,
    SslSettings,
)
from .table import NGINX_DIRECTIVES, TABLE, hostname

__all__ = ["AuthHttp", "ConfigError", "Listen", "LogTarget", "MainSettings", "Resolver",
           "ServerSettings", "SslSettings", "dump_config", "load_config"]


def _paths(path: str, prefix: str | None) -> tuple[str, str, str]:
    """(prefix, conf file, conf prefix) as ngx_process_options() derives them."""
    if prefix is None:
        prefix = os.getcwd()
    if not prefix.endswith("/"):
        prefix += "/"
    conf_file = path if path.startswith("/") else prefix + path
    conf_prefix = conf_file[:conf_file.rfind("/") + 1] if "/" in conf_file[1:] else "/"
    return prefix, conf_file, conf_prefix


def _load(path: str, prefix: str | None, directives: str | None
          ) -> tuple[MainSettings, Parser]:
    prefix, conf_file, conf_prefix = _paths(path, prefix)
    parser = Parser(TABLE, NGINX_DIRECTIVES, prefix, conf_prefix)
    parser.state["hostname"] = hostname()
    main = Level("main")
    try:
        if directives:
            parser.parse_param(directives, main)  # -g comes first, as in ngx_init_cycle()
        parser.parse_file(conf_file, main)
        return build_main(parser, main, conf_file), parser
    except ConfigError as e:
        e.warnings = tuple(parser.warnings)  # nginx prints them before the [emerg] line
        raise
    except (ValueError, UnicodeError) as exc:  # a value no check foresaw: no traceback
        err = ConfigError(f"invalid configuration ({exc})", conf_file, None)
        err.warnings = tuple(parser.warnings)
        raise err from None


def load_config(path: str, prefix: str | None = None,
                directives: str | None = None) -> MainSettings:
    """Parse and check the configuration like `nginx -t -p PREFIX -c PATH -g DIRECTIVES`.

    Relative paths resolve against the prefix (default: the current directory), except
    included files and TLS material, which nginx resolves against the directory of the
    configuration file.
    """
    return _load(path, prefix, directives)[0]


def dump_config(path: str, prefix: str | None = None, directives: str | None = None) -> str:
    """What `nginx -T` prints after its test lines: every file read, once, in order."""
    _, parser = _load(path, prefix, directives)
    out = []
    for name, data in parser.files:
        out.append(f"# configuration file {name}:\n")
        out.append(data.decode("utf-8", "surrogateescape"))
        out.append("\n")
    return "".join(out)
