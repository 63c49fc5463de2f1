"""`--external-plan`: the server blocks an external proxy needs, written as one nginx.conf.

Which blocks the scenarios ask for is only known by running them (a scenario may build its
directives from what an earlier step returned), so the plan runs every scenario once on
Postern while external.server_for() records each lab.proxy() it asks for. Scenarios that
need a newer nginx than the declared `--external-nginx-version` are skipped, so their
blocks are not written. At the end every declarable block gets a port and goes into one
`mail {}` block (mail-level directives folded into the server, where they override the
mail level as nginx merges them), so one `nginx -c` serves the whole plan. When the nginx on
this machine is the declared version, the config is checked with `nginx -t`, and blocks it
refuses are recorded as not declarable instead of breaking the start.

The directory holds only what the plan writes; an earlier plan's output is removed when a
new plan starts.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import textwrap
from collections import Counter
from pathlib import Path

from postern.scenarios.kit.external import External, describe, normalise, per_run_reason
from postern.scenarios.kit.real.common import is_listening
from postern.scenarios.kit.real.nginx import NginxInstance, nginx_version

# Everything a plan writes (and what earlier versions wrote: main/, mail-N/, certs/).
OUTPUT = ("external.toml", "nginx.conf", "mail.conf", "error.log", "nginx.pid", "pki",
          "certs", "main")
PKI_DAYS = 365  # the plan's certificates and CRL outlive a run by far; plan again after


def clear(workdir: Path) -> None:
    """Remove an earlier plan's output (only the names a plan writes)."""
    for path in [*(workdir / name for name in OUTPUT), *workdir.glob("mail-[0-9]*")]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def commands(workdir: Path) -> dict[str, str]:
    """The shell lines that start, use and stop the planned proxy (as the README has them)."""
    prefix = shlex.quote(f"{str(workdir).rstrip('/')}/")
    nginx = f"nginx -p {prefix} -c nginx.conf"
    return {"start": nginx,
            "run": "pytest scenarios/ --target external --external-config "
                   + shlex.quote(str(workdir / "external.toml")),
            "stop": f"{nginx} -s quit"}


def fold(server: str, mail: str) -> str:
    """The server's directives after the mail-level ones it does not set itself. Every
    mail-module directive but server/listen/protocol may stand in a server block, and one
    set there replaces the mail level's (nginx's merge), so this is the same configuration
    in a server of a shared `mail {}` block."""
    own = {statement.split(" ")[0] for statement in normalise(server)}
    inherited = [f"{s};" for s in normalise(mail) if s.split(" ")[0] not in own]
    return "\n".join([*inherited, textwrap.dedent(server).strip()]).strip()


def _ports(base: int, count: int) -> list[int]:
    """`count` ports from `base` on, passing over any something already listens on."""
    ports, port = [], base
    while len(ports) < count:
        if not is_listening(port):
            ports.append(port)
        port += 1
    return ports


def _block(key: tuple, entry: dict, port: int) -> str:
    protocol, _, _, params = key
    body = textwrap.indent(fold(entry["server"], entry["mail"]), "    ")
    count = len(entry["nodeids"])
    example = entry["nodeids"][0].split("::")[-1].replace("[external]", "")
    listen = f"127.0.0.1:{port}" + (f" {params}" if params else "")
    return (f"# {count} scenario{'s' if count > 1 else ''}, e.g. {example}\n"
            f"server {{\n    listen {listen};\n    protocol {protocol};\n"
            + (body + "\n" if body.strip() else "") + "}")


def _mail_text(state: External, blocks: list[str]) -> str:
    return "\n".join(["server_name mx.test;",
                      f"auth_http 127.0.0.1:{state.ports['auth']}/auth;", "", *blocks])


def _render(state: External, workdir: Path, blocks: list[str]) -> str:
    # daemon on: the recipe's start command returns, and its `-s quit` stops it.
    return NginxInstance.render(_mail_text(state, blocks), workdir, main="daemon on;")


def _checker(state: External):
    """`nginx -t` when this machine's nginx is the declared version, else None."""
    if state.nginx_version is None or NginxInstance.unavailable_reason() is not None \
            or nginx_version() != state.nginx_version:
        return None
    return NginxInstance.test_config


