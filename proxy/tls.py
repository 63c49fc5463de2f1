"""TLS towards clients, as nginx's ngx_mail_ssl_module does it (docs/behaviour.md §2.7, §4.4).

Two pieces:

* TlsServer: one OpenSSL context per mail server{}, built from its ssl_* directives in
  nginx's order (ngx_ssl_create, certificates, ciphers, client verification, DH, curves,
  session cache, tickets). pyOpenSSL rather than the stdlib ssl module, because nginx's
  behaviour needs what the stdlib cannot say: a verify callback that lets the handshake
  finish so the protocol can answer `* BYE SSL certificate error` itself, an ALPN callback
  that aborts with no_application_protocol, the session-cache modes and the session id
  context.
* TlsConnection: a sans-IO TLS endpoint over memory BIOs. The session feeds it raw bytes
  and gets plaintext back, hands it plaintext and gets records back. Implicit TLS,
  STARTTLS and TLS after a PROXY header all go through it, and the relay moves whole
  chunks through it (one call per chunk, no per-byte Python).

What pyOpenSSL cannot reach (no SSL_CTX_ctrl in its bindings): ssl_session_ticket_key
(tickets use OpenSSL's per-context random keys), the size in `builtin:N`, and a shared
cache across worker processes (`shared:` acts as a per-worker builtin cache).
"""

from __future__ import annotations

import hashlib
import tempfile
import weakref

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from postern.proxy.conf.settings import ServerSettings, SslSettings
from postern.proxy.protocols import PROTOCOLS
from postern.proxy.tls_conf import ConfCommands
from postern.proxy.tls_headers import auth_ssl_headers, verify_error_text

# ngx_ssl_verify_error_optional(): what `optional_no_ca` tolerates
_OPTIONAL_NO_CA = frozenset({
    _lib.X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, _lib.X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
    _lib.X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, _lib.X509_V_ERR_CERT_UNTRUSTED,
    _lib.X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE})

_NO_PROTOCOL = {"SSLv2": 0, "SSLv3": SSL.OP_NO_SSLv3, "TLSv1": SSL.OP_NO_TLSv1,
                "TLSv1.1": SSL.OP_NO_TLSv1_1, "TLSv1.2": SSL.OP_NO_TLSv1_2,
                "TLSv1.3": SSL.OP_NO_TLSv1_3}
_MODE_NO_AUTO_CHAIN = 0x8  # SSL_MODE_NO_AUTO_CHAIN: serve the configured chain only
_RECORD = 16384  # one TLS record's plaintext at most: what one SSL_read can return
_READ_OUT = 65536


class TlsSetupError(Exception):
    """A context could not be built (message names the directive and file)."""


class TlsError(Exception):
    """The TLS conversation failed (handshake or record layer); close without a word."""


def _verify_keep_going(ok: int, store) -> int:
    # ngx_ssl_verify_callback: never fail the handshake; the result stays in the SSL
    # object (and in its session) for the protocol's check afterwards
    return 1


_VERIFY_CALLBACK = _ffi.callback("int (*)(int, X509_STORE_CTX *)", _verify_keep_going)


def _read(path: str) -> bytes:
    if path.startswith("data:"):
        return path[5:].encode("utf-8", "surrogateescape")
    with open(path, "rb") as fh:
        return fh.read()


def _passwords(conf: SslSettings) -> list[bytes]:
    if not conf.password_file:
        return []
    return [line for line in _read(conf.password_file).splitlines() if line]


def _load_key(path: str, passwords: list[bytes]):
    """ngx_ssl_load_certificate_key(): each password of ssl_password_file in turn."""
    if path.startswith(("engine:", "store:")):
        raise TlsSetupError(f'cannot load certificate key "{path}": engines and stores '
                            "are not supported")
    pem = _read(path)
    for password in [None, *passwords]:  # None: a key that is not encrypted
        try:
            return serialization.load_pem_private_key(pem, password)
        except (TypeError, ValueError):  # wrong, missing or needless password
            continue
    raise TlsSetupError(f'cannot load certificate key "{path}": PEM_read_bio_PrivateKey() '
                        "failed")


