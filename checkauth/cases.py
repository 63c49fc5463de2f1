"""What check-auth asks: the built-in cases and the cases of a TOML file, as nginx requests.

Every request goes through proxy.auth_http.build_request(), so header order and %XX escaping
are nginx's own (docs/behaviour.md §10.1-10.2). APOP and CRAM-MD5 get a fresh `<R.T@server_name>` salt
and a real digest of the password, as a mail client would compute it.

Case file format (``--cases FILE.toml``; see examples/check-auth/cases.toml)::

    [[case]]
    name = "bob, a password with a space"   # required; check ids: case.<slug of name>.<protocol>
    protocol = "imap"          # imap | pop3 | smtp, or a list; default: every --protocol
    method = "plain"           # plain | apop | cram-md5 | external | none | xoauth2 | oauthbearer
    user = "bob"               # the login as the client typed it (escaped by nginx)
    password = "s p%ce"        # plain: sent as is; apop/cram-md5: the secret the digest uses;
                               # xoauth2/oauthbearer: the bearer token
    expect = "ok"              # ok | refused | wait | any
    attempt = 1                # Auth-Login-Attempt
    client_ip = "192.0.2.7"    # Client-IP (default: --client-ip)
    client_host = "mx.example" # SMTP Client-Host (default: --client-host)
    helo = "client.example"    # Auth-SMTP-Helo/From/To, method "none" only
    mail_from = "MAIL FROM:<a@example.org>"
    rcpt_to = "RCPT TO:<bob@example.com>"
    certificate = true         # send the --client-cert headers (default true)
    # optional expectations on the answer:
    backend = "127.0.0.1:143"  # Auth-Server:Auth-Port on success
    login = "bob@example.com"  # Auth-User rewrite on success
    error = "Invalid login"    # exact Auth-Status text on refusal
    error_code = "535 5.7.8"   # exact Auth-Error-Code on refusal
    wait = 2                   # exact Auth-Wait on refusal (0: none)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import tomllib
from dataclasses import dataclass, field, replace
from typing import Any

from postern.proxy.auth_http import AuthRequest, build_request
from postern.proxy.conf.settings import AuthHttp
from postern.proxy.sasl import make_salt

PROTOCOLS = ("imap", "pop3", "smtp")
METHODS = ("plain", "apop", "cram-md5", "external", "none", "xoauth2", "oauthbearer")
OAUTH = ("xoauth2", "oauthbearer")  # Postern's: Auth-Pass is a bearer token
EXPECTS = ("ok", "refused", "wait", "any")
# Which Auth-Method nginx can send for which protocol (docs/behaviour.md §7-9): APOP is POP3's,
# "none" is SMTP's MAIL/RCPT without authentication.
METHOD_PROTOCOLS = {"plain": PROTOCOLS, "apop": ("pop3",), "cram-md5": PROTOCOLS,
                    "external": PROTOCOLS, "none": ("smtp",), "xoauth2": PROTOCOLS,
                    "oauthbearer": PROTOCOLS}


@dataclass(frozen=True)
class Settings:
    """Everything the command line (and case files) said, ready to use."""

    conf: AuthHttp
    url: str
    user: bytes | None = None
    password: bytes | None = None
    bad_password: bytes = b""
    protocols: tuple[str, ...] = PROTOCOLS
    methods: tuple[str, ...] = METHODS
    strict_methods: frozenset[str] = frozenset({"plain"})
    timeout: float = 60.0
    burst: int = 20
    attempts: int = 25
    client_ip: str = "192.0.2.1"
    client_host: str = "[UNAVAILABLE]"
    server_name: str = "localhost"
    extra_headers: tuple[tuple[str, str], ...] = ()
    ssl_headers: tuple[tuple[str, bytes], ...] = ()  # as sent on a TLS connection
    cert_headers: tuple[tuple[str, bytes], ...] = ()  # added when the client showed a cert
    proxy_protocol: tuple[str, int, str, int] | None = None
    helo: bytes = b"client.example"
    mail_from: bytes = b"MAIL FROM:<sender@example.org>"
    rcpt_to: bytes = b""
    proxy_smtp_auth: bool = False
    token: bytes | None = None  # a bearer token of --user (xoauth2, oauthbearer)
    bad_token: bytes = b"postern-invalid-token"
    expect_backend: dict[str, tuple[str, int]] = field(default_factory=dict)
    cases: tuple[Case, ...] = ()
    tls: Any = None  # ssl.SSLContext of an https:// URL (beyond nginx)
    tls_name: str = ""  # the name its certificate must show (and SNI)
    tls_verify: bool = True

    @property
    def tls_target(self):
        return None if self.tls is None else (self.tls, self.tls_name)

    @property
    def has_cert(self) -> bool:
        return bool(self.cert_headers)


@dataclass(frozen=True)
class Case:
    """One request to make and what a correct server answers."""

    id: str
    title: str
    protocol: str
    method: str = "plain"
    user: bytes = b""
    password: bytes = b""
    expect: str = "ok"
    attempt: int = 1
    strict: bool = True  # a refused "ok" case fails (else: warns, the method may be unused)
    role: str = ""  # what the judge looks for: right, wrong, no-cert, login:<variant>, file
    client_ip: str | None = None
    client_host: str | None = None
    certificate: bool = True
    helo: bytes | None = None
    mail_from: bytes | None = None
    rcpt_to: bytes | None = None
    backend: tuple[str, int] | None = None
    login: bytes | None = None
    error: bytes | None = None
    error_code: bytes | None = None
    wait: int | None = None


@dataclass(frozen=True)
class Sent:
    """A request as built: the bytes and the Auth-Pass value nginx put in it."""

    request: bytes
    auth_pass: bytes


def apop_digest(salt: bytes, password: bytes) -> bytes:
    return hashlib.md5(salt.rstrip(b"\r\n") + password).hexdigest().encode()


def cram_md5_digest(salt: bytes, password: bytes) -> bytes:
    return hmac.new(password, salt.rstrip(b"\r\n"), hashlib.md5).hexdigest().encode()


def build(case: Case, s: Settings) -> Sent:
    """The request nginx would send for this case."""
    salt = None
    user, password = case.user, case.password
    if case.method in ("apop", "cram-md5"):
        salt = make_salt(s.server_name)
        digest = apop_digest if case.method == "apop" else cram_md5_digest
        password = digest(salt, password)
    elif case.method == "external":
        password = b""
    elif case.method == "none":
        user = password = b""
    ssl = list(s.ssl_headers)
    if case.certificate:
        ssl += s.cert_headers
    elif s.cert_headers:
        ssl.append(("Auth-SSL-Verify", b"NONE"))
    req = AuthRequest(
        method=case.method, user=user, password=password, protocol=case.protocol,
        attempt=case.attempt, client_ip=case.client_ip or s.client_ip, salt=salt,
        client_host=(case.client_host or s.client_host) if case.protocol == "smtp" else None,
        proxy_protocol=s.proxy_protocol,
        smtp_helo=s.helo if case.helo is None else case.helo,
        smtp_from=s.mail_from if case.mail_from is None else case.mail_from,
        smtp_to=(case.rcpt_to if case.rcpt_to is not None else
                 s.rcpt_to or b"RCPT TO:<%s>" % (s.user or b"postmaster")),
        ssl_headers=ssl)
    return Sent(build_request(s.conf, s.extra_headers, req), password)


# -- the built-in suite -------------------------------------------------------------------------

def protocol_cases(s: Settings, protocol: str) -> list[Case]:
    """Right and wrong credentials for every method nginx can use with this protocol."""
    assert s.user is not None and s.password is not None
    out: list[Case] = []
    # nginx accepts AUTHENTICATE EXTERNAL with an initial response even where external is
    # not enabled, so the no-certificate refusal is checked whatever --methods says.
    methods = s.methods if "external" in s.methods else (*s.methods, "external")
    for method in methods:
        if protocol not in METHOD_PROTOCOLS[method] or (method in OAUTH and s.token is None):
            continue
        base = Case(id="", title="", protocol=protocol, method=method, user=s.user,
                    password=s.password, strict=method in s.strict_methods,
                    backend=s.expect_backend.get(protocol))
        if method in ("plain", "apop", "cram-md5"):
            noun = "password" if method == "plain" else "digest"
            out.append(replace(base, id=f"{protocol}.{method}.right",
                               title=f"{protocol} {method}, right {noun}", role="right"))
            if method == "plain":  # after two typos in one session: still let in
                out.append(replace(base, id=f"{protocol}.plain.retry", attempt=RETRY_ATTEMPT,
                                   title=f"{protocol} plain, right password at attempt "
                                         f"{RETRY_ATTEMPT}", role="right"))
            out.append(replace(base, id=f"{protocol}.{method}.wrong",
                               title=f"{protocol} {method}, wrong {noun}", role="wrong",
                               password=s.bad_password, expect="refused", backend=None))
        elif method == "external":
            out.append(replace(base, id=f"{protocol}.external.no-cert",
                               title=f"{protocol} external, no client certificate",
                               role="no-cert", expect="refused", certificate=False,
                               backend=None))
            if s.has_cert and method in s.methods:
                out.append(replace(base, id=f"{protocol}.external.cert",
                                   title=f"{protocol} external, verified certificate",
                                   role="right"))
        elif method in OAUTH:
            out += oauth_cases(replace(base, password=s.token or b""), s)
        else:  # none: SMTP MAIL/RCPT without AUTH; the answer is the server's policy
            out.append(replace(base, id="smtp.none", title="smtp none (MAIL/RCPT, no AUTH)",
                               role="none", expect="any", backend=None))
    return out


def oauth_cases(base: Case, s: Settings) -> list[Case]:
    """The right token; a wrong one; and the password in its place, which a server that
    checks tokens as passwords (or falls back to the password) takes."""
    head = f"{base.protocol}.{base.method}"
    title = f"{base.protocol} {base.method}"
    return [replace(base, id=f"{head}.right", title=f"{title}, right token", role="right"),
            replace(base, id=f"{head}.wrong", title=f"{title}, wrong token", role="wrong",
                    password=s.bad_token, expect="refused", backend=None),
            replace(base, id=f"{head}.password", title=f"{title}, the password as token",
                    role="password-as-token", password=s.password or b"", expect="refused",
                    backend=None)]


def attempt_cases(s: Settings, protocol: str) -> list[Case]:
    """A wrong password at Auth-Login-Attempt 1..N, as one session of retries sends it."""
    assert s.user is not None
    return [Case(id=f"{protocol}.attempts", title=f"{protocol} attempts", protocol=protocol,
                 user=s.user, password=s.bad_password, expect="refused", attempt=n,
                 role="attempt") for n in range(1, s.attempts + 1)]


def relay_case(s: Settings) -> Case:
    """smtp_auth none: MAIL and RCPT without AUTH, to a recipient no server can call local."""
    return Case(id="smtp.none.relay", title="smtp none, foreign recipient (open relay?)",
                protocol="smtp", method="none", expect="refused", role="relay",
                strict=False, rcpt_to=b"RCPT TO:<" + RELAY_PROBE + b">")


RETRY_ATTEMPT = 3
RELAY_PROBE = b"relay-probe@relay-probe.invalid"  # RFC 2606: .invalid is never local
NOBODY = b"postern-no-such-user-7f3a9c"


@dataclass(frozen=True)
class Probe:
    """An odd login or password sent for every protocol; a correct server refuses it."""

    id: str  # login.<kind> or cred.<kind>
    title: str
    user: bytes
    password: bytes
    story: str  # what acceptance means: the bug behind it


def _escape_first(value: bytes) -> bytes:
    """The value with its first byte written as %XX: equal to it only after a 2nd decoding."""
    return b"%%%02X" % value[0] + value[1:] if value else b"%41"


def login_variants(user: bytes) -> list[tuple[str, str, bytes]]:
    """(id, title, login) of logins that nginx escapes or that servers often mangle."""
    return [
        ("space", "login with a space", user + b" smith"),
        ("percent", "login with '%'", user + b"%"),
        ("double-escape", "login that decodes twice to the user", _escape_first(user)),
        ("quotes", "login with quotes", b'"' + user + b'"'),
        ("utf-8", "login in UTF-8", user + "\u00e9\u2603".encode()),
        ("control", "login with control characters", user + b"\x00\t\r\nAuth-Status: OK"),
        ("trailing-space", "login with a trailing space", user + b" "),
    ]


def probes(s: Settings) -> list[Probe]:
    """Logins a correct server refuses even with the right password, then wrong passwords
    that broken comparisons, decoders and directories take for the right one."""
    user, pw = s.user, s.password
    assert user is not None and pw is not None
    cut = "the server trims, cuts or mis-decodes logins"
    out = [Probe("login.unknown", "unknown user, right password", NOBODY, pw,
                 "the server accepts any login")]
    out += [Probe(f"login.{v}", title, login, pw,
                  "the server decodes %XX twice (nginx already escaped the '%')"
                  if v == "double-escape" else cut)
            for v, title, login in login_variants(user)]
    out += [
        Probe("login.nul", "login with a NUL byte", user + b"\x00postern", pw,
              "the server cuts the login at a NUL byte (a C string)"),
        Probe("login.empty", "empty login, right password", b"", pw,
              "the server accepts an empty login"),
        Probe("login.long", "login of 300 bytes", user + b"x" * 300, pw, cut),
        Probe("login.latin-1", "login with a byte that is not UTF-8", user + b"\xe9", pw,
              cut),
        Probe("login.wildcard", "login with an LDAP wildcard", user[:2] + b"*", pw,
              "the login goes unescaped into an LDAP filter: '*' matches any user"),
        Probe("login.ldap-filter", "login with an LDAP filter", user + b")(uid=*", pw,
              "the login goes unescaped into an LDAP filter"),
        Probe("login.sql", "login with SQL injection", b"' OR '1'='1' -- ", pw,
              "the login goes unescaped into an SQL query"),
        Probe("cred.empty-password", "empty password", user, b"",
              "an empty password is accepted (an LDAP simple bind with an empty password "
              "is an anonymous bind, and it succeeds)"),
        Probe("cred.sql", "password with SQL injection", user, b"' OR '1'='1",
              "the password goes unescaped into an SQL query"),
        Probe("cred.sql-comment", "login with SQL comment, any password",
              user + b"' -- ", s.bad_password,
              "the login goes unescaped into an SQL query: the comment drops the password test"),
        Probe("cred.ldap", "password '*'", user, b"*",
              "the password goes unescaped into an LDAP filter"),
        Probe("cred.prefix", "the password without its last byte", user, pw[:-1],
              "the server compares only as many bytes as the client sent"),
        Probe("cred.nul", "the password, a NUL byte, more", user, pw + b"\x00postern",
              "the server cuts the password at a NUL byte (a C string)"),
        Probe("cred.double-escape", "password that decodes twice to the password", user,
              _escape_first(pw), "the server decodes %XX twice (nginx already escaped the "
              "'%')"),
        Probe("cred.sql-quote", "password with SQL injection (double quotes)", user,
              b'x" OR "1"="1', "the password goes unescaped into an SQL query"),
        Probe("cred.utf-8", "password with UTF-8 and a byte that is not", user,
              pw + "\u00e9".encode() + b"\xff", "the server compares a lossy decoding"),
        Probe("cred.shell", "password with shell syntax", user, b"x';true;'`true`$(true)",
              "the password reaches a shell"),
        Probe("cred.long", "password of 300 bytes", user, pw + b"x" * 300,
              "the server compares only a prefix of the password"),
    ]
    if pw.swapcase() != pw:
        out.append(Probe("cred.case", "the password in other letter case", user,
                         pw.swapcase(), "the server compares passwords case-insensitively"))
    out.append(Probe("cred.spaces", "the password with spaces around it", user,
                     b" " + pw + b" ", "the server trims the password"))
    if b" " in pw:
        out.append(Probe("cred.plus", "the password with '+' for its spaces", user,
                         pw.replace(b" ", b"+"), "the server decodes '+' as a space (form "
                         "decoding); nginx sends spaces as %20 and '+' as is"))
    elif b"+" in pw:
        out.append(Probe("cred.plus", "the password with spaces for its '+'", user,
                         pw.replace(b"+", b" "), "the server decodes '+' as a space"))
    if b" " in user:
        out.append(Probe("login.plus", "the login with '+' for its spaces",
                         user.replace(b" ", b"+"), pw, "the server decodes '+' as a space"))
    out = [p for p in out if p.password != pw or p.user != user]
    # the likeliest bypasses first: a lockout after a few failures hides the later ones
    first = ("cred.empty-password", "cred.case", "cred.sql", "cred.sql-comment")
    return sorted(out, key=lambda p: (p.id.startswith("cred."),
                                      first.index(p.id) if p.id in first else len(first)))


def probe_cases(s: Settings, probe: Probe) -> list[Case]:
    return [Case(id=probe.id, title=probe.title, protocol=p, user=probe.user,
                 password=probe.password, expect="refused", role=probe.id)
            for p in s.protocols]


# -- case files ---------------------------------------------------------------------------------

class CaseFileError(ValueError):
    pass


_KEYS = {"name", "protocol", "method", "user", "password", "expect", "attempt", "client_ip",
         "client_host", "helo", "mail_from", "rcpt_to", "certificate", "backend", "login",
         "error", "error_code", "wait"}


def load_cases(path: str, protocols: tuple[str, ...]) -> list[Case]:
    """Read a TOML case file; every mistake is reported with the case it is in."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as err:
        raise CaseFileError(f"{path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise CaseFileError(f"{path}: {err}") from None
    extra = set(doc) - {"case"}
    if extra:
        raise CaseFileError(f"{path}: unknown table or key {min(extra)!r} "
                            "(cases go in [[case]] tables)")
    entries = doc.get("case", [])
    if not isinstance(entries, list):
        raise CaseFileError(f"{path}: cases go in [[case]] tables")
    out: list[Case] = []
    seen: set[str] = set()
    for n, entry in enumerate(entries, 1):
        where = f"{path}: case {n}"
        try:
            cases = _one_case(entry, protocols)
        except CaseFileError as err:
            raise CaseFileError(f"{where}: {err}") from None
        ids = {c.id for c in cases}
        if ids & seen:
            raise CaseFileError(f"{where}: another case is named {entry['name']!r}")
        seen |= ids
        out += cases
    return out


def _one_case(entry: dict, protocols: tuple[str, ...]) -> list[Case]:
    unknown = set(entry) - _KEYS
    if unknown:
        raise CaseFileError(f"unknown key {min(unknown)!r}")
    name = _text(entry, "name")
    if not name:
        raise CaseFileError("'name' is required")
    method = _text(entry, "method") or "plain"
    if method not in METHODS:
        raise CaseFileError(f"method {method!r} is not one of {', '.join(METHODS)}")
    expect = _text(entry, "expect") or "ok"
    if expect not in EXPECTS:
        raise CaseFileError(f"expect {expect!r} is not one of {', '.join(EXPECTS)}")
    wanted = entry.get("protocol", list(protocols))
    wanted = [wanted] if isinstance(wanted, str) else wanted
    if not isinstance(wanted, list) or not all(p in PROTOCOLS for p in wanted) or not wanted:
        raise CaseFileError(f"protocol must be imap, pop3, smtp or a list of them, "
                            f"not {entry.get('protocol')!r}")
    wanted = [p for p in wanted if p in METHOD_PROTOCOLS[method]]
    if not wanted:
        raise CaseFileError(f"nginx never sends method {method!r} for that protocol")
    attempt = entry.get("attempt", 1)
    wait = entry.get("wait")
    if not isinstance(attempt, int) or attempt < 1:
        raise CaseFileError("attempt must be a positive integer")
    if wait is not None and (not isinstance(wait, int) or wait < 0):
        raise CaseFileError("wait must be a non-negative integer")
    certificate = entry.get("certificate", True)
    if not isinstance(certificate, bool):
        raise CaseFileError("certificate must be true or false")
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "case"
    base = Case(
        id=f"case.{slug}", title=name, protocol=wanted[0], method=method,
        user=_bytes(entry, "user") or b"", password=_bytes(entry, "password") or b"",
        expect=expect, attempt=attempt, role="file", client_ip=_text(entry, "client_ip"),
        client_host=_text(entry, "client_host"), certificate=certificate,
        helo=_bytes(entry, "helo"), mail_from=_bytes(entry, "mail_from"),
        rcpt_to=_bytes(entry, "rcpt_to"), backend=_backend(entry.get("backend")),
        login=_bytes(entry, "login"), error=_bytes(entry, "error"),
        error_code=_bytes(entry, "error_code"), wait=wait)
    return [replace(base, id=f"{base.id}.{p}", title=f"{p} {name}", protocol=p) for p in wanted]


def _text(entry: dict, key: str) -> str | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise CaseFileError(f"{key} must be a string")
    return value


def _bytes(entry: dict, key: str) -> bytes | None:
    value = _text(entry, key)
    return None if value is None else value.encode("utf-8", "surrogateescape")


def parse_backend(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected IP:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _backend(value: object) -> tuple[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise CaseFileError("backend must be a string IP:PORT")
    try:
        return parse_backend(value)
    except ValueError as err:
        raise CaseFileError(f"backend: {err}") from None
