"""Dovecot as a private IMAP + POP3 backend on loopback ports.

    with DovecotInstance({"alice@example.com": "secret"}, tmp_path) as dovecot:
        dovecot.append("alice@example.com", "secret", b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
        ...  # point a proxy at dovecot.imap_port / dovecot.pop3_port

Dovecot runs in the foreground (-F) as our child, so it is always reaped. Its login, auth and
mail processes run as unprivileged users (dovenull, dovecot, 65534), so sockets, the users file
and the maildirs live in a directory those users can reach (see common.shared_root).
"""

from __future__ import annotations

import base64
import imaplib
import os
import re
import shutil
import signal
import ssl
import subprocess
from pathlib import Path

from postern.scenarios.kit.real.common import (
    LOOPBACK,
    Instance,
    free_ports,
    shared_root,
    stop_process_group,
)

# Mail is owned by "nobody": Dovecot refuses uid 0 for mail, and 65534 exists everywhere.
MAIL_UID = 65534
MAIL_GID = 65534


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None
    )


def _protocol_installed(name: str) -> bool:
    """imap and pop3 are separate Debian packages; their daemons live next to each other."""
    for libexec in ("/usr/lib/dovecot", "/usr/libexec/dovecot"):
        if os.access(f"{libexec}/{name}", os.X_OK):
            return True
    return False