class TlsServer:
    """The OpenSSL context of one mail server, and what its connections need from it."""

    def __init__(self, conf: ServerSettings) -> None:
        # the protocol's lines after a failed client-certificate check
        self.protocol = PROTOCOLS[conf.protocol]
        self.ssl = ssl = conf.ssl
        self.verify = ssl.verify_client
        self.pass_client_cert = conf.auth_http_pass_client_cert
        self._alpn = conf.protocol.encode()
        try:
            self.context = self._build(ssl)
        except (OSError, SSL.Error, crypto.Error, ValueError) as exc:
            raise TlsSetupError(f"TLS setup for the server in {conf.file}:{conf.line} "
                                f"failed: {exc}") from exc

    def _build(self, conf: SslSettings) -> SSL.Context:
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        # ngx_ssl_create(): every version OpenSSL has, minus the ones not listed
        ctx.set_min_proto_version(0)
        ctx.set_max_proto_version(0)
        options = SSL.OP_NO_COMPRESSION | SSL.OP_SINGLE_DH_USE | SSL.OP_SINGLE_ECDH_USE
        options |= _lib.SSL_OP_NO_RENEGOTIATION | _lib.SSL_OP_IGNORE_UNEXPECTED_EOF
        for name, flag in _NO_PROTOCOL.items():
            if name not in conf.protocols:
                options |= flag
        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS | _MODE_NO_AUTO_CHAIN)
        leaves = self._certificates(ctx, conf)
        ctx.set_cipher_list(conf.ciphers.encode("utf-8", "surrogateescape"))
        if conf.prefer_server_ciphers:
            options |= SSL.OP_CIPHER_SERVER_PREFERENCE
        if conf.verify_client != "off":
            self._client_verification(ctx, conf)
        if conf.dhparam:
            ctx.load_tmp_dh(conf.dhparam.encode())
        if conf.ecdh_curve not in ("", "auto") and \
                not _lib.SSL_CTX_set1_curves_list(ctx._context, conf.ecdh_curve.encode()):
            raise ValueError(f'SSL_CTX_set1_curves_list("{conf.ecdh_curve}") failed')
        self._session_cache(ctx, conf, leaves)
        if not conf.session_tickets:
            options |= SSL.OP_NO_TICKET
        # ngx_ssl_conf_commands(): last, over everything above; the options are set once
        # afterwards because they can only be added to a context, never taken away
        commands = ConfCommands(ctx, options, conf.verify_client,
                                bool(conf.client_certificate or conf.trusted_certificate))
        for name, value in conf.conf_commands:
            commands.run(name, value)
        ctx.set_options(commands.finish())
        ctx.set_alpn_select_callback(self._select_alpn)
        return ctx

    @staticmethod
    def _certificates(ctx: SSL.Context, conf: SslSettings) -> list[bytes]:
        """Every ssl_certificate with its key; OpenSSL keeps one per key type (RSA, ECDSA),
        each with its own chain. Returns the leaf certificates (DER) in load order."""
        passwords = _passwords(conf)
        leaves = []
        for cert, key in zip(conf.certificates, conf.certificate_keys):
            if cert.startswith("data:"):
                with tempfile.NamedTemporaryFile(suffix=".pem") as tmp:
                    tmp.write(_read(cert))
                    tmp.flush()
                    ctx.use_certificate_chain_file(tmp.name.encode())
            else:
                ctx.use_certificate_chain_file(cert.encode())
            ctx.use_privatekey(_load_key(key, passwords))
            ctx.check_privatekey()
            leaf = x509.load_pem_x509_certificate(_read(cert))
            leaves.append(leaf.public_bytes(serialization.Encoding.DER))
        return leaves

    def _client_verification(self, ctx: SSL.Context, conf: SslSettings) -> None:
        """ngx_ssl_client_certificate / ngx_ssl_trusted_certificate / ngx_ssl_crl."""
        _lib.SSL_CTX_set_verify(ctx._context, SSL.VERIFY_PEER, _VERIFY_CALLBACK)
        ctx.set_verify_depth(conf.verify_depth)
        if conf.client_certificate:
            ctx.load_verify_locations(conf.client_certificate.encode())
            ctx.load_client_ca(conf.client_certificate.encode())
        if conf.trusted_certificate:
            ctx.load_verify_locations(conf.trusted_certificate.encode())
        if conf.crl:
            # X509_LOOKUP_load_file() as nginx calls it: CRLs (and any certificates)
            ctx.load_verify_locations(conf.crl.encode())
            ctx.get_cert_store().set_flags(crypto.X509StoreFlags.CRL_CHECK |
                                           crypto.X509StoreFlags.CRL_CHECK_ALL)

    @staticmethod
    def _session_cache(ctx: SSL.Context, conf: SslSettings, leaves: list[bytes]) -> None:
        """ngx_ssl_session_cache(): `off` refuses resumption by session id, `none` pretends
        to cache (sessions get an id but are never stored: Outlook Express needs that),
        `builtin`/`shared` keep sessions for ssl_session_timeout."""
        ctx.set_timeout(int(conf.session_timeout))
        ctx.set_session_id(_session_id_context(conf, leaves))
        words = conf.session_cache.split()
        if "off" in words:
            ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        elif "none" in words or not words:
            ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER | SSL.SESS_CACHE_NO_AUTO_CLEAR |
                                       SSL.SESS_CACHE_NO_INTERNAL_STORE)
        else:
            ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)

    def _select_alpn(self, conn: SSL.Connection, offered: list[bytes]) -> bytes:
        """nginx 1.21.4+: a client ALPN list without our protocol ends the handshake with a
        fatal no_application_protocol alert (pyOpenSSL turns the exception into it)."""
        if self._alpn in offered:
            return self._alpn
        raise TlsError("client offered no matching ALPN protocol")

    def connection(self) -> TlsConnection:
        return TlsConnection(self)


