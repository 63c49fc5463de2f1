"""ssl_conf_command: OpenSSL's SSL_CONF_cmd() commands, carried out through pyOpenSSL.

nginx (ngx_ssl_conf_commands) hands each command to SSL_CONF_cmd() with the flags FILE,
SERVER, CLIENT, CERTIFICATE and SHOW_ERRORS, after every other ssl_* directive. Postern
cannot call SSL_CONF_cmd(): pyOpenSSL runs on the OpenSSL that cryptography's wheel links
statically into _rust.abi3.so, whose cffi bindings have no SSL_CONF_* functions and whose
dynamic symbol table exports none of OpenSSL (only PyInit_*); the system libssl is another
library, whose SSL_CTX cannot be handed pyOpenSSL's. Finding the hidden functions through
the module's local symbol table would break as soon as a wheel is stripped (and does not
exist on macOS or Windows wheels). So each command is carried out here with the very call
SSL_CONF_cmd() makes (OpenSSL's ssl/ssl_conf.c), on the same OpenSSL, with its checks and
nginx's error text. The few whose call the bindings lack (SSL_CTX_ctrl and friends) are
refused with an [emerg], never ignored, unless the value asks for what is already so.

Options cannot be cleared through the bindings (no SSL_CTX_clear_options), so the option
mask is kept here and set once by the caller after the last command.
"""

from __future__ import annotations

import errno as errno_mod
import os

from cryptography import x509
from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

# option bits of OpenSSL 3's ssl.h, for those the bindings do not name
OP_NO_EXTENDED_MASTER_SECRET = 1 << 0
OP_LEGACY_SERVER_CONNECT = 1 << 2
OP_ENABLE_KTLS = 1 << 3
OP_IGNORE_UNEXPECTED_EOF = 1 << 7
OP_ALLOW_CLIENT_RENEGOTIATION = 1 << 8
OP_DISABLE_TLSEXT_CA_NAMES = 1 << 9
OP_ALLOW_NO_DHE_KEX = 1 << 10
OP_DONT_INSERT_EMPTY_FRAGMENTS = 1 << 11
OP_NO_TICKET = 1 << 14
OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION = 1 << 16
OP_NO_COMPRESSION = 1 << 17
OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION = 1 << 18
OP_NO_ENCRYPT_THEN_MAC = 1 << 19
OP_ENABLE_MIDDLEBOX_COMPAT = 1 << 20
OP_PRIORITIZE_CHACHA = 1 << 21
OP_CIPHER_SERVER_PREFERENCE = 1 << 22
OP_NO_ANTI_REPLAY = 1 << 24
OP_NO_SSLv3 = 1 << 25
OP_NO_TLSv1 = 1 << 26
OP_NO_TLSv1_2 = 1 << 27
OP_NO_TLSv1_1 = 1 << 28
OP_NO_TLSv1_3 = 1 << 29
OP_NO_RENEGOTIATION = 1 << 30
OP_NO_TX_CERTIFICATE_COMPRESSION = 1 << 32
OP_NO_RX_CERTIFICATE_COMPRESSION = 1 << 33
OP_ENABLE_KTLS_TX_ZEROCOPY_SENDFILE = 1 << 34
OP_PREFER_NO_DHE_KEX = 1 << 35
OP_ALL = int(_lib.SSL_OP_ALL)

# name -> (bit, inverted): ssl_conf.c's ssl_option_list; "inverted" names clear the bit
_OPTIONS = {name.lower(): (name, bit, inv) for name, bit, inv in (
    ("SessionTicket", OP_NO_TICKET, True),
    ("EmptyFragments", OP_DONT_INSERT_EMPTY_FRAGMENTS, True),
    ("Bugs", OP_ALL, False),
    ("Compression", OP_NO_COMPRESSION, True),
    ("ServerPreference", OP_CIPHER_SERVER_PREFERENCE, False),
    ("NoResumptionOnRenegotiation", OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION, False),
    ("DHSingle", 0, False),  # SSL_OP_SINGLE_DH_USE: 0 since OpenSSL 1.1
    ("ECDHSingle", 0, False),
    ("UnsafeLegacyRenegotiation", OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION, False),
    ("UnsafeLegacyServerConnect", OP_LEGACY_SERVER_CONNECT, False),
    ("ClientRenegotiation", OP_ALLOW_CLIENT_RENEGOTIATION, False),
    ("EncryptThenMac", OP_NO_ENCRYPT_THEN_MAC, True),
    ("NoRenegotiation", OP_NO_RENEGOTIATION, False),
    ("AllowNoDHEKEX", OP_ALLOW_NO_DHE_KEX, False),
    ("PreferNoDHEKEX", OP_PREFER_NO_DHE_KEX, False),
    ("PrioritizeChaCha", OP_PRIORITIZE_CHACHA, False),
    ("MiddleboxCompat", OP_ENABLE_MIDDLEBOX_COMPAT, False),
    ("AntiReplay", OP_NO_ANTI_REPLAY, True),
    ("ExtendedMasterSecret", OP_NO_EXTENDED_MASTER_SECRET, True),
    ("CANames", OP_DISABLE_TLSEXT_CA_NAMES, True),
    ("KTLS", OP_ENABLE_KTLS, False),
    ("StrictCertCheck", None, False),  # a certificate flag, not an option
    ("TxCertificateCompression", OP_NO_TX_CERTIFICATE_COMPRESSION, True),
    ("RxCertificateCompression", OP_NO_RX_CERTIFICATE_COMPRESSION, True),
    ("KTLSTxZerocopySendfile", OP_ENABLE_KTLS_TX_ZEROCOPY_SENDFILE, False),
    ("IgnoreUnexpectedEOF", OP_IGNORE_UNEXPECTED_EOF, False),
)}
_NO_PROTOCOLS = OP_NO_SSLv3 | OP_NO_TLSv1 | OP_NO_TLSv1_1 | OP_NO_TLSv1_2 | OP_NO_TLSv1_3
# cmd_Protocol's table (case-insensitive like the options); DTLS bits mean nothing on TLS
_PROTOCOL_LIST = {"all": _NO_PROTOCOLS, "sslv2": 0, "sslv3": OP_NO_SSLv3,
                  "tlsv1": OP_NO_TLSv1, "tlsv1.1": OP_NO_TLSv1_1, "tlsv1.2": OP_NO_TLSv1_2,
                  "tlsv1.3": OP_NO_TLSv1_3, "dtlsv1": 0, "dtlsv1.2": 0}
# protocol_from_string(): case-sensitive; DTLS versions are refused by a TLS method
_VERSIONS = {"None": 0, "SSLv3": 0x300, "TLSv1": 0x301, "TLSv1.1": 0x302,
             "TLSv1.2": 0x303, "TLSv1.3": 0x304, "DTLSv1": None, "DTLSv1.2": None}

# every SSL_CONF_cmd() file-mode name (FILE|SERVER|CLIENT|CERTIFICATE allows them all);
# value types FILE and DIR are made absolute by nginx (ngx_conf_full_name) first
_FILE_TYPE = {"certificate", "privatekey", "serverinfofile", "chaincafile", "verifycafile",
              "requestcafile", "clientcafile", "dhparameters", "addcafile"}
_DIR_TYPE = {"chaincapath", "verifycapath", "requestcapath", "clientcapath", "addcapath"}
_OTHER = {"signaturealgorithms", "clientsignaturealgorithms", "curves", "groups",
          "ecdhparameters", "cipherstring", "ciphersuites", "protocol", "minprotocol",
          "maxprotocol", "options", "verifymode", "certvalidation", "setvalidflags",
          "setvalidhost", "addvalidhost", "setvalidip", "chaincastore", "verifycastore",
          "requestcastore", "clientcastore", "recordpadding", "numtickets"}
_NAMES = _FILE_TYPE | _DIR_TYPE | _OTHER

_CERT_MARKERS = (b"-----BEGIN CERTIFICATE-----", b"-----BEGIN TRUSTED CERTIFICATE-----",
                 b"-----BEGIN X509 CERTIFICATE-----", b"-----BEGIN X509 CRL-----")
_NO_DECODER = ("error:1E08010C:DECODER routines::unsupported:No supported data to decode. "
               "Input type: PEM")
_DEFAULT_NUM_TICKETS = 2  # SSL_CTX_new()'s


_NO_PASSWORD = _ffi.callback("int (*)(char *, int, int, void *)", lambda *_: 0)


class ConfCommandError(ValueError):
    """A command nginx would refuse, or one these bindings cannot carry out; str() is
    the [emerg] text."""


def takes_path(name: str) -> bool:
    """Whether nginx resolves the value against the prefix (SSL_CONF_TYPE_FILE/DIR)."""
    key = name.lower()
    return key in _FILE_TYPE or key in _DIR_TYPE


def _atoi(text: str) -> int:
    """C's atoi(): leading blanks, a sign, digits; anything else ends it (0 if none)."""
    s = text.lstrip(" \t\n\r\f\v")
    sign = -1 if s[:1] == "-" else 1
    if s[:1] in "+-" and s:
        s = s[1:]
    digits = len(s) - len(s.lstrip("0123456789"))
    return sign * int(s[:digits]) if digits else 0


def _openssl_errors() -> list[str]:
    """Drain OpenSSL's error queue as ngx_ssl_error() prints it (without the extra data,
    which the bindings cannot read)."""
    texts = []
    while True:
        code = _lib.ERR_get_error()
        if not code:
            return texts
        lib_name = _lib.ERR_lib_error_string(code)
        reason = _lib.ERR_reason_error_string(code)
        lib_text = _ffi.string(lib_name).decode() if lib_name != _ffi.NULL else ""
        reason_text = _ffi.string(reason).decode() if reason != _ffi.NULL else ""
        texts.append(f"error:{code:08X}:{lib_text}::{reason_text}")


def _fopen_error(path: str, exc: OSError, bio: str) -> list[str]:
    """OpenSSL 3's queue after a failed fopen() (a file read before OpenSSL reads it, so
    the text names the path and errno as OpenSSL's would)."""
    code = exc.errno or errno_mod.EIO
    sys_error = (f"error:{0x80000000 | code:08X}:system library::{os.strerror(code)}:"
                 f"calling fopen({path}, r)")
    texts = [sys_error]
    if bio == "store":  # X509_STORE_load_file(): the file lookup words it its own way
        texts.append("error:10000080:BIO routines::no such file" if code == errno_mod.ENOENT
                     else "error:10080002:BIO routines::system lib")
        texts.append("error:05880002:x509 certificate routines::system lib")
    else:
        texts.append("error:10080002:BIO routines::system lib")
        if bio == "ssl":
            texts.append("error:0A080002:SSL routines::system lib")
    return texts


