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
import copy
import logging
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from postern.fakes._runner import BackgroundServer, run_server
from postern.fakes.auth import Backend, MockAuthServer, User
from postern.fakes.imap import FakeImapServer
from postern.fakes.mailbox import MailStore
from postern.fakes.pki import Authority, ServerFiles
from postern.fakes.pop3 import FakePop3Server
from postern.fakes.script import (
    LEG_FAULTS,
    PROTOCOLS,
    Script,
    ScriptError,
    build_auth,
    describe_faults,
    load_script,
)
from postern.fakes.smtp import FakeSmtpServer

DEFAULT_USERS = {"alice": "secret"}
_SERVERS: dict[str, Any] = {"imap": FakeImapServer, "pop3": FakePop3Server,
                            "smtp": FakeSmtpServer}


class FakeStack(BackgroundServer):
    """The three fake upstreams and the mock auth server of one script."""

    def __init__(self, script: Script, *, record: bool = True, use_uvloop: bool = True,
                 requests_log: str | Path | None = None, one_store: bool = True) -> None:
        self.script = script
        self.record, self.use_uvloop = record, use_uvloop
        self.requests_log = requests_log
        # one_store=False: IMAP and POP3 each make their own store from their leg's options
        # (seed, shared_content, ...) and SMTP delivers nowhere
        self.one_store = one_store
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
                if self.one_store and proto == "smtp":
                    kw["deliver"] = self._deliver
                elif self.one_store:
                    kw["store"] = self.store
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



TARGETS = ("postern", "nginx", "none")
TLS_MODES = ("off", "starttls", "implicit")


