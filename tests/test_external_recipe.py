"""The README's recipe for `--target external`, run line by line against Debian's nginx.

The commands are read from the fenced block under the README heading, so the README and this
test cannot drift apart. They run in a temporary directory (the recipe's relative
`results/external/` lands there) with three changes only: `pytest` is this interpreter's,
the scenarios are a few files instead of all of `scenarios/` (to keep the test short), and
the plan gets free ports for the fakes and the server blocks instead of the fixed ones
(the plan records them in external.toml, which the run reads).
"""

from __future__ import annotations

import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from postern.scenarios.kit.real.common import free_ports, is_listening, require
from postern.scenarios.kit.real.nginx import NginxInstance, nginx_binary, nginx_version

ROOT = Path(__file__).resolve().parent.parent
HEADING = "### Your own proxy: `--target external`"
# A mail-level directive folded into its server, TLS with the plan's PKI, PROXY protocol and
# a scenario for a newer nginx (skipped), a scripted DNS server (a block not declarable).
SUBSET = ("test_imap_dialogue.py", "test_tls_implicit.py", "test_proxy_protocol.py",
          "test_smtp_resolver.py")


def recipe() -> list[list[str]]:
    """The shell lines of the README's recipe, comments dropped."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text[text.index(HEADING):], re.DOTALL)
    assert block, f"no ```sh block under {HEADING!r} in README.md"
    lines = [shlex.split(line, comments=True) for line in block.group(1).splitlines()]
    return [argv for argv in lines if argv]


def steps() -> dict[str, list[str]]:
    """The recipe's four commands by role; fails if the README's recipe changed shape."""
    found = {}
    for argv in recipe():
        role = ("plan" if "--external-plan" in argv else
                "run" if argv[0] == "pytest" and "external" in argv else
                "stop" if argv[0] == "nginx" and "-s" in argv else
                "start" if argv[0] == "nginx" else None)
        assert role and role not in found, f"unexpected recipe line: {shlex.join(argv)}"
        found[role] = argv
    assert list(found) == ["plan", "start", "run", "stop"], list(found)
    return found


def local(argv: list[str], extra: list[str] = ()) -> list[str]:
    """A recipe line as run here: this interpreter's pytest on the subset, nginx's path."""
    if argv[0] == "nginx":
        return [nginx_binary(), *argv[1:]]
    assert argv[0] == "pytest"
    args = []
    for arg in argv[1:]:
        args += [str(ROOT / "scenarios" / name) for name in SUBSET] if arg == "scenarios/" \
            else [arg]
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, *extra]


def run(argv: list[str], cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def stop_nginx(pid_file: Path) -> None:
    """Whatever the recipe's stop did, leave no nginx behind."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def free_range(count: int) -> int:
    """The first of `count` consecutive free ports below the ephemeral range (where the
    suite's other free ports come from), starting at a random place: the plan numbers its
    server blocks from one base port."""
    low, _ = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()) \
        if Path("/proc/sys/net/ipv4/ip_local_port_range").exists() else (32768, 60999)
    for _ in range(50):
        base = random.randrange(10000, max(10001, low - count))
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    pytest.skip(f"no {count} consecutive free ports found")


def passed(output: str) -> int:
    found = re.search(r"(\d+) passed", output.strip().splitlines()[-1])
    return int(found.group(1)) if found else 0


@pytest.mark.timeout(900)
def test_readme_recipe_against_nginx(tmp_path):
    require(NginxInstance.unavailable_reason())
    step = steps()
    declared = step["plan"][step["plan"].index("--external-nginx-version") + 1]
    local_version = ".".join(map(str, nginx_version()))
    if local_version != declared:
        pytest.skip(f"the recipe is for nginx {declared}; this machine has {local_version}")
    auth, imap, pop3, smtp = free_ports(4)
    base = free_range(100)
    ports = ["--external-auth-port", str(auth), "--external-imap-backend-port", str(imap),
             "--external-pop3-backend-port", str(pop3), "--external-smtp-backend-port",
             str(smtp), "--external-base-port", str(base)]
    (tmp_path / "results" / "external" / "mail-2").mkdir(parents=True)  # an old plan's

    plan = run(local(step["plan"], [*ports, "--basetemp", str(tmp_path / "plan-tmp")]),
               tmp_path)
    assert plan.returncode == 0, plan.stdout[-4000:] + plan.stderr[-2000:]
    for role in ("start", "run", "stop"):  # the plan prints the README's own lines
        assert shlex.join(step[role]) in plan.stdout, (role, plan.stdout[-3000:])
    workdir = tmp_path / "results" / "external"
    assert not (workdir / "mail-2").exists()
    assert len(list(workdir.glob("*.conf"))) == 2  # nginx.conf and mail.conf, one mail {}

    try:
        started = run(local(step["start"]), tmp_path, timeout=60)
        assert started.returncode == 0, started.stderr
        outcome = run(local(step["run"], ["--basetemp", str(tmp_path / "run-tmp")]), tmp_path)
        assert outcome.returncode == 0, outcome.stdout[-6000:] + outcome.stderr[-2000:]
        assert passed(outcome.stdout) > 0, outcome.stdout[-3000:]
        assert "failed" not in outcome.stdout.strip().splitlines()[-1]
        assert "most wanted" not in outcome.stdout, outcome.stdout[-3000:]
        stopped = run(local(step["stop"]), tmp_path, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
    finally:
        stop_nginx(workdir / "nginx.pid")


def test_external_run_fails_when_nothing_answers(tmp_path):
    auth, imap, pop3, smtp, silent = free_ports(5)
    assert not is_listening(silent)
    done = run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                str(ROOT / "scenarios" / "test_imap_smoke.py"), "--target", "external",
                "--external-server", f"imap=127.0.0.1:{silent}",
                "--external-auth-port", str(auth), "--external-imap-backend-port", str(imap),
                "--external-pop3-backend-port", str(pop3),
                "--external-smtp-backend-port", str(smtp),
                "--basetemp", str(tmp_path / "tmp"), "--scenario-json", ""], tmp_path, 120)
    assert done.returncode != 0
    assert "nothing answers on 1 of the 1 declared ports" in done.stdout + done.stderr
    assert f"127.0.0.1:{silent} (protocol imap" in done.stdout + done.stderr


def test_external_run_that_passes_nothing_fails(tmp_path):
    """Every scenario skipped (no declared block matches) is not a passing run."""
    auth, imap, pop3, smtp = free_ports(4)
    with NginxLikeListener() as port:
        done = run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                    str(ROOT / "scenarios" / "test_imap_smoke.py"), "--target", "external",
                    "--external-server", f"imap=127.0.0.1:{port}:no_scenario_asks_for this;",
                    "--external-auth-port", str(auth), "--external-imap-backend-port",
                    str(imap), "--external-pop3-backend-port", str(pop3),
                    "--external-smtp-backend-port", str(smtp),
                    "--basetemp", str(tmp_path / "tmp"), "--scenario-json", ""], tmp_path, 120)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "no external scenario passed (2 ran: 2 skipped), so the run fails" in done.stdout


class NginxLikeListener:
    """A bare listening socket: the declared port answers, no scenario gets that far."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()
