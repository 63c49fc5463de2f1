"""The proxies a scenario can run against: Postern (default), Debian's nginx, or one the
user already runs (external). Each is started from the same `mail {}` text, so one
scenario drives both and their answers can be compared byte for byte.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from postern.scenarios.kit.real.nginx import NginxInstance, nginx_version

from postern import import_root

ROOT = Path(__file__).resolve().parents[2]


class PosternInstance(NginxInstance):
    """Postern run exactly as an operator would run nginx: same conf, same flags."""

    name = "postern"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None

    @property
    def version(self) -> tuple[int, ...] | None:
        return None

    def _command(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "postern", "-p", f"{self.workdir}/",
                "-c", str(self.conf_path), "-e", str(self.error_log_path), *extra]

    def start(self) -> PosternInstance:
        os.environ.setdefault("PYTHONPATH", import_root())
        # the worker reports any session that is neither relaying, timed nor closed
        os.environ.setdefault("POSTERN_CHECK_INVARIANTS", "1")
        super().start()
        return self


class NginxTarget(NginxInstance):
    name = "nginx"


def target_class(name: str) -> type[NginxInstance]:
    return {"postern": PosternInstance, "nginx": NginxTarget}[name]


def version_of(name: str) -> tuple[int, ...] | None:
    return nginx_version() if name == "nginx" else None
