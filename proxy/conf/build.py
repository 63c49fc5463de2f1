"""Merging mail-level values into each server and the checks nginx makes at that point.

As in ngx_mail_block(), the checks run module by module over all servers: first the
protocol of every server, then TLS, then auth_http; so with two broken servers the same
error as nginx's is reported first.
"""

from __future__ import annotations

import os
from typing import Any

from . import authclient, limits, tlscheck
from .engine import Level, Parser
from .errors import ConfigError
from .listen import count_listening, with_ssl
from .settings import BackendTlsSettings, MainSettings, ServerSettings, SslSettings

SSL_PROTOCOL_ORDER = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
SERVER_FIELDS = frozenset(ServerSettings.__dataclass_fields__)
SSL_FIELDS = frozenset(SslSettings.__dataclass_fields__)
PROXY_SSL_FIELDS = frozenset(BackendTlsSettings.__dataclass_fields__)


def location_error(message: str, srv: Level) -> ConfigError:
    """Errors nginx words as "... for server in FILE:LINE" (the line of the server's "{")."""
    return ConfigError(message, srv.file, srv.line)


def _merge(parser: Parser, mail: Level, srv: Level) -> dict[str, Any]:
    """Server value if set at server level, else the mail-level one, else the default.

    Lists are replaced, not appended to, as ngx_conf_merge_ptr_value() does.
    """
    merged: dict[str, Any] = {}
    for spec in parser.table.values():
        if spec.field is None or not ({"mail", "server"} & spec.contexts):
            continue
        if spec.field in srv.values:
            merged[spec.field] = srv.values[spec.field]
        elif spec.field in mail.values:
            merged[spec.field] = mail.values[spec.field]
        else:
            default = spec.default
            merged[spec.field] = default() if callable(default) else default
    return merged


def _full_ssl_name(parser: Parser, name: str) -> str:
    if name.startswith(("data:", "engine:", "store:")):
        return name
    return parser.full_name(name, conf_prefix=True)


def _check_tls(parser: Parser, mail: Level, srv: Level, m: dict[str, Any],
               end_file: str, end_line: int) -> None:
    """ngx_mail_ssl_merge_conf(): only servers that use TLS need (and load) material."""
    if srv.ssl_listen:
        mode = "listen ... ssl"
    elif m["ssl.enable"]:
        mode = "ssl"
    elif m["ssl.starttls"] != "off":
        mode = "starttls"
    else:
        return
    file, line = (srv.ssl_file, srv.ssl_line) if srv.ssl_file else (mail.ssl_file, mail.ssl_line)
    certs, keys = m["ssl.certificates"], m["ssl.certificate_keys"]
    if not certs:
        raise ConfigError(f'no "ssl_certificate" is defined for the "{mode}" directive',
                          file, line)
    if not keys:
        raise ConfigError(f'no "ssl_certificate_key" is defined for the "{mode}" directive',
                          file, line)
    if len(keys) < len(certs):
        raise ConfigError(f'no "ssl_certificate_key" is defined for certificate "{certs[-1]}" '
                          f'and the "{mode}" directive', file, line)
    tlscheck.check_ciphers(m["ssl.ciphers"])
    passwords = tlscheck.read_passwords(m["ssl.password_file"]) if m["ssl.password_file"] \
        else []
    for cert, key in zip(certs, keys):
        tlscheck.check_certificate(_full_ssl_name(parser, cert), _full_ssl_name(parser, key),
                                   passwords)
    if m["ssl.verify_client"] != "off":
        client, trusted = m["ssl.client_certificate"], m["ssl.trusted_certificate"]
        # nginx 1.22 asks for ssl_client_certificate only; mainline accepts either
        if m["ssl.verify_client"] != "optional_no_ca" and not client and not trusted:
            raise ConfigError("no ssl_client_certificate or ssl_trusted_certificate "
                              "for ssl_verify_client")
        for ca in (client, trusted):
            if ca:
                tlscheck.check_ca_file(parser.full_name(ca, conf_prefix=True))
        if m["ssl.crl"]:
            tlscheck.check_ca_file(parser.full_name(m["ssl.crl"], conf_prefix=True),
                                   "X509_LOOKUP_load_file")
    if m["ssl.dhparam"]:
        tlscheck.check_dhparam(parser.full_name(m["ssl.dhparam"], conf_prefix=True))
    for name in m["ssl.session_ticket_keys"] or ():
        path = parser.full_name(name, conf_prefix=True)
        try:
            size = len(tlscheck.read_file(path))
        except OSError as e:
            raise ConfigError(f'open() "{path}" failed ({e.errno}: {os.strerror(e.errno or 5)})',
                              end_file, end_line) from None
        if size not in (48, 80):
            raise ConfigError(f'"{path}" must be 48 or 80 bytes', end_file, end_line)
    if m["ssl.conf_commands"]:
        tlscheck.check_conf_commands(
            _conf_commands(parser, m), [_full_ssl_name(parser, c) for c in certs],
            m["ssl.verify_client"],
            bool(m["ssl.client_certificate"] or m["ssl.trusted_certificate"]))


