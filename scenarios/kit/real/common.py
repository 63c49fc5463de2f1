"""Process and port helpers shared by the private real-server instances.

Every instance is started in its own session (``start_new_session=True``) so that a stop can
signal the whole process group: nginx workers and Dovecot's children would otherwise outlive a
master that had to be killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"


class Instance:
    """A private server run by the tests: `with Instance(...) as server` starts and stops it."""

    def __init__(self, workdir: str | os.PathLike[str], start_timeout: float) -> None:
        self.workdir = Path(workdir).resolve()
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this server cannot run here; None where it can."""
        raise NotImplementedError

    @classmethod
    def available(cls) -> bool:
        return cls.unavailable_reason() is None

    def start(self) -> Self:
        raise NotImplementedError

    def _check_startable(self, name: str) -> None:
        reason = self.unavailable_reason()
        if reason is not None:
            raise ServerStartError(reason)
        if self.process is not None:
            raise RuntimeError(f"this {name} instance is already started")

    @property
    def pid(self) -> int | None:
        """The process this instance started (for Postfix, `postfix start-fg`)."""
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @contextmanager
    def _stopped_on_failure(self) -> Iterator[None]:
        """Around the start-up: a server that does not come up is stopped (its whole process
        group) before the error goes on."""
        try:
            yield
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, ports: Iterable[int], what: str, log: Callable[[], str]) -> None:
        wait_listening(ports, self.start_timeout, proc=self.process, what=what, log=log)

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def available(instance_class, *args, **kw):
    """A real server's instance, to start and stop with `with`; the scenario skips (fails
    under CI) where the server is not installed."""
    require(instance_class.unavailable_reason())
    return instance_class(*args, **kw)


class ServerStartError(RuntimeError):
    """A real server did not come up; the message carries the tail of its log."""


def free_ports(count: int = 1) -> list[int]:
    """Distinct free loopback TCP ports (all held open while choosing, so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def _proc_listening_ports() -> set[int] | None:
    """Ports in LISTEN state according to /proc, or None where /proc/net is not readable."""
    ports: set[int] = set()
    found = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports if found else None


def is_listening(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts on the port.

    /proc is read rather than connecting: a probe connection to a mail proxy would open a
    session and leave a line in the error log that differential tests may compare.
    """
    ports = _proc_listening_ports()
    if ports is not None:
        return port in ports
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    ready: Callable[[], bool],
    timeout: float,
    proc: subprocess.Popen | None = None,
    what: str = "server",
    log: Callable[[], str] | None = None,
) -> None:
    """Poll ``ready`` until true; fail early, with the log tail, if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(
                f"{what} exited with status {proc.returncode} before it was ready\n" + _tail(log)
            )
        if time.monotonic() > deadline:
            raise ServerStartError(f"{what} not ready after {timeout:g}s\n" + _tail(log))
        time.sleep(0.02)


def wait_listening(ports: Iterable[int], timeout: float, **kwargs) -> None:
    wanted = set(ports)
    wait_until(lambda: all(is_listening(port) for port in wanted), timeout, **kwargs)


def _tail(log: Callable[[], str] | None, lines: int = 30) -> str:
    if log is None:
        return ""
    try:
        return "\n".join(log().splitlines()[-lines:])
    except OSError as exc:  # the log is only a diagnostic
        return f"(log unavailable: {exc})"


def _signal_0(kill: Callable[[int, int], None], target: int) -> bool | None:
    """Whether signal 0 shows the target gone (False) or alive but not ours (True); None
    when it reached the target, which may still be only a zombie."""
    try:
        kill(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return None


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command name: state, ppid, pgrp, ...) of
    every process; one that exits meanwhile is passed over. The name may hold spaces and
    parentheses, so the fields are split after its last ')'."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            yield int(entry.name), (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue


def pid_alive(pid: int) -> bool:
    answer = _signal_0(os.kill, pid)
    if answer is not None:
        return answer
    # A zombie still answers signal 0; it is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def group_alive(pgid: int) -> bool:
    answer = _signal_0(os.killpg, pgid)
    if answer is not None:
        return answer
    # Only zombies left (children of an init that has not reaped yet) count as gone.
    if not Path("/proc").is_dir():
        return True
    return any(pid_alive(pid) for pid, fields in proc_stats() if int(fields[2]) == pgid)


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_gone(check: Callable[[], bool], timeout: float) -> bool:
    """Wait until ``check`` (an "is it still alive" test) turns false."""
    deadline = time.monotonic() + timeout
    while check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def stop_process_group(
    proc: subprocess.Popen,
    first_signal: int = signal.SIGTERM,
    grace: float = 5.0,
) -> int | None:
    """Stop a process started with ``start_new_session=True`` and everything in its group.

    ``first_signal`` goes to the leader alone; if the group is not gone within ``grace``, the
    whole group gets SIGTERM and then SIGKILL, each after a bound. Always reaps ``proc`` and
    returns its exit status.
    """
    pgid = proc.pid  # a session leader's pgid is its own pid

    def running() -> bool:
        return proc.poll() is None or group_alive(pgid)

    steps = ((first_signal, grace), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0))
    for step, (sig, bound) in enumerate(steps):
        if not running():
            break
        if step == 0 and proc.poll() is None:
            proc.send_signal(sig)  # the master first, so it shuts down in its own order
        else:
            signal_group(pgid, sig)
        if wait_gone(running, bound):
            break
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # unkillable (D state): leave it, but say so
        return None


def require(reason: str | None) -> None:
    """Skip the calling test when a real server cannot run here; fail instead under CI.

    CI machines are provisioned by scripts/ensure-system-deps, so a missing package there is a
    broken setup, not a reason to pass quietly.
    """
    if reason is None:
        return
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def world_traversable(path: Path) -> bool:
    """Whether an unprivileged user (dovecot, postfix, nobody) can reach ``path``."""
    try:
        return all(p.stat().st_mode & 0o001 for p in (path, *path.parents))
    except OSError:
        return False


def shared_root(workdir: Path, name: str) -> tuple[Path, bool]:
    """A 0755 directory the servers' unprivileged users can reach, for sockets, queues, mail.

    pytest's tmp_path sits below 0700 directories, and widening those would weaken pytest's
    own protection, so then (or when the path is long) a fresh directory under a traversable
    temp dir is made instead, linked from ``workdir/name`` for inspection.
    Returns (path, caller_must_remove).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    # Unix socket paths are limited to 107 bytes; servers put sockets a few levels deeper.
    if world_traversable(workdir) and len(str(workdir / name)) <= 60:
        root = workdir / name
        root.mkdir(exist_ok=True)
        root.chmod(0o755)
        return root, False
    candidates = [Path(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp")]
    base = next((c for c in candidates if world_traversable(c)), None)
    if base is None:
        raise ServerStartError("no world-traversable temporary directory for server state")
    root = Path(tempfile.mkdtemp(prefix=f"postern-{name}-", dir=base))
    root.chmod(0o755)
    link = workdir / name
    if not link.exists() and not link.is_symlink():
        link.symlink_to(root)
    return root, True
