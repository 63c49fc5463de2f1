"""Debian's nginx with the mail module as a private, throw-away instance (the differential oracle).

The instance lives in one directory: nginx.conf, pid file and error log. The config is built from
the text that goes inside ``mail { }`` plus optional main-context text and an optional ``http { }``
block (tests may serve their auth_http endpoint from nginx itself).

    with NginxInstance(mail_text, tmp_path) as nginx:
        ...  # connect to the ports the mail text listens on
        assert "[emerg]" not in nginx.error_log_text()
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from postern.scenarios.kit.real.common import (
    Instance,
    stop_process_group,
    wait_until,
)

MODULE_NAME = "ngx_mail_module.so"
# Where distributions put dynamic modules when `nginx -V` does not say.
FALLBACK_MODULE_DIRS = (
    "/usr/lib/nginx/modules",
    "/usr/lib64/nginx/modules",
    "/usr/share/nginx/modules",
    "/etc/nginx/modules",
)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


@cache
def _build_info() -> str:
    """`nginx -V` output (version and configure arguments), or "" without nginx."""
    binary = nginx_binary()
    if binary is None:
        return ""
    done = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=10, check=False)
    return done.stderr + done.stdout


def nginx_version() -> tuple[int, ...] | None:
    found = re.search(r"nginx/(\d+(?:\.\d+)*)", _build_info())
    return tuple(int(part) for part in found.group(1).split(".")) if found else None


def mail_module_path() -> Path | None:
    """The dynamic mail module file; None when missing (or when mail is built in statically)."""
    info = _build_info()
    configured = re.search(r"--modules-path=(\S+)", info)
    dirs = ([configured.group(1)] if configured else []) + list(FALLBACK_MODULE_DIRS)
    for directory in dirs:
        candidate = Path(directory) / MODULE_NAME
        if candidate.is_file():
            return candidate
    return None


def _mail_built_in() -> bool:
    return bool(re.search(r"--with-mail(?!\S)", _build_info()))


def listen_ports(*config_texts: str) -> list[int]:
    """TCP ports named by `listen` directives (unix sockets and bare addresses are skipped)."""
    ports = []
    for text in config_texts:
        for match in re.finditer(r"(?<![\w$-])listen\s+([^\s;]+)", text):
            address = match.group(1)
            if address.startswith("["):  # [::1]:143, or [::1] alone (default port: not ours)
                port = address.partition("]")[2].removeprefix(":")
            else:
                port = address.rsplit(":", 1)[-1]  # also "unix:/path", which is not digits
            if port.isdigit() and int(port) not in ports:
                ports.append(int(port))
    return ports


class NginxInstance(Instance):
    """A private nginx (master + one worker) running the given mail configuration."""

    def __init__(
        self,
        mail: str,
        workdir: str | os.PathLike[str],
        *,
        main: str = "",
        http_block: str | None = None,
        error_log_level: str = "info",
        ports: list[int] | None = None,
        start_timeout: float = 10.0,
        quit_timeout: float = 5.0,
    ) -> None:
        super().__init__(workdir, start_timeout)
        self.mail = mail
        self.main = main
        self.http_block = http_block
        self.error_log_level = error_log_level
        self.ports = ports if ports is not None else listen_ports(mail, http_block or "")
        self.quit_timeout = quit_timeout
        self.conf_path = self.workdir / "nginx.conf"
        self.pid_path = self.workdir / "nginx.pid"
        self.error_log_path = self.workdir / "error.log"
        self.stderr_path = self.workdir / "stderr.log"
        self.exit_status: int | None = None

    # -- what can run here ----------------------------------------------------------------------

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if nginx_binary() is None:
            return "nginx is not installed (Debian packages nginx, libnginx-mod-mail)"
        if mail_module_path() is None and not _mail_built_in():
            return f"the nginx mail module ({MODULE_NAME}) is missing (package libnginx-mod-mail)"
        return None

    @property
    def version(self) -> tuple[int, ...] | None:
        return nginx_version()

    # -- configuration --------------------------------------------------------------------------

    @staticmethod
    def render(
        mail: str,
        workdir: str | os.PathLike[str],
        *,
        main: str = "",
        http_block: str | None = None,
        error_log_level: str = "info",
    ) -> str:
        """The full nginx.conf for a private instance rooted at ``workdir``."""
        workdir = Path(workdir).resolve()
        module = mail_module_path()
        lines = [f"load_module {module};"] if module is not None else []
        defaults = {
            # As root, nginx would drop its worker to "nobody", which cannot even enter a
            # pytest tmp_path (0700 parents); an http block's worker needs it for temp files.
            "user": "user root;" if os.geteuid() == 0 else "",
            "daemon": "daemon off;",
            "master_process": "master_process on;",
            "worker_processes": "worker_processes 1;",
            "pid": f"pid {workdir / 'nginx.pid'};",
        }
        # Main-context text may override any of these (nginx rejects a duplicate). error_log
        # may repeat, and ours stays: error_log_text() reads it.
        lines += [
            line for name, line in defaults.items() if not re.search(rf"(?m)^\s*{name}\s", main)
        ]
        lines += [
            f"error_log {workdir / 'error.log'} {error_log_level};",
            main.strip(),
            "events {}",
            "mail {",
            _indent(mail),
            "}",
        ]
        if http_block is not None:
            lines += ["http {", _indent(http_block), "}"]
        return "\n".join(line for line in lines if line) + "\n"

    @property
    def config_text(self) -> str:
        return self.render(
            self.mail,
            self.workdir,
            main=self.main,
            http_block=self.http_block,
            error_log_level=self.error_log_level,
        )

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config_text)
        return self.conf_path

    def _command(self, *extra: str) -> list[str]:
        binary = nginx_binary()
        assert binary is not None, "nginx is not installed"
        return [
            binary,
            "-p",
            f"{self.workdir}/",
            "-c",
            str(self.conf_path),
            "-e",
            str(self.error_log_path),
            *extra,
        ]

    @classmethod
    def test_config(
        cls, text: str, workdir: str | os.PathLike[str] | None = None
    ) -> tuple[int, str]:
        """Run `nginx -t` on a complete nginx.conf text; returns (exit status, output).

        Relative paths in the text resolve against ``workdir`` (a fresh temporary directory
        when not given), which is also where the file is written.
        """
        with tempfile.TemporaryDirectory(prefix="nginx-t-") as scratch:
            root = Path(workdir).resolve() if workdir is not None else Path(scratch)
            root.mkdir(parents=True, exist_ok=True)
            probe = cls("", root, ports=[])
            probe.conf_path.write_text(text)
            done = subprocess.run(
                probe._command("-t"),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            return done.returncode, done.stderr + done.stdout

    def check_config(self) -> tuple[int, str]:
        """`nginx -t` on this instance's own configuration."""
        self.write_config()
        return self.test_config(self.config_text, self.workdir)

    # -- running --------------------------------------------------------------------------------

    def start(self) -> NginxInstance:
        self._check_startable("nginx")
        self.write_config()
        self.pid_path.unlink(missing_ok=True)  # a stale one would look like a ready server
        with open(self.stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        with self._stopped_on_failure():
            # nginx writes its pid file only after every listening socket is bound.
            wait_until(
                self._pid_written, self.start_timeout, self.process, "nginx", self._diagnostics
            )
            self._wait_listening(self.ports, "nginx", self._diagnostics)
        return self

    def _pid_written(self) -> bool:
        try:
            return self.pid_path.read_text().strip() == str(self.process.pid)
        except OSError:
            return False

    def send_signal(self, sig: int) -> None:
        """Signal the master (SIGHUP reloads nginx.conf, SIGUSR1 reopens logs)."""
        if self.running():
            self.process.send_signal(sig)

    def reload(
        self, mail: str | None = None, *, main: str | None = None, http_block: str | None = None
    ) -> None:
        """Rewrite the config (with any new text given) and send SIGHUP.

        Returns at once: nginx starts new workers and retires the old ones asynchronously.
        """
        self.mail = self.mail if mail is None else mail
        self.main = self.main if main is None else main
        self.http_block = self.http_block if http_block is None else http_block
        self.write_config()
        self.send_signal(signal.SIGHUP)

    def stop(self) -> int | None:
        """Graceful quit (SIGQUIT), then SIGTERM/SIGKILL after bounds; always reaps."""
        if self.process is None:
            return self.exit_status
        self.exit_status = stop_process_group(self.process, signal.SIGQUIT, self.quit_timeout)
        self.process = None
        return self.exit_status

    def error_log_text(self) -> str:
        try:
            return self.error_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _diagnostics(self) -> str:
        stderr = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return self.error_log_text() + stderr


def _indent(text: str) -> str:
    return "\n".join("    " + line if line.strip() else "" for line in text.strip().splitlines())
