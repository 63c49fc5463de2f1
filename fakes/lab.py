"""`postern lab`: the embedded default. Postern in front of the fake upstreams and the mock
auth server, with a few users, ready for a mail client or Python's standard library.

The fakes run in this process (threads with their own event loops); Postern runs as a child
process started exactly as an operator would start it (-p/-c), from a config written to
the lab directory, so what you poke at is the real thing. Mail submitted over SMTP for a lab
user lands in that user's INBOX (IMAP and POP3 share one store), and every accepted message is
kept as an .eml file in the lab's mail directory. `--no-proxy` runs only the fakes and the
mock auth server, for running Postern by hand on the written config.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from postern.fakes.pki import Authority
from postern.fakes.script import Script
from postern.fakes.stack import Stack, default_script

from postern import import_root

USERS = {"alice": "secret", "bob": "hunter2", "carol": "correct horse"}
# listener -> the standard port; the lab listens on --port-base + that
SERVICES = {"imap": 143, "pop3": 110, "smtp": 587, "imaps": 993, "pop3s": 995, "smtps": 465}
PORT_BASE = 1000
# nginx's advice for auth_http: Auth-Wait on a failure keeps the connection for a retry;
# stop sending it after some attempts so that the proxy closes the connection
FAIL_WAIT, FAIL_WAIT_ATTEMPTS = 1, 10

CONFIG = """\
# Written by `postern lab` at each start (edits are lost at the next one; copy the file to
# keep them). While the lab runs, its Postern holds the ports below. To run Postern on this
# file by hand, stop the lab (Ctrl-C), then start the fakes and the mock auth server alone,
# on the auth port this file names:
#     postern lab --no-proxy --dir {dir} --auth-port {auth_port}
# and, in another terminal:
#     postern -p {dir}/ -c {conf}
daemon off;
worker_processes 1;
pid {dir}/postern.pid;
error_log {dir}/error.log info;
error_log stderr notice;
events {{ worker_connections 1024; }}