class ConfCommands:
    """Runs the ssl_conf_command list of one server on its context, in order.

    `options` is the option mask nginx's other directives have set; finish() returns the
    mask to set. `verify` and `client_ca` tell what ssl_verify_client and
    ssl_client_certificate / ssl_trusted_certificate left in place.
    """

    def __init__(self, ctx: SSL.Context, options: int, verify: str = "off",
                 client_ca: bool = False) -> None:
        self.ctx = ctx
        self.defaults = int(_lib.SSL_CTX_get_options(ctx._context))
        self.options = options | self.defaults
        self.verify = verify
        self.client_ca = client_ca
        self.ca_names: dict[bytes, x509.Certificate] | None = None  # RequestCAFile's
        # an encrypted PrivateKey fails instead of prompting on the terminal
        _lib.SSL_CTX_set_default_passwd_cb(ctx._context, _NO_PASSWORD)

    # -- the outcome ------------------------------------------------------------------------
    def run(self, name: str, value: str) -> None:
        key = name.lower()
        if key not in _NAMES:
            raise ConfCommandError(f'SSL_CONF_cmd("{name}", "{value}") failed (SSL: '
                                   f"error:0A000182:SSL routines::unknown cmd name:cmd={name})")
        _lib.ERR_clear_error()
        handler = getattr(self, "_cmd_" + key, None)
        if handler is None:
            self._unsupported(name, "its OpenSSL call is not in pyOpenSSL's bindings")
        errors = handler(name, value)
        if errors is not None:
            bad = f"error:0A000180:SSL routines::bad value:cmd={name}, value={value}"
            queue = " ".join([*errors, bad])
            raise ConfCommandError(f'SSL_CONF_cmd("{name}", "{value}") failed (SSL: {queue})')

    def finish(self) -> int:
        """SSL_CONF_CTX_finish(): the CA names of RequestCAFile; the option mask."""
        if self.ca_names is not None and not self.client_ca:
            # OpenSSL sends ssl_client_certificate's names if there are any, else these
            for cert in self.ca_names.values():
                self.ctx.add_client_ca(cert)
        return self.options

    @staticmethod
    def _unsupported(name: str, why: str) -> None:
        raise ConfCommandError(f'ssl_conf_command "{name}" is not supported: {why}')

    @staticmethod
    def _failed() -> list[str]:
        return _openssl_errors()

    # -- commands (None: done; a list: OpenSSL's error queue before "bad value") -------------
    def _cmd_signaturealgorithms(self, name: str, value: str) -> list[str] | None:
        if _lib.SSL_CTX_set1_sigalgs_list(self.ctx._context, value.encode()) > 0:
            return None
        return self._failed()

    def _cmd_clientsignaturealgorithms(self, name: str, value: str) -> list[str] | None:
        # the syntax is the server list's; setting it needs SSL_CTX_ctrl
        scratch = SSL.Context(SSL.TLS_SERVER_METHOD)
        if _lib.SSL_CTX_set1_sigalgs_list(scratch._context, value.encode()) <= 0:
            return self._failed()
        self._unsupported(name, "SSL_CTX_set1_client_sigalgs_list() is not in pyOpenSSL's "
                                "bindings")
        return None

    def _cmd_groups(self, name: str, value: str) -> list[str] | None:
        if _lib.SSL_CTX_set1_curves_list(self.ctx._context, value.encode()) > 0:
            return None
        return self._failed()

    _cmd_curves = _cmd_groups

    def _cmd_ecdhparameters(self, name: str, value: str) -> list[str] | None:
        if value.lower() in ("automatic", "+automatic"):
            return None  # OpenSSL 1.0.2's spelling of the default, accepted in files
        if ":" in value:
            return []
        return self._cmd_groups(name, value)

    def _cmd_cipherstring(self, name: str, value: str) -> list[str] | None:
        if _lib.SSL_CTX_set_cipher_list(self.ctx._context, value.encode()) > 0:
            return None
        return self._failed()

    def _cmd_ciphersuites(self, name: str, value: str) -> list[str] | None:
        if _lib.SSL_CTX_set_ciphersuites(self.ctx._context, value.encode()) > 0:
            return None
        return self._failed()

    def _cmd_minprotocol(self, name: str, value: str) -> list[str] | None:
        return self._version(value, _lib.SSL_CTX_set_min_proto_version)

    def _cmd_maxprotocol(self, name: str, value: str) -> list[str] | None:
        return self._version(value, _lib.SSL_CTX_set_max_proto_version)

    def _version(self, value: str, setter) -> list[str] | None:
        version = _VERSIONS.get(value)
        if version is None or setter(self.ctx._context, version) <= 0:
            return []
        return None

    def _cmd_protocol(self, name: str, value: str) -> list[str] | None:
        return self._flag_list(name, value,
                               lambda word: (_PROTOCOL_LIST.get(word.lower()), True))

    def _cmd_options(self, name: str, value: str) -> list[str] | None:
        def lookup(word: str) -> tuple[int | None, bool]:
            entry = _OPTIONS.get(word.lower())
            if entry is None:
                return None, False
            if entry[1] is None:
                self._unsupported(name, f'"{entry[0]}" sets a certificate flag that is not '
                                        "in pyOpenSSL's bindings")
            return entry[1], entry[2]
        return self._flag_list(name, value, lookup)

    def _flag_list(self, name: str, value: str, lookup) -> list[str] | None:
        """CONF_parse_list(value, ',', nospc=1) with ssl_set_option_list(): "-" clears,
        "+" sets, an inverted name the other way round; a bad element fails the rest."""
        options = self.options
        for element in value.split(","):
            word = element.strip()
            on = True
            if word[:1] in "+-" and word:
                on, word = word[0] == "+", word[1:]
            bit, inverted = lookup(word) if word else (None, False)
            if bit is None:
                return []
            if on != inverted:
                options |= bit
            else:
                options &= ~bit
        lost = self.defaults & ~options & ~OP_NO_COMPRESSION
        if lost:
            # SSL_CTX_new() sets them and the bindings cannot clear them. (Compression
            # can go: neither this OpenSSL nor Debian's has zlib, so it is never used.)
            self._unsupported(name, f'"{value}" clears an option SSL_CTX_new() sets '
                                         "(SSL_CTX_clear_options() is not in pyOpenSSL's "
                                         "bindings)")
        self.options = options
        return None

    def _use_file(self, value: str, use) -> list[str] | None:
        """SSL_CTX_use_*_file(): the file must open, then OpenSSL's loader succeeds (> 0) or
        leaves its reason in the error queue."""
        missing = _unreadable(value, "ssl")
        if missing:
            return missing
        return None if use(self.ctx._context, value.encode()) > 0 else self._failed()

    def _cmd_certificate(self, name: str, value: str) -> list[str] | None:
        return self._use_file(value, _lib.SSL_CTX_use_certificate_chain_file)

    def _cmd_privatekey(self, name: str, value: str) -> list[str] | None:
        return self._use_file(value, lambda ctx, path: _lib.SSL_CTX_use_PrivateKey_file(
            ctx, path, SSL.FILETYPE_PEM))

    def _cmd_serverinfofile(self, name: str, value: str) -> list[str] | None:
        missing = _unreadable(value, "ssl")
        if missing:
            return missing
        self._unsupported(name, "SSL_CTX_use_serverinfo_file() is not in pyOpenSSL's bindings")
        return None

    def _cmd_chaincafile(self, name: str, value: str) -> list[str] | None:
        # the chain store only serves certificates without a chain of their own, and only
        # without SSL_MODE_NO_AUTO_CHAIN, which nginx sets: checked, without effect
        return _ca_file_errors(value)

    def _cmd_chaincapath(self, name: str, value: str) -> list[str] | None:
        return None  # X509_STORE_load_path() looks at the directory only when verifying

    def _cmd_verifycafile(self, name: str, value: str) -> list[str] | None:
        errors = _ca_file_errors(value)
        if errors is not None:
            return errors
        self._verify_store(name)
        self.ctx.load_verify_locations(value.encode())
        return None

    def _cmd_verifycapath(self, name: str, value: str) -> list[str] | None:
        self._verify_store(name)
        self.ctx.load_verify_locations(None, value.encode())
        return None

    def _verify_store(self, name: str) -> None:
        # OpenSSL gives client verification a store of its own that replaces the context's
        # (SSL_CTX_set1_verify_cert_store, not in the bindings); loading into the
        # context's store is the same only while nothing else is in it
        if self.verify != "off" and self.client_ca:
            self._unsupported(name, "a separate verify store together with "
                                    "ssl_client_certificate or ssl_trusted_certificate "
                                    "needs SSL_CTX_set1_verify_cert_store(), which is not in "
                                    "pyOpenSSL's bindings")

    def _cmd_requestcafile(self, name: str, value: str) -> list[str] | None:
        missing = _unreadable(value, "bio")
        if missing:
            return missing
        with open(value, "rb") as fh:
            data = fh.read()
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            return []
        names = self.ca_names if self.ca_names is not None else {}
        for cert in certs:  # SSL_add_file_cert_subjects_to_stack(): each subject once
            names.setdefault(cert.subject.public_bytes(), cert)
        self.ca_names = names
        return None

    _cmd_clientcafile = _cmd_requestcafile

    def _cmd_dhparameters(self, name: str, value: str) -> list[str] | None:
        missing = _unreadable(value, "bio")
        if missing:
            return missing
        with open(value, "rb") as fh:
            if b"-----BEGIN DH PARAMETERS-----" not in fh.read():
                return [_NO_DECODER]
        try:
            self.ctx.load_tmp_dh(value.encode())
        except SSL.Error:
            return []
        return None

    def _cmd_recordpadding(self, name: str, value: str) -> list[str] | None:
        size = _atoi(value)
        if not 0 <= size <= 16384:
            return []
        if size > 1:  # 0 and 1 mean no padding, OpenSSL's default
            self._unsupported(name, "SSL_CTX_set_block_padding() is not in pyOpenSSL's "
                                    "bindings")
        return None

    def _cmd_numtickets(self, name: str, value: str) -> list[str] | None:
        count = _atoi(value)
        if count < 0:
            return []
        if count != _DEFAULT_NUM_TICKETS:
            self._unsupported(name, "SSL_CTX_set_num_tickets() is not in pyOpenSSL's "
                                    "bindings")
        return None


def _unreadable(path: str, kind: str) -> list[str] | None:
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return _fopen_error(path, exc, kind)


def _ca_file_errors(path: str) -> list[str] | None:
    """X509_STORE_load_file(): readable, with at least one certificate or CRL."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return _fopen_error(path, exc, "store")
    if not any(marker in data for marker in _CERT_MARKERS):
        return ["error:05800088:x509 certificate routines::no certificate or crl found"]
    return None