def _session_id_context(conf: SslSettings, leaves: list[bytes]) -> bytes:
    """ngx_ssl_session_id_context(): SHA-1 over "MAIL", each certificate's SHA-1 (last
    loaded first) and each client CA name's SHA-1, so sessions never cross servers."""
    md = hashlib.sha1(b"MAIL")
    for der in reversed(leaves):
        md.update(hashlib.sha1(der).digest())
    if conf.verify_client != "off" and conf.client_certificate:
        names: list[bytes] = []  # SSL_load_client_CA_file(): subjects, first of each
        for cert in x509.load_pem_x509_certificates(_read(conf.client_certificate)):
            der = cert.subject.public_bytes()
            if der not in names:
                names.append(der)
        for der in names:
            md.update(hashlib.sha1(der).digest())
    return md.digest()


_servers: dict[int, tuple[weakref.ref, TlsServer]] = {}


def server_tls(conf: ServerSettings) -> TlsServer:
    """The one context of a server{}, shared by all its listens. Built once per settings
    object: the master builds it before forking, so every worker shares its session
    ticket keys (as nginx's workers share the SSL_CTX of their master)."""
    entry = _servers.get(id(conf))
    if entry is not None and entry[0]() is conf:
        return entry[1]
    for key in [k for k, (ref, _) in _servers.items() if ref() is None]:
        del _servers[key]
    tls = TlsServer(conf)
    _servers[id(conf)] = (weakref.ref(conf), tls)
    return tls


def uses_tls(conf: ServerSettings, ssl_listen: bool) -> bool:
    return ssl_listen or conf.ssl.starttls != "off"


