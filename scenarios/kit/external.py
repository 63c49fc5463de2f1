"""`--target external`: the scenarios against a mail proxy someone already runs (their own
nginx, or Postern started elsewhere), with the runner's fakes and mock auth on fixed ports.

A scenario asks the lab for a proxy with some directives (`lab.proxy(server=..., mail=...,
protocol=..., listen_params=...)`). An external proxy cannot be reconfigured per scenario,
so its user declares the server blocks it has, each with the directives it was configured
with, and a scenario runs only where its directives match a declared block exactly (after
whitespace is normalised); the others are skipped, the reason naming the block they would
need. Declared blocks come from `--external-config FILE.toml` or
`--external-server PROTO[+PARAMS]=HOST:PORT[:DIRECTIVES]`.

`--external-plan` writes that file for you (external_plan.py). A proxy that does not answer
is never a skip: every declared port is checked before the first scenario, and a run in
which no external scenario passed fails.
"""

from __future__ import annotations

import re
import socket
import textwrap
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from postern.scenarios.kit.real.common import LOOPBACK, is_listening

PORT_NAMES = ("auth", "imap", "pop3", "smtp")
DEFAULT_PORTS = {"auth": 19080, "imap": 19143, "pop3": 19110, "smtp": 19025}
DEFAULT_PROXY_BASE = 19200
DEFAULT_WORKDIR = Path("results/external")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("external", "--target external: a proxy you run yourself")
    group.addoption("--external-config", metavar="FILE.toml",
                    help="ports of the fakes and the server blocks your proxy has "
                    "(written by --external-plan)")
    group.addoption("--external-server", action="append", default=[],
                    metavar="PROTO[+PARAMS]=HOST:PORT[:DIRECTIVES]",
                    help="a server block of your proxy, e.g. imap=127.0.0.1:1143 or "
                    "'smtp=127.0.0.1:1025:smtp_auth none;' (repeatable)")
    for name in PORT_NAMES:
        what = "the mock auth_http server" if name == "auth" else f"the fake {name} upstream"
        option = "--external-auth-port" if name == "auth" else f"--external-{name}-backend-port"
        group.addoption(option, type=int, metavar="PORT",
                        help=f"fixed port of {what} (default {DEFAULT_PORTS[name]})")
    group.addoption("--external-error-log", metavar="FILE",
                    help="your proxy's error log, for scenarios that read it")
    group.addoption("--external-nginx-version", metavar="X.Y.Z",
                    help="the nginx version the external proxy is: --external-plan writes "
                    "only what it accepts and records it in external.toml; scenarios marked "
                    "nginx_min for a newer one are skipped")
    group.addoption("--external-plan", action="store_true",
                    help="run every scenario once on Postern, recording the server blocks "
                    "they ask for; write external.toml and one nginx.conf serving them all")
    group.addoption("--external-workdir", default=str(DEFAULT_WORKDIR), metavar="DIR",
                    help="where --external-plan writes (default results/external; its "
                    "earlier output there is removed first)")
    group.addoption("--external-base-port", type=int, default=DEFAULT_PROXY_BASE,
                    metavar="PORT", help="first port --external-plan gives a server block "
                    f"(default {DEFAULT_PROXY_BASE})")


# -- declared server blocks -----------------------------------------------------------------

def normalise(text: str) -> tuple[str, ...]:
    """Directive text as a tuple of statements: whitespace collapsed, comments dropped."""
    text = re.sub(r"#[^\n]*", "", textwrap.dedent(text or ""))
    return tuple(s.strip() for s in " ".join(text.split()).split(";") if s.strip())


def scenario_key(protocol: str, server: str, mail: str, listen_params: str) -> tuple:
    return (protocol, normalise(server), normalise(mail), " ".join(listen_params.split()))


@dataclass
class Declared:
    protocol: str
    host: str
    port: int
    server: str = ""
    mail: str = ""
    listen_params: str = ""
    error_log: str | None = None

    @property
    def key(self) -> tuple:
        return scenario_key(self.protocol, self.server, self.mail, self.listen_params)


