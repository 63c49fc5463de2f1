"""`postern lab`: the embedded default. Postern in front of the fake upstreams and the mock
auth server, with a few users, ready for curl or a real mail client.

The fakes run in this process (threads with their own event loops); Postern runs as a child
process started exactly as an operator would start it (-p/-c), from a config written to
the lab directory, so what you poke at is the real thing.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fakes.auth import MockAuthServer, User
from fakes.imap import FakeImapServer
from fakes.mailbox import MailStore
from fakes.pop3 import FakePop3Server
from fakes.smtp import FakeSmtpServer

USERS = {"alice": "secret", "bob": "hunter2", "carol": "correct horse"}

CONFIG = """\
# Written by `postern lab`; edit and run `postern -p {dir}/ -c {conf}` to try changes.
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
        listen {host}:{imap_port};
        listen {host}:{imaps_port} ssl;
        protocol imap;
        imap_auth plain login cram-md5;
        imap_capabilities IMAP4rev1 IDLE LITERAL+ UIDPLUS;
    }}

    server {{
        listen {host}:{pop3_port};
        listen {host}:{pop3s_port} ssl;
        protocol pop3;
        pop3_auth plain apop cram-md5;
    }}

    server {{
        listen {host}:{smtp_port};
        listen {host}:{smtps_port} ssl;
        protocol smtp;
        smtp_auth plain login cram-md5;
        smtp_capabilities PIPELINING "SIZE 10485760" 8BITMIME ENHANCEDSTATUSCODES;
    }}
}}
"""


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="postern lab", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address Postern listens on")
    p.add_argument("--imap-port", type=int, default=1143)
    p.add_argument("--pop3-port", type=int, default=1110)
    p.add_argument("--smtp-port", type=int, default=1587)
    p.add_argument("--imaps-port", type=int, default=1993)
    p.add_argument("--pop3s-port", type=int, default=1995)
    p.add_argument("--smtps-port", type=int, default=1465)
    p.add_argument("--auth-port", type=int, default=0, help="mock auth port (0: any free)")
    p.add_argument("--dir", default="lab", help="where config, pid and logs go")
    p.add_argument("--seed", type=int, default=1, help="Faker seed for the mailboxes")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    workdir = Path(args.dir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    _certificates(workdir, args.host)
    store = MailStore(args.seed)  # one set of mailboxes: POP3 sees the IMAP INBOX
    with FakeImapServer(dict(USERS), store=store) as imap, \
            FakePop3Server(dict(USERS), store=store) as pop3, \
            FakeSmtpServer(dict(USERS)) as smtp, \
            MockAuthServer({u: User(p, backends={"imap": ("127.0.0.1", imap.port),
                                                 "pop3": ("127.0.0.1", pop3.port),
                                                 "smtp": ("127.0.0.1", smtp.port)})
                            for u, p in USERS.items()}, port=args.auth_port,
                           requests_log=workdir / "auth-requests.jsonl") as auth:
        conf = workdir / "postern.conf"
        conf.write_text(CONFIG.format(dir=workdir, conf=conf, auth_port=auth.port,
                                      host=args.host, imap_port=args.imap_port,
                                      pop3_port=args.pop3_port, smtp_port=args.smtp_port,
                                      imaps_port=args.imaps_port, pop3s_port=args.pop3s_port,
                                      smtps_port=args.smtps_port))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                          env.get("PYTHONPATH")]))
        proc = subprocess.Popen([sys.executable, "-m", "proxy", "-p", f"{workdir}/",
                                 "-c", str(conf)], env=env)
        try:
            if not _wait_pid(workdir / "postern.pid", proc):
                print("postern lab: Postern did not start; see the messages above",
                      file=sys.stderr)
                return 1
            _banner(args, {"imap": imap.port, "pop3": pop3.port, "smtp": smtp.port}, auth.port,
                    workdir)
            signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGINT))
            proc.wait()
        except KeyboardInterrupt:
            pass
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGQUIT)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return 0


def _certificates(workdir: Path, host: str) -> None:
    """A throw-away CA and a server certificate for localhost and the listen address."""
    import trustme

    ca = trustme.CA(organization_name="Postern lab")
    names = ["localhost", "lab.postern.test", "127.0.0.1", "::1"]
    if host not in names and host not in ("0.0.0.0", "::"):
        names.append(host)
    leaf = ca.issue_cert(*names)
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    leaf.private_key_pem.write_to_path(str(workdir / "server.key"))
    (workdir / "server.pem").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    os.chmod(workdir / "server.key", 0o600)


def _wait_pid(path: Path, proc: subprocess.Popen, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if path.exists() and path.read_text().strip():
            return True
        time.sleep(0.05)
    return False


def _banner(args: argparse.Namespace, backends: dict[str, int], auth_port: int,
            workdir: Path) -> None:
    host, port, pop3, smtp = args.host, args.imap_port, args.pop3_port, args.smtp_port
    imaps, pop3s, smtps, ca = args.imaps_port, args.pop3s_port, args.smtps_port, workdir / "ca.pem"
    users = "  ".join(f"{u} / {p}" for u, p in USERS.items())
    print(f"""
Postern lab is running (Ctrl-C stops it).

  service   address                 behind it
  IMAP      {host}:{port:<5} STARTTLS  {host}:{imaps:<5} TLS   fake upstream 127.0.0.1:{backends["imap"]}
  POP3      {host}:{pop3:<5} STLS      {host}:{pop3s:<5} TLS   fake upstream 127.0.0.1:{backends["pop3"]}
  SMTP      {host}:{smtp:<5} STARTTLS  {host}:{smtps:<5} TLS   fake upstream 127.0.0.1:{backends["smtp"]} (XCLIENT)
  auth_http 127.0.0.1:{auth_port:<13} mock auth server (requests: {workdir}/auth-requests.jsonl)

  users:    {users}
  config:   {workdir}/postern.conf     error log: {workdir}/error.log

Try it:
  curl -v 'imap://{host}:{port}/' -u alice:secret                  # list mailboxes
  curl 'imap://{host}:{port}/INBOX;UID=1' -u alice:secret          # fetch a message
  curl 'pop3://{host}:{pop3}/1' -u bob:hunter2                      # first message by POP3
  curl --cacert {ca} 'imaps://localhost:{imaps}/INBOX;UID=1' -u alice:secret      # implicit TLS
  curl --ssl-reqd --cacert {ca} 'pop3://localhost:{pop3}/1' -u bob:hunter2        # STLS
  openssl s_client -starttls imap -connect {host}:{port} -CAfile {ca}
  swaks --server {host}:{smtp} --auth PLAIN --auth-user alice --auth-password secret \\
        --from alice@example.test --to bob@example.test                   # submit by SMTP
  python3 -c "import imaplib; m=imaplib.IMAP4('{host}',{port}); m.login('bob','hunter2'); \\
print(m.select('INBOX'))"
A mail client (Thunderbird, mutt): IMAP server {host} port {port} (or POP3 port {pop3}),
SMTP server {host} port {smtp}, normal password, alice / secret; STARTTLS on those ports or
SSL/TLS on {imaps}/{pop3s}/{smtps}. To trust the lab's certificate, import {ca} as a CA
(curl --cacert, openssl -CAfile, Thunderbird: Settings > Certificates > Authorities).
""", flush=True)


if __name__ == "__main__":
    sys.exit(main())
