"""Directives of the auth_http client beyond nginx (proxy/auth_pool.py carries them out).

`auth_http https://...` (nginx: "invalid port"), `auth_http_backup URL [max_fails=N]
[fail_timeout=T]`, and the checks made once a server's values are merged: TLS material that
cannot be loaded, a client certificate without its key, `auth_http_server_names` without a
`resolver`. None of this changes a configuration nginx accepts.
"""

from __future__ import annotations

import socket
from typing import Any

from .addr import UrlError, parse_url
from .engine import Level, Parser, Stmt
from .errors import ConfigError
from .settings import AuthHttp
from .values import atoi, parse_time


def parse_auth_url(stmt: Stmt, text: str) -> AuthHttp:
    """An auth_http URL as nginx splits it; "https://" (which nginx refuses) switches TLS on."""
    ssl = text.startswith("https://")
    shown = text if ssl else text.removeprefix("http://")  # nginx names it without http://
    try:
        url = parse_url(text.removeprefix("https://") if ssl else shown,
                        default_port=443 if ssl else 80, uri_part=True)
    except UrlError as e:
        raise stmt.error(f'{e} in {stmt.name} "{shown}"') from None
    peer = url.addrs[0]
    return AuthHttp(
        text=peer.name,
        host_header="localhost" if url.family == socket.AF_UNIX else url.host,
        uri=url.uri or "/",
        addr=peer.ip,
        port=peer.port if peer.unix_path is None else 80,
        unix_path=peer.unix_path,
        ssl=ssl,
    )


def backup(parser: Parser, level: Level, stmt: Stmt) -> None:
    """auth_http_backup URL [max_fails=N] [fail_timeout=T]; repeatable, tried in order."""
    peer = parse_auth_url(stmt, stmt.args[0])
    params: dict[str, Any] = {}
    for word in stmt.args[1:]:
        if word.startswith("max_fails="):
            value = atoi(word[10:])
        elif word.startswith("fail_timeout="):
            secs = parse_time(word[13:], is_sec=True)
            value = None if secs is None else float(secs)
        else:
            raise stmt.error(f'invalid parameter "{word}"')
        if value is None:
            raise stmt.error(f'invalid parameter "{word}"')
        params[word.split("=", 1)[0]] = value
    level.values.setdefault("auth_http_backups", []).append(
        AuthHttp(**{**peer.__dict__, **params}))


def check(parser: Parser, srv: Level, m: dict[str, Any]) -> None:
    """The checks of one server's merged values; paths are made absolute in `m`."""
    for key in ("auth_http_ssl_trusted_certificate", "auth_http_ssl_certificate",
                "auth_http_ssl_certificate_key"):
        if m[key]:
            m[key] = parser.full_name(m[key], conf_prefix=True)
    if m["auth_http_server_names"] and m["resolver"] is None:
        raise ConfigError('no "resolver" is defined for "auth_http_server_names"',
                          srv.file, srv.line)
    peers = [m["auth_http"], *(m["auth_http_backups"] or ())]
    if not any(p is not None and p.ssl for p in peers):
        return
    if m["auth_http_ssl_certificate"] and not m["auth_http_ssl_certificate_key"]:
        raise ConfigError('no "auth_http_ssl_certificate_key" is defined for certificate '
                          f'"{m["auth_http_ssl_certificate"]}"', srv.file, srv.line)
    from postern.proxy.auth_tls import AuthTlsError, client_context
    from postern.proxy.conf.settings import ServerSettings

    fields = {k: m[k] for k in ("auth_http_ssl_verify", "auth_http_ssl_trusted_certificate",
                                "auth_http_ssl_certificate", "auth_http_ssl_certificate_key")}
    probe = ServerSettings(file=srv.file, line=srv.line, listens=(), protocol="imap",
                           auth_http=m["auth_http"], server_name="", **fields)
    try:
        client_context(probe)
    except AuthTlsError as e:
        raise ConfigError(str(e), srv.file, srv.line) from None
