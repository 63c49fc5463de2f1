"""`postern lab` (the README's run command) as a new user meets it: real clients, all ports."""

from __future__ import annotations

import imaplib
import poplib
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scenarios.real.common import free_ports, require

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def running_lab(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lab")
    ports = dict(zip(("imap", "pop3", "smtp", "imaps", "pop3s", "smtps"), free_ports(6)))
    args = [f"--{name}-port={port}" for name, port in ports.items()]
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "lab", "--dir", str(workdir), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    banner = ""
    deadline = time.monotonic() + 60
    while "Authorities" not in banner and time.monotonic() < deadline and proc.poll() is None:
        banner += proc.stdout.readline()
    assert "Authorities" in banner, banner
    yield ports, workdir, banner
    proc.send_signal(signal.SIGINT)
    proc.wait(20)


def test_banner_names_every_port_and_user(running_lab):
    ports, workdir, banner = running_lab
    for port in ports.values():
        assert str(port) in banner
    assert "alice / secret" in banner and f"{workdir}/ca.pem" in banner


def test_stdlib_clients_plain_starttls_and_tls(running_lab):
    ports, workdir, _ = running_lab
    ctx = ssl.create_default_context(cafile=str(workdir / "ca.pem"))
    with imaplib.IMAP4("127.0.0.1", ports["imap"]) as m:
        m.starttls(ssl_context=ctx)
        assert m.login("alice", "secret")[0] == "OK"
        assert m.select("INBOX")[0] == "OK"
    with imaplib.IMAP4_SSL("localhost", ports["imaps"], ssl_context=ctx) as m:
        assert m.login("bob", "hunter2")[0] == "OK"
    pop = poplib.POP3_SSL("localhost", ports["pop3s"], context=ctx)
    pop.user("bob")
    pop.pass_("hunter2")
    assert pop.stat()[0] > 0
    pop.quit()
    with smtplib.SMTP("127.0.0.1", ports["smtp"]) as s:
        s.starttls(context=ctx)
        s.login("carol", "correct horse")
        s.sendmail("carol@example.test", ["alice@example.test"], b"Subject: hi\r\n\r\nhello\r\n")


def test_curl_as_the_banner_says(running_lab):
    require(None if shutil.which("curl") else "curl is not installed")
    ports, workdir, _ = running_lab
    out = subprocess.run(["curl", "-sS", f"imap://127.0.0.1:{ports['imap']}/", "-u",
                          "alice:secret"], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0 and '"INBOX"' in out.stdout
    out = subprocess.run(["curl", "-sS", "--cacert", str(workdir / "ca.pem"),
                          f"imaps://localhost:{ports['imaps']}/INBOX;UID=1", "-u",
                          "alice:secret"], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0 and "Subject:" in out.stdout