def parse_server_option(text: str) -> Declared:
    """`PROTO[+PARAMS]=HOST:PORT[:DIRECTIVES]`, PARAMS joined by '+' (ssl+proxy_protocol)."""
    head, sep, rest = text.partition("=")
    proto, _, params = head.partition("+")
    match = re.fullmatch(r"([^:\s]+):(\d+)(?::(.*))?", rest, re.DOTALL)
    if not sep or proto not in ("imap", "pop3", "smtp") or not match:
        raise pytest.UsageError(f"--external-server {text!r}: expected "
                                "PROTO[+PARAMS]=HOST:PORT[:DIRECTIVES], PROTO imap|pop3|smtp")
    return Declared(proto, match.group(1), int(match.group(2)), match.group(3) or "",
                    listen_params=params.replace("+", " "))


def load_config(path: str | Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise pytest.UsageError(f"--external-config {path}: {exc}") from None


def _servers_from(data: dict) -> list[Declared]:
    out = []
    for i, row in enumerate(data.get("server", [])):
        host, _, port = str(row.get("listen", "")).rpartition(":")
        if row.get("protocol") not in ("imap", "pop3", "smtp") or not port.isdigit():
            raise pytest.UsageError(f"--external-config: server[{i}] needs protocol "
                                    "imap|pop3|smtp and listen = \"HOST:PORT\"")
        out.append(Declared(row["protocol"], host or "127.0.0.1", int(port),
                            row.get("directives", ""), row.get("mail", ""),
                            row.get("listen_params", ""), row.get("error_log")))
    return out


@dataclass
class External:
    ports: dict[str, int]
    servers: list[Declared] = field(default_factory=list)
    error_log: str | None = None
    nginx_version: tuple[int, ...] | None = None
    plan: bool = False
    workdir: Path = DEFAULT_WORKDIR
    base_port: int = DEFAULT_PROXY_BASE
    pki: Path | None = None   # the plan's scenario PKI (stable paths in the declared blocks)
    not_declared: dict[tuple, str] = field(default_factory=dict)  # key -> why (the plan's)
    requested: dict[tuple, dict] = field(default_factory=dict)   # key -> {texts, nodeids}
    unmatched: dict[tuple, list[str]] = field(default_factory=lambda: defaultdict(list))
    too_new: dict[str, str] = field(default_factory=dict)  # nodeid -> nginx_min reason
    basetemp: str = ""
    current: str = ""    # the running scenario's node id (set by the plugin)

    def declared(self, key: tuple) -> Declared | None:
        return next((d for d in self.servers if d.key == key), None)

    @property
    def version_text(self) -> str | None:
        return ".".join(map(str, self.nginx_version)) if self.nginx_version else None


STATE: External | None = None


def configure(config: pytest.Config) -> External | None:
    """Read the external options; None unless the external target is in use."""
    global STATE
    targets = config.getoption("target") or []
    plan = config.getoption("external_plan")
    if plan and "external" not in targets:
        config.option.target = targets = [*targets, "external"]
    if "external" not in targets:
        STATE = None
        return None
    path = config.getoption("external_config")
    data = load_config(path) if path and not plan else {}
    ports = {}
    for name in PORT_NAMES:
        option = "external_auth_port" if name == "auth" else f"external_{name}_backend_port"
        ports[name] = config.getoption(option) or int(
            data.get(f"{name}_port" if name == "auth" else f"{name}_backend_port",
                     DEFAULT_PORTS[name]))
    servers = _servers_from(data) + [parse_server_option(t)
                                     for t in config.getoption("external_server")]
    version = config.getoption("external_nginx_version") or data.get("nginx_version")
    if version and not re.fullmatch(r"\d+(\.\d+)*", str(version)):
        raise pytest.UsageError(f"--external-nginx-version {version!r}: expected X.Y.Z")
    workdir = Path(config.getoption("external_workdir"))
    pki = (workdir / "pki").resolve() if plan else (
        Path(data["pki"]) if data.get("pki") else None)
    STATE = External(
        ports, servers, config.getoption("external_error_log") or data.get("error_log"),
        tuple(int(x) for x in str(version).split(".")) if version else None, plan,
        workdir, config.getoption("external_base_port"), pki,
        {scenario_key(r.get("protocol", ""), r.get("directives", ""), r.get("mail", ""),
                      r.get("listen_params", "")): r.get("reason", "")
         for r in data.get("not_declared", [])})
    return STATE


def fixed_port(name: str) -> int:
    """The port a session fake binds: fixed under the external target, else any free one."""
    return STATE.ports[name] if STATE is not None else 0


class ExternalInstance:
    """Stands where a started NginxInstance would: nothing to start or stop."""

    name = "external"

    def __init__(self, declared: Declared, error_log: str | None) -> None:
        self.declared = declared
        self.error_log_path = Path(error_log) if error_log else None
        self.conf = declared.server

    def start(self) -> ExternalInstance:
        return self

    def stop(self) -> None:
        pass

    def error_log_text(self) -> str:
        if self.error_log_path is None:
            pytest.skip("external target: this scenario reads the proxy's error log; "
                        "give --external-error-log FILE (or error_log in the config)")
        try:
            return self.error_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def stand_in(target: str) -> str:
    """The target that runs a scenario: planning runs the external ones on Postern."""
    return "postern" if target == "external" else target


def answers(host: str, port: int) -> bool:
    """Whether the declared block's port accepts connections (loopback: read from /proc, so
    no probe session lands in the proxy's error log)."""
    if host in (LOOPBACK, "localhost"):
        return is_listening(port, LOOPBACK)
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def silent_ports(state: External) -> list[str]:
    """The declared blocks nothing answers on, one line each."""
    return [f"{d.host}:{d.port} ({describe(d.key)})" for d in state.servers
            if not answers(d.host, d.port)]


def server_for(key: tuple) -> tuple[ExternalInstance, str, int] | None:
    """The declared block for a scenario's lab.proxy() key (target, protocol, server, mail,
    listen_params); skips the scenario when there is none, or in plan mode."""
    assert STATE is not None, "the external target is not configured"
    nodeid = STATE.current
    _, protocol, server, mail, params = key
    wanted = scenario_key(protocol, server, mail, params)
    if STATE.plan:  # record it, and let the lab run the scenario on Postern to see the rest
        entry = STATE.requested.setdefault(wanted, {"server": server, "mail": mail,
                                                    "nodeids": []})
        if nodeid not in entry["nodeids"]:
            entry["nodeids"].append(nodeid)
        return None
    declared = STATE.declared(wanted)
    if declared is None:
        why = per_run_reason(STATE, server, mail) or STATE.not_declared.get(wanted)
        if why:
            pytest.skip(f"external target: the server block this scenario needs cannot be "
                        f"declared ({why}): {describe(wanted)}")
        if nodeid in STATE.too_new:
            pytest.skip(f"external target: {STATE.too_new[nodeid]}")
        STATE.unmatched[wanted].append(nodeid)
        pytest.skip("external target: no declared server block for " + describe(wanted))
    if not answers(declared.host, declared.port):
        pytest.fail(f"external target: nothing answers on {declared.host}:{declared.port}, "
                    f"the declared block for {describe(wanted)}", pytrace=False)
    return ExternalInstance(declared, declared.error_log or STATE.error_log), \
        declared.host, declared.port


def per_run_reason(state: External, server: str, mail: str) -> str | None:
    """Why a block cannot be declared once for every run (None if it can): it names a port
    that changes every run, or a file in pytest's temporary directory."""
    fixed = set(state.ports.values())
    for text in (server, mail):
        for statement in normalise(text):
            for port in re.findall(r"(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)", statement):
                if int(port) not in fixed:
                    return f"names port {port}, which changes every run"
            if state.basetemp and state.basetemp in statement:
                return "names a file in pytest's temporary directory"
    return None


def describe(key: tuple) -> str:
    protocol, server, mail, params = key
    text = f"protocol {protocol}"
    text += f", listen params `{params}`" if params else ""
    text += f", directives `{'; '.join(server)};`" if server else ", no extra directives"
    return text + (f", mail-level `{'; '.join(mail)};`" if mail else "")
