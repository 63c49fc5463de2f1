"""TLS for `auth_http https://...` (beyond nginx, which rejects https there).

The client side only, with the standard library's ssl module: asyncio speaks it natively
(create_connection(ssl=...)), so no memory BIOs are needed as they are for the mail
listeners. Verification is on unless `auth_http_ssl_verify off`: the server's certificate must
chain to `auth_http_ssl_trusted_certificate` (the system's CA store when unset) and name
`auth_http_ssl_name` (by default the URL's host).
"""

from __future__ import annotations

import os
import ssl

from postern.proxy.conf.settings import AuthHttp, ServerSettings


class AuthTlsError(Exception):
    """A setting that cannot be used; the message is the [emerg] text."""


def _os_text(exc: OSError) -> str:
    if exc.errno is None:
        return str(exc)
    return f"{exc.errno}: {os.strerror(exc.errno)}"


def client_context(conf: ServerSettings) -> ssl.SSLContext:
    """The context every https auth request of this server uses."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if conf.auth_http_ssl_verify:
        ca = conf.auth_http_ssl_trusted_certificate
        try:
            if ca:
                ctx.load_verify_locations(cafile=ca)
            else:
                ctx.load_default_certs()
        except OSError as exc:  # ssl.SSLError is an OSError too
            if isinstance(exc, ssl.SSLError):
                raise AuthTlsError(f'cannot load "auth_http_ssl_trusted_certificate" "{ca}" '
                                   f"({exc.reason or exc})") from None
            raise AuthTlsError(f'cannot load "auth_http_ssl_trusted_certificate" "{ca}" '
                               f"({_os_text(exc)})") from None
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cert, key = conf.auth_http_ssl_certificate, conf.auth_http_ssl_certificate_key
    if cert:
        try:
            ctx.load_cert_chain(cert, key)
        except OSError as exc:
            detail = (exc.reason or str(exc)) if isinstance(exc, ssl.SSLError) \
                else _os_text(exc)
            raise AuthTlsError(f'cannot load "auth_http_ssl_certificate" "{cert}" with key '
                               f'"{key}" ({detail})') from None
    return ctx


def server_name(conf: ServerSettings, peer: AuthHttp) -> str:
    """The name checked against the certificate and sent as SNI (not for IP literals)."""
    if conf.auth_http_ssl_name:
        return conf.auth_http_ssl_name
    host = peer.host_header
    return host[1:-1] if host.startswith("[") else host
