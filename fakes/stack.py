"""``postern fakes --script FILE.toml``: the IMAP, POP3 and SMTP fake upstreams and the mock
auth server in one process, from one script (format: ``fakes/script.py``).

The upstreams start first, on the script's addresses (port 0: a free one); the mock auth
server then answers with their addresses unless the script names other backends. IMAP and
POP3 serve one ``MailStore``, so POP3's maildrop is the IMAP INBOX, and mail the SMTP fake
accepts for one of its users lands in that INBOX (``[smtp] mail_dir`` also keeps every
accepted message as an .eml file). The command prints a
table of what listens where and the ``mail {}`` snippet that points nginx or Postern at them,
then runs until Ctrl-C or SIGTERM.

In a test, ``with FakeStack(load_script(path)) as stack:`` runs it all on a private loop
thread; ``stack.imap``, ``stack.pop3``, ``stack.smtp`` and ``stack.auth`` are the servers
(None for a leg the script disables).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from fakes._runner import BackgroundServer, run_server
from fakes.auth import Backend, MockAuthServer
from fakes.imap import FakeImapServer
from fakes.mailbox import MailStore
from fakes.pop3 import FakePop3Server
from fakes.script import (
    LEG_FAULTS,
    PROTOCOLS,
    Script,
    ScriptError,
    build_auth,
    describe_faults,
    load_script,
)
from fakes.smtp import FakeSmtpServer

DEFAULT_USERS = {"alice": "secret"}
_SERVERS: dict[str, Any] = {"imap": FakeImapServer, "pop3": FakePop3Server,
                            "smtp": FakeSmtpServer}


class FakeStack(BackgroundServer):
    """The three fake upstreams and the mock auth server of one script."""

    def __init__(self, script: Script, *, record: bool = True, use_uvloop: bool = True,
                 requests_log: str | None = None) -> None:
        self.script = script
        self.record, self.use_uvloop = record, use_uvloop
        self.requests_log = requests_log
        c = script.content
        self.store = MailStore(c.seed, c.counts, shared=c.shared, large_message=c.large_message)
        self.imap: FakeImapServer | None = None
        self.pop3: FakePop3Server | None = None
        self.smtp: FakeSmtpServer | None = None
        self.auth: MockAuthServer | None = None
        self._started: list[Any] = []

    def leg(self, protocol: str) -> Any:
        return getattr(self, protocol)

    @property
    def backends(self) -> dict[str, Backend]:
        return {p: (s.host, s.port) for p in PROTOCOLS if (s := self.leg(p)) is not None}

    async def start(self) -> None:
        try:
            for proto in PROTOCOLS:
                leg = self.script.legs[proto]
                if not leg.enabled:
                    continue
                kw: dict[str, Any] = dict(leg.options)
                if proto != "smtp":
                    kw["store"] = self.store
                else:
                    kw["deliver"] = self._deliver
                server = _SERVERS[proto](
                    self.script.upstream_users(proto), host=leg.listen[0], port=leg.listen[1],
                    faults=LEG_FAULTS[proto](**leg.faults), record=self.record,
                    use_uvloop=self.use_uvloop, **kw)
                await server.start()
                self._started.append(server)
                setattr(self, proto, server)
            self.auth = build_auth(self.script, backends=self.backends,
                                   listen=self.script.auth.listen or ("127.0.0.1", 0),
                                   requests_log=self.requests_log, record=self.record,
                                   use_uvloop=self.use_uvloop)
            await self.auth.start()
            self._started.append(self.auth)
        except BaseException:
            await self.stop()
            raise

    def _deliver(self, user: str, raw: bytes) -> None:
        """SMTP -> the shared store, through the IMAP fake (idling clients are told)."""
        if self.imap is not None:
            self.imap.deliver(user, "INBOX", raw)
        elif self.pop3 is not None:
            self.pop3.deliver(user, raw)

    async def stop(self) -> None:
        while self._started:
            await self._started.pop().stop()

    # -- what to tell the operator ----------------------------------------------------------

    def nginx_directives(self, listen: dict[str, str] | None = None) -> str:
        """The inside of the ``mail {}`` block that points a proxy at this stack; ``listen``
        (protocol -> HOST:PORT) replaces the script's proxy addresses."""
        assert self.auth is not None, "not started"
        n = self.script.nginx
        listen = n.listen if listen is None else listen
        lines = [f"server_name {n.server_name};", f"auth_http {self.auth.url};",
                 "proxy_pass_error_message on;", *n.directives]
        for proto in PROTOCOLS:
            if self.leg(proto) is None or not listen.get(proto):
                continue
            lines += ["", "server {", f"    listen {listen[proto]};",
                      f"    protocol {proto};",
                      *(f"    {d}" for d in n.server_directives.get(proto, [])), "}"]
        return "\n".join(lines) + "\n"

    def nginx_snippet(self, listen: dict[str, str] | None = None) -> str:
        body = "".join(f"    {line}\n" if line else "\n"
                       for line in self.nginx_directives(listen).splitlines())
        return f"mail {{\n{body}}}\n"

    def table(self) -> str:
        """What listens where, with the faults and content each leg serves."""
        assert self.auth is not None, "not started"
        rows = []
        for proto in PROTOCOLS:
            server = self.leg(proto)
            if server is None:
                rows.append((proto, "-", "disabled"))
                continue
            what = f"fake {proto.upper()} upstream"
            if proto == "smtp" and server.faults.xclient:
                what += " (XCLIENT)"
            if proto == "smtp":
                what += "; mail for a user goes to its INBOX"
                if server.mail_dir is not None:
                    what += f", every message to {server.mail_dir}/"
            faults = describe_faults(server.faults)
            rows.append((proto, f"{server.host}:{server.port}",
                         what + (f"; faults: {faults}" if faults else "")))
        auth_faults = describe_faults(self.auth.faults)
        rows.append(("auth_http", f"{self.auth.host}:{self.auth.port}",
                     f"mock auth server {self.auth.url}"
                     + (f"; faults: {auth_faults}" if auth_faults else "")))
        out = ["  leg        address                what"]
        out += [f"  {leg:<10} {addr:<22} {what}" for leg, addr, what in rows]
        out.append("")
        out.append(f"  users:     {self._users_line()}")
        c = self.script.content
        counts = ", ".join(f"{n} {k}" for k, n in c.counts.items())
        large = f"; one {c.large_message}-byte message in each INBOX" if c.large_message else ""
        shared = " (one set shared by all users)" if c.shared else ""
        out.append(f"  content:   seed {c.seed}: {counts} per user{shared}{large}")
        scripted = sum(len(u.replies) + len(u.by_attempt) for u in self.script.users.values())
        out.append(f"  replies:   {len(self.script.queue)} queued, {scripted} per user")
        if self.auth.requests_log:
            out.append(f"  requests:  {self.auth.requests_log} (JSON lines, Auth-Pass masked)")
        return "\n".join(out) + "\n"

    def _users_line(self) -> str:
        names = []
        for login, user in self.script.users.items():
            names.append(login + (f" (upstream login {user.backend_user})"
                                  if user.backend_user else ""))
        return ", ".join(names) or "none (every login is refused)"

    def banner(self) -> str:
        return (f"postern fakes: {self.script.source} (Ctrl-C stops)\n\n{self.table()}\n"
                "Point nginx or Postern at them with:\n\n" + self.nginx_snippet())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="postern fakes",
        description="The fake IMAP, POP3 and SMTP upstreams and the mock auth_http server, "
                    "from one script (format: fakes/script.py).")
    p.add_argument("--script", metavar="FILE.toml",
                   help=f"the script (default: every leg on a free port, users "
                        f"{', '.join(DEFAULT_USERS)})")
    p.add_argument("--requests-log", metavar="FILE",
                   help="append one JSON line per auth request (Auth-Pass masked)")
    p.add_argument("--mail-dir", metavar="DIR",
                   help="keep every message the SMTP fake accepts there as NNNNN.eml "
                        "(overrides the script's [smtp] mail_dir)")
    p.add_argument("--check", action="store_true", help="check the script and exit")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines")
    return p


def default_script() -> Script:
    from fakes.auth import User
    return Script("(built-in defaults)", users={u: User(p) for u, p in DEFAULT_USERS.items()})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        script = load_script(args.script) if args.script else default_script()
    except ScriptError as err:
        print(f"postern fakes: {err}", file=sys.stderr)
        return 2
    if args.mail_dir:
        script.legs["smtp"].options["mail_dir"] = args.mail_dir
    if args.check:
        print(f"postern fakes: {script.source} is fine")
        return 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    # aiosmtpd logs every command line at INFO, AUTH blobs included
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    stack = FakeStack(script, record=False, use_uvloop=not args.no_uvloop,
                      requests_log=args.requests_log)
    try:
        run_server(stack, stack.banner, not args.no_uvloop)
    except OSError as err:  # an address in use, most likely
        print(f"postern fakes: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