class Stack:
    """The fakes, the mock auth server and a chosen target in front, in one line::

        with Stack("postern", users={"alice": "secret"}, tls="starttls") as stack:
            imaplib.IMAP4(*stack.addresses["imap"])     # through Postern
            stack.imap.commands                        # what reached the fake upstream

    ``target`` is "postern", "nginx" or "none" (clients talk to the fakes directly).
    The fakes come from ``script`` (a ``fakes.script.Script``; default: ``users`` with
    passwords, every leg on a free port); IMAP and POP3 share one ``MailStore`` and SMTP
    delivers into it unless ``one_store=False``. The mock auth server answers each user
    with the fakes' addresses (``auth_fallback=False``: only the users, not SMTP's
    Auth-Method none). With ``tls`` other than "off" one CA
    (``fakes.pki``) signs the target's certificate: ``stack.tls.ca`` is what clients trust.
    The target runs one ``mail {}`` text made from the script's ``[nginx]`` settings for
    ``protocols`` (default: all three), with ``main`` lines and ``error_log_level`` for its
    top level; ``start_target`` starts more targets from any text (a scenario's own config)
    in front of the same fakes. Files (config, logs, certificates) go to ``workdir``
    (default: a temporary directory removed at exit).
    """

    def __init__(self, target: str = "none", *, users: Mapping[str, str] | None = None,
                 script: Script | None = None, tls: str = "off",
                 protocols: Sequence[str] = PROTOCOLS, workdir: str | Path | None = None,
                 main: str = "", error_log_level: str = "info", record: bool = True,
                 one_store: bool = True, auth_fallback: bool = True, use_uvloop: bool = True,
                 requests_log: str | Path | None = None) -> None:
        if target not in TARGETS or tls not in TLS_MODES:
            raise ValueError(f"target must be one of {TARGETS}, tls one of {TLS_MODES}")
        self.target, self.tls_mode = target, tls
        self.protocols = [p for p in PROTOCOLS if p in protocols]
        self.main, self.error_log_level = main, error_log_level
        self.auth_fallback = auth_fallback
        self.fakes = FakeStack(script or default_script(users), record=record,
                               use_uvloop=use_uvloop, requests_log=requests_log,
                               one_store=one_store)
        self._workdir = Path(workdir) if workdir is not None else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir: Path | None = None
        self.tls: ServerFiles | None = None
        self.proxy: Any = None  # the target's running instance (None for "none")
        self.proxy_ports: dict[str, int] = {}
        self.targets: list[Any] = []  # every instance started, stopped at exit

    # -- the parts --------------------------------------------------------------------------
    # the fakes and the mock auth server (None before start and for a disabled leg)
    imap = property(lambda self: self.fakes.imap)
    pop3 = property(lambda self: self.fakes.pop3)
    smtp = property(lambda self: self.fakes.smtp)
    auth = property(lambda self: self.fakes.auth)

    @property
    def store(self) -> MailStore:
        return self.fakes.store

    @property
    def backends(self) -> dict[str, Backend]:
        """Each fake upstream's address."""
        return self.fakes.backends

    @property
    def addresses(self) -> dict[str, Backend]:
        """Where a client reaches each protocol: the target's port when it proxies the
        protocol, else the fake upstream itself."""
        out = dict(self.backends)
        out.update({p: ("127.0.0.1", port) for p, port in self.proxy_ports.items()})
        return out

    # -- starting and stopping --------------------------------------------------------------
    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="postern-stack-")
            self.workdir = Path(self._tmp.name)
        else:
            self.workdir = self._workdir.resolve()
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.fakes.start_in_thread()
        self._reset_auth()
        if self.tls_mode != "off":
            self.tls = Authority("Postern stack").server_files(
                self.workdir, "localhost", "lab.postern.test", "127.0.0.1", "::1")
        if self.target != "none" and self.protocols:
            self.proxy_ports = dict(zip(self.protocols, _free_ports(len(self.protocols))))
            self.proxy = self.start_target(self.mail_text(), self.workdir / self.target,
                                           main=self.main, error_log_level=self.error_log_level)

    def stop(self) -> None:
        while self.targets:
            self.targets.pop().stop()
        self.fakes.stop_in_thread()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def start_target(self, mail: str, workdir: str | Path, *, name: str | None = None,
                     **options: Any) -> Any:
        """Start a target (default: this stack's) on ``mail`` (the inside of ``mail {}``)
        in ``workdir``; ``options`` go to its launcher (``main``, ``error_log_level``,
        ``start_timeout``). It is stopped with the stack; returns the running instance."""
        Path(workdir).mkdir(parents=True, exist_ok=True)
        instance = target_class(name or self.target)(mail, workdir, **options)
        instance.start()
        self.targets.append(instance)
        return instance

    def mail_text(self, ports: Mapping[str, int] | None = None) -> str:
        """The ``mail {}`` text of this stack's target: the script's ``[nginx]`` settings,
        one server per port (default: the stack's), and the TLS mode's directives."""
        ports = self.proxy_ports if ports is None else ports
        nginx = self.fakes.script.nginx
        listen = {p: f"127.0.0.1:{port}" + (" ssl" if self.tls_mode == "implicit" else "")
                  for p, port in ports.items()}
        directives = list(nginx.directives)
        if self.tls is not None:
            directives += self.tls.directives().splitlines()
        if self.tls_mode == "starttls":
            directives.append("starttls on;")
        saved, nginx.directives = nginx.directives, directives
        try:
            return self.fakes.nginx_directives(listen)
        finally:
            nginx.directives = saved

    def reset(self) -> None:
        """Between tests sharing one stack: the auth server is back to the script's users
        and queue with no requests recorded, every fake to default faults, no records."""
        self._reset_auth()
        for proto in PROTOCOLS:
            server = self.fakes.leg(proto)
            if server is not None:
                server.reset()

    def _reset_auth(self) -> None:
        """The script's users, each with the fakes as its backends. Without auth_fallback
        the fakes are not the auth server's backends for everyone: a request no user
        matches (SMTP's Auth-Method none) is refused unless a test scripts its reply."""
        auth = self.fakes.auth
        assert auth is not None, "not started"
        auth.clear()
        auth.users.clear()
        auth.tokens.clear()
        for login, user in copy.deepcopy(self.fakes.script.users).items():
            user.backends = {**self.backends, **user.backends}
            auth.users[login] = user
        auth.push(*copy.deepcopy(self.fakes.script.queue))
        if not self.auth_fallback:
            auth.backends.clear()


def target_class(name: str) -> type:
    """The launcher of a target ("postern" or "nginx": a private instance started from a
    ``mail {}`` text as an operator would start it)."""
    from postern.scenarios.kit.targets import target_class as launcher
    return launcher(name)


def _free_ports(count: int) -> list[int]:
    from postern.scenarios.kit.real.common import free_ports
    return free_ports(count)


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


def default_script(users: Mapping[str, str] | None = None) -> Script:
    """Every leg on a free port, these logins (default: DEFAULT_USERS) with their passwords."""
    users = DEFAULT_USERS if users is None else users
    return Script("(built-in defaults)", users={u: User(p) for u, p in users.items()})


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
