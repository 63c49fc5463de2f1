"""`postern check-auth URL`: hold a third-party auth_http server to what nginx needs.

It sends exactly the requests nginx sends (proxy.auth_http.build_request), for the
credentials and cases given, reads every answer with nginx's own parser
(proxy.auth_http.parse_response, AuthResponse.backend) and reports, per check, a verdict
(pass / warn / fail), the reason, and what the mail client would see byte for byte.

    postern check-auth http://127.0.0.1:9000/auth --user alice --password secret
    postern check-auth unix:/run/auth.sock:/auth --user alice --password secret \\
        --protocol imap --methods plain,cram-md5 --timeout 5s --json

Exit status: 0 when nothing failed (warnings allowed), 1 on any fail, 2 on a usage error.
The JSON schema is documented in checkauth/report.py; the case file format in
checkauth/cases.py. The modules: wire (one exchange, as nginx does it), cases (what
to ask), judge (what nginx does with an answer), summary (checks over many answers), run
(the order), report (table and JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import socket
import sys
from collections.abc import Sequence

from postern.proxy.auth_http import escape
from postern.proxy.conf.addr import UrlError, parse_url
from postern.proxy.conf.settings import AuthHttp
from postern.proxy.conf.values import parse_time

from . import extensions
from .cases import METHODS, PROTOCOLS, CaseFileError, Settings, load_cases, parse_backend
from .report import exit_status, to_json, to_table
from .run import planned_failures, run

__all__ = ["main", "settings_from_args"]


SIDE_EFFECTS = """\
What it does to a real directory: every check that the right password must pass runs first;
then 15 to 20 failed logins per protocol are sent for --user (wrong passwords and digests,
an empty password, injection strings), and one series of --attempts wrong passwords (one
protocol); the number is printed on stderr before the run starts. A server with an account lockout may lock the account: the run
ends by trying the right password once more and reports a lockout as such. Use a test
account, or tell the directory's owners first."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # the error first, then one line of usage
        self.exit(2, f"{self.prog}: error: {message}\nusage: {self.usage}\n"
                     f"(postern check-auth --help for every option)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="postern check-auth",
        usage="postern check-auth URL --user USER --password PASSWORD [options]",
        description="Check an nginx auth_http server: send nginx's exact requests, judge "
                    "the answers by nginx's rules, show what mail clients would see.",
        epilog=SIDE_EFFECTS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="the auth_http URL as in nginx.conf (http://HOST[:PORT]/URI "
                               "or unix:/PATH[:/URI]; https:// as Postern takes it)")
    p.add_argument("--user", help="a login the server knows")
    p.add_argument("--password", help="its password (plaintext; digests are computed)")
    p.add_argument("--bad-password", help="a wrong password (default: PASSWORD-wrong)")
    p.add_argument("--token", help="a bearer token of --user: adds the xoauth2 and "
                   "oauthbearer checks (Postern's OAuth methods)")
    p.add_argument("--bad-token", default="postern-invalid-token",
                   help="a token the server must refuse (default: postern-invalid-token)")
    p.add_argument("--protocol", default=",".join(PROTOCOLS),
                   help="comma-separated: imap,pop3,smtp (default: all)")
    p.add_argument("--methods", help="comma-separated Auth-Methods you enable in nginx; a "
                   "refusal of the right credentials then fails instead of warning "
                   f"(default: try all of {','.join(METHODS)}, only plain is required)")
    p.add_argument("--timeout", default="60s", help="auth_http_timeout (nginx syntax: 60s, "
                   "500ms; default 60s): warn above 10%% of it, fail above it")
    p.add_argument("--burst", type=int, default=20, help="concurrent requests (0: none)")
    p.add_argument("--attempts", type=int, default=25,
                   help="wrong-password attempts in one session, sent last and for the "
                        "first protocol only (default 25)")
    p.add_argument("--cases", action="append", default=[], metavar="FILE.toml",
                   help="more cases (see examples/check-auth/cases.toml)")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="an auth_http_header line (e.g. a shared secret); repeatable")
    p.add_argument("--client-ip", default="192.0.2.1", help="Client-IP (default 192.0.2.1)")
    p.add_argument("--client-host", default="[UNAVAILABLE]", help="SMTP Client-Host")
    p.add_argument("--server-name", default=socket.gethostname(),
                   help="nginx's server_name, used in APOP/CRAM-MD5 salts")
    p.add_argument("--helo", default="client.example", help="Auth-SMTP-Helo (method none)")
    p.add_argument("--mail-from", default="MAIL FROM:<sender@example.org>",
                   help="Auth-SMTP-From, the whole MAIL command (method none)")
    p.add_argument("--rcpt-to", default="", help="Auth-SMTP-To, the whole RCPT command "
                   "(default: RCPT TO:<USER>)")
    p.add_argument("--ssl", action="store_true",
                   help="clients connect with TLS: send Auth-SSL, -Protocol, -Cipher")
    p.add_argument("--ssl-verify", action="store_true",
                   help="ssl_verify_client is not off: send Auth-SSL-Verify")
    p.add_argument("--client-cert", metavar="PEM",
                   help="the client presents this verified certificate (implies --ssl "
                        "--ssl-verify; adds the Auth-SSL-Subject/Issuer/Serial/Fingerprint "
                        "headers and an EXTERNAL login that should succeed)")
    p.add_argument("--pass-client-cert", action="store_true",
                   help="auth_http_pass_client_cert on: also send Auth-SSL-Cert")
    p.add_argument("--proxy-protocol", metavar="SRC:PORT,DST:PORT",
                   help="clients arrive with a PROXY header: send Proxy-Protocol-* headers")
    p.add_argument("--proxy-smtp-auth", action="store_true",
                   help="proxy_smtp_auth on: SMTP successes need a password")
    p.add_argument("--expect-backend", action="append", default=[], metavar="PROTO=IP:PORT",
                   help="the Auth-Server:Auth-Port a success must name; repeatable")
    p.add_argument("--cafile", metavar="PEM", help="https:// URL: the CA its certificate must "
                   "chain to (auth_http_ssl_trusted_certificate; default: the system's CAs)")
    p.add_argument("--no-verify", action="store_true",
                   help="https:// URL: do not verify its certificate (auth_http_ssl_verify off)")
    p.add_argument("--tls-name", metavar="NAME", help="https:// URL: the name its certificate "
                   "must show (auth_http_ssl_name; default: the URL's host)")
    p.add_argument("--tls-cert", metavar="PEM", help="https:// URL: present this client "
                   "certificate (auth_http_ssl_certificate)")
    p.add_argument("--tls-key", metavar="PEM", help="its key (auth_http_ssl_certificate_key)")
    p.add_argument("--json", action="store_true", help="JSON output (schema in the docs)")
    return p


