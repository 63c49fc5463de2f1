"""Frozen, typed settings: what the rest of Postern reads after the config is parsed.

Nothing outside proxy/conf/ ever looks at raw directive tuples. Times are float seconds,
sizes are int bytes, method sets are frozensets of lowercase names.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

PAGE_SIZE = 4096

# in nginx's bit order, which is also the order capabilities list them; xoauth2 and
# oauthbearer are Postern's (RFC 7628 and Google's XOAUTH2), off unless listed
IMAP_METHODS = ("plain", "login", "cram-md5", "external", "xoauth2", "oauthbearer")
POP3_METHODS = ("plain", "apop", "cram-md5", "external", "xoauth2", "oauthbearer")
SMTP_METHODS = ("plain", "login", "cram-md5", "external", "none", "xoauth2", "oauthbearer")


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
class LogVar:
    """A variable of a log format (its lowercased name)."""

    name: str


@dataclass(frozen=True)
class LogFormat:
    """One `log_format`: literal text and variables, in order."""

    name: str
    escape: str  # "default" | "json" | "none"
    parts: tuple[str | LogVar, ...]


@dataclass(frozen=True)
class AccessLog:
    """One `access_log` of a server (proxy.access_log writes it)."""

    path: str  # absolute; "" for syslog
    format: LogFormat
    buffer: int = 0  # bytes; 0: every line written at once
    flush: float = 0.0  # seconds a buffered line may wait; 0: until the buffer fills
    condition: LogFormat | None = None  # if=: no line when it is empty or "0"
    syslog: LogTarget | None = None  # access_log syslog:server=...
    gzip: int = 0  # compression level of each buffer written; 0: none


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
    ssl: bool = False  # an https:// URL (nginx rejects those)
    max_fails: int = 1  # failover (auth_http_backup): nginx upstream's defaults
    fail_timeout: float = 10.0


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
class LimitZone:
    """limit_conn_zone / limit_req_zone / limit_auth_zone: a zone shared by all workers."""

    name: str
    kind: str  # "conn" | "req" | "auth"
    key: str  # "$binary_remote_addr" | "$remote_addr" | "$login"
    size: int  # bytes
    rate: float = 0.0  # req: requests per second
    failures: int = 5  # auth: the failures in `window` that start a block
    window: float = 60.0  # auth: seconds
    delay: float = 0.0  # auth: seconds before each refused login is answered
    block: float = 300.0  # auth: seconds


@dataclass(frozen=True)
class LimitRule:
    """One limit_conn / limit_req / limit_auth directive, its zone resolved."""

    zone: LimitZone
    number: int = 0  # limit_conn: sessions allowed at once
    burst: int = 0  # limit_req
    delay: float = 0.0  # limit_req: excess served without waiting (inf: nodelay)


@dataclass(frozen=True)
class BackendTlsSettings:
    """TLS towards the backends (proxy_ssl_*, in the style of nginx's stream proxy); not in
    nginx's mail module, so off unless configured."""

    mode: str = "off"  # proxy_ssl: "off" | "on" (implicit TLS) | "starttls"
    auth_header: bool = False  # proxy_ssl_auth_header: Auth-Backend-TLS may choose per user
    verify: bool = False
    trusted_certificate: str | None = None
    name: str | None = None  # None: the backend's host (Auth-Server)
    server_name: bool = False  # send SNI
    certificate: str | None = None
    certificate_key: str | None = None
    protocols: tuple[str, ...] = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
    ciphers: str = "DEFAULT"
    session_reuse: bool = True
    verify_depth: int = 1

    @property
    def used(self) -> bool:
        """Whether any session of the server may talk TLS to its backend."""
        return self.mode != "off" or self.auth_header


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
    access_logs: tuple[AccessLog, ...] = ()  # empty: no access log (the default)
    auth_http_headers: tuple[tuple[str, str], ...] = ()
    auth_http_timeout: float = 60.0
    auth_http_pass_client_cert: bool = False
    # the auth_http client beyond nginx (proxy/auth_pool.py); defaults are nginx's behaviour
    auth_http_backups: tuple[AuthHttp, ...] = ()
    auth_http_keepalive: int = 0
    auth_http_keepalive_timeout: float = 60.0
    auth_http_server_names: bool = False
    auth_http_ssl_verify: bool = True
    auth_http_ssl_trusted_certificate: str | None = None
    auth_http_ssl_name: str | None = None
    auth_http_ssl_certificate: str | None = None
    auth_http_ssl_certificate_key: str | None = None
    proxy_buffer: int = PAGE_SIZE
    proxy_pass_error_message: bool = False
    proxy_protocol: str = "off"  # "off" | "on" | "v2"
    proxy_client_identity: bool = False  # IMAP ID / POP3 XCLIENT before the backend login
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
    proxy_ssl: BackendTlsSettings = field(default_factory=BackendTlsSettings)
    set_real_ip_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network | str, ...] = ()
    limit_conn: tuple[LimitRule, ...] = ()
    limit_req: tuple[LimitRule, ...] = ()
    limit_auth: tuple[LimitRule, ...] = ()
    limit_conn_log_level: str = "error"
    limit_req_log_level: str = "error"
    limit_auth_log_level: str = "error"


@dataclass(frozen=True)
class MetricsListen:
    """`metrics_listen`: where the Prometheus exposition and the health check are served."""

    text: str  # as written in log lines: "127.0.0.1:9145", "[::1]:9145"
    host: str  # IP literal ("0.0.0.0" for *)
    port: int


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
    limit_zones: tuple[LimitZone, ...] = ()  # created by the master, shared by its workers
    metrics_listen: MetricsListen | None = None  # off unless mail{} says metrics_listen