def write_plan(state: External) -> list[str]:
    """Write external.toml, nginx.conf and mail.conf into the plan's directory; return the
    lines to print."""
    workdir = state.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    declarable, per_run = [], []
    for key, entry in sorted(state.requested.items(), key=lambda kv: (kv[0][0], kv[0][3],
                                                                      kv[0][2], kv[0][1])):
        reason = per_run_reason(state, entry["server"], entry["mail"])
        (per_run if reason else declarable).append((key, entry, reason))
    port_of = dict(zip([key for key, _, _ in declarable],
                       _ports(state.base_port, len(declarable)), strict=True))
    blocks = {key: _block(key, entry, port_of[key]) for key, entry, _ in declarable}
    refused: dict[tuple, str] = {}
    check = _checker(state)
    if check is not None:
        status, output = check(_render(state, workdir, list(blocks.values())), workdir)
        if status != 0:  # find the blocks this nginx refuses, one by one
            for key, block in blocks.items():
                status, output = check(_render(state, workdir, [block]), workdir)
                if status != 0:
                    refused[key] = _emerg(output)
            status, output = check(_render(state, workdir, [b for k, b in blocks.items()
                                                            if k not in refused]), workdir)
            if status != 0:
                raise RuntimeError(f"nginx -t refuses the planned configuration:\n{output}")
    kept = [(key, entry) for key, entry, _ in declarable if key not in refused]
    texts = [blocks[key] for key, _ in kept]
    (workdir / "nginx.conf").write_text(_render(state, workdir, texts))
    (workdir / "mail.conf").write_text(
        "mail {\n" + textwrap.indent(_mail_text(state, texts), "    ") + "\n}\n")
    texts_of = {key: entry for key, entry, _ in declarable}
    (workdir / "external.toml").write_text(_toml(state, workdir, kept, port_of, refused,
                                                 texts_of))

    run = commands(state.workdir)
    version = state.version_text
    ports = [port_of[key] for key, _ in kept]
    scenarios = len({nodeid for _, e in kept for nodeid in e["nodeids"]})
    span = f"{min(ports)}-{max(ports)}" if ports else "(none)"
    lines = [(f"{len(kept)} server blocks on ports {span} for {scenarios} scenarios, for nginx "
              f"{version or '(any version: none declared)'}"),
             (f"wrote {workdir / 'nginx.conf'} (the mail {{}} block alone: mail.conf) and "
              f"{workdir / 'external.toml'}")]
    if check is not None:
        lines.append(f"nginx {version} -t accepts it"
                     + (f" without {len(refused)} refused blocks" if refused else ""))
    elif version:
        lines.append(f"not checked with nginx -t: this machine has no nginx {version}")
    lines += ["", f"start your proxy:  {run['start']}", f"run the scenarios: {run['run']}",
              f"stop your proxy:   {run['stop']}"]
    if state.too_new:
        lines.append(f"{len(state.too_new)} scenarios need a newer nginx than {version} "
                     "(skipped; their blocks are not written)")
    if per_run or refused:
        lines.append(f"{len({n for _, e, _ in per_run for n in e['nodeids']})} scenarios "
                     "need server blocks that cannot be declared once (they will be skipped):")
        reasons = Counter(re.sub(r"port \d+", "a port", r) for _, _, r in per_run)
        lines += [f"  {n} blocks: {reason}" for reason, n in reasons.most_common()]
        lines += [f"  refused by nginx -t ({why}): {describe(key)}"
                  for key, why in refused.items()]
    return lines


def _emerg(output: str) -> str:
    found = re.search(r"\[emerg\][^\n]*", output)
    return re.sub(r" in /\S+:\d+$", "", found.group(0)) if found else output.strip()[:200]


def _toml(state: External, workdir: Path, kept: list, port_of: dict, refused: dict,
          texts_of: dict) -> str:
    run = commands(state.workdir)
    lines = [
        "# written by `pytest scenarios/ --external-plan`; start the proxy with",
        f"#   {run['start']}",
        f"# then: {run['run']}",
        'host = "127.0.0.1"',
        f"auth_port = {state.ports['auth']}",
        *(f"{p}_backend_port = {state.ports[p]}" for p in ("imap", "pop3", "smtp")),
        f"error_log = {json.dumps(str(workdir / 'error.log'))}",
    ]
    if state.pki:
        lines.append(f"pki = {json.dumps(str(state.pki))}")
    if state.nginx_version:
        lines.append(f"nginx_version = {json.dumps(state.version_text)}")
    for key, entry in kept:
        lines += ["", "[[server]]", f'protocol = "{key[0]}"',
                  f'listen = "127.0.0.1:{port_of[key]}"', *_texts(key, entry)]
    for key, why in refused.items():
        lines += ["", "[[not_declared]]", f'protocol = "{key[0]}"', *_texts(key, texts_of[key]),
                  f"reason = {json.dumps('nginx -t: ' + why)}"]
    return "\n".join(lines) + "\n"


def _texts(key: tuple, entry: dict) -> list[str]:
    return [f"listen_params = {json.dumps(key[3])}",
            f"directives = {json.dumps(textwrap.dedent(entry['server']).strip())}",
            f"mail = {json.dumps(textwrap.dedent(entry['mail']).strip())}"]
