"""A private Prometheus (Debian package `prometheus`) that scrapes one target every second,
and its HTTP API's instant queries."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

from postern.scenarios.kit.real.common import (
    LOOPBACK,
    Instance,
    ServerStartError,
    free_port,
    stop_process_group,
    wait_until,
)

SCRAPE_INTERVAL = "1s"


class PrometheusInstance(Instance):
    """`prometheus` on a free loopback port with its data in `workdir`, scraping `target`
    ("127.0.0.1:PORT") as job `postern`."""

    def __init__(self, target: str, workdir: str | Path, start_timeout: float = 30.0) -> None:
        self.target = target
        self.workdir = Path(workdir).resolve()
        self.port = free_port()
        self.start_timeout = start_timeout
        self.log_path = self.workdir / "prometheus.log"
        self.process: subprocess.Popen | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if shutil.which("prometheus") is None or shutil.which("promtool") is None:
            return "Prometheus is not installed (Debian package prometheus)"
        return None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def config_text(self) -> str:
        return (f"global:\n  scrape_interval: {SCRAPE_INTERVAL}\n"
                f"  scrape_timeout: {SCRAPE_INTERVAL}\n"
                "scrape_configs:\n  - job_name: postern\n"
                f"    static_configs:\n      - targets: ['{self.target}']\n")

    def start(self) -> PrometheusInstance:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(self.config_text())
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["prometheus", f"--config.file={config}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address={LOOPBACK}:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        try:
            wait_until(self._ready, self.start_timeout, self.process, "prometheus", self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict]:
        """An instant query's result vector."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as reply:
            answer = json.load(reply)
        if answer.get("status") != "success":
            raise ServerStartError(f"query {expr!r} failed: {answer}")
        return answer["data"]["result"]

    def targets(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as reply:
            return json.load(reply)["data"]["activeTargets"]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
            self.process = None


def promtool_check_metrics(text: str) -> tuple[int, str]:
    """`promtool check metrics` on an exposition: (exit status, what it printed)."""
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30, check=False)
    return done.returncode, done.stdout + done.stderr