mail {{
    server_name lab.postern.test;
    auth_http 127.0.0.1:{auth_port}/auth;
    proxy_pass_error_message on;

    # a certificate from the lab's own CA ({dir}/ca.pem): STARTTLS on the plain ports,
    # implicit TLS on the others
    ssl_certificate     {dir}/server.pem;
    ssl_certificate_key {dir}/server.key;
    starttls on;

    server {{
        listen {host}:{imap};
        listen {host}:{imaps} ssl;
        protocol imap;
        imap_auth plain login cram-md5;
        imap_capabilities IMAP4rev1 IDLE LITERAL+ UIDPLUS;
    }}

    server {{
        listen {host}:{pop3};
        listen {host}:{pop3s} ssl;
        protocol pop3;
        pop3_auth plain apop cram-md5;
    }}

    server {{
        listen {host}:{smtp};
        listen {host}:{smtps} ssl;
        protocol smtp;
        smtp_auth plain login cram-md5;
        smtp_capabilities PIPELINING "SIZE 10485760" 8BITMIME ENHANCEDSTATUSCODES;
    }}
}}
"""


class _Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="postern lab", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address Postern listens on")
    p.add_argument("--port-base", type=int, default=PORT_BASE, metavar="N",
                   help="every Postern port is N + the standard port (IMAP N+143, POP3 "
                        "N+110, SMTP N+587, IMAPS N+993, POP3S N+995, SMTPS N+465)")
    for name, std in SERVICES.items():
        p.add_argument(f"--{name}-port", type=int, metavar="PORT",
                       help=f"{name.upper()} port (default: port base + {std})")
    p.add_argument("--auth-port", type=int, default=None, metavar="PORT",
                   help="mock auth port (default: any free one; with --no-proxy: the one "
                        "DIR/postern.conf names)")
    p.add_argument("--dir", default="lab", help="where config, certificates, logs and mail go")
    p.add_argument("--mail-dir", metavar="DIR",
                   help="where every accepted message is kept as NNNNN.eml (default: DIR/mail)")
    p.add_argument("--seed", type=int, default=1, help="Faker seed for the mailboxes")
    p.add_argument("--no-proxy", action="store_true",
                   help="run only the fakes and the mock auth server (on --auth-port), for "
                        "a Postern started by hand on DIR/postern.conf")
    args = p.parse_args(argv)
    for name, std in SERVICES.items():
        if getattr(args, f"{name}_port") is None:
            setattr(args, f"{name}_port", args.port_base + std)
    bad = [f"--{n}-port={getattr(args, f'{n}_port')}" for n in SERVICES
           if not 0 < getattr(args, f"{n}_port") < 65536]
    if bad:
        p.error(f"port out of range: {', '.join(bad)} (check --port-base)")
    return args


def main(argv: list[str] | None = None) -> int:
    # Also when started with SIGINT ignored (a background job of a non-interactive shell,
    # e.g. `make run &`): Python keeps SIG_IGN then, so both are installed here.
    def stop(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM):  # once: the clean-up is not interrupted
            signal.signal(sig, signal.SIG_IGN)
        raise _Stop(signum)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        return _run(_args(argv))
    except _Stop:
        print("postern lab: stopped", file=sys.stderr, flush=True)
        return 0


def _run(args: argparse.Namespace) -> int:
    workdir = Path(args.dir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "postern.conf"
    mail_dir = Path(args.mail_dir).resolve() if args.mail_dir else workdir / "mail"
    auth_port = args.auth_port
    if args.no_proxy and auth_port is None:
        auth_port = _configured_auth_port(conf)
        if auth_port is None:
            print(f"postern lab: --no-proxy needs --auth-port (no auth_http port found in "
                  f"{conf})", file=sys.stderr)
            return 2
    if not (args.no_proxy and (workdir / "server.pem").exists()):
        _certificates(workdir, args.host)
    _show_mail(mail_dir)
    stack = Stack(script=_script(args.seed, auth_port, mail_dir), workdir=workdir,
                  record=False, requests_log=workdir / "auth-requests.jsonl")
    try:
        try:
            stack.start()
        except OSError as err:
            print(f"postern lab: the mock auth server cannot listen on 127.0.0.1:{auth_port} "
                  f"({err.strerror}); stop what holds it or choose another --auth-port",
                  file=sys.stderr)
            return 1
        return _serve(args, workdir, conf, mail_dir, stack.backends, stack.auth)
    finally:
        stack.stop()


def _script(seed: int, auth_port: int | None, mail_dir: Path) -> Script:
    """The lab's fakes: USERS, one seeded store (POP3 sees the IMAP INBOX, SMTP delivers
    there), every message kept in mail_dir, and Auth-Wait on failures."""
    script = default_script(USERS)
    script.content.seed = seed
    script.auth.listen = ("127.0.0.1", auth_port or 0)
    script.auth.fail_wait, script.auth.fail_wait_attempts = FAIL_WAIT, FAIL_WAIT_ATTEMPTS
    script.legs["smtp"].options["mail_dir"] = mail_dir
    return script


def _serve(args, workdir: Path, conf: Path, mail_dir: Path, backends, auth) -> int:
    ports = {name: getattr(args, f"{name}_port") for name in SERVICES}
    if args.no_proxy:
        _banner(args, ports, backends, auth.port, workdir, conf, mail_dir, proxy=False)
        while True:
            time.sleep(3600)  # until SIGINT/SIGTERM
    conf.write_text(CONFIG.format(dir=workdir, conf=conf, auth_port=auth.port, host=args.host,
                                  **ports))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [import_root(), env.get("PYTHONPATH")]))
    # its own process group: the lab alone decides when it stops (a terminal's Ctrl-C reaches
    # the lab, which stops it), and a stuck one is killed with its workers; the kernel sends
    # it TERM should the lab die without stopping it (kill -9)
    proc = subprocess.Popen([sys.executable, "-m", "postern", "-p", f"{workdir}/", "-c", str(conf)],
                            env=env, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_bound_to_parent)  # noqa: PLW1509 (one libc call, no lock)
    failed_binds: list[str] = []
    pump = threading.Thread(target=_pump_stderr, args=(proc, failed_binds), daemon=True)
    pump.start()
    try:
        if not _wait_pid(workdir / "postern.pid", proc):
            pump.join(5)
            _explain_failure(args, ports, failed_binds, workdir)
            return 1
        _banner(args, ports, backends, auth.port, workdir, conf, mail_dir, proxy=True)
        proc.wait()
        pump.join(5)
        print(f"postern lab: Postern exited with code {proc.returncode}", file=sys.stderr)
        return 1
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # nginx's fast shutdown
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


try:  # looked up here, not in the child: after fork only async-signal-safe work is safe
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: a lab killed with -9 leaves Postern running
    _prctl = None


def _bound_to_parent() -> None:
    """In the child before exec: TERM when its parent dies."""
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _pump_stderr(proc: subprocess.Popen, failed_binds: list[str]) -> None:
    """Postern's stderr, passed on as it comes; bind failures are noted for the hint."""
    assert proc.stderr is not None
    for line in proc.stderr:
        sys.stderr.write(line)
        sys.stderr.flush()
        m = re.search(r"bind\(\) to (\S+) failed", line)
        if m:
            failed_binds.append(m.group(1))


