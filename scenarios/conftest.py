"""The scenario runner: `pytest scenarios/ --target postern --target nginx`.

Each scenario asks `lab.proxy(...)` for a proxy configured with some directives; the lab
starts the target from the same `mail {}` text (cached per text for the whole run, since
starting a proxy costs more than most scenarios), in front of the session's fake upstream
and mock auth server, which every scenario resets and scripts for itself.
"""

from __future__ import annotations

import contextlib
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from postern.fakes.auth import MockAuthServer
from postern.fakes.imap import FakeImapServer, Faults
from postern.fakes.pop3 import FakePop3Server
from postern.fakes.smtp import FakeSmtpServer
from postern.fakes.stack import Stack, default_script
from postern.scenarios.kit import external, plugin
from postern.scenarios.kit.client import Client
from postern.scenarios.kit.real.common import free_port, require
from postern.scenarios.kit.targets import target_class, version_of

TARGETS = ("postern", "nginx", "external")
USERS = {"alice": "secret", "bob": "hunter2", "us er": "p w"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--target", action="append", choices=TARGETS,
                     help="proxy to run the scenarios against (repeatable; default postern)")
    plugin.add_options(parser)  # --differential, --grammar, --scenario-json, --external-*


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "nginx_min(version, why): needs this nginx version; older nginx is an "
        "expected failure (strict)")
    config.addinivalue_line(
        "markers", "postern_only(why): a feature nginx lacks (off by default, switched on by "
        "a directive); other targets skip it with the reason")
    plugin.configure(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        targets = metafunc.config.getoption("target") or ["postern"]
        metafunc.parametrize("target", list(dict.fromkeys(targets)), indirect=True)


@pytest.fixture(scope="session")
def _proxies(tmp_path_factory):
    running: dict[tuple[str, str], object] = {}
    yield running, tmp_path_factory
    for proxy in running.values():
        with contextlib.suppress(Exception):
            proxy.instance.stop()


@pytest.fixture
def target(request) -> str:
    name = request.param
    only = request.node.get_closest_marker("postern_only")
    if only and name != "postern":
        pytest.skip(f"Postern-only: {only.args[0] if only.args else 'nginx lacks this'}")
    if name == "nginx":
        cls = target_class(name)
        require(cls.unavailable_reason())
        marker = request.node.get_closest_marker("nginx_min")
        version = version_of(name)
        if marker and version is not None and version < _version(marker.args[0]):
            request.applymarker(pytest.mark.xfail(
                strict=True, reason=f"needs nginx {marker.args[0]}+ ({marker.args[1]}); "
                f"this nginx is {'.'.join(map(str, version))}"))
    return name


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


@pytest.fixture(scope="session")
def stack():
    """The fakes and the mock auth server of the whole run (fixed ports under the external
    target); each scenario resets and scripts them, and starts its own proxy."""
    script = default_script(USERS)
    script.auth.listen = ("127.0.0.1", external.fixed_port("auth"))
    for protocol in ("imap", "pop3", "smtp"):
        script.legs[protocol].listen = ("127.0.0.1", external.fixed_port(protocol))
    script.legs["pop3"].options["shared_content"] = True
    with Stack(script=script, one_store=False, auth_fallback=False) as running:
        yield running


@dataclass
class Proxy:
    """A running target plus where to reach it."""

    instance: object
    port: int
    host: str = "127.0.0.1"
    conf: str = ""

    def connect(self, timeout: float = 5.0) -> Client:
        return Client(self.host, self.port, timeout=timeout)

    def error_log(self) -> str:
        return self.instance.error_log_text()


@dataclass
class Lab:
    target: str
    auth: MockAuthServer
    imap: FakeImapServer
    pop3: FakePop3Server
    smtp: FakeSmtpServer
    proxies: dict
    tmp_factory: object
    stack: Stack
    started: list = field(default_factory=list)

    def proxy(self, server: str = "", mail: str = "", protocol: str = "imap",
              listen_params: str = "") -> Proxy:
        """A proxy whose one server has `server` directives, under `mail`-level ones;
        `listen_params` are appended to its listen directive (e.g. "proxy_protocol")."""
        key = (self.target, protocol, textwrap.dedent(server).strip(),
               textwrap.dedent(mail).strip(), listen_params)
        if self.target == "external" and (key not in self.proxies or external.STATE.plan):
            found = external.server_for(key)  # skips when undeclared; None when planning
            if found:
                self.proxies[key] = Proxy(found[0], found[2], host=found[1], conf=found[0].conf)
        if key not in self.proxies:
            port = free_port()
            text = MAIL_TEMPLATE.format(auth=self.auth.port, mail=key[3], port=port,
                                        params=f" {listen_params}" if listen_params else "",
                                        protocol=protocol,
                                        server=textwrap.indent(key[2], "    "))
            workdir = Path(self.tmp_factory.mktemp(f"{self.target}-{protocol}"))
            instance = self.stack.start_target(text, workdir,
                                               name=external.stand_in(self.target))
            self.proxies[key] = Proxy(instance, port, conf=text)
        return self.proxies[key]

    def ok(self, protocol: str = "imap", **kw) -> None:
        """Script the next auth reply: success towards the protocol's fake upstream."""
        from postern.fakes.auth import Reply
        self.auth.push(Reply.ok("127.0.0.1", getattr(self, protocol).port, **kw))

    def login(self, client: Client, tag: bytes = b"a1", user: bytes = b"alice",
              password: bytes = b"secret") -> Client:
        client.expect(b"* OK IMAP4 ready\r\n")
        client.send(tag + b" LOGIN " + user + b" " + password + b"\r\n")
        line = client.readline()
        assert line.startswith(tag + b" OK"), f"{line!r}\n{client.dump()}"
        return client


MAIL_TEMPLATE = """\
server_name mx.test;
auth_http 127.0.0.1:{auth}/auth;
{mail}
server {{
    listen 127.0.0.1:{port}{params};
    protocol {protocol};
{server}
}}
"""


@pytest.fixture
def lab(target, stack, _proxies) -> Lab:
    proxies, factory = _proxies
    stack.reset()
    lab = Lab(target, stack.auth, stack.imap, stack.pop3, stack.smtp, proxies, factory, stack)
    yield lab
    if target == "postern":  # no session may be left without a timer (worker's own check)
        for proxy in proxies.values():
            if getattr(proxy.instance, "name", "") == "postern":
                assert "session invariant broken" not in proxy.error_log()


__all__ = ["Faults", "Lab", "Proxy"]