class DovecotInstance(Instance):
    """A private Dovecot serving IMAP and POP3 for the given {login: password} users."""

    def __init__(
        self,
        users: dict[str, str],
        workdir: str | os.PathLike[str],
        *,
        imap_port: int | None = None,
        pop3_port: int | None = None,
        auth_mechanisms: str = "plain login",
        extra_config: str = "",
        start_timeout: float = 15.0,
        tls: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
    ) -> None:
        """`tls` (certificate chain file, key file): `ssl = required`, STARTTLS on the IMAP and
        POP3 ports and implicit TLS on `imaps_port` / `pop3s_port`."""
        super().__init__(workdir, start_timeout)
        for login in users:
            if not login or re.search(r"[:\s]", login):
                raise ValueError(f"login {login!r} cannot go into a passwd-file")
        self.users = dict(users)
        chosen = free_ports(2)
        self.imap_port = imap_port or chosen[0]
        self.pop3_port = pop3_port or chosen[1]
        self.tls = tls
        self.imaps_port, self.pop3s_port = free_ports(2) if tls else (0, 0)
        self.auth_mechanisms = auth_mechanisms
        self.extra_config = extra_config
        self.conf_path = self.workdir / "dovecot.conf"
        self.log_path = self.workdir / "dovecot.log"
        self.stderr_path = self.workdir / "dovecot.stderr"
        self.root: Path | None = None
        self._remove_root = False

    @classmethod
    def unavailable_reason(cls) -> str | None:
        binary = dovecot_binary()
        if binary is None:
            return "Dovecot is not installed (Debian packages dovecot-imapd, dovecot-pop3d)"
        missing = [n for n in ("imap", "pop3") if not _protocol_installed(n)]
        if missing:
            return "Dovecot lacks " + ", ".join(missing) + " (dovecot-imapd, dovecot-pop3d)"
        if os.geteuid() != 0:
            return "a private Dovecot instance needs root (it switches to its service users)"
        return None

    # -- configuration --------------------------------------------------------------------------

    def _prepare(self) -> None:
        self.root, self._remove_root = shared_root(self.workdir, "dovecot")
        for sub in ("run", "state"):
            (self.root / sub).mkdir(mode=0o755, exist_ok=True)
        mail = self.root / "mail"
        mail.mkdir(mode=0o755, exist_ok=True)
        os.chown(mail, MAIL_UID, MAIL_GID)
        users = self.root / "users"
        # PLAIN.b64 keeps passwords with ':' or spaces intact in the colon-separated file.
        users.write_text(
            "".join(
                f"{login}:{{PLAIN.b64}}{base64.b64encode(pw.encode()).decode()}::::::\n"
                for login, pw in self.users.items()
            )
        )
        users.chmod(0o644)
        self.conf_path.write_text(self.config_text())

    def config_text(self) -> str:
        root = self.root
        assert root is not None
        return f"""\
# Private instance: every path is inside this test's directories, ports are loopback only.
protocols = imap pop3
listen = {LOOPBACK}
base_dir = {root}/run
state_dir = {root}/state
instance_name = postern-{self.imap_port}
log_path = {self.log_path}
{self._ssl_settings()}
disable_plaintext_auth = no
auth_mechanisms = {self.auth_mechanisms}
mail_location = maildir:{root}/mail/%u
first_valid_uid = {MAIL_UID}
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_GID} home={root}/mail/%u
}}
{_login_service("imap", self.imap_port, self.imaps_port)}
{_login_service("pop3", self.pop3_port, self.pop3s_port)}
{self.extra_config}
"""

    def backends(self, *protocols: str) -> dict[str, tuple[str, int]]:
        """The auth server's backends for these protocols: this instance's plain ports."""
        ports = {"imap": self.imap_port, "pop3": self.pop3_port}
        return {protocol: (LOOPBACK, ports[protocol]) for protocol in protocols}

    def _ssl_settings(self) -> str:
        if self.tls is None:
            return "ssl = no"
        cert, key = self.tls
        return f"ssl = required\nssl_cert = <{cert}\nssl_key = <{key}"

    # -- running --------------------------------------------------------------------------------

    def start(self) -> DovecotInstance:
        self._check_startable("Dovecot")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        with open(self.stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(
                [dovecot_binary(), "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        with self._stopped_on_failure():
            self._wait_listening(
                [p for p in (self.imap_port, self.pop3_port, self.imaps_port, self.pop3s_port)
                 if p],
                "dovecot", self.log_text)
        return self

    def stop(self) -> int | None:
        """SIGTERM to the master (it stops its children), then the whole group if needed."""
        status = None
        if self.process is not None:
            status = stop_process_group(self.process, signal.SIGTERM, 5.0)
            self.process = None
        if self._remove_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            link = self.workdir / "dovecot"
            if link.is_symlink():
                link.unlink()
            self._remove_root = False
        return status

    def logins(self, protocol: str) -> int:
        """How many connections the protocol's login process has logged so far."""
        return self.log_text().count(f"{protocol}-login: ")

    def log_text(self) -> str:
        parts = []
        for path in (self.log_path, self.stderr_path):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    # -- mail -----------------------------------------------------------------------------------

    def imap(self, user: str, password: str | None = None) -> imaplib.IMAP4:
        """A logged-in imaplib client talking to Dovecot directly (not through a proxy)."""
        if self.tls is not None:
            client = imaplib.IMAP4_SSL(LOOPBACK, self.imaps_port, timeout=10,
                                       ssl_context=_unverified())
        else:
            client = imaplib.IMAP4(LOOPBACK, self.imap_port, timeout=10)
        client.login(user, self.users[user] if password is None else password)
        return client

    def append(
        self, user: str, password: str | None, message: bytes, mailbox: str = "INBOX"
    ) -> int | None:
        """Store a message with IMAP APPEND; returns its UID (Dovecot answers APPENDUID)."""
        client = self.imap(user, password)
        try:
            if mailbox.upper() != "INBOX":
                client.create(mailbox)  # "already exists" is a NO, which is fine
            typ, data = client.append(mailbox, None, None, message)
            if typ != "OK":
                raise RuntimeError(f"APPEND to {mailbox} failed: {data!r}")
            found = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
            return int(found.group(1)) if found else None
        finally:
            client.logout()


def _unverified():
    """The test's own direct line to its private instance (to put mail in)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _login_service(protocol: str, port: int, tls_port: int) -> str:
    """A `service imap-login` / `pop3-login` block: a plain and an implicit-TLS listener."""
    listeners = "".join(f"  inet_listener {name} {{\n    address = {LOOPBACK}\n"
                        f"    port = {number}\n  }}\n"
                        for name, number in ((protocol, port), (protocol + "s", tls_port)))
    return f"service {protocol}-login {{\n  chroot =\n{listeners}}}"