class UsageError(ValueError):
    pass


def _list(text: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(x.strip().lower() for x in text.split(",") if x.strip()))
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise UsageError(f"{what} must be a comma-separated list of {', '.join(allowed)}")
    return items


def auth_http_conf(url: str) -> AuthHttp:
    """Split the URL as the auth_http directive does (proxy.conf.authclient.parse_auth_url);
    https:// is Postern's (nginx refuses it)."""
    tls = url.lower().startswith("https://")
    text = url[8:] if tls else url.removeprefix("http://")
    try:
        u = parse_url(text, default_port=443 if tls else 80, uri_part=True)
    except UrlError as err:
        raise UsageError(f'{err} in auth_http "{url if tls else text}"') from None
    peer = u.addrs[0]
    return AuthHttp(text=peer.name, host_header="localhost" if peer.unix_path else u.host,
                    uri=u.uri or "/", addr=peer.ip,
                    port=peer.port if peer.unix_path is None else 80, unix_path=peer.unix_path,
                    ssl=tls)


def _tls(args: argparse.Namespace, conf: AuthHttp) -> dict:
    """Settings fields for an https:// URL (--cafile, --no-verify, --tls-name, --tls-cert)."""
    given = args.cafile or args.no_verify or args.tls_name or args.tls_cert or args.tls_key
    if not conf.ssl:
        if given:
            raise UsageError("--cafile, --no-verify, --tls-name, --tls-cert and --tls-key "
                             "are for https:// URLs")
        return {}
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    try:
        ctx = extensions.tls_context(args.cafile, not args.no_verify, args.tls_cert,
                                     args.tls_key)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot load the TLS files: {err}") from None
    host = conf.host_header
    name = args.tls_name or (host[1:-1] if host.startswith("[") else host)
    return {"tls": ctx, "tls_name": name, "tls_verify": not args.no_verify}


