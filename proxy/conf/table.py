"""The directive table: every directive Postern knows, in one place.

Each row gives the name, the contexts it may appear in, how many arguments it takes,
the handler that checks and stores its value, the field it fills and that field's
default. Fields of mail/server directives are inherited from mail{} into each server{}
(see build.py); "ssl."-prefixed fields end up in SslSettings.
"""

from __future__ import annotations

import socket

import crossplane.analyzer

from . import accesslog as al
from . import authclient as ac
from . import handlers as h
from . import limits as lim
from . import slots as s
from .engine import Directive
from .settings import IMAP_METHODS, PAGE_SIZE, POP3_METHODS, SMTP_METHODS

MAIN, EVENTS, MAIL, SERVER, ANY = "main", "events", "mail", "server", "any"
MS = frozenset({MAIL, SERVER})
MANY = None  # no upper bound on the argument count

# Names some nginx module defines (http, stream, ...): using one where it does not
# belong is "not allowed here" in nginx, not "unknown directive".
NGINX_DIRECTIVES = frozenset(crossplane.analyzer.DIRECTIVES)


def hostname() -> str:
    return socket.gethostname().lower()  # nginx lowercases the host name it caches


def _d(name: str, contexts: frozenset[str] | str, nargs: tuple[int, int | None], handler,
       field: str | None = None, default=None, block: bool = False) -> Directive:
    if isinstance(contexts, str):
        contexts = frozenset({contexts})
    return Directive(name, contexts, nargs[0], nargs[1], handler, block, field, default)


NOARGS, TAKE1, TAKE2, TAKE12, TAKE23 = (0, 0), (1, 1), (2, 2), (1, 2), (2, 3)
FLAG, MORE1 = (1, 1), (1, MANY)

