"""`postern lab` (the README's run command) as a new user meets it: real clients, all ports."""

from __future__ import annotations

import email
import imaplib
import json
import poplib
import shlex
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from postern.scenarios.kit.real.common import free_port, free_ports, require

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("imap", "pop3", "smtp", "imaps", "pop3s", "smtps")


def start_lab(workdir: Path, *extra: str, ports: dict[str, int] | None = None,
              ignore_sigint: bool = False, until: str = "Authorities"):
    """`postern lab` on free ports; returns (process, ports, what it printed up to `until`)."""
    ports = ports or dict(zip(NAMES, free_ports(6)))
    args = [f"--{name}-port={port}" for name, port in ports.items()]

    argv = [sys.executable, "-m", "postern", "lab", "--dir", str(workdir), *args, *extra]
    if ignore_sigint:  # as a background job of a non-interactive shell starts it: SIG_IGN
        # survives exec (no preexec_fn: this test process may run threads)
        ignore = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                  "os.execv(sys.argv[1], sys.argv[1:])")
        argv = [sys.executable, "-c", ignore, *argv]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    out = read_until(proc, until)
    return proc, ports, out


def read_until(proc: subprocess.Popen, text: str, timeout: float = 60) -> str:
    out = ""
    deadline = time.monotonic() + timeout
    while text not in out and time.monotonic() < deadline and proc.poll() is None:
        out += proc.stdout.readline()
    assert text in out, out
    return out


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def running_lab(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lab")
    proc, ports, banner = start_lab(workdir)
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


def test_banner_commands_need_only_python(running_lab):
    """The try-it lines of the banner, run as printed (python3 being this interpreter)."""
    _, workdir, banner = running_lab
    lines = [line.strip() for line in banner.splitlines() if line.strip().startswith("python3 -c")]
    assert len(lines) == 5
    for line in lines:
        argv = shlex.split(line)
        out = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                             timeout=60, check=False, cwd=workdir)
        assert out.returncode == 0, (line, out.stderr)
        if "fetch" in line:  # the message the line before sent to bob
            assert "Subject: hello" in out.stdout and "Hi Bob" in out.stdout
    assert "apt-get install curl swaks openssl" in banner


def test_wrong_password_then_right_on_the_same_connection(running_lab):
    ports, _, banner = running_lab
    assert "Auth-Wait: 1" in banner
    with imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=30) as m:
        with pytest.raises(imaplib.IMAP4.error):
            m.login("alice", "wrong")
        assert m.login("alice", "secret")[0] == "OK"
    with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as s:
        s.ehlo()
        s.user, s.password = "carol", "wrong"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.auth("PLAIN", s.auth_plain)
        assert s.login("carol", "correct horse")[0] == 235
    pop = poplib.POP3("127.0.0.1", ports["pop3"], timeout=30)
    pop.user("bob")
    with pytest.raises(poplib.error_proto):
        pop.pass_("wrong")
    pop.user("bob")
    assert pop.pass_("hunter2").startswith(b"+OK")
    pop.quit()


def test_submitted_mail_reaches_imap_and_pop3_and_is_kept(running_lab):
    ports, workdir, _ = running_lab
    tag = f"lab-{free_port()}"
    content = (f"From: carol@example.test\r\nTo: alice@example.test\r\nSubject: {tag}\r\n"
               f"Message-ID: <{tag}@example.test>\r\n\r\nline one\r\n.line with a dot\r\n"
               "\u00e9t\u00e9 en UTF-8\r\n").encode()
    with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as s:
        s.login("carol", "correct horse")
        refused = s.sendmail("carol@example.test",
                             ["alice@example.test", "stranger@elsewhere.test"], content)
        assert refused == {}
    with imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=30) as m:
        m.login("alice", "secret")
        m.select("INBOX")
        typ, found = m.search(None, "HEADER", "Subject", tag)
        assert typ == "OK" and len(found[0].split()) == 1
        typ, data = m.fetch(found[0].split()[0], "(BODY.PEEK[])")
        assert data[0][1] == content
    pop = poplib.POP3("127.0.0.1", ports["pop3"], timeout=30)
    pop.user("alice")
    pop.pass_("secret")
    count = pop.stat()[0]
    _, lines, _ = pop.retr(count)  # the newest message is the last one
    pop.quit()
    assert b"\r\n".join(lines) + b"\r\n" == content
    entries = [json.loads(line) for line in
               (workdir / "mail" / "index.jsonl").read_text().splitlines()]
    entry = next(e for e in entries if e["rcpt_to"][0] == "alice@example.test"
                 and (workdir / "mail" / e["file"]).read_bytes() == content)
    assert entry["delivered_to"] == ["alice"] and entry["mail_from"] == "carol@example.test"
    assert email.message_from_bytes(content)["Subject"] == tag


