"""Server-side TLS contexts built from the ssl_* directives (spec §2.7)."""

from __future__ import annotations

import ssl

from proxy.conf.settings import SslSettings

_VERSIONS = {
    "SSLv3": ssl.TLSVersion.SSLv3, "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1, "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


def _password(conf: SslSettings) -> list[str]:
    if not conf.password_file:
        return []
    with open(conf.password_file, encoding="utf-8") as fh:
        return [line.rstrip("\r\n") for line in fh if line.strip()]


def build_context(conf: SslSettings, protocol: str) -> ssl.SSLContext:
    """One context per server; raises OSError/ssl.SSLError with the file that failed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = sorted(_VERSIONS[v] for v in conf.protocols if v in _VERSIONS)
    if versions:
        ctx.minimum_version = versions[0]
        ctx.maximum_version = versions[-1]
    if ssl.TLSVersion.TLSv1 in versions or ssl.TLSVersion.TLSv1_1 in versions:
        ctx.set_ciphers(conf.ciphers + ":@SECLEVEL=0")
    else:
        ctx.set_ciphers(conf.ciphers)
    passwords = _password(conf) or [None]
    for cert, key in zip(conf.certificates, conf.certificate_keys):
        for attempt, pw in enumerate(passwords):
            try:
                ctx.load_cert_chain(cert, key, password=pw)
                break
            except ssl.SSLError:
                if attempt == len(passwords) - 1:
                    raise
    if conf.prefer_server_ciphers:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if not conf.session_tickets:
        ctx.options |= ssl.OP_NO_TICKET
    if conf.dhparam:
        ctx.load_dh_params(conf.dhparam)
    if conf.ecdh_curve not in ("auto", ""):
        ctx.set_ecdh_curve(conf.ecdh_curve.split(":")[0])
    if conf.verify_client != "off":
        ctx.verify_mode = ssl.CERT_OPTIONAL if conf.verify_client != "on" else ssl.CERT_REQUIRED
        for ca in (conf.client_certificate, conf.trusted_certificate):
            if ca:
                ctx.load_verify_locations(ca)
        if conf.crl:
            ctx.load_verify_locations(conf.crl)
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.set_alpn_protocols([protocol])
    return ctx