def _check_proxy_ssl(parser: Parser, m: dict[str, Any]) -> None:
    """ngx_stream_proxy_set_ssl()'s checks, for servers that may talk TLS to a backend."""
    if m["proxy_ssl.mode"] == "off" and not m["proxy_ssl.auth_header"]:
        return
    tlscheck.check_ciphers(m["proxy_ssl.ciphers"])
    cert, key = m["proxy_ssl.certificate"], m["proxy_ssl.certificate_key"]
    if cert:
        if not key:
            raise ConfigError(f'no "proxy_ssl_certificate_key" is defined for certificate '
                              f'"{cert}"')
        tlscheck.check_certificate(_full_ssl_name(parser, cert), _full_ssl_name(parser, key),
                                   [])
    if m["proxy_ssl.verify"]:
        trusted = m["proxy_ssl.trusted_certificate"]
        if not trusted:
            raise ConfigError("no proxy_ssl_trusted_certificate for proxy_ssl_verify")
        tlscheck.check_ca_file(parser.full_name(trusted, conf_prefix=True))


def _proxy_ssl_settings(parser: Parser, m: dict[str, Any]) -> BackendTlsSettings:
    values = {key[10:]: value for key, value in m.items()
              if key.startswith("proxy_ssl.") and key[10:] in PROXY_SSL_FIELDS}
    trusted, cert, key = values["trusted_certificate"], values["certificate"], \
        values["certificate_key"]
    values.update(
        protocols=tuple(p for p in SSL_PROTOCOL_ORDER if p in values["protocols"]),
        trusted_certificate=parser.full_name(trusted, conf_prefix=True) if trusted else None,
        certificate=_full_ssl_name(parser, cert) if cert else None,
        certificate_key=_full_ssl_name(parser, key) if key else None,
    )
    return BackendTlsSettings(**values)


def _conf_commands(parser: Parser, m: dict[str, Any]) -> list[tuple[str, str]]:
    """ssl_conf_command values; file and directory names made absolute as nginx does."""
    from postern.proxy.tls_conf import takes_path  # pyOpenSSL only for configurations that use it

    return [(name, parser.full_name(value, conf_prefix=True) if takes_path(name) else value)
            for name, value in m["ssl.conf_commands"] or ()]


