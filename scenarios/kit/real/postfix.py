"""Postfix as a private SMTP backend that honours XCLIENT, delivering into a maildir.

    with PostfixInstance(tmp_path) as postfix:
        ...  # SMTP to postfix.port (XCLIENT is allowed from 127.0.0.0/8)
        [message] = postfix.delivered(timeout=10)

Postfix insists that a non-default configuration directory be listed in the default main.cf
(`alternate_config_directories`). Listing a fresh temp path per test would grow that system
file forever, so instances live in a fixed set of slot directories (BASE/slotN), listed once,
and each instance holds an flock on its slot for its lifetime. Everything of an instance (conf,
queue, data, maildir) is inside its slot, which is wiped before use and after stop; the master's
log goes to the test's working directory.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from postern.scenarios.kit.real.common import (
    LOOPBACK,
    Instance,
    ServerStartError,
    available,
    free_port,
    pid_alive,
    signal_group,
    stop_process_group,
    wait_gone,
)

SLOT_COUNT = 16
MAIL_UID = 65534  # virtual(8) delivers as this user; it exists on every Debian machine
MAIL_GID = 65534
SYSTEM_MARKER = "# Private Postfix instances of Postern's real-server tests (scenarios/real)"


def postfix_binary() -> str | None:
    return shutil.which("postfix") or (
        "/usr/sbin/postfix" if os.access("/usr/sbin/postfix", os.X_OK) else None
    )


def _postconf_default(name: str) -> str:
    postconf = shutil.which("postconf") or "/usr/sbin/postconf"
    done = subprocess.run(
        [postconf, "-dh", name], capture_output=True, text=True, timeout=10, check=False
    )
    return done.stdout.strip()


def slot_base() -> Path:
    """Root-only, world-traversable home of the slots (tmpfs /run where there is one)."""
    return (
        Path("/run/postern-postfix") if Path("/run").is_dir() else Path("/var/tmp/postern-postfix")
    )


def slot_conf_dirs(base: Path | None = None) -> list[str]:
    base = base or slot_base()
    return [str(base / f"slot{n}" / "conf") for n in range(SLOT_COUNT)]


def ensure_alternate_config_directories(main_cf: Path | None = None) -> bool:
    """List every slot's conf dir in the default main.cf (created if missing). Idempotent.

    Returns True when the file was changed.
    """
    if main_cf is None:
        main_cf = Path(_postconf_default("config_directory") or "/etc/postfix") / "main.cf"
    wanted = slot_conf_dirs()
    main_cf.parent.mkdir(parents=True, exist_ok=True)
    slot_base().mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(slot_base() / "main-cf.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers edit the same file
        text = main_cf.read_text() if main_cf.exists() else ""
        # A main.cf parameter may continue on lines that start with whitespace.
        logical = re.compile(r"(?m)^alternate_config_directories[ \t]*=(.*(?:\n[ \t]+.*)*)")
        found = logical.search(text)
        present = re.split(r"[\s,]+", found.group(1).strip()) if found else []
        missing = [d for d in wanted if d not in present]
        if not missing:
            return False
        line = "alternate_config_directories = " + ", ".join(p for p in present + missing if p)
        if found:
            text = text[: found.start()] + line + text[found.end() :]
        else:
            text = text + ("" if not text or text.endswith("\n") else "\n")
            text += f"{SYSTEM_MARKER}\n{line}\n"
        scratch = main_cf.with_name(main_cf.name + ".postern-tmp")
        scratch.write_text(text)
        scratch.chmod(0o644)
        os.replace(scratch, main_cf)
        return True


class PostfixInstance(Instance):
    """A private Postfix: smtpd on a loopback port, virtual maildir delivery for ``domains``."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        port: int | None = None,
        hostname: str = "upstream.test",
        domains: tuple[str, ...] = ("example.com",),
        extra_main: str = "",
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(workdir, start_timeout)
        self.port = port or free_port()
        self.hostname = hostname
        self.domains = domains
        self.extra_main = extra_main
        self.log_path = self.workdir / "postfix.log"
        self.slot: Path | None = None
        self._slot_lock = None
        self.master_pid: int | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if postfix_binary() is None:
            return "Postfix is not installed (Debian package postfix)"
        if os.geteuid() != 0:
            return "a private Postfix instance needs root"
        return None

    # -- paths ----------------------------------------------------------------------------------

    @property
    def conf_dir(self) -> Path:
        assert self.slot is not None, "not started"
        return self.slot / "conf"

    @property
    def queue_dir(self) -> Path:
        assert self.slot is not None, "not started"
        return self.slot / "queue"

    @property
    def mail_dir(self) -> Path:
        assert self.slot is not None, "not started"
        return self.slot / "mail"

    # -- slots ----------------------------------------------------------------------------------

    def _claim_slot(self) -> None:
        base = slot_base()
        base.mkdir(mode=0o755, parents=True, exist_ok=True)
        base.chmod(0o755)
        for n in range(SLOT_COUNT):
            lock = open(base / f"slot{n}.lock", "w")  # noqa: SIM115 -- held until stop()
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self._slot_lock, self.slot = lock, base / f"slot{n}"
            self._kill_stale_master()
            shutil.rmtree(self.slot, ignore_errors=True)
            return
        raise ServerStartError(f"all {SLOT_COUNT} Postfix slots under {base} are in use")

    def _read_master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _kill_stale_master(self) -> None:
        """A master left by a crashed run in this slot would keep the port and the queue."""
        pid = self._read_master_pid()
        if pid is None or not pid_alive(pid):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"master" in cmdline:
            self._kill_master_group(pid)

    @staticmethod
    def _kill_master_group(pid: int) -> None:
        # master(8) makes itself a session leader, so its group is its pid.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            signal_group(pid, sig)
            if wait_gone(lambda: pid_alive(pid), 3.0):
                return

    # -- configuration --------------------------------------------------------------------------

    def main_cf(self) -> str:
        slot = self.slot
        version = _postconf_default("mail_version")
        major_minor = tuple(int(x) for x in re.findall(r"\d+", version)[:2]) or (0, 0)
        # The version's own level silences the "backwards-compatible default settings" notice.
        compat = f"{major_minor[0]}.{major_minor[1]}" if major_minor >= (3, 6) else "2"
        return f"""\
compatibility_level = {compat}
queue_directory = {slot}/queue
data_directory = {slot}/data
myhostname = {self.hostname}
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_authorized_xclient_hosts = 127.0.0.0/8
# No syslog in a container: the master's stdout is the log.
maillog_file = /dev/stdout
alias_maps =
alias_database =
biff = no
virtual_mailbox_domains = {" ".join(self.domains)}
virtual_mailbox_base = {slot}/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:{MAIL_UID}
virtual_gid_maps = static:{MAIL_GID}
{self.extra_main}
"""

    def master_cf(self) -> str:
        """Debian's master.cf without chroot (the slot has no copy of /etc), smtpd on our port."""
        dist = Path("/usr/share/postfix/master.cf.dist")
        source = (
            dist.read_text()
            if dist.exists()
            else (
                Path(_postconf_default("config_directory") or "/etc/postfix") / "master.cf"
            ).read_text()
        )
        lines, has_postlog = [], False
        for line in source.splitlines():
            fields = line.split()
            if line[:1].isalnum() and len(fields) >= 8:
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"{LOOPBACK}:{self.port}"
                fields[4] = "n"
                has_postlog |= fields[0] == "postlog"
                line = " ".join(fields)
            lines.append(line)
        if not has_postlog:
            lines.append("postlog unix-dgram n - n - 1 postlogd")
        return "\n".join(lines) + "\n"

    def _prepare(self) -> None:
        slot = self.slot
        assert slot is not None
        for sub in ("conf", "queue", "data", "mail"):
            (slot / sub).mkdir(mode=0o755, parents=True, exist_ok=True)
        slot.chmod(0o755)
        shutil.chown(slot / "data", "postfix")
        os.chown(slot / "mail", MAIL_UID, MAIL_GID)
        (self.conf_dir / "main.cf").write_text(self.main_cf())
        (self.conf_dir / "master.cf").write_text(self.master_cf())
        self.workdir.mkdir(parents=True, exist_ok=True)
        link = self.workdir / "postfix-slot"
        if link.is_symlink():
            link.unlink()
        if not link.exists():
            link.symlink_to(slot)

    def _postfix(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [postfix_binary(), "-c", str(self.conf_dir), *args],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _env(self) -> dict[str, str]:
        return {**os.environ, "MAIL_CONFIG": str(self.conf_dir)}

    # -- running --------------------------------------------------------------------------------

    def start(self) -> PostfixInstance:
        self._check_startable("Postfix")
        with self._stopped_on_failure():
            ensure_alternate_config_directories()
            self._claim_slot()
            self._prepare()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [postfix_binary(), "-c", str(self.conf_dir), "start-fg"],
                    env=self._env(),
                    cwd=self.slot,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            self._wait_listening([self.port], "postfix", self.log_text)
            self.master_pid = self._read_master_pid()
        return self

    def stop(self) -> None:
        """`postfix stop`, then make sure the master's session and our child are gone."""
        if self.process is not None:
            master = self.master_pid or self._read_master_pid()
            if self.process.poll() is None:
                try:
                    self._postfix("stop", timeout=15)
                except subprocess.TimeoutExpired:
                    pass
            if master is not None and not wait_gone(lambda: pid_alive(master), 5.0):
                self._kill_master_group(master)
            stop_process_group(self.process, signal.SIGTERM, 3.0)
            self.process = None
            self.master_pid = None
        if self.slot is not None:
            self._kill_stale_master()  # a master that came up after a failed start
            shutil.rmtree(self.slot, ignore_errors=True)
            self.slot = None
            (self.workdir / "postfix-slot").unlink(missing_ok=True)
        if self._slot_lock is not None:
            self._slot_lock.close()
            self._slot_lock = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- delivered mail -------------------------------------------------------------------------

    def delivered_paths(self) -> list[Path]:
        """Maildir files of every delivered message, oldest first."""
        paths = [p for sub in ("new", "cur") for p in self.mail_dir.glob(f"*/{sub}/*")]
        return sorted(paths, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def delivered(self, timeout: float = 10.0, count: int = 1) -> list[bytes]:
        """Delivered messages, waiting up to ``timeout`` for at least ``count`` of them."""
        deadline = time.monotonic() + timeout
        while len(self.delivered_paths()) < count and time.monotonic() < deadline:
            if not self.running():
                break
            time.sleep(0.05)
        return [p.read_bytes() for p in self.delivered_paths()]


def postfix_naming_the_login(workdir: Path) -> Iterator[PostfixInstance]:
    """A running Postfix whose Received header names the SASL login
    (smtpd_sasl_authenticated_header), for a module fixture to yield from; the scenario skips
    (fails under CI) where Postfix cannot run."""
    with available(PostfixInstance, workdir,
                   extra_main="smtpd_sasl_authenticated_header = yes\n") as instance:
        yield instance
