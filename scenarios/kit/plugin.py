"""The scenario runner's own pytest plugin, registered by conftest.py:

- every scenario names what it checks (an RFC or an nginx behaviour, references.py): one
  that does not errors at setup;
- every Client a scenario opens is recorded (capture.py) and, at teardown, its server side
  is checked against the RFC grammar of its protocol (grammar.py) — a failure there is a
  teardown error of its own, apart from the byte-exact assertions of the scenario;
- `--differential` adds a `[differential]` check per scenario (differential.py);
- `--target external` serves scenarios from a proxy someone runs (external.py): its
  declared ports are checked before the first scenario, and a run that passes nothing
  fails; `--external-plan` records the blocks the scenarios need (external_plan.py);
- results/scenarios.json and JUnit properties (protocol, rfc, behaviour, target) for the
  reports (results.py), and a summary at the end of the run.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from postern.scenarios.kit import external, external_plan, grammar
from postern.scenarios.kit.capture import Connection, Recorder
from postern.scenarios.kit.differential import DifferentialItem, Side, add_items, pair_key
from postern.scenarios.kit.references import MISSING, References, first_line, references
from postern.scenarios.kit.results import DEFAULT_PATH, Record, write

SCENARIOS = Path(__file__).resolve().parent.parent
PROTOCOLS = ("imap", "pop3", "smtp")
MISSING_KEY = pytest.StashKey[bool]()


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("scenarios", "scenario runner")
    group.addoption("--differential", action="store_true",
                    help="run each scenario on two targets (postern and nginx unless two "
                    "--target are given) and compare the client transcripts")
    group.addoption("--grammar", choices=("on", "strict", "off"), default="on",
                    help="RFC reply-syntax check of every client connection at teardown: "
                    "on (known nginx deviations are only reported), strict, off")
    group.addoption("--scenario-json", default=str(DEFAULT_PATH), metavar="PATH",
                    help="where to write the scenario results (default "
                    "results/scenarios.json; empty: do not write)")
    external.add_options(parser)


def configure(config: pytest.Config) -> None:
    external.configure(config)
    if config.getoption("differential"):
        targets = list(dict.fromkeys(config.getoption("target") or []))
        for name in ("postern", "nginx"):
            if len(targets) < 2 and name not in targets:
                targets.append(name)
        config.option.target = targets
    if not config.pluginmanager.has_plugin("postern-scenarios"):
        config.pluginmanager.register(ScenarioPlugin(config), "postern-scenarios")


def is_scenario(item: pytest.Item) -> bool:
    return isinstance(item, pytest.Function) and item.path.parent == SCENARIOS \
        and item.path.name.startswith("test_")


def target_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("target") if callspec else None


def protocol_of(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    for value in (callspec.params.values() if callspec else ()):
        if value in PROTOCOLS:
            return value
    for protocol in PROTOCOLS:
        if item.path.name.startswith(f"test_{protocol}_"):
            return protocol
    return "general"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


class ScenarioPlugin:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.recorder = Recorder()
        self.records: dict[str, Record] = {}
        self.sides: dict[str, dict[str, Side]] = {}
        state = external.STATE
        # A plan only records the blocks scenarios ask for; Postern's replies are not checked.
        self.grammar_mode = "off" if state and state.plan else config.getoption("grammar")
        targets = config.getoption("target") or ["postern"]
        self.pair = tuple(targets[:2]) if config.getoption("differential") else None
        self.plan_lines: list[str] = []
        self.external_verdict: list[str] = []   # why an external run fails as a whole

    # -- run lifecycle ------------------------------------------------------------------

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.recorder.install()
        state = external.STATE
        if state is not None:
            state.basetemp = str(session.config._tmp_path_factory.getbasetemp())
            if state.plan:  # before any scenario writes the plan's PKI there
                external_plan.clear(state.workdir.resolve())

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        state = external.STATE
        if state is None or not state.plan:
            return []
        version = state.version_text or "(no --external-nginx-version: any)"
        return [("external plan: every scenario runs once on Postern to record the server "
                 f"blocks it needs (a few minutes); writes {state.workdir}/, for nginx "
                 f"{version}")]

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """An external proxy that does not answer fails the run before the first scenario."""
        state = external.STATE
        if state is None or state.plan or not any(
                target_of(item) == "external" for item in session.items):
            return
        if not state.servers:
            raise pytest.UsageError(
                "external target: no server blocks declared; give --external-config "
                "FILE.toml (written by --external-plan) or --external-server")
        silent = external.silent_ports(state)
        if silent:
            pytest.exit(f"external target: nothing answers on {len(silent)} of the "
                        f"{len(state.servers)} declared ports (is the proxy running, and did "
                        "it accept its configuration?):\n  " + "\n  ".join(silent[:10])
                        + (f"\n  ... and {len(silent) - 10} more" if len(silent) > 10 else ""),
                        returncode=pytest.ExitCode.TESTS_FAILED)

    def pytest_unconfigure(self) -> None:
        self.recorder.uninstall()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items: list[pytest.Item]) -> None:
        for item in items:
            if not is_scenario(item):
                continue
            doc = getattr(item.obj, "__doc__", None)
            refs = references(doc)
            target, protocol = target_of(item), protocol_of(item)
            scenario = item.nodeid.split("[")[0]
            self.records[item.nodeid] = Record.new(item.nodeid, scenario, target, protocol,
                                                   refs, first_line(doc))
            item.user_properties += [("target", target or ""), ("protocol", protocol),
                                     ("rfc", "; ".join(refs.rfcs)),
                                     ("behaviour", "; ".join(refs.cves + refs.nginx))]
            if not refs:
                item.stash[MISSING_KEY] = True
            self._external_version_marks(item, target)
        if self.pair:
            add_items(items, self.pair, self.sides, target_of, self._expected_difference)
            for item in items:
                if isinstance(item, DifferentialItem):
                    props = dict(item.user_properties)
                    refs = References(
                        [r for r in props.get("rfc", "").split("; ") if r],
                        [n for n in props.get("behaviour", "").split("; ") if n])
                    self.records[item.nodeid] = Record.new(
                        item.nodeid, item.nodeid.split("[")[0], "differential",
                        props.get("protocol", "general"), refs,
                        f"{self.pair[0]} vs {self.pair[1]}")
                    item.user_properties = [(k, "differential" if k == "target" else v)
                                            for k, v in item.user_properties]

    def _external_version_marks(self, item: pytest.Item, target: str | None) -> None:
        """A scenario for a newer nginx than the external one: the plan skips it (writing
        no block for it), a run skips it unless its block was declared by hand, where it is
        an expected failure as on the nginx target."""
        state = external.STATE
        marker = item.get_closest_marker("nginx_min")
        if target != "external" or marker is None or state is None or not state.nginx_version:
            return
        if state.nginx_version < _version(marker.args[0]):
            why = (f"needs nginx {marker.args[0]}+ ({marker.args[1]}); the external proxy is "
                   f"{state.version_text}")
            state.too_new[item.nodeid] = why
            item.add_marker(pytest.mark.skip(reason=f"external plan: {why}") if state.plan
                            else pytest.mark.xfail(strict=True, reason=why))

    def _expected_difference(self, item: pytest.Item) -> str | None:
        from postern.scenarios.kit.targets import version_of

        marker = item.get_closest_marker("nginx_min")
        if marker is None:
            return None
        for target in self.pair or ():
            version = version_of(target) if target == "nginx" else (
                external.STATE.nginx_version if target == "external" and external.STATE
                else None)
            if version is not None and version < _version(marker.args[0]):
                return (f"needs nginx {marker.args[0]}+ ({marker.args[1]}); {target} is "
                        f"{'.'.join(map(str, version))}")
        return None

    # -- per scenario ---------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if item.stash.get(MISSING_KEY, False):
            pytest.fail(MISSING, pytrace=False)
        if is_scenario(item):
            self.recorder.begin()
            if external.STATE is not None:
                external.STATE.current = item.nodeid

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = self.records.get(report.nodeid)
        if record is None:
            return
        if report.when == "call" and report.failed and self.recorder.current:
            record.transcript = "\n\n".join(
                f"connection {i} (port {c.port}):\n{c.client.dump()}"
                for i, c in enumerate(self.recorder.current, 1))[:20000]
        record.add_report(report)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem):
        failing: list[str] = []
        if is_scenario(item):
            failing = self._after_scenario(item, self.recorder.end())
        result = yield
        if failing:
            pytest.fail("RFC grammar violations (the server side of the client "
                        "connections; see scenarios/kit/grammar.py):\n" + "\n".join(failing),
                        pytrace=False)
        return result

    def _after_scenario(self, item: pytest.Item, conns: list[Connection]) -> list[str]:
        record = self.records.get(item.nodeid)
        lab = getattr(item, "funcargs", {}).get("lab")
        target = target_of(item)
        if self.pair and target in self.pair:
            ports = self._lab_ports(lab)
            self.sides.setdefault(pair_key(item.nodeid, target), {})[target] = Side(
                target, record.outcome if record else "?",
                [[(w, d) for w, d in c.transcript] for c in conns],
                [c.eof for c in conns], [c.lenient or c.reset for c in conns],
                set(ports) | {c.port for c in conns})
        if lab is None or self.grammar_mode == "off" or record is None:
            return []
        if record.outcome not in ("passed", "failed", "xfailed", "xpassed"):
            return []
        found = self._grammar(lab, conns)
        record.grammar = [{"connection": i, "scope": scope, **v.as_dict()}
                          for i, scope, v in found]
        failing = [f"connection {i} ({scope}): {v}" for i, scope, v in found
                   if v.known is None or self.grammar_mode == "strict"]
        record.checks["grammar"] = ("failed" if failing else
                                    "known deviations" if found else
                                    "passed" if conns else "not checked")
        return failing

    # -- grammar --------------------------------------------------------------------------

    @staticmethod
    def _lab_ports(lab) -> dict[int, tuple[str, str]]:
        if lab is None:
            return {}
        ports = {proxy.port: (key[1], "proxy") for key, proxy in lab.proxies.items()}
        for protocol in PROTOCOLS:
            fake = getattr(lab, protocol, None)
            if fake is not None:
                ports[fake.port] = (protocol, "backend")
        ports.setdefault(lab.auth.port, ("http", "auth"))
        return ports

    def _grammar(self, lab, conns: list[Connection]):
        ports = self._lab_ports(lab)
        found = []
        for i, conn in enumerate(conns, 1):
            protocol, role = ports.get(conn.port, (None, None))
            if protocol not in PROTOCOLS or not conn.transcript:
                continue
            events, eof, scope = _scope(conn, protocol, role, lab)
            found += [(i, scope, v) for v in grammar.check(protocol, events, eof)]
        return found

    # -- the end ----------------------------------------------------------------------------

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        state = external.STATE
        if state is not None and state.plan and state.requested:
            self.plan_lines = external_plan.write_plan(state)
        if state is not None and not state.plan:
            self._external_verdict(session)
        path = self.config.getoption("scenario_json")
        ran = [r for r in self.records.values() if r.outcome != "not run"]
        if path and ran and not (state is not None and state.plan):
            from postern.scenarios.kit.targets import version_of
            nginx = version_of("nginx")
            meta = {"targets": self.config.getoption("target") or ["postern"],
                    "differential": list(self.pair) if self.pair else None,
                    "grammar_mode": self.grammar_mode,
                    "nginx_version": ".".join(map(str, nginx)) if nginx else None}
            if state is not None:
                meta["external"] = {"ports": state.ports, "servers": len(state.servers),
                                    "nginx_version": state.version_text}
            write(Path(path), ran, meta)

    def _external_verdict(self, session: pytest.Session) -> None:
        """An external run that passes nothing has not shown the proxy works: it fails."""
        runs = [r for r in self.records.values()
                if r.target == "external" and r.outcome != "not run"]
        if not runs or any(r.outcome == "passed" for r in runs):
            return
        outcomes = Counter(r.outcome for r in runs)
        counts = ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))
        self.external_verdict = [(
            f"no external scenario passed ({len(runs)} ran: {counts}), so the run fails: "
            "declare the blocks the scenarios need (--external-plan writes them) and check "
            "that your proxy answers on their ports")]
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config) -> None:
        from postern.scenarios.kit.summary import summary_sections

        for title, lines in summary_sections(self, config):
            terminalreporter.write_sep("=", title)
            for line in lines:
                terminalreporter.write_line(line)


AUTH_PORT = re.compile(rb"(?im)^Auth-Port:[ \t]*(\S+)")


def _scope(conn: Connection, protocol: str, role: str, lab) -> tuple[list, bool, str]:
    """Which part of a connection the proxy is answerable for: all of it when every backend
    the auth server named is one of the lab's fakes and the protocol's fake behaves
    normally (or the client talks to a fake itself, or no login happened), else only what
    arrived before the first auth request after the client connected (the proxy's own
    dialogue; a scripted or real backend's words are not the proxy's)."""
    timed = conn.transcript.timed()
    events = [(who, data) for who, data, _ in timed]
    if role == "backend":
        return events, conn.eof, "full"
    fake = getattr(lab, protocol)
    fakes = {getattr(lab, p).port for p in PROTOCOLS}
    requests = [r for r in lab.auth.requests if r.received_at >= conn.opened - 0.01]
    backends = {m for r in requests for m in AUTH_PORT.findall(r.reply or b"")}
    if not requests or (fake.faults == type(fake.faults)()
                        and all(p.isdigit() and int(p) in fakes for p in backends)):
        return events, conn.eof, "full"
    cut = min(r.received_at for r in requests)
    return [(who, data) for who, data, t in timed if t < cut], False, "pre-auth"
