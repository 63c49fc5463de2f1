"""The embedded load-test lab: fake upstreams + mock auth_http + a proxy in front.

Runs as its own process (``python -m loadtest._lab``), started by the locust master: the
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
import importlib
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from loadtest._target import PROTOCOLS, TLS_MODES, Endpoint, Target

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
log = logging.getLogger("loadtest.lab")

MAIL = """\
server_name lab.postern.test;
auth_http 127.0.0.1:{auth_port}/auth;
proxy_pass_error_message on;
{tls}
{servers}"""

SERVERS = {
    "imap": "imap_auth plain;\n    imap_capabilities IMAP4rev1 IDLE LITERAL+ UIDPLUS;",
    "pop3": "pop3_auth plain;\n    pop3_capabilities TOP USER UIDL;",
    "smtp": 'smtp_auth plain login;\n    smtp_capabilities PIPELINING "SIZE 52428800" 8BITMIME;',
}


def lab_users(count: int) -> list[tuple[str, str]]:
    return [(f"load{i:04d}", f"secret-{i:04d}") for i in range(count)]


def fake_available(protocol: str) -> bool:
    """Whether fakes/<protocol>.py exists (found without importing it)."""
    try:
        return importlib.util.find_spec(f"fakes.{protocol}") is not None
    except ImportError:
        return False


def proxied_protocols(proxy: str) -> set[str]:
    if proxy == "none":
        return set()
    if proxy == "nginx":
        return set(PROTOCOLS)
    from proxy.protocols import PROTOCOLS as DECLARED
    return set(DECLARED)


# Many accounts share one generated mailbox set, and a long run must not keep every
# command in memory.
FAKE_OPTIONS = {"imap": {"seed": True, "shared_content": True, "record": False,
                         "capabilities": "client"},
                "pop3": {"seed": True, "shared_content": True, "record": False},
                "smtp": {"record": False}}


def _start_fake(protocol: str, users: dict[str, str], seed: int):
    """Start the fake upstream for one protocol in a thread; None when it does not exist."""
    if not fake_available(protocol):
        return None
    module = importlib.import_module(f"fakes.{protocol}")
    cls = getattr(module, f"Fake{protocol.capitalize()}Server")
    kwargs = {k: seed if k == "seed" else v for k, v in FAKE_OPTIONS[protocol].items()}
    if kwargs.get("capabilities") == "client":
        kwargs["capabilities"] = module.CLIENT_CAPABILITIES
    return cls(dict(users), **kwargs).start_in_thread()


def _forget_mail(fake, stop: threading.Event) -> None:
    """The fake SMTP server keeps every accepted message (tests read them); a load run
    would grow without bound, so drop them every few seconds."""
    while not stop.wait(5.0):
        del fake.messages[:]


def _certificate(workdir: Path) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1/localhost and the CA that signed it."""
    pem, ca_pem = workdir / "lab-cert.pem", workdir / "lab-ca.pem"
    try:
        import trustme
    except ImportError:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                        "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(pem),
                        "-out", str(ca_pem)], check=True, capture_output=True)
        pem.write_bytes(pem.read_bytes() + ca_pem.read_bytes())
        return pem, ca_pem
    ca = trustme.CA()
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(pem)
    ca.cert_pem.write_to_path(ca_pem)
    return pem, ca_pem


def mail_config(protocols: dict[str, int], auth_port: int, tls: str,
                cert: Path | None) -> str:
    """The ``mail {}`` text: one server per proxied protocol."""
    servers = []
    for protocol, port in protocols.items():
        listen = f"{HOST}:{port}" + (" ssl" if tls == "implicit" else "")
        extra = "\n    starttls on;" if tls == "starttls" else ""
        servers.append(f"server {{\n    listen {listen};\n    protocol {protocol};\n"
                       f"    {SERVERS[protocol]}{extra}\n}}\n")
    tls_lines = ""
    if tls != "off" and cert is not None:
        tls_lines = f"ssl_certificate {cert};\nssl_certificate_key {cert};"
    return MAIL.format(auth_port=auth_port, tls=tls_lines, servers="".join(servers))


class Lab:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(args.dir or ROOT / "lab" / "loadtest").resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users = lab_users(args.users)
        self.fakes: dict[str, object] = {}
        self.auth = None
        self.proxy = None
        self.stopping = threading.Event()

    def start(self) -> Target:
        from fakes.auth import MockAuthServer, User
        from scenarios.kit.real.common import free_ports

        args, notes = self.args, []
        for protocol in PROTOCOLS:
            fake = _start_fake(protocol, dict(self.users), args.seed)
            if fake is None:
                notes.append(f"no {protocol.upper()} users: fakes/{protocol}.py does not exist")
            else:
                self.fakes[protocol] = fake
        if isinstance(getattr(self.fakes.get("smtp"), "messages", None), list):
            threading.Thread(target=_forget_mail, args=(self.fakes["smtp"], self.stopping),
                             daemon=True).start()
        backends = {p: (HOST, f.port) for p, f in self.fakes.items()}
        self.auth = MockAuthServer({login: User(pw, backends=dict(backends))
                                    for login, pw in self.users}, record=False).start_in_thread()
        proxied = {p for p in self.fakes if p in proxied_protocols(args.proxy)}
        for protocol in sorted(set(self.fakes) - proxied):
            if args.proxy != "none":
                notes.append(f"{protocol.upper()} goes straight to its fake backend: "
                             f"{args.proxy} does not proxy {protocol.upper()} yet")
        endpoints = {p: Endpoint(HOST, f.port, "off", "direct") for p, f in self.fakes.items()}
        tls_ca = None
        if proxied:
            ports = dict(zip(sorted(proxied), free_ports(len(proxied))))
            cert = None
            if args.tls != "off":
                cert, ca = _certificate(self.workdir)
                tls_ca = str(ca)
            text = mail_config(ports, self.auth.port, args.tls, cert)
            self.proxy = self._start_proxy(text)
            for protocol, port in ports.items():
                endpoints[protocol] = Endpoint(HOST, port, args.tls, args.proxy)
        if args.tls != "off":
            for protocol, e in endpoints.items():
                if e.via == "direct":
                    notes.append(f"{protocol.upper()} runs without TLS: its fake backend "
                                 "is reached directly")
        return Target(dict(sorted(endpoints.items())), self.users, tls_ca, notes)

    def _start_proxy(self, text: str):
        from scenarios.kit.targets import target_class

        os.environ.setdefault("PYTHONPATH", str(ROOT))
        instance = target_class(self.args.proxy)(
            text, self.workdir / self.args.proxy,
            main=f"worker_processes {self.args.workers};", error_log_level="notice")
        instance.start()
        return instance

    def stop(self) -> None:
        self.stopping.set()
        if self.proxy is not None:
            self.proxy.stop()
        for server in [*self.fakes.values(), self.auth]:
            if server is not None:
                server.stop_in_thread()


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest._lab", description=__doc__.split("\n")[0])
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
