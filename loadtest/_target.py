"""What the load runs against: one endpoint per protocol, the accounts, the TLS mode.

A ``Target`` is plain data. The master (or the single local process) builds it once, from
the embedded lab's answer or from the external-target options, and ships it to the workers
as JSON inside the parsed options (locust copies custom options into every spawn message).
No locust import here: the lab subprocess uses this module too.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROTOCOLS = ("imap", "pop3", "smtp")
TLS_MODES = ("off", "starttls", "implicit")
DEFAULT_PORTS = {
    "off": {"imap": 143, "pop3": 110, "smtp": 25},
    "starttls": {"imap": 143, "pop3": 110, "smtp": 25},
    "implicit": {"imap": 993, "pop3": 995, "smtp": 465},
}


@dataclass
class Endpoint:
    host: str
    port: int
    tls: str = "off"        # off | starttls | implicit
    via: str = "external"   # postern | nginx | direct (a fake backend, no proxy) | external


@dataclass
class Target:
    endpoints: dict[str, Endpoint]
    users: list[tuple[str, str]]
    tls_ca: str | None = None           # verify server certificates against this CA file
    notes: list[str] = field(default_factory=list)

    def endpoint(self, protocol: str) -> Endpoint | None:
        return self.endpoints.get(protocol)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Target:
        data = json.loads(text)
        return cls({p: Endpoint(**e) for p, e in data["endpoints"].items()},
                   [tuple(u) for u in data["users"]], data.get("tls_ca"),
                   list(data.get("notes", [])))

    def describe(self) -> str:
        lines = [f"  {p.upper():5} {e.host}:{e.port}  via {e.via}, tls {e.tls}"
                 for p, e in self.endpoints.items()]
        lines.append(f"  {len(self.users)} account(s)")
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def read_users(path: str | Path) -> list[tuple[str, str]]:
    """A CSV of ``login,password`` rows; a first row ``login,password`` is a header."""
    users = []
    with open(path, newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 2:
                raise ValueError(f"{path}:{i + 1}: expected login,password")
            if i == 0 and [c.strip().lower() for c in row[:2]] == ["login", "password"]:
                continue
            users.append((row[0], ",".join(row[1:])))
    if not users:
        raise ValueError(f"{path}: no accounts")
    return users


def external_target(host: str, ports: dict[str, int], tls: str, users_file: str | None,
                    tls_ca: str | None = None) -> Target:
    """The target given by --mail-host and friends (a real nginx, a deployment, ...)."""
    if tls not in TLS_MODES:
        raise ValueError(f"--tls must be one of {', '.join(TLS_MODES)}")
    if not users_file:
        raise ValueError("an external target (--mail-host) needs --users-file login,password")
    endpoints = {p: Endpoint(host, ports.get(p) or DEFAULT_PORTS[tls][p], tls, "external")
                 for p in PROTOCOLS if ports.get(p, 0) >= 0}
    return Target(endpoints, read_users(users_file), tls_ca)
