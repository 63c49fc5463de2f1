"""The benchmark's processes: the fakes as separate programs, the two proxies from one config,
and what /proc says about them (CPU seconds, RSS, worker pids)."""

from __future__ import annotations

import os
import platform
import re
import resource
import select
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from postern.scenarios.kit.real.common import free_port
from postern.scenarios.kit.real.nginx import NginxInstance, nginx_version
from postern.scenarios.kit.targets import NginxTarget, PosternInstance

from postern import import_root

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# -- /proc ------------------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str]:
    # the command name may contain spaces and parentheses: split after the last ")"
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_times(pids: list[int]) -> tuple[float, float]:
    """(utime, stime) seconds of the processes (their own threads, not their children)."""
    user = system = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        user += int(fields[11])  # stat field 14
        system += int(fields[12])  # stat field 15
    return user / CLK_TCK, system / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except OSError:
            continue
    return total


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return sorted(found)


def wait_children(pid: int, count: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(found := children(pid)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} has {len(found)} workers, expected {count}")
        time.sleep(0.02)
    return found


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE (inherited by everything started later); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))  # root only
            return wanted
        except (ValueError, OSError):
            pass
    target = wanted if hard == resource.RLIM_INFINITY else min(max(soft, wanted), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin(pids: list[int], cpus: set[int]) -> None:
    for pid in pids:
        try:
            os.sched_setaffinity(pid, cpus)
        except OSError:
            pass


# -- the fakes ------------------------------------------------------------------------------

class FakeProcess:
    """``python -m postern.fakes.<name> --listen 127.0.0.1:0 ...``; the port comes from its banner."""

    def __init__(self, module: str, args: list[str], log_path: Path,
                 timeout: float = 30.0) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [import_root(), env.get("PYTHONPATH")]))
        self.log_file: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--listen", "127.0.0.1:0", "--quiet", *args],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self.log_file)
        self.banner = self._read_banner(module, log_path, timeout)
        found = re.search(r"127\.0\.0\.1:(\d+)", self.banner)
        if found is None:
            self.stop()
            raise RuntimeError(f"{module}: unexpected banner {self.banner!r}")
        self.port = int(found.group(1))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_banner(self, module: str, log_path: Path, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"{module} did not start:\n{log_path.read_text()[-2000:]}")
        return line.strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log_file.close()


# -- the proxies ----------------------------------------------------------------------------

MAIL_HEAD = """\
server_name bench.test;
auth_http 127.0.0.1:{auth_port}/auth;
"""
# nginx's defaults otherwise: pop3_auth plain, smtp_auth plain login, xclient on
SERVER = """\
server {{
    listen 127.0.0.1:{port};
    protocol {protocol};
}}
"""


class _SizedEvents:
    """Both harnesses write a bare ``events {}`` (512 connections); idle runs need more."""

    worker_connections = 1024

    @property
    def config_text(self) -> str:
        text = super().config_text  # type: ignore[misc]
        return text.replace("events {}\n",
                            f"events {{ worker_connections {self.worker_connections}; }}\n", 1)


class BenchPostern(_SizedEvents, PosternInstance):
    pass


class BenchNginx(_SizedEvents, NginxTarget):
    pass


# the TLS rows: an implicit-TLS port and a STARTTLS one, both IMAP, beside the plain servers
TLS_SERVERS = """\
server {{
    listen 127.0.0.1:{imaps} ssl;
    protocol imap;
}}
server {{
    listen 127.0.0.1:{starttls};
    protocol imap;
    starttls on;
}}
"""


def make_proxy(name: str, workdir: Path, auth_port: int, connections: int,
               protocols: tuple[str, ...] = ("imap",), workers: int = 1,
               tls_directives: str | None = None, extra: str = "",
               ) -> tuple[NginxInstance, dict[str, int]]:
    """A proxy (``workers`` worker processes, warn-level log, no per-session log lines) in
    front of the fakes, with a server for each protocol; returns it and each protocol's port.
    ``tls_directives`` (ssl_certificate lines) adds the TLS servers, ports "imaps" and
    "imap-starttls"; ``extra`` goes into mail{} as it is (e.g. auth_http_keepalive)."""
    ports = {protocol: free_port() for protocol in protocols}
    mail = MAIL_HEAD.format(auth_port=auth_port) + extra + "".join(
        SERVER.format(port=port, protocol=protocol) for protocol, port in ports.items())
    if tls_directives is not None:
        ports["imaps"], ports["imap-starttls"] = free_port(), free_port()
        mail += tls_directives + TLS_SERVERS.format(imaps=ports["imaps"],
                                                    starttls=ports["imap-starttls"])
    cls = {"postern": BenchPostern, "nginx": BenchNginx}[name]
    instance = cls(mail, workdir,
                   main=f"worker_processes {workers};\n"
                        f"worker_rlimit_nofile {connections + 64};",
                   error_log_level="warn", start_timeout=30.0)
    instance.worker_connections = connections
    return instance, ports


def nginx_unavailable() -> str | None:
    return NginxInstance.unavailable_reason()


# -- about this machine ---------------------------------------------------------------------

def machine_info() -> dict:
    model = ""
    try:
        found = re.search(r"(?m)^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text())
        model = found.group(1).strip() if found else ""
    except OSError:
        pass
    try:
        import uvloop
        uvloop_version = uvloop.__version__
    except ImportError:
        uvloop_version = None
    from postern.proxy import __version__ as postern_version
    version = nginx_version()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "loadavg_at_start": os.getloadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "uvloop": uvloop_version,
        "postern": postern_version,
        "nginx": ".".join(map(str, version)) if version else None,
        "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }
