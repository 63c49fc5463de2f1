"""`--target external`: the scenarios against a mail proxy someone already runs (their own
nginx, or Postern started elsewhere), with the runner's fakes and mock auth on fixed ports.

A scenario asks the lab for a proxy with some directives (`lab.proxy(server=..., mail=...,
protocol=..., listen_params=...)`). An external proxy cannot be reconfigured per scenario,
so its user declares the server blocks it has, each with the directives it was configured
with, and a scenario runs only where its directives match a declared block exactly (after
whitespace is normalised and certificate paths stand for "a certificate"); the others are
skipped, the reason naming the block they would need. Declared blocks come from
`--external-config FILE.toml` or `--external-server PROTO[+PARAMS]=HOST:PORT[:DIRECTIVES]`.

`--external-plan` writes that file for you: every scenario runs on Postern instead while
the runner records each server block it asks for; at the end it assigns each block a port,
writes external.toml, the `mail {}` snippet and a complete nginx.conf per mail-level
variant, and prints the main snippet. Blocks that name per-run things (a port nothing fixed
listens on, a file in pytest's temporary directory other than the certificate) cannot be
declared and are listed as such.
"""

from __future__ import annotations

import json
import re
import textwrap
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scenarios.real.common import is_listening

PORT_NAMES = ("auth", "imap", "pop3", "smtp")
DEFAULT_PORTS = {"auth": 19080, "imap": 19143, "pop3": 19110, "smtp": 19025}
DEFAULT_PROXY_BASE = 19200
DEFAULT_WORKDIR = Path("results/external")
CERT_DIRECTIVES = ("ssl_certificate", "ssl_certificate_key")


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
                    help="the external proxy behaves as this nginx version: scenarios marked "
                    "nginx_min for a newer one are expected failures")
    group.addoption("--external-plan", action="store_true",
                    help="run the scenarios on Postern, recording the server blocks they "
                    "need; write external.toml + nginx.conf and print the mail {} snippet")
    group.addoption("--external-workdir", default=str(DEFAULT_WORKDIR), metavar="DIR",
                    help="where --external-plan writes (default results/external)")
    group.addoption("--external-base-port", type=int, default=DEFAULT_PROXY_BASE,
                    metavar="PORT", help="first port --external-plan gives a server block")


# -- declared server blocks -----------------------------------------------------------------

def normalise(text: str) -> tuple[str, ...]:
    """Directive text as a tuple of statements: whitespace collapsed, certificate paths
    replaced (any certificate will do for a scenario), comments dropped."""
    text = re.sub(r"#[^\n]*", "", textwrap.dedent(text or ""))
    out = []
    for statement in " ".join(text.split()).split(";"):
        statement = statement.strip()
        if not statement:
            continue
        name, _, _rest = statement.partition(" ")
        if name in CERT_DIRECTIVES:
            statement = f"{name} <{name.removeprefix('ssl_')}>"
        out.append(statement)
    return tuple(out)


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
    requested: dict[tuple, dict] = field(default_factory=dict)   # key -> {texts, nodeids}
    unmatched: dict[tuple, list[str]] = field(default_factory=lambda: defaultdict(list))
    basetemp: str = ""
    current: str = ""    # the running scenario's node id (set by the plugin)
    substituted: set[str] = field(default_factory=set)   # ran with the plan's certificate

    def declared(self, key: tuple) -> Declared | None:
        return next((d for d in self.servers if d.key == key), None)


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
    data = load_config(config.getoption("external_config")) \
        if config.getoption("external_config") else {}
    ports = {}
    for name in PORT_NAMES:
        option = "external_auth_port" if name == "auth" else f"external_{name}_backend_port"
        ports[name] = config.getoption(option) or int(
            data.get(f"{name}_port" if name == "auth" else f"{name}_backend_port",
                     DEFAULT_PORTS[name]))
    servers = _servers_from(data) + [parse_server_option(t)
                                     for t in config.getoption("external_server")]
    version = config.getoption("external_nginx_version") or data.get("nginx_version")
    STATE = External(
        ports, servers, config.getoption("external_error_log") or data.get("error_log"),
        tuple(int(x) for x in str(version).split(".")) if version else None, plan,
        Path(config.getoption("external_workdir")), config.getoption("external_base_port"))
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
        entry["nodeids"].append(nodeid)
        return None
    if not STATE.servers:
        pytest.skip("external target: no server blocks declared; give --external-config "
                    "FILE.toml (written by --external-plan) or --external-server")
    declared = STATE.declared(wanted)
    if declared is None:
        STATE.unmatched[wanted].append(nodeid)
        pytest.skip("external target: no declared server block for " + describe(wanted))
    if not is_listening(declared.port, declared.host):
        pytest.skip(f"external target: nothing listens on {declared.host}:{declared.port}, "
                    "the declared block for " + describe(wanted))
    return ExternalInstance(declared, declared.error_log or STATE.error_log), \
        declared.host, declared.port


def describe(key: tuple) -> str:
    protocol, server, mail, params = key
    text = f"protocol {protocol}"
    text += f", listen params `{params}`" if params else ""
    text += f", directives `{'; '.join(server)};`" if server else ", no extra directives"
    return text + (f", mail-level `{'; '.join(mail)};`" if mail else "")


# -- the plan -------------------------------------------------------------------------------

