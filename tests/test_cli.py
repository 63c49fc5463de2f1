"""`postern` as a new user types it: help and version in both spellings, the subcommands'
own help, a port in use, and Debian's stock /etc/nginx/nginx.conf (a copy in fixtures/)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from postern.scenarios.kit.real.common import free_port

from postern.cli import SUBCOMMANDS

ROOT = Path(__file__).resolve().parent.parent
DEBIAN = Path(__file__).resolve().parent / "fixtures" / "debian-nginx"


def postern(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "postern", *args], capture_output=True,
                          check=False, text=True, timeout=60, cwd=ROOT, **kw)


@pytest.mark.parametrize("flag", ["-h", "-?", "--help"])
def test_help_in_every_spelling(flag):
    out = postern(flag)
    assert out.returncode == 0, out.stderr
    assert "-c filename" in out.stdout and "set configuration file" in out.stdout
    for name in SUBCOMMANDS:
        assert f"  {name} " in out.stdout  # each subcommand listed with what it is


@pytest.mark.parametrize("flag", ["-v", "--version"])
def test_version_as_nginx_prints_it(flag):
    out = postern(flag)
    # nginx -v: "nginx version: nginx/1.22.1" alone, on stderr
    assert out.returncode == 0 and out.stdout == ""
    assert out.stderr.startswith("postern version: postern/")
    assert out.stderr.count("\n") == 1


def test_capital_v_adds_build_line():
    out = postern("-V")
    lines = out.stderr.splitlines()
    assert out.returncode == 0 and lines[0].startswith("postern version: postern/")
    assert len(lines) == 2 and "python" in lines[1]


def test_unknown_option_is_still_refused():
    out = postern("--bogus")
    assert out.returncode == 2 and "unrecognized arguments: --bogus" in out.stderr


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_subcommand_help_names_the_postern_command(name):
    out = postern(name, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: postern {name} "), out.stdout.splitlines()[0]
    assert "python -m" not in out.stdout


def test_fake_smtp_subcommand_serves(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "postern", "fake-smtp", "--listen",
                             f"127.0.0.1:{port}", "--user", "alice:secret", "--quiet"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert f"smtp listening on 127.0.0.1:{port}" in proc.stdout.readline()
        import smtplib
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            assert s.ehlo()[0] == 250
            s.login("alice", "secret")
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def _conf(tmp_path: Path, listen: str, port: int) -> Path:
    conf = tmp_path / "c.conf"
    conf.write_text(f"daemon off; pid {tmp_path}/p.pid; error_log stderr;\nevents {{}}\n"
                    f"mail {{ auth_http 127.0.0.1:9/auth;\n"
                    f"  server {{ listen {listen}:{port}; protocol imap; }} }}\n")
    return conf


@pytest.mark.parametrize("family,host,shown", [
    (socket.AF_INET, "127.0.0.1", "127.0.0.1:{port}"),
    (socket.AF_INET6, "::1", "[::1]:{port}"),
])
def test_port_in_use_names_the_address(tmp_path, family, host, shown):
    holder = socket.socket(family, socket.SOCK_STREAM)
    try:
        holder.bind((host, 0))
    except OSError:
        holder.close()
        pytest.skip(f"no {host} on this machine")
    with holder:
        holder.listen()
        port = holder.getsockname()[1]
        out = postern("-c", str(_conf(tmp_path, f"[{host}]" if ":" in host else host, port)))
    assert out.returncode == 1
    assert out.stderr == (f"postern: [emerg] bind() to {shown.format(port=port)} failed "
                          "(98: Address already in use)\n")


# -- Debian's stock nginx.conf --------------------------------------------------------------

def stock_copy(tmp_path: Path, with_mail: bool = False) -> Path:
    """Debian 12's /etc/nginx/nginx.conf with /etc/nginx and /var/log/nginx moved under
    tmp_path (modules-enabled holds Debian's load_module line; mime.types, conf.d and
    sites-enabled are absent: the http block's includes must not be read)."""
    text = (DEBIAN / "nginx.conf").read_text()
    assert "http {" in text and "#mail {" in text  # the fixture is the stock file
    if with_mail:  # what a user migrating the commented-out mail part does
        head, _, mail = text.partition("\n#mail {")
        mail = "\n".join(line.removeprefix("#")
                         for line in ("#mail {" + mail).splitlines())
        text = head + "\n" + mail.replace("# auth_http localhost", "auth_http localhost")
    text = text.replace("/etc/nginx/", f"{tmp_path}/etc/").replace("/var/log/nginx/",
                                                                     f"{tmp_path}/log/")
    (tmp_path / "etc" / "modules-enabled").mkdir(parents=True)
    (tmp_path / "log").mkdir()
    (tmp_path / "etc" / "modules-enabled" / "50-mod-mail.conf").write_bytes(
        (DEBIAN / "50-mod-mail.conf").read_bytes())
    conf = tmp_path / "etc" / "nginx.conf"
    conf.write_text(text)
    return conf


def test_stock_debian_conf_tests_ok_and_says_what_it_skips(tmp_path):
    conf = stock_copy(tmp_path)
    out = postern("-t", "-c", str(conf))
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        (f'postern: [warn] "http" block skipped: postern proxies mail only, its content and '
        f"includes are not read in {conf}:12"),
        (f"postern: [warn] no mail servers in {conf}: nothing to proxy "
        '(a "mail" block with a "server" is needed)'),
        f"postern: the configuration file {conf} syntax is ok",
        f"postern: configuration file {conf} test is successful",
    ]


def test_stock_debian_conf_without_mail_refuses_to_run(tmp_path):
    conf = stock_copy(tmp_path)
    out = postern("-c", str(conf), "-g", "daemon off;")
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        f"postern: [emerg] no mail servers in {conf}: nothing to proxy "
        '(a "mail" block with a "server" is needed)')


def test_stock_debian_conf_with_its_mail_block_uncommented(tmp_path):
    conf = stock_copy(tmp_path, with_mail=True)
    out = postern("-t", "-c", str(conf))
    assert out.returncode == 0, out.stderr
    assert "nothing to proxy" not in out.stderr and '"http" block skipped' in out.stderr
    assert f"configuration file {conf} test is successful" in out.stderr
    dump = postern("-T", "-q", "-c", str(conf))
    # -T shows the files read: the config and the module include, not the http includes
    assert f"# configuration file {tmp_path}/etc/modules-enabled/50-mod-mail.conf:" \
        in dump.stdout
    assert "mime.types:" not in dump.stdout


def test_skipped_block_may_nest_and_must_close(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("events {}\nstream { upstream u { server 1.2.3.4:5; } server { } }\n"
                    "http { include /nonexistent/*.conf; server { location / { } } }\n")
    out = postern("-t", "-c", str(conf))
    assert out.returncode == 0, out.stderr
    assert '"stream" block skipped' in out.stderr and '"http" block skipped' in out.stderr
    conf.write_text("events {}\nhttp { server {\n")
    out = postern("-t", "-c", str(conf))
    assert out.returncode == 1 and 'unexpected end of file, expecting "}"' in out.stderr