class TlsConnection:
    """One client's TLS endpoint over memory BIOs; no I/O of its own.

    receive(raw) -> plaintext (drives the handshake first); encrypt(plaintext) -> records;
    outgoing() -> records OpenSSL produced by itself (handshake, tickets, alerts);
    close_notify() -> the closing alert.
    """

    __slots__ = ("_ssl", "established", "failed", "peer_closed", "server")

    def __init__(self, server: TlsServer) -> None:
        self.server = server
        self._ssl = SSL.Connection(server.context, None)
        self._ssl.set_accept_state()
        self.established = False
        self.peer_closed = False
        self.failed = False

    def receive(self, data: bytes) -> bytes:
        ssl = self._ssl
        ssl.bio_write(data)
        if not self.established:
            try:
                ssl.do_handshake()
            except SSL.WantReadError:
                return b""
            except TlsError:  # the ALPN callback's refusal, raised again by pyOpenSSL
                self.failed = True
                raise TlsError("no application protocol") from None
            except SSL.Error as exc:
                self.failed = True
                raise TlsError(_describe(exc)) from None
            self.established = True
        chunks = []
        while True:
            try:
                chunks.append(ssl.recv(_RECORD))
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:  # close_notify from the client
                self.peer_closed = True
                break
            except SSL.Error as exc:
                self.failed = True
                raise TlsError(_describe(exc)) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def outgoing(self) -> bytes:
        chunks = []
        while True:
            try:
                chunks.append(self._ssl.bio_read(_READ_OUT))
            except SSL.WantReadError:
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def encrypt(self, data: bytes) -> bytes:
        if data:
            self._ssl.sendall(data)  # a memory BIO takes everything at once
        return self.outgoing()

    def close_notify(self) -> bytes:
        if not self.established or self.failed:
            return b""
        try:
            self._ssl.shutdown()
        except SSL.Error:
            return b""
        return self.outgoing()

    # -- after the handshake ----------------------------------------------------------------
    @property
    def protocol_version(self) -> str:
        return self._ssl.get_protocol_version_name()

    @property
    def cipher(self) -> str:
        return self._ssl.get_cipher_name() or ""

    @property
    def alpn(self) -> bytes:
        return self._ssl.get_alpn_proto_negotiated()

    @property
    def resumed(self) -> bool:
        return bool(_lib.SSL_session_reused(self._ssl._ssl))

    def verify_result(self) -> int:
        return int(_lib.SSL_get_verify_result(self._ssl._ssl))

    def peer_certificate(self) -> crypto.X509 | None:
        """OpenSSL's own object: the Auth-SSL-* values come from what OpenSSL accepted."""
        return self._ssl.get_peer_certificate()

    def check_client_certificate(self) -> tuple[bytes, str] | None:
        """ngx_mail_verify_cert(): None to go on, else (the line to send, the log line)."""
        verify = self.server.verify
        if verify == "off":
            return None
        rc = self.verify_result()
        if rc != _lib.X509_V_OK and not (verify == "optional_no_ca" and rc in _OPTIONAL_NO_CA):
            return (self.server.protocol.cert_error,
                    f"client SSL certificate verify error: ({rc}:{verify_error_text(rc)})")
        if verify == "on" and self._ssl.get_peer_certificate() is None:
            return self.server.protocol.no_cert, "client sent no required SSL certificate"
        return None

    def auth_headers(self) -> list[tuple[str, bytes]]:
        """The Auth-SSL-* lines of the auth request (docs/behaviour.md §10.1)."""
        return auth_ssl_headers(self)


def _describe(exc: Exception) -> str:
    if isinstance(exc, SSL.Error) and exc.args and isinstance(exc.args[0], list):
        reasons = [r[2] for r in exc.args[0] if len(r) > 2 and r[2]]
        if reasons:
            return ":".join(reasons)
    return str(exc) or type(exc).__name__