def _certificate(path: str, pass_cert: bool) -> tuple[tuple[str, bytes], ...]:
    """The headers nginx sends for a verified client certificate (docs/behaviour.md §10.1)."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding
    except ImportError:
        raise UsageError("--client-cert needs the 'cryptography' package") from None
    try:
        with open(path, "rb") as fh:
            cert = x509.load_pem_x509_certificate(fh.read())
    except (OSError, ValueError) as err:
        raise UsageError(f"--client-cert {path}: {err}") from None
    serial = f"{cert.serial_number:X}"
    der = cert.public_bytes(Encoding.DER)
    headers = [("Auth-SSL-Verify", b"SUCCESS"),
               ("Auth-SSL-Subject", cert.subject.rfc4514_string().encode()),
               ("Auth-SSL-Issuer", cert.issuer.rfc4514_string().encode()),
               ("Auth-SSL-Serial", ("0" * (len(serial) % 2) + serial).encode()),
               ("Auth-SSL-Fingerprint", hashlib.sha1(der).hexdigest().encode())]
    if pass_cert:
        headers.append(("Auth-SSL-Cert", escape(cert.public_bytes(Encoding.PEM))))
    return tuple(headers)


def _proxy_protocol(text: str) -> tuple[str, int, str, int]:
    try:
        src, dst = text.split(",")
        (sa, sp), (da, dp) = parse_backend(src), parse_backend(dst)
    except ValueError:
        raise UsageError("--proxy-protocol wants SRC:PORT,DST:PORT") from None
    return sa, sp, da, dp


def settings_from_args(args: argparse.Namespace) -> Settings:
    conf = auth_http_conf(args.url)
    if (args.user is None) != (args.password is None):
        raise UsageError("--user and --password go together")
    if args.user is None and not args.cases:
        raise UsageError("give --user and --password, or --cases FILE")
    protocols = _list(args.protocol, PROTOCOLS, "--protocol")
    methods = _list(args.methods, METHODS, "--methods") if args.methods else METHODS
    strict = frozenset(methods) if args.methods else frozenset({"plain"})
    methods = ("plain",) + tuple(m for m in methods if m != "plain")
    ms = parse_time(args.timeout, is_sec=False)
    if not ms:
        raise UsageError(f'--timeout "{args.timeout}" is not an nginx time (60s, 500ms)')
    if args.burst < 0 or args.attempts < 1:
        raise UsageError("--burst must be 0 or more and --attempts 1 or more")
    headers = []
    for line in args.header:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header wants 'NAME: VALUE', got {line!r}")
        headers.append((name.strip(), value.strip()))
    backends = {}
    for item in args.expect_backend:
        proto, sep, addr = item.partition("=")
        try:
            if not sep or proto not in PROTOCOLS:
                raise ValueError
            backends[proto] = parse_backend(addr)
        except ValueError:
            raise UsageError(f"--expect-backend wants PROTO=IP:PORT, got {item!r}") from None
    ssl, cert = [], ()
    if args.pass_client_cert and not args.client_cert:
        raise UsageError("--pass-client-cert needs --client-cert")
    if args.client_cert:
        cert = _certificate(args.client_cert, args.pass_client_cert)
    if args.ssl or cert:
        ssl = [("Auth-SSL", b"on"), ("Auth-SSL-Protocol", b"TLSv1.3"),
               ("Auth-SSL-Cipher", b"TLS_AES_256_GCM_SHA384")]
        if args.ssl_verify and not cert:
            ssl.append(("Auth-SSL-Verify", b"NONE"))
    cases = []
    try:
        for path in args.cases:
            cases += load_cases(path, protocols)
    except CaseFileError as err:
        raise UsageError(str(err)) from None

    def enc(text: str | None) -> bytes | None:
        return None if text is None else text.encode("utf-8", "surrogateescape")

    password = enc(args.password)
    bad = enc(args.bad_password) if args.bad_password is not None else \
        (password or b"") + b"-wrong"
    if password is not None and bad == password:
        raise UsageError("--bad-password must differ from --password")
    token = enc(args.token)
    if token is None and set(methods) & {"xoauth2", "oauthbearer"} and args.methods:
        raise UsageError("--methods xoauth2 or oauthbearer needs --token")
    if token is not None and (token == enc(args.bad_token) or token == password):
        raise UsageError("--token must differ from --bad-token and --password")
    return Settings(
        conf=conf, url=args.url, user=enc(args.user), password=password, bad_password=bad,
        protocols=protocols, methods=methods, strict_methods=strict, timeout=ms / 1000,
        burst=args.burst, attempts=args.attempts, client_ip=args.client_ip,
        client_host=args.client_host, server_name=args.server_name,
        extra_headers=tuple(headers), ssl_headers=tuple(ssl), cert_headers=cert,
        proxy_protocol=_proxy_protocol(args.proxy_protocol) if args.proxy_protocol else None,
        helo=enc(args.helo) or b"", mail_from=enc(args.mail_from) or b"",
        rcpt_to=enc(args.rcpt_to) or b"", proxy_smtp_auth=args.proxy_smtp_auth,
        token=token, bad_token=enc(args.bad_token) or b"",
        expect_backend=backends, cases=tuple(cases), **_tls(args, conf))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except UsageError as err:
        parser.error(str(err))
    failures = planned_failures(settings)
    if failures:  # said before anything is sent; stderr keeps --json output clean
        sys.stderr.write(f"postern check-auth: after the right-password checks, this run sends "
                         f"about {failures} failed logins for \"{args.user}\"; a server with "
                         "an account lockout may lock it (see --help)\n")
    rows = asyncio.run(run(settings))  # Ctrl-C ends the run early, with a partial report
    sys.stdout.write(to_json(rows, settings) if args.json else to_table(rows, settings))
    if any(r.id == "interrupted" for r in rows):
        return 130
    return exit_status(rows)