_ROWS = [
    # core, main context (ngx_core_module, ngx_errlog_module, ngx_conf_module, ...)
    _d("daemon", MAIN, FLAG, s.flag("daemon")),
    _d("master_process", MAIN, FLAG, s.flag("master_process")),
    _d("timer_resolution", MAIN, TAKE1, s.msec("timer_resolution")),
    _d("pid", MAIN, TAKE1, s.string("pid")),
    _d("lock_file", MAIN, TAKE1, s.string("lock_file")),
    _d("worker_processes", MAIN, TAKE1, h.worker_processes),
    _d("debug_points", MAIN, TAKE1, s.enum("debug_points", ("stop", "abort"))),
    _d("user", MAIN, TAKE12, h.user),
    _d("worker_priority", MAIN, TAKE1, h.worker_priority),
    _d("worker_cpu_affinity", MAIN, MORE1, s.ignored("worker_cpu_affinity")),
    _d("worker_rlimit_nofile", MAIN, TAKE1, s.num("worker_rlimit_nofile")),
    _d("worker_rlimit_core", MAIN, TAKE1, s.size("worker_rlimit_core", offset=True)),
    _d("worker_shutdown_timeout", MAIN, TAKE1, s.msec("worker_shutdown_timeout")),
    _d("working_directory", MAIN, TAKE1, s.string("working_directory")),
    _d("env", MAIN, TAKE1, s.ignored()),
    _d("load_module", MAIN, TAKE1, s.ignored()),
    _d("pcre_jit", MAIN, FLAG, s.flag("pcre_jit")),
    _d("thread_pool", MAIN, TAKE23, s.ignored()),
    _d("ssl_engine", MAIN, TAKE1, s.string("ssl_engine")),
    _d("error_log", frozenset({MAIN, MAIL, SERVER}), MORE1, h.error_log, "error_logs", ()),
    _d("include", ANY, TAKE1, h.include),
    _d("events", MAIN, NOARGS, h.events, block=True),
    _d("mail", MAIN, NOARGS, h.mail, block=True),
    _d("http", MAIN, NOARGS, h.not_a_mail_block, block=True),
    _d("stream", MAIN, NOARGS, h.not_a_mail_block, block=True),
    # events {}
    _d("worker_connections", EVENTS, TAKE1, h.worker_connections),
    _d("use", EVENTS, TAKE1, h.use),
    _d("multi_accept", EVENTS, FLAG, s.flag("multi_accept")),
    _d("accept_mutex", EVENTS, FLAG, s.flag("accept_mutex")),
    _d("accept_mutex_delay", EVENTS, TAKE1, s.msec("accept_mutex_delay")),
    _d("debug_connection", EVENTS, TAKE1, s.ignored()),
    _d("worker_aio_requests", EVENTS, TAKE1, s.num("worker_aio_requests")),
    # ngx_mail_core_module
    _d("server", MAIL, NOARGS, h.server, block=True),
    _d("listen", SERVER, MORE1, h.listen),
    _d("protocol", SERVER, TAKE1, h.protocol),
    _d("timeout", MS, TAKE1, s.msec("timeout"), "timeout", 60.0),
    _d("server_name", MS, TAKE1, s.string("server_name"), "server_name", ""),
    _d("resolver", MS, MORE1, h.resolver, "resolver", None),
    _d("resolver_timeout", MS, TAKE1, s.msec("resolver_timeout"), "resolver_timeout", 30.0),
    _d("max_errors", MS, TAKE1, s.num("max_errors"), "max_errors", 5),
    # Postern's own (README: Beyond nginx)
    _d("metrics_listen", MAIL, TAKE1, h.metrics_listen),
    # ngx_mail_auth_http_module
    _d("auth_http", MS, TAKE1, h.auth_http, "auth_http", None),
    _d("auth_http_timeout", MS, TAKE1, s.msec("auth_http_timeout"), "auth_http_timeout",
       60.0),
    _d("auth_http_header", MS, TAKE2, s.keyval("auth_http_headers"), "auth_http_headers", ()),
    _d("auth_http_pass_client_cert", MS, FLAG, s.flag("auth_http_pass_client_cert"),
       "auth_http_pass_client_cert", False),
    # the auth_http client beyond nginx: conf/authclient.py, proxy/auth_pool.py
    _d("auth_http_backup", MS, MORE1, ac.backup, "auth_http_backups", ()),
    _d("auth_http_keepalive", MS, TAKE1, s.num("auth_http_keepalive"), "auth_http_keepalive",
       0),
    _d("auth_http_keepalive_timeout", MS, TAKE1, s.msec("auth_http_keepalive_timeout"),
       "auth_http_keepalive_timeout", 60.0),
    _d("auth_http_server_names", MS, FLAG, s.flag("auth_http_server_names"),
       "auth_http_server_names", False),
    _d("auth_http_ssl_verify", MS, FLAG, s.flag("auth_http_ssl_verify"),
       "auth_http_ssl_verify", True),
    _d("auth_http_ssl_trusted_certificate", MS, TAKE1,
       s.string("auth_http_ssl_trusted_certificate"), "auth_http_ssl_trusted_certificate"),
    _d("auth_http_ssl_name", MS, TAKE1, s.string("auth_http_ssl_name"), "auth_http_ssl_name"),
    _d("auth_http_ssl_certificate", MS, TAKE1, s.string("auth_http_ssl_certificate"),
       "auth_http_ssl_certificate"),
    _d("auth_http_ssl_certificate_key", MS, TAKE1, s.string("auth_http_ssl_certificate_key"),
       "auth_http_ssl_certificate_key"),
    # ngx_mail_proxy_module
    _d("proxy", MS, FLAG, s.flag("proxy"), "proxy", False),  # parsed, has no effect
    _d("proxy_buffer", MS, TAKE1, s.size("proxy_buffer"), "proxy_buffer", PAGE_SIZE),
    _d("proxy_timeout", MS, TAKE1, s.msec("proxy_timeout"), "proxy_timeout", 86400.0),
    _d("proxy_pass_error_message", MS, FLAG, s.flag("proxy_pass_error_message"),
       "proxy_pass_error_message", False),
    _d("xclient", MS, FLAG, s.flag("xclient"), "xclient", True),
    _d("proxy_smtp_auth", MS, FLAG, s.flag("proxy_smtp_auth"), "proxy_smtp_auth", False),
    _d("proxy_protocol", MS, FLAG, h.proxy_protocol, "proxy_protocol", "off"),
    # Postern's own (nginx lacks it): IMAP ID / POP3 XCLIENT with the client's address
    _d("proxy_client_identity", MS, FLAG, s.flag("proxy_client_identity"),
       "proxy_client_identity", False),
    # Postern's own: one JSON line per session with its command shapes (proxy/recorder.py)
    _d("record_sessions", MS, TAKE1, h.record_sessions, "record_sessions", None),
    # ngx_mail_imap_module, ngx_mail_pop3_module, ngx_mail_smtp_module
    _d("imap_auth", MS, MORE1, s.bitmask("imap_auth", IMAP_METHODS), "imap_auth",
       frozenset({"plain"})),
    _d("imap_capabilities", MS, MORE1, s.append_all("imap_capabilities"),
       "imap_capabilities", ("IMAP4", "IMAP4rev1", "UIDPLUS")),
    _d("imap_client_buffer", MS, TAKE1, s.size("imap_client_buffer"), "imap_client_buffer",
       PAGE_SIZE),
    _d("pop3_auth", MS, MORE1, s.bitmask("pop3_auth", POP3_METHODS), "pop3_auth",
       frozenset({"plain"})),
    _d("pop3_capabilities", MS, MORE1, s.append_all("pop3_capabilities"),
       "pop3_capabilities", ("TOP", "USER", "UIDL")),
    _d("smtp_auth", MS, MORE1, s.bitmask("smtp_auth", SMTP_METHODS), "smtp_auth",
       frozenset({"plain", "login"})),
    _d("smtp_capabilities", MS, MORE1, s.append_all("smtp_capabilities"),
       "smtp_capabilities", ()),
    _d("smtp_client_buffer", MS, TAKE1, s.size("smtp_client_buffer"), "smtp_client_buffer",
       PAGE_SIZE),
    _d("smtp_greeting_delay", MS, TAKE1, s.msec("smtp_greeting_delay"),
       "smtp_greeting_delay", 0.0),
    # ngx_mail_ssl_module
    _d("ssl", MS, FLAG, s.flag("ssl.enable", after=h.ssl_after), "ssl.enable", False),
    _d("starttls", MS, TAKE1,
       s.enum("ssl.starttls", ("off", "on", "only"), after=h.starttls_after),
       "ssl.starttls", "off"),
    _d("ssl_certificate", MS, TAKE1, s.str_array("ssl.certificates"), "ssl.certificates"),
    _d("ssl_certificate_key", MS, TAKE1, s.str_array("ssl.certificate_keys"),
       "ssl.certificate_keys"),
    _d("ssl_certificate_compression", MS, FLAG, s.flag("ssl.certificate_compression"),
       "ssl.certificate_compression", False),
    _d("ssl_password_file", MS, TAKE1, h.ssl_password_file, "ssl.password_file"),
    _d("ssl_dhparam", MS, TAKE1, s.string("ssl.dhparam"), "ssl.dhparam"),
    _d("ssl_ecdh_curve", MS, TAKE1, s.string("ssl.ecdh_curve"), "ssl.ecdh_curve", "auto"),
    _d("ssl_protocols", MS, MORE1,
       s.bitmask("ssl.protocols", ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2",
                                   "TLSv1.3")),
       "ssl.protocols", frozenset({"TLSv1.2", "TLSv1.3"})),
    _d("ssl_ciphers", MS, TAKE1, s.string("ssl.ciphers"), "ssl.ciphers", "HIGH:!aNULL:!MD5"),
    _d("ssl_prefer_server_ciphers", MS, FLAG, s.flag("ssl.prefer_server_ciphers"),
       "ssl.prefer_server_ciphers", False),
    _d("ssl_session_cache", MS, TAKE12, h.ssl_session_cache, "ssl.session_cache", "none"),
    _d("ssl_session_tickets", MS, FLAG, s.flag("ssl.session_tickets"), "ssl.session_tickets",
       True),
    _d("ssl_session_ticket_key", MS, TAKE1, s.str_array("ssl.session_ticket_keys"),
       "ssl.session_ticket_keys"),
    _d("ssl_session_timeout", MS, TAKE1, s.sec("ssl.session_timeout"), "ssl.session_timeout",
       300.0),
    _d("ssl_verify_client", MS, TAKE1,
       s.enum("ssl.verify_client", ("off", "on", "optional", "optional_no_ca")),
       "ssl.verify_client", "off"),
    _d("ssl_verify_depth", MS, TAKE1, s.num("ssl.verify_depth"), "ssl.verify_depth", 1),
    _d("ssl_client_certificate", MS, TAKE1, s.string("ssl.client_certificate"),
       "ssl.client_certificate"),
    _d("ssl_trusted_certificate", MS, TAKE1, s.string("ssl.trusted_certificate"),
       "ssl.trusted_certificate"),
    _d("ssl_crl", MS, TAKE1, s.string("ssl.crl"), "ssl.crl"),
    _d("ssl_conf_command", MS, TAKE2, s.keyval("ssl.conf_commands"), "ssl.conf_commands"),
    # Postern: a per-session access log, as nginx's stream module has it
    _d("log_format", MAIL, (2, MANY), al.log_format),
    _d("access_log", MS, MORE1, al.access_log, "access_logs", ()),
    # TLS to the backends, named after ngx_stream_proxy_module's proxy_ssl_* (not in nginx's
    # mail module: off by default); "proxy_ssl." fields end up in BackendTlsSettings
    _d("proxy_ssl", MS, TAKE1, s.enum("proxy_ssl.mode", ("off", "on", "starttls")),
       "proxy_ssl.mode", "off"),
    _d("proxy_ssl_auth_header", MS, FLAG, s.flag("proxy_ssl.auth_header"),
       "proxy_ssl.auth_header", False),
    _d("proxy_ssl_verify", MS, FLAG, s.flag("proxy_ssl.verify"), "proxy_ssl.verify", False),
    _d("proxy_ssl_trusted_certificate", MS, TAKE1, s.string("proxy_ssl.trusted_certificate"),
       "proxy_ssl.trusted_certificate"),
    _d("proxy_ssl_name", MS, TAKE1, s.string("proxy_ssl.name"), "proxy_ssl.name"),
    _d("proxy_ssl_server_name", MS, FLAG, s.flag("proxy_ssl.server_name"),
       "proxy_ssl.server_name", False),
    _d("proxy_ssl_certificate", MS, TAKE1, s.string("proxy_ssl.certificate"),
       "proxy_ssl.certificate"),
    _d("proxy_ssl_certificate_key", MS, TAKE1, s.string("proxy_ssl.certificate_key"),
       "proxy_ssl.certificate_key"),
    _d("proxy_ssl_protocols", MS, MORE1,
       s.bitmask("proxy_ssl.protocols", ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2",
                                         "TLSv1.3")),
       "proxy_ssl.protocols", frozenset({"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"})),
    _d("proxy_ssl_ciphers", MS, TAKE1, s.string("proxy_ssl.ciphers"), "proxy_ssl.ciphers",
       "DEFAULT"),
    _d("proxy_ssl_session_reuse", MS, FLAG, s.flag("proxy_ssl.session_reuse"),
       "proxy_ssl.session_reuse", True),
    _d("proxy_ssl_verify_depth", MS, TAKE1, s.num("proxy_ssl.verify_depth"),
       "proxy_ssl.verify_depth", 1),
    # ngx_mail_realip_module
    _d("set_real_ip_from", MS, TAKE1, h.set_real_ip_from, "set_real_ip_from", ()),
    # limits across workers (Postern's own; nginx's mail module has none)
    _d("limit_conn_zone", MAIL, (2, 2), lim.zone),
    _d("limit_req_zone", MAIL, (2, 3), lim.zone),
    _d("limit_auth_zone", MAIL, (2, 6), lim.zone),
    _d("limit_conn", MS, TAKE2, lim.limit_conn, "limit_conn", ()),
    _d("limit_req", MS, (1, 4), lim.limit_req, "limit_req", ()),
    _d("limit_auth", MS, TAKE1, lim.limit_auth, "limit_auth", ()),
    _d("limit_conn_log_level", MS, TAKE1, s.enum("limit_conn_log_level", lim.LOG_LEVELS),
       "limit_conn_log_level", "error"),
    _d("limit_req_log_level", MS, TAKE1, s.enum("limit_req_log_level", lim.LOG_LEVELS),
       "limit_req_log_level", "error"),
    _d("limit_auth_log_level", MS, TAKE1, s.enum("limit_auth_log_level", lim.LOG_LEVELS),
       "limit_auth_log_level", "error"),
]

TABLE: dict[str, Directive] = {row.name: row for row in _ROWS}
