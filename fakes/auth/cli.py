"""``postern auth-mock`` (``python -m postern.fakes.auth``): the mock auth_http server from the command
line, optionally from a script (``fakes.script``)."""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
from collections.abc import Sequence

from postern.fakes._runner import hostport, login_password, run_server
from postern.fakes.auth.server import DEFAULT_FAIL, Backend, MockAuthServer
from postern.fakes.script import build_auth, load_script


def _backend(text: str) -> tuple[str, Backend]:
    proto, sep, addr = text.partition("=")
    if not sep or proto not in ("imap", "pop3", "smtp"):
        raise argparse.ArgumentTypeError(f"expected imap|pop3|smtp=HOST:PORT, got {text!r}")
    return proto, hostport(addr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="postern auth-mock",
                                description="Scriptable mock of an nginx auth_http server.")
    p.add_argument("--script", metavar="FILE.toml",
                   help="users, replies and settings from a script (format: fakes/script.py); "
                        "the options below add to it or override it")
    p.add_argument("--print-nginx", action="store_true",
                   help="print the nginx auth_http line for this server and exit")
    p.add_argument("--listen", type=hostport, metavar="HOST:PORT",
                   help="default 127.0.0.1:9000")
    p.add_argument("--uri", help="path shown in the printed URL (default /auth)")
    p.add_argument("--user", type=login_password, action="append", default=[],
                   metavar="LOGIN:PASSWORD")
    p.add_argument("--token", type=login_password, action="append", default=[],
                   metavar="LOGIN:TOKEN", help="a bearer token of LOGIN (xoauth2, oauthbearer); "
                   "repeatable")
    p.add_argument("--backend", type=_backend, action="append", default=[],
                   metavar="PROTO=HOST:PORT", help="backend for every user (imap, pop3, smtp)")
    p.add_argument("--fail-wait", type=int, help="Auth-Wait sent on failures")
    p.add_argument("--fail-wait-attempts", type=int, metavar="N",
                   help="no Auth-Wait past Auth-Login-Attempt N, so the proxy closes "
                        "(default: always sent)")
    p.add_argument("--fail-message", help=f"default {DEFAULT_FAIL!r}")
    p.add_argument("--smtp-error-code", help='e.g. "535 5.7.8", sent on SMTP failures')
    p.add_argument("--always-pass", action="store_true",
                   help="send Auth-Pass on every success, not only for apop/cram-md5/external")
    p.add_argument("--requests-log", metavar="FILE",
                   help="append one JSON line per request (Auth-Pass masked)")
    p.add_argument("--keepalive", action="store_true",
                   help="keep HTTP/1.1 connections open (for Postern's auth_http_keepalive)")
    p.add_argument("--close-after", type=int, metavar="N",
                   help="with --keepalive: close each connection after N replies, unannounced")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate "
                   "(chain) and --tls-key (for Postern's auth_http https://)")
    p.add_argument("--tls-key", metavar="PEM")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines")
    return p


def _server(args: argparse.Namespace) -> MockAuthServer:
    """The server the command line (and its --script, if any) describes."""
    if args.script:
        server = build_auth(load_script(args.script), record=False)
    else:
        server = MockAuthServer(port=9000, record=False)
    for login, password in args.user:
        server.add_user(login, password)
    for login, token in args.token:
        server.tokens[token] = login
    server.backends.update(dict(args.backend))
    if args.listen:
        server.host, server.port = args.listen
    for attr, value in (("uri_path", args.uri), ("fail_wait", args.fail_wait),
                        ("fail_wait_attempts", args.fail_wait_attempts),
                        ("fail_message", args.fail_message),
                        ("smtp_error_code", args.smtp_error_code),
                        ("requests_log", args.requests_log)):
        if value is not None:
            setattr(server, attr, value)
    server.always_send_pass = server.always_send_pass or args.always_pass
    server.keepalive = server.keepalive or args.keepalive
    if args.close_after is not None:
        server.faults.close_after = args.close_after
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except OSError as err:
            raise ValueError(f"cannot load {args.tls_cert} / {args.tls_key}: {err}") from None
        server.ssl_context = context
    return server


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        server = _server(args)
    except ValueError as err:  # a script mistake, named with its key path
        print(f"auth-mock: {err}", file=sys.stderr)
        return 2
    if args.print_nginx:
        if not server.port:
            print("auth-mock: the port is chosen at start (listen port 0): the running "
                  "server prints the auth_http line", file=sys.stderr)
            return 2
        print(f"auth_http {server.url};")
        return 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    run_server(server, lambda: f"auth_http listening on {server.url}\n"
                               f"nginx: auth_http {server.url};", not args.no_uvloop)
    return 0
