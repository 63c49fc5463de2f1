"""The embedded load-test lab: fake upstreams + mock auth_http + a proxy in front.

Runs as its own process (``python -m postern.loadtest._lab``), started by the locust master: the
fakes are asyncio servers in threads, which must not live in a gevent-patched locust
process (patched threads are greenlets, and a uvloop loop would block the whole hub), and
their CPU should not be billed to the load generator either.

It prints one JSON line (a ``loadtest._target.Target``) on stdout once everything listens,
then serves until SIGTERM/SIGINT or until its stdin closes (the parent died).

The proxy in front is Postern by default (or Debian's nginx, or none), started from one
generated ``mail {}`` text for the protocols it can proxy: Postern serves the protocols
that have a declaration in ``proxy.protocols.PROTOCOLS``; the other protocols' users go
straight to their fake backend, and the target's notes say so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from postern.fakes.script import Script
from postern.loadtest._target import PROTOCOLS, TLS_MODES, Endpoint, Target

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("postern.loadtest.lab")

SERVERS = {
    "imap": ["imap_auth plain;", "imap_capabilities IMAP4rev1 IDLE LITERAL+ UIDPLUS;"],
    "pop3": ["pop3_auth plain;", "pop3_capabilities TOP USER UIDL;"],
    "smtp": ["smtp_auth plain login;", 'smtp_capabilities PIPELINING "SIZE 52428800" 8BITMIME;'],
}


def lab_users(count: int) -> list[tuple[str, str]]:
    return [(f"load{i:04d}", f"secret-{i:04d}") for i in range(count)]


def fake_available(protocol: str) -> bool:
    """Whether fakes/<protocol>.py exists (found without importing it)."""
    try:
        return importlib.util.find_spec(f"postern.fakes.{protocol}") is not None
    except ImportError:
        return False


def proxied_protocols(proxy: str) -> set[str]:
    if proxy == "none":
        return set()
    if proxy == "nginx":
        return set(PROTOCOLS)
    from postern.proxy.protocols import PROTOCOLS as DECLARED
    return set(DECLARED)


def lab_script(users: list[tuple[str, str]], seed: int) -> Script:
    """The fakes of a load run: many accounts share one generated mailbox set, IMAP and POP3
    serve one store (the POP3 maildrop is the IMAP INBOX, where SMTP delivers mail for a lab
    account), and the IMAP fake advertises what the profiles' clients use."""
    from postern.fakes import imap
    from postern.fakes.stack import default_script

    script = default_script(dict(users))
    script.nginx.server_name = "lab.postern.test"
    script.nginx.server_directives = dict(SERVERS)
    script.content.seed, script.content.shared = seed, True
    script.legs["imap"].options.update(capabilities=list(imap.CLIENT_CAPABILITIES))
    return script


def _forget_mail(fake, stop: threading.Event) -> None:
    """The fake SMTP server keeps every accepted message (tests read them); a load run
    would grow without bound, so drop them every few seconds."""
    while not stop.wait(5.0):
        del fake.messages[:]


class Lab:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(args.dir or ROOT / "lab" / "loadtest").resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users = lab_users(args.users)
        self.stack = None
        self.stopping = threading.Event()

    def start(self) -> Target:
        from postern.fakes.stack import Stack

        args, notes = self.args, []
        proxied = proxied_protocols(args.proxy)
        # nothing recorded: a long run must not keep every command in memory. One store:
        # SmtpUser writes to addresses no account has (kept nowhere), DeliveryUser to its
        # own account, whose IMAP and POP3 sessions must then find the message
        self.stack = stack = Stack(
            args.proxy, script=lab_script(self.users, args.seed), tls=args.tls,
            protocols=sorted(proxied), workdir=self.workdir, record=False,
            main=f"worker_processes {args.workers};", error_log_level="notice")
        stack.start()
        threading.Thread(target=_forget_mail, args=(stack.smtp, self.stopping),
                         daemon=True).start()
        endpoints = {}
        for protocol, (host, port) in stack.addresses.items():
            via = args.proxy if protocol in stack.proxy_ports else "direct"
            endpoints[protocol] = Endpoint(host, port, args.tls if via != "direct" else "off",
                                           via)
            if via == "direct" and args.proxy != "none":
                notes.append(f"{protocol.upper()} goes straight to its fake backend: "
                             f"{args.proxy} does not proxy {protocol.upper()} yet")
            if via == "direct" and args.tls != "off":
                notes.append(f"{protocol.upper()} runs without TLS: its fake backend "
                             "is reached directly")
        tls_ca = str(stack.tls.ca) if stack.tls is not None else None
        return Target(dict(sorted(endpoints.items())), self.users, tls_ca, notes)

    def stop(self) -> None:
        self.stopping.set()
        if self.stack is not None:
            self.stack.stop()


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m postern.loadtest._lab", description=__doc__.split("\n")[0])
    p.add_argument("--proxy", choices=("postern", "nginx", "none"), default="postern")
    p.add_argument("--tls", choices=TLS_MODES, default="off")
    p.add_argument("--users", type=int, default=50, help="accounts load0000.. (secret-0000..)")
    p.add_argument("--workers", type=int, default=1, help="worker_processes of the proxy")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", help="config, logs and certificates (default: lab/loadtest)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s lab %(name)s %(message)s")
    lab = Lab(_args(argv))
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        target = lab.start()
        print(json.dumps({"target": json.loads(target.to_json()), "dir": str(lab.workdir)}),
              flush=True)
        # stdin closes when the locust process goes away, however it went
        threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
        done.wait()
    except Exception as exc:  # noqa: BLE001 - the parent shows this line as the reason
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    finally:
        lab.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
