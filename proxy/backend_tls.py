"""TLS towards the backend (proxy_ssl*), sans-IO, as nginx's stream proxy does it upstream.

nginx's mail module talks plaintext to its backends; Postern can put TLS under the backend
login, implicit (`proxy_ssl on`) or after the protocol's STARTTLS (`proxy_ssl starttls`).

* BackendTlsContext: one client-side OpenSSL context per server{}, built from its proxy_ssl_*
  directives in ngx_stream_proxy_set_ssl()'s order, with the sessions kept for reuse.
* BackendTlsConnection: proxy.tls.TlsConnection in the connect state, plus the checks of
  ngx_stream_proxy_ssl_handshake(): the verify result, which here also covers the name
  (X509_VERIFY_PARAM_set1_host / _set1_ip: pyOpenSSL's bindings lack X509_check_host, so a
  mismatch reads "(62:hostname mismatch)" rather than nginx's "does not match").
* backend_tls_mode(): the directive, or the auth reply's Auth-Backend-TLS where allowed.
"""

from __future__ import annotations

import ipaddress
import weakref

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from postern.proxy.conf.settings import BackendTlsSettings, ServerSettings
from postern.proxy.tls import _NO_PROTOCOL, _VERIFY_CALLBACK, TlsConnection, _load_key
from postern.proxy.tls_headers import verify_error_text

MODES = ("off", "on", "starttls")
HANDSHAKING = "SSL handshaking to upstream"  # nginx stream's log action


class BackendTlsContext:
    """The client context of one server{} and the sessions it may resume (per worker)."""

    def __init__(self, conf: BackendTlsSettings) -> None:
        self.conf = conf
        self.sessions: dict[tuple[str, int, str], SSL.Session] = {}
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(0)
        ctx.set_max_proto_version(0)
        options = SSL.OP_NO_COMPRESSION | _lib.SSL_OP_NO_RENEGOTIATION
        for name, flag in _NO_PROTOCOL.items():
            if name not in conf.protocols:
                options |= flag
        ctx.set_options(options)
        ctx.set_cipher_list(conf.ciphers.encode("utf-8", "surrogateescape"))
        if conf.certificate and conf.certificate_key:
            ctx.use_certificate_chain_file(conf.certificate.encode())
            ctx.use_privatekey(_load_key(conf.certificate_key, []))
            ctx.check_privatekey()
        if conf.verify:
            # ngx_ssl_verify_callback: the handshake ends either way, the result is judged
            # afterwards so that the log line can say why
            _lib.SSL_CTX_set_verify(ctx._context, SSL.VERIFY_PEER, _VERIFY_CALLBACK)
            ctx.set_verify_depth(conf.verify_depth)
            ctx.load_verify_locations(conf.trusted_certificate.encode())
        ctx.set_session_cache_mode(SSL.SESS_CACHE_CLIENT if conf.session_reuse
                                   else SSL.SESS_CACHE_OFF)
        self.context = ctx

    def connection(self, host: str, port: int, name: str | None = None) -> BackendTlsConnection:
        return BackendTlsConnection(self, host, port, name)


_contexts: dict[int, tuple[weakref.ref, BackendTlsContext]] = {}


def backend_context(conf: ServerSettings) -> BackendTlsContext:
    """The one client context of a server{}, built at its first use in a worker (the
    configuration checks ran at load time, so building cannot fail on a file)."""
    entry = _contexts.get(id(conf))
    if entry is not None and entry[0]() is conf:
        return entry[1]
    for key in [k for k, (ref, _) in _contexts.items() if ref() is None]:
        del _contexts[key]
    ctx = BackendTlsContext(conf.proxy_ssl)
    _contexts[id(conf)] = (weakref.ref(conf), ctx)
    return ctx


def backend_tls_mode(conf: BackendTlsSettings, reply) -> tuple[str, str | None]:
    """(mode, name) for one session: proxy_ssl and proxy_ssl_name, or with
    `proxy_ssl_auth_header on` the auth reply's Auth-Backend-TLS (on|starttls|off) and
    Auth-Backend-TLS-Name. An unknown Auth-Backend-TLS value keeps the directive's mode."""
    mode, name = conf.mode, conf.name
    if conf.auth_header and reply is not None:
        chosen = (reply.backend_tls or b"").decode("latin-1").lower()
        if chosen in MODES:
            mode = chosen
        if reply.backend_tls_name:
            name = reply.backend_tls_name.decode("latin-1")
    return mode, name


def _strip_port(name: str) -> str:
    """ngx_stream_proxy_ssl_name(): a port after the name is dropped."""
    if name.startswith("["):
        end = name.find("]")
        return name[1:end] if end > 0 else name
    return name.partition(":")[0] if name.count(":") == 1 else name


class BackendTlsConnection(TlsConnection):
    """One backend's TLS endpoint over memory BIOs: begin() gives the ClientHello, then
    receive()/encrypt()/outgoing() as for a client connection."""

    __slots__ = ("context", "key", "name")

    def __init__(self, context: BackendTlsContext, host: str, port: int,
                 name: str | None) -> None:
        conf = context.conf
        self.context = context
        self.server = None
        self.established = self.peer_closed = self.failed = False
        self.name = _strip_port(name or host)
        self.key = (host, port, self.name)
        ssl = self._ssl = SSL.Connection(context.context, None)
        ssl.set_connect_state()
        try:
            ip = ipaddress.ip_address(self.name)
        except ValueError:
            ip = None
        if conf.server_name and ip is None and self.name:
            # RFC 6066: no IP literals in SNI
            ssl.set_tlsext_host_name(self.name.encode("idna"))
        if conf.verify:
            param = _lib.SSL_get0_param(ssl._ssl)
            if ip is not None:
                raw = ip.packed
                _lib.X509_VERIFY_PARAM_set1_ip(param, raw, len(raw))
            else:
                name = self.name.encode()
                _lib.X509_VERIFY_PARAM_set1_host(param, name, len(name))
        if conf.session_reuse:
            session = context.sessions.get(self.key)
            if session is not None:
                ssl.set_session(session)

    def begin(self) -> bytes:
        """The ClientHello."""
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            pass
        return self.outgoing()

    def check_peer(self) -> str | None:
        """ngx_stream_proxy_ssl_handshake(): None, or the error line for a certificate that
        proxy_ssl_verify refuses."""
        if not self.context.conf.verify:
            return None
        rc = self.verify_result()
        if rc == _lib.X509_V_OK and self._ssl.get_peer_certificate() is None:
            rc = _lib.X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT  # nothing was verified at all
        if rc != _lib.X509_V_OK:
            return f"upstream SSL certificate verify error: ({rc}:{verify_error_text(rc)})"
        return None

    def save_session(self) -> None:
        """proxy_ssl_session_reuse: the next connection to this backend resumes this one
        (called once logged in, when TLS 1.3 tickets have arrived)."""
        if self.context.conf.session_reuse:
            session = self._ssl.get_session()
            if session is not None and session._session != _ffi.NULL:
                self.context.sessions[self.key] = session

    def shut_quietly(self) -> None:
        """As ngx_ssl_shutdown() leaves every connection: marked shut both ways, so that
        freeing it does not take its session out of reuse (OpenSSL drops the session of a
        connection freed without a shutdown)."""
        self._ssl.set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)