def test_mail_for_a_stranger_is_kept_not_delivered(running_lab):
    ports, workdir, _ = running_lab
    content = b"Subject: to nobody\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as s:
        s.login("bob", "hunter2")
        s.sendmail("bob@example.test", ["nobody@elsewhere.test"], content)
    entries = [json.loads(line) for line in
               (workdir / "mail" / "index.jsonl").read_text().splitlines()]
    last = entries[-1]
    assert last["rcpt_to"] == ["nobody@elsewhere.test"] and last["delivered_to"] == []
    assert (workdir / "mail" / last["file"]).read_bytes() == content


def test_a_port_in_use_is_named_with_the_option_that_moves_it(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        ports = dict(zip(NAMES, free_ports(6)))
        ports["pop3"] = busy
        proc = subprocess.run([sys.executable, "-m", "postern", "lab", "--dir", str(tmp_path),
                               *[f"--{n}-port={p}" for n, p in ports.items()]],
                              cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert f"bind() to 127.0.0.1:{busy} failed (98: Address already in use)" in proc.stderr
    assert f"postern lab: port {busy} (POP3) is in use" in proc.stderr
    assert "--pop3-port=PORT" in proc.stderr and "--port-base=N" in proc.stderr
    assert "see the messages above" not in proc.stderr


def test_port_base_moves_every_port(tmp_path):
    out = subprocess.run([sys.executable, "-m", "postern", "lab", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0 and "--port-base" in out.stdout
    from postern.fakes.lab import _args
    args = _args(["--port-base", "30000", "--smtp-port", "2525"])
    assert (args.imap_port, args.pop3_port, args.smtp_port, args.imaps_port,
            args.pop3s_port, args.smtps_port) == (30143, 30110, 2525, 30993, 30995, 30465)
    assert _args([]).imap_port == 1143


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stops_on_int_and_term_even_with_sigint_ignored(tmp_path, sig):
    proc, ports, _ = start_lab(tmp_path, ignore_sigint=True)
    proc.send_signal(sig)
    try:
        rest, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, _ = proc.communicate()
        raise AssertionError(f"postern lab ignored {sig.name}:\n{rest}") from None
    assert proc.returncode == 0 and "postern lab: stopped" in rest
    assert all(port_is_free(p) for p in ports.values())  # Postern went with it


def test_postern_goes_when_the_lab_is_killed(tmp_path):
    """A lab killed with -9 cannot stop Postern itself: the kernel's parent-death signal does,
    so no orphan keeps the ports."""
    proc, ports, _ = start_lab(tmp_path)
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 30
    while not port_is_free(ports["imap"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert port_is_free(ports["imap"]) and port_is_free(ports["smtps"])


def test_written_config_runs_by_hand_as_its_header_says(tmp_path):
    auth_port = free_port()
    lab, ports, _ = start_lab(tmp_path, f"--auth-port={auth_port}")
    lab.send_signal(signal.SIGINT)  # the header: stop the lab first
    lab.communicate(timeout=30)
    conf = tmp_path / "postern.conf"
    header = [line[1:].strip() for line in conf.read_text().splitlines()
              if line.startswith("#")]
    commands = [line for line in header if line.startswith("postern ")]
    assert commands == [f"postern lab --no-proxy --dir {tmp_path} --auth-port {auth_port}",
                        f"postern -p {tmp_path}/ -c {conf}"]
    fakes = subprocess.Popen([sys.executable, "-m", "postern", *shlex.split(commands[0])[1:]],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    proxy = None
    try:
        out = read_until(fakes, f"postern -p {tmp_path}/ -c {conf}")
        assert f"127.0.0.1:{auth_port}" in out
        proxy = subprocess.Popen([sys.executable, "-m", "postern", *shlex.split(commands[1])[1:]],
                                 cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
        deadline = time.monotonic() + 30
        while not (tmp_path / "postern.pid").exists() and time.monotonic() < deadline:
            assert proxy.poll() is None, proxy.stderr.read()
            time.sleep(0.05)
        with imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=30) as m:
            assert m.login("alice", "secret")[0] == "OK"
    finally:
        for proc in (proxy, fakes):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=30)
    assert fakes.returncode == 0


def test_readme_quickstart_shows_the_banner_commands():
    """The Quickstart's stdlib lines are the banner's for the default ports (which the tests
    above run), and it says what to install for the others."""
    from postern.fakes.lab import PORT_BASE, SERVICES, try_commands
    readme = (ROOT / "README.md").read_text()
    quickstart = readme[readme.index("## Quickstart"):readme.index("## Running Postern")]
    shown = [line for line in quickstart.splitlines() if line.startswith("python3 -c")]
    ports = {name: PORT_BASE + std for name, std in SERVICES.items()}
    assert shown == try_commands("127.0.0.1", ports, Path("lab/ca.pem"))[:4]
    assert "apt-get install curl swaks openssl" in quickstart
    assert "nothing else is needed" not in quickstart
