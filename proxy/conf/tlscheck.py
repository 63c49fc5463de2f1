"""Configuration-time checks of TLS material, in the order and words of nginx + OpenSSL 3.

nginx -t loads every certificate, key, CA file and DH parameter file of a server that
uses TLS; these checks catch the same mistakes (missing file, not PEM, key that does not
match the certificate, cipher string matching nothing) before any socket is opened.
"""

from __future__ import annotations

import errno as errno_mod
import os
import ssl
import tempfile

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

from .errors import ConfigError

_CERT_MARKERS = (b"-----BEGIN CERTIFICATE-----", b"-----BEGIN TRUSTED CERTIFICATE-----",
                 b"-----BEGIN X509 CERTIFICATE-----")
_KEY_MARKER = b"PRIVATE KEY-----"
_CRL_MARKER = b"-----BEGIN X509 CRL-----"
_DH_MARKER = b"-----BEGIN DH PARAMETERS-----"
_NO_DECODER = ("error:1E08010C:DECODER routines::unsupported:No supported data to decode. "
               "Input type: PEM")


def _openssl_sys_error(path: str, e: OSError) -> str:
    """OpenSSL 3's error queue text for a failed fopen()."""
    code = e.errno or errno_mod.EIO
    bio = ("error:10000080:BIO routines::no such file" if code == errno_mod.ENOENT
           else "error:10080002:BIO routines::system lib")
    return (f"error:{0x80000000 | code:08X}:system library::{os.strerror(code)}:"
            f"calling fopen({path}, r) {bio}")


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _material(value: str) -> bytes | None:
    """Inline `data:` PEM text, or None when the value names a file."""
    return value[5:].encode("utf-8", "surrogateescape") if value.startswith("data:") else None


def check_ciphers(ciphers: str) -> None:
    """SSL_CTX_set_cipher_list() on the bytes as written (non-UTF-8 included), with
    OpenSSL's own error text."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    raw = ciphers.encode("utf-8", "surrogateescape")
    if _lib.SSL_CTX_set_cipher_list(ctx._context, raw) != 1:
        code = _lib.ERR_get_error()
        _lib.ERR_clear_error()
        lib_text = _text(_lib.ERR_lib_error_string(code))
        reason = _text(_lib.ERR_reason_error_string(code))
        raise ConfigError(f'SSL_CTX_set_cipher_list("{ciphers}") failed '
                          f"(SSL: error:{code:08X}:{lib_text}::{reason})")


def _text(pointer) -> str:
    return "" if pointer == _ffi.NULL else _ffi.string(pointer).decode("latin-1")


def _pem(path: str, what: str) -> bytes:
    """The PEM text named by a directive: inline `data:` material or a file's content."""
    pem = _material(path)
    if pem is None:
        try:
            pem = read_file(path)
        except OSError as e:
            raise ConfigError(f'cannot load {what} "{path}": BIO_new_file() failed '
                              f"(SSL: {_openssl_sys_error(path, e)})") from None
    return pem


def check_certificate(cert: str, key: str, passwords: list[bytes]) -> None:
    """ngx_ssl_certificate(): the certificate, then its key, then that they match."""
    cert_pem = _pem(cert, "certificate")
    if not any(m in cert_pem for m in _CERT_MARKERS):
        raise ConfigError(f'cannot load certificate "{cert}": PEM_read_bio_X509_AUX() failed '
                          "(SSL: error:0480006C:PEM routines::no start line:Expecting: "
                          "TRUSTED CERTIFICATE)")
    if key.startswith(("engine:", "store:")):
        return  # keys held by an engine or provider cannot be checked from here
    key_pem = _pem(key, "certificate key")
    if _KEY_MARKER not in key_pem:
        raise ConfigError(f'cannot load certificate key "{key}": PEM_read_bio_PrivateKey() '
                          f"failed (SSL: {_NO_DECODER})")
    _check_pair(cert_pem, key_pem, key, passwords)


def _check_pair(cert_pem: bytes, key_pem: bytes, key: str, passwords: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
        with open(cert_file, "wb") as f:
            f.write(cert_pem)
        with open(key_file, "wb") as f:
            f.write(key_pem)
        failure: ssl.SSLError | None = None
        # an empty password instead of none keeps OpenSSL from prompting on a terminal
        for password in passwords or [b""]:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                    cert_file, key_file, password=password)
                return
            except ssl.SSLError as e:
                failure = e
    if failure is not None and getattr(failure, "reason", None) == "KEY_VALUES_MISMATCH":
        raise ConfigError(f'SSL_CTX_use_PrivateKey("{key}") failed '
                          "(SSL: error:05800074:x509 certificate routines::key values mismatch)")
    reason = getattr(failure, "reason", None) or "bad decrypt"
    raise ConfigError(f'cannot load certificate key "{key}": PEM_read_bio_PrivateKey() failed '
                      f"(SSL: {reason.lower().replace('_', ' ')})")


def check_ca_file(path: str, function: str = "SSL_CTX_load_verify_locations") -> None:
    """ssl_client_certificate / ssl_trusted_certificate (and ssl_crl with its function)."""
    try:
        data = read_file(path)
    except OSError as e:
        raise ConfigError(f'{function}("{path}") failed (SSL: {_openssl_sys_error(path, e)} '
                          "error:05880002:x509 certificate routines::system lib)") from None
    if not any(m in data for m in _CERT_MARKERS + (_CRL_MARKER,)):
        raise ConfigError(f'{function}("{path}") failed (SSL: error:05800088:x509 '
                          "certificate routines::no certificate or crl found)")


def check_dhparam(path: str) -> None:
    try:
        data = read_file(path)
    except OSError as e:
        raise ConfigError(f'BIO_new_file("{path}") failed '
                          f"(SSL: {_openssl_sys_error(path, e)})") from None
    if _DH_MARKER not in data:
        raise ConfigError(f'PEM_read_bio_DHparams("{path}") failed (SSL: error:0480006C:'
                          "PEM routines::no start line:Expecting: DH PARAMETERS)")


def read_passwords(path: str) -> list[bytes]:
    try:
        return [line for line in read_file(path).splitlines() if line]
    except OSError:
        return []


def check_conf_commands(commands: list[tuple[str, str]], certs: list[str], verify: str,
                        client_ca: bool) -> None:
    """ngx_ssl_conf_commands() at -t: each command on a context holding the server's
    certificates (so a PrivateKey that does not match one is caught as nginx catches it)."""
    from OpenSSL import SSL
    from postern.proxy.tls_conf import ConfCommandError, ConfCommands

    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    with tempfile.TemporaryDirectory() as tmp:
        for i, cert in enumerate(certs):
            pem = _material(cert)
            if pem is not None:
                cert = os.path.join(tmp, f"{i}.pem")
                with open(cert, "wb") as f:
                    f.write(pem)
            try:
                ctx.use_certificate_chain_file(cert.encode())
            except (SSL.Error, OSError):
                return  # reported by check_certificate()
    commands_run = ConfCommands(ctx, 0, verify, client_ca)
    try:
        for name, value in commands:
            commands_run.run(name, value)
        commands_run.finish()
    except ConfCommandError as e:
        raise ConfigError(str(e)) from None
