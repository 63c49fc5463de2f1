"""Frozen, typed settings: what the rest of Postern reads after the config is parsed.

Nothing outside proxy/conf/ ever looks at raw directive tuples. Times are float seconds,
sizes are int bytes, method sets are frozensets of lowercase names.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

PAGE_SIZE = 4096

IMAP_METHODS = ("plain", "login", "cram-md5", "external")
POP3_METHODS = ("plain", "apop", "cram-md5", "external")
SMTP_METHODS = ("plain", "login", "cram-md5", "external", "none")


@dataclass(frozen=True)
class LogTarget:
    """One error_log destination: a file path, 'stderr', or a syslog server."""

    kind: str  # "file" | "stderr" | "syslog"
    level: str = "error"  # debug info notice warn error crit alert emerg
    path: str | None = None  # kind == "file": absolute path (prefix already applied)
    syslog_host: str | None = None  # kind == "syslog": IP literal
    syslog_port: int = 514
    syslog_facility: str = "local7"
    syslog_severity: str = "info"
    syslog_tag: str = "nginx"
    syslog_nohostname: bool = False
    syslog_unix_path: str | None = None  # syslog:server=unix:/dev/log


@dataclass(frozen=True)
class Listen:
    """One `listen` directive, resolved to one bindable address."""

    text: str  # as nginx prints it in logs: "127.0.0.1:1143", "[::1]:143", "unix:/p"
    host: str | None  # IP literal ("0.0.0.0" for *), None for unix
    port: int | None
    unix_path: str | None = None
    ssl: bool = False
    proxy_protocol: bool = False
    backlog: int = 511
    rcvbuf: int | None = None
    sndbuf: int | None = None
    ipv6only: bool = True
    so_keepalive: str | None = None  # "on" | "off" | "idle:intvl:cnt"
    bind: bool = False


@dataclass(frozen=True)
class AuthHttp:
    """The `auth_http` URL, split as nginx splits it at configuration time."""

    text: str  # the peer as nginx names it in log lines: "127.0.0.1:9000", "unix:/path"
    host_header: str  # Host: value ("127.0.0.1", "[::1]", "localhost" for unix)
    uri: str  # "/" when no path was given
    addr: str | None = None  # first resolved IP address
    port: int = 80
    unix_path: str | None = None


@dataclass(frozen=True)
class Resolver:
    addresses: tuple[tuple[str, int], ...]  # (ip, port) of each DNS server
    valid: float | None = None  # seconds, overrides answer TTL when set
    ipv4: bool = True
    ipv6: bool = True


@dataclass(frozen=True)
class SslSettings:
    starttls: str = "off"  # "off" | "on" | "only"
    certificates: tuple[str, ...] = ()
    certificate_keys: tuple[str, ...] = ()
    password_file: str | None = None
    protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    ciphers: str = "HIGH:!aNULL:!MD5"
    prefer_server_ciphers: bool = False
    ecdh_curve: str = "auto"
    dhparam: str | None = None
    session_cache: str = "none"  # as written: "off", "none", "builtin:1000 shared:SSL:10m"
    session_tickets: bool = True
    session_ticket_keys: tuple[str, ...] = ()
    session_timeout: float = 300.0
    verify_client: str = "off"  # "off" | "on" | "optional" | "optional_no_ca"
    client_certificate: str | None = None
    trusted_certificate: str | None = None
    verify_depth: int = 1
    crl: str | None = None
    conf_commands: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ServerSettings:
    """One mail `server {}` with every mail-level value already inherited into it."""

    file: str
    line: int
    listens: tuple[Listen, ...]
    protocol: str  # "imap" | "pop3" | "smtp"
    auth_http: AuthHttp
    server_name: str
    timeout: float = 60.0
    resolver: Resolver | None = None
    resolver_timeout: float = 30.0
    max_errors: int = 5
    error_logs: tuple[LogTarget, ...] = ()  # empty: the main error_log applies
    auth_http_headers: tuple[tuple[str, str], ...] = ()
    auth_http_timeout: float = 60.0
    auth_http_pass_client_cert: bool = False
    proxy_buffer: int = PAGE_SIZE
    proxy_pass_error_message: bool = False
    proxy_protocol: str = "off"  # "off" | "on" | "v2"
    proxy_smtp_auth: bool = False
    proxy_timeout: float = 86400.0
    xclient: bool = True
    record_sessions: str | None = None  # Postern's: a JSON-lines file (proxy/recorder.py)
    imap_auth: frozenset[str] = frozenset({"plain"})
    imap_capabilities: tuple[str, ...] = ("IMAP4", "IMAP4rev1", "UIDPLUS")
    imap_client_buffer: int = PAGE_SIZE
    pop3_auth: frozenset[str] = frozenset({"plain"})
    pop3_capabilities: tuple[str, ...] = ("TOP", "USER", "UIDL")
    smtp_auth: frozenset[str] = frozenset({"plain", "login"})
    smtp_capabilities: tuple[str, ...] = ()
    smtp_client_buffer: int = PAGE_SIZE
    smtp_greeting_delay: float = 0.0
    ssl: SslSettings = field(default_factory=SslSettings)
    set_real_ip_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network | str, ...] = ()


@dataclass(frozen=True)
class MainSettings:
    """The whole configuration: main context plus the servers of the mail block."""

    conf_file: str
    prefix: str
    servers: tuple[ServerSettings, ...]
    worker_processes: int = 1
    pid: str | None = None  # absolute path; None means "pid off"
    error_logs: tuple[LogTarget, ...] = ()
    daemon: bool = True
    master_process: bool = True
    worker_connections: int = 512
    worker_shutdown_timeout: float | None = None
    worker_rlimit_nofile: int | None = None  # RLIMIT_NOFILE to set in workers
    user: tuple[str, str] | None = None  # (user, group) to switch to when started as root
    warnings: tuple[str, ...] = ()  # "[warn]" messages produced while parsing