def _ssl_settings(parser: Parser, m: dict[str, Any]) -> SslSettings:
    def full(name: str | None) -> str | None:
        return parser.full_name(name, conf_prefix=True) if name else None

    values = {key[4:]: value for key, value in m.items()
              if key.startswith("ssl.") and key[4:] in SSL_FIELDS}
    values.update(
        certificates=tuple(_full_ssl_name(parser, c) for c in m["ssl.certificates"] or ()),
        certificate_keys=tuple(_full_ssl_name(parser, k)
                               for k in m["ssl.certificate_keys"] or ()),
        protocols=tuple(p for p in SSL_PROTOCOL_ORDER if p in m["ssl.protocols"]),
        dhparam=full(m["ssl.dhparam"]),
        client_certificate=full(m["ssl.client_certificate"]),
        trusted_certificate=full(m["ssl.trusted_certificate"]),
        crl=full(m["ssl.crl"]),
        session_ticket_keys=tuple(full(k) for k in m["ssl.session_ticket_keys"] or ()),
        conf_commands=tuple(_conf_commands(parser, m)),
    )
    return SslSettings(**values)


def _server_settings(parser: Parser, srv: Level, m: dict[str, Any]) -> ServerSettings:
    values = {key: value for key, value in m.items() if key in SERVER_FIELDS}
    for key, value in values.items():
        if isinstance(value, list):
            values[key] = tuple(value)
        elif isinstance(value, set):
            values[key] = frozenset(value)
    listens = tuple(srv.listens)
    if m["ssl.enable"]:
        listens = with_ssl(listens)
    values.update(
        file=srv.file, line=srv.line, listens=listens, protocol=srv.protocol,
        server_name=m["server_name"] or parser.state["hostname"],
        ssl=_ssl_settings(parser, m),
        proxy_ssl=_proxy_ssl_settings(parser, m),
    )
    return ServerSettings(**values)


def build_servers(parser: Parser, mail: Level, servers: list[Level], end_file: str,
                  end_line: int) -> list[ServerSettings]:
    merged = [_merge(parser, mail, srv) for srv in servers]
    for srv in servers:
        if srv.protocol is None:
            raise location_error("unknown mail protocol for server", srv)
    for srv, m in zip(servers, merged):
        _check_tls(parser, mail, srv, m, end_file, end_line)
        _check_proxy_ssl(parser, m)
    for srv, m in zip(servers, merged):
        if m["auth_http"] is None:
            raise location_error('no "auth_http" is defined for server', srv)
        authclient.check(parser, srv, m)  # the auth_http client beyond nginx
    for m in merged:
        limits.resolve(parser, m)
    return [_server_settings(parser, srv, m) for srv, m in zip(servers, merged)]


def _check_log_files(parser: Parser) -> None:
    """ngx_init_cycle() opens every log file after parsing; so does `nginx -t`."""
    seen = set()
    for path in parser.state.get("log_files", ()):
        if path in seen:
            continue
        seen.add(path)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
        except OSError as e:
            raise ConfigError(f'open() "{path}" failed ({e.errno}: {os.strerror(e.errno or 5)})'
                              ) from None


def build_main(parser: Parser, main: Level, conf_file: str) -> MainSettings:
    events = parser.state.get("events")
    if events is None:
        raise ConfigError('no "events" section in configuration')
    servers = tuple(parser.state.get("server_settings", ()))
    connections = events.values.get("worker_connections", 512)
    listening = count_listening(ls for s in servers for ls in s.listens)
    if connections < listening + 1:
        raise ConfigError(f"{connections} worker_connections are not enough "
                          f"for {listening} listening sockets")
    _check_log_files(parser)
    pid = main.values.get("pid", "logs/nginx.pid")
    values = main.values
    return MainSettings(
        conf_file=conf_file,
        prefix=parser.prefix,
        servers=servers,
        worker_processes=values.get("worker_processes", 1),
        pid=None if pid == "off" else parser.full_name(pid),
        error_logs=tuple(values.get("error_logs", ())),
        daemon=values.get("daemon", True),
        master_process=values.get("master_process", True),
        worker_connections=connections,
        worker_shutdown_timeout=values.get("worker_shutdown_timeout"),
        worker_rlimit_nofile=values.get("worker_rlimit_nofile"),
        user=values.get("user"),
        warnings=tuple(parser.warnings),
        limit_zones=tuple(parser.state.get("limit_zones", {}).values()),
        metrics_listen=parser.state.get("metrics_listen"),
    )