def _explain_failure(args, ports: dict[str, int], failed_binds: list[str],
                     workdir: Path) -> None:
    for address in failed_binds:
        port = int(address.rpartition(":")[2])
        names = [n for n, p in ports.items() if p == port]
        if names:
            name = names[0]
            other = args.port_base + 1000
            print(f"postern lab: port {port} ({name.upper()}) is in use (another lab or mail "
                  f"server?); choose another with --{name}-port=PORT, or move every port "
                  f"with --port-base=N (e.g. --port-base={other}: IMAP {other + 143}, "
                  f"POP3 {other + 110}, SMTP {other + 587}, ...)", file=sys.stderr)
            return
    print(f"postern lab: Postern did not start; see its messages above and "
          f"{workdir}/error.log", file=sys.stderr)


def _configured_auth_port(conf: Path) -> int | None:
    try:
        m = re.search(r"^\s*auth_http\s+127\.0\.0\.1:(\d+)", conf.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _show_mail(mail_dir: Path) -> None:
    """One line per accepted message: where it was kept and whose INBOX it reached."""
    logger = logging.getLogger("postern.fakes.smtp")
    if not any(getattr(h, "_lab", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("postern lab: %(message)s"))
        handler._lab = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _certificates(workdir: Path, host: str) -> None:
    """A throw-away CA and a server certificate for localhost and the listen address."""
    names = ["localhost", "lab.postern.test", "127.0.0.1", "::1"]
    if host not in names and host not in ("0.0.0.0", "::"):
        names.append(host)
    Authority("Postern lab").server_files(workdir, *names)


def _wait_pid(path: Path, proc: subprocess.Popen, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if path.exists() and path.read_text().strip():
            return True
        time.sleep(0.05)
    return False


def try_commands(host: str, ports: dict[str, int], ca: Path) -> list[str]:
    """Commands that work with Python's standard library alone (what the banner prints)."""
    imap, pop3, smtp, imaps = ports["imap"], ports["pop3"], ports["smtp"], ports["imaps"]
    return [
        (f"python3 -c \"import imaplib; m=imaplib.IMAP4('{host}',{imap}); "
        f"m.login('alice','secret'); print(m.list()[1])\""),
        (f"python3 -c \"import smtplib; s=smtplib.SMTP('{host}',{smtp}); "
        f"s.login('alice','secret'); s.sendmail('alice@example.test',['bob@example.test'],"
        f"'Subject: hello\\r\\n\\r\\nHi Bob\\r\\n')\""),
        (f"python3 -c \"import imaplib; m=imaplib.IMAP4('{host}',{imap}); "
        f"m.login('bob','hunter2'); n=m.select('INBOX')[1][0]; "
        f"print(m.fetch(n,'(RFC822)')[1][0][1].decode())\""),
        (f"python3 -c \"import poplib; p=poplib.POP3('{host}',{pop3}); p.user('bob'); "
        f"p.pass_('hunter2'); print(p.stat())\""),
        (f"python3 -c \"import imaplib,ssl; c=ssl.create_default_context(cafile='{ca}'); "
        f"m=imaplib.IMAP4_SSL('localhost',{imaps},ssl_context=c); "
        f"print(m.login('alice','secret'))\""),
    ]


def _banner(args: argparse.Namespace, ports: dict[str, int], backends, auth_port: int,
            workdir: Path, conf: Path, mail_dir: Path, proxy: bool) -> None:
    host, p, ca = args.host, ports, workdir / "ca.pem"
    users = "  ".join(f"{u} / {pw}" for u, pw in USERS.items())
    up = {name: f"127.0.0.1:{port}" for name, (_, port) in backends.items()}
    fakes = f"""  upstreams: fake IMAP {up["imap"]}, fake POP3 {up["pop3"]}, fake SMTP {up["smtp"]} \
(XCLIENT)
  auth_http: mock auth server 127.0.0.1:{auth_port}, requests in {workdir}/auth-requests.jsonl;
             a wrong password gets Auth-Wait: {FAIL_WAIT} (retry on the same connection) up to \
attempt {FAIL_WAIT_ATTEMPTS}
  users:     {users}
  mail:      SMTP mail for a user lands in its INBOX (IMAP and POP3); every accepted message
             is kept in {mail_dir}/ (NNNNN.eml, listed in index.jsonl)"""
    if not proxy:
        print(f"""
Postern lab: the fakes and the mock auth server only (--no-proxy; Ctrl-C stops them).

{fakes}

Start Postern on the lab's config in another terminal:
  postern -p {workdir}/ -c {conf}
""", flush=True)
        return
    cmds = "\n  ".join(try_commands(host, p, ca))
    print(f"""
Postern lab is running (Ctrl-C stops it).

  Postern    plain + STARTTLS           implicit TLS
  IMAP       {host + ":" + str(p["imap"]):<26} {host}:{p["imaps"]}
  POP3       {host + ":" + str(p["pop3"]):<26} {host}:{p["pop3s"]}
  SMTP       {host + ":" + str(p["smtp"]):<26} {host}:{p["smtps"]}
{fakes}
  config:    {conf}, error log {workdir}/error.log

Try it with Python's standard library (nothing to install):
  {cmds}

With curl, swaks and openssl (apt-get install curl swaks openssl):
  curl -v 'imap://{host}:{p["imap"]}/' -u alice:secret                  # list mailboxes
  curl 'imap://{host}:{p["imap"]}/INBOX;UID=1' -u alice:secret          # fetch a message
  curl 'pop3://{host}:{p["pop3"]}/1' -u bob:hunter2                      # first message by POP3
  curl --cacert {ca} 'imaps://localhost:{p["imaps"]}/INBOX;UID=1' -u alice:secret
  openssl s_client -starttls imap -connect {host}:{p["imap"]} -CAfile {ca}
  swaks --server {host}:{p["smtp"]} --auth PLAIN --auth-user alice --auth-password secret \\
        --from alice@example.test --to bob@example.test

A mail client (Thunderbird, mutt): IMAP server {host} port {p["imap"]} (or POP3 port \
{p["pop3"]}),
SMTP server {host} port {p["smtp"]}, normal password, alice / secret; STARTTLS on those ports or
SSL/TLS on {p["imaps"]}/{p["pop3s"]}/{p["smtps"]}. To trust the lab's certificate, import {ca} \
as a CA
(curl --cacert, openssl -CAfile, Thunderbird: Settings > Certificates > Authorities).
""", flush=True)


if __name__ == "__main__":
    sys.exit(main())