def _portable(state: External, entry: dict) -> str | None:
    """Why a requested block cannot be declared once for every run (None if it can)."""
    fixed = set(state.ports.values())
    for text in (entry["server"], entry["mail"]):
        for statement in normalise(text):
            if statement.split(" ")[0] in CERT_DIRECTIVES:
                continue
            for port in re.findall(r"(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)", statement):
                if int(port) not in fixed:
                    return f"names port {port}, which changes every run"
            if state.basetemp and state.basetemp in statement:
                return "names a file in pytest's temporary directory"
    return None


def write_plan(state: External, cert_dir: Path | None) -> list[str]:
    """Write external.toml, mail.conf and nginx.conf per mail-level variant; return the text
    to print."""
    from scenarios.real.nginx import NginxInstance

    workdir = state.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    portable, unportable = [], []
    for key, entry in sorted(state.requested.items(), key=lambda kv: (kv[0][2], kv[0][0],
                                                                      kv[0][3], kv[0][1])):
        reason = _portable(state, entry)
        (unportable if reason else portable).append((key, entry, reason))
    groups: dict[tuple, list] = defaultdict(list)
    for key, entry, _ in portable:
        groups[key[2]].append((key, entry))
    toml = [
        "# written by `pytest scenarios/ --external-plan`; run your proxy with the nginx.conf",
        ("# next to this file, then: pytest scenarios/ --target external "
        f"--external-config {workdir / 'external.toml'}"),
        'host = "127.0.0.1"',
        f"auth_port = {state.ports['auth']}",
        *(f"{p}_backend_port = {state.ports[p]}" for p in ("imap", "pop3", "smtp")),
        f"error_log = {json.dumps(str(workdir / 'main' / 'error.log'))}",
        "# nginx_version = \"1.22.1\"   # applies nginx_min markers as for --target nginx",
        "",
    ]
    port = state.base_port
    printed: list[str] = []
    for n, (mail_key, members) in enumerate(sorted(groups.items(), key=lambda kv: len(kv[0]))):
        name = "main" if n == 0 and not mail_key else f"mail-{n}"
        directory = workdir / name
        directory.mkdir(exist_ok=True)
        blocks = []
        for key, entry in members:
            protocol, _, _, params = key
            server = _with_certs(entry["server"], cert_dir)
            count = len(entry["nodeids"])
            listen = f"127.0.0.1:{port}" + (f" {params}" if params else "")
            body = textwrap.indent(textwrap.dedent(server).strip(), "    ")
            example = entry["nodeids"][0].split("::")[-1].replace("[external]", "")
            blocks.append(f"# {count} scenario{'s' if count > 1 else ''}, e.g. {example}\n"
                          f"server {{\n    listen {listen};\n    protocol {protocol};\n"
                          + (body + "\n" if body.strip() else "") + "}")
            toml += ["[[server]]", f'protocol = "{protocol}"', f'listen = "127.0.0.1:{port}"',
                     f"listen_params = {json.dumps(params)}",
                     f"directives = {json.dumps(textwrap.dedent(server).strip())}",
                     f"mail = {json.dumps(textwrap.dedent(entry['mail']).strip())}",
                     f"error_log = {json.dumps(str(directory / 'error.log'))}", ""]
            port += 1
        mail_level = textwrap.dedent(members[0][1]["mail"]).strip()
        mail_text = "\n".join(
            ["server_name mx.test;", f"auth_http 127.0.0.1:{state.ports['auth']}/auth;",
             *([mail_level] if mail_level else []), "", *blocks])
        (directory / "mail.conf").write_text("mail {\n" + textwrap.indent(mail_text, "    ")
                                             + "\n}\n")
        (directory / "nginx.conf").write_text(NginxInstance.render(mail_text, directory))
        scenarios = sum(len(e["nodeids"]) for _, e in members)
        printed.append(f"{directory / 'nginx.conf'}: {len(members)} server blocks, "
                       f"{scenarios} scenarios")
        if name == "main":
            printed = [*(directory / "mail.conf").read_text().splitlines(), "", *printed]
    (workdir / "external.toml").write_text("\n".join(toml) + "\n")
    if unportable:
        printed.append(f"{sum(len(e['nodeids']) for _, e, _ in unportable)} scenarios need "
                       "server blocks that cannot be declared once (they will be skipped):")
        printed += [f"  {describe(key)}: {reason}" for key, _, reason in unportable[:20]]
    printed.append(f"wrote {workdir / 'external.toml'}")
    return printed


def _with_certs(text: str, cert_dir: Path | None) -> str:
    """Scenario certificate paths (per run) replaced by the plan's own certificate."""
    if cert_dir is None:
        return text
    text = re.sub(r"ssl_certificate\s+[^;]+;", f"ssl_certificate {cert_dir / 'cert.pem'};", text)
    return re.sub(r"ssl_certificate_key\s+[^;]+;",
                  f"ssl_certificate_key {cert_dir / 'key.pem'};", text)


def plan_certificate(workdir: Path) -> Path | None:
    """A long-lived throwaway certificate for the planned TLS blocks (trustme)."""
    try:
        import trustme
    except ImportError:
        return None
    cert_dir = workdir.resolve() / "certs"
    if not (cert_dir / "cert.pem").exists():
        cert_dir.mkdir(parents=True, exist_ok=True)
        cert = trustme.CA().issue_cert("mx.test", "127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(cert_dir / "cert.pem"))
        cert.private_key_pem.write_to_path(str(cert_dir / "key.pem"))
    return cert_dir
