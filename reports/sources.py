"""Reading the results a report is made of; each reader accepts partial or missing data.

- locust: ``PREFIX_stats.csv`` (+ ``_stats_history.csv``, ``_failures.csv``,
  ``_target.json`` when present), as written by ``locust --csv PREFIX [--csv-full-history]``,
  and ``PREFIX_clients.json``: the clients' own HdrHistograms of every phase and session
  (loadtest/_clients.py);
- bench: ``results/bench.json`` from ``python -m postern.loadtest.bench``;
- junit: pytest's ``--junitxml`` file of a scenario run (ids like ``test_x[postern]``);
- scenarios: ``results/scenarios.json`` of the scenario runner (scenarios/kit/results.py): the
  same cases as the JUnit file plus what each names (RFC / nginx behaviour), its grammar
  check, and summaries by protocol and by reference;
- check-auth: ``check-auth --json`` output, a list of {check, verdict, reason, client_sees}.
"""

from __future__ import annotations

import csv
import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TARGET_NAMES = ("postern", "nginx", "external", "direct", "differential")
PROTOCOLS = ("imap", "pop3", "smtp")
PERCENTILES = ("50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%")


def _num(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None  # locust writes "N/A" for an empty window
    return None if math.isnan(value) else value


# -- locust -----------------------------------------------------------------------------------

@dataclass
class PhaseStats:
    type: str
    name: str
    requests: int
    failures: int
    median: float | None
    average: float | None
    min: float | None
    max: float | None
    avg_size: float | None
    rps: float | None
    percentiles: dict[str, float | None]

    @property
    def protocol(self) -> str:
        return self.type.lower() or "all"


@dataclass
class HistoryRow:
    time: float
    users: int
    rps: float
    fps: float
    percentiles: dict[str, float | None]
    total_requests: int
    total_failures: int


@dataclass
class LocustRun:
    prefix: Path
    stats: list[PhaseStats]
    aggregated: PhaseStats | None
    history: dict[tuple[str, str], list[HistoryRow]]   # (type, name) -> rows in time order
    failures: list[dict[str, str]]
    target: dict | None = None
    clients: dict | None = None   # PREFIX_clients.json: phases and sessions, in ms

    def hdr(self, kind: str, name: str) -> dict | None:
        """The clients' histogram summary of one phase, if they recorded it."""
        for p in (self.clients or {}).get("phases", []):
            if p.get("type") == kind and p.get("name") == name and p.get("count"):
                return p
        return None

    @property
    def full_history(self) -> bool:
        return any(name != "Aggregated" for _, name in self.history)


def find_locust_prefix(results: Path) -> Path | None:
    """The newest ``*_stats.csv`` under ``results`` (recursively), as its prefix."""
    found = sorted(results.rglob("*_stats.csv"), key=lambda p: p.stat().st_mtime)
    return Path(str(found[-1])[: -len("_stats.csv")]) if found else None


def _phase(row: dict[str, str]) -> PhaseStats:
    return PhaseStats(
        row.get("Type", ""), row.get("Name", ""), int(_num(row.get("Request Count")) or 0),
        int(_num(row.get("Failure Count")) or 0), _num(row.get("Median Response Time")),
        _num(row.get("Average Response Time")), _num(row.get("Min Response Time")),
        _num(row.get("Max Response Time")), _num(row.get("Average Content Size")),
        _num(row.get("Requests/s")), {p: _num(row.get(p)) for p in PERCENTILES})


def _csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load_locust(prefix: str | Path) -> LocustRun | None:
    prefix = Path(prefix)
    rows = _csv_rows(Path(f"{prefix}_stats.csv"))
    if not rows:
        return None
    stats = [_phase(r) for r in rows]
    aggregated = next((s for s in stats if s.name == "Aggregated"), None)
    history: dict[tuple[str, str], list[HistoryRow]] = {}
    for r in _csv_rows(Path(f"{prefix}_stats_history.csv")):
        t = _num(r.get("Timestamp"))
        if t is None:
            continue
        history.setdefault((r.get("Type", ""), r.get("Name", "")), []).append(HistoryRow(
            t, int(_num(r.get("User Count")) or 0), _num(r.get("Requests/s")) or 0.0,
            _num(r.get("Failures/s")) or 0.0, {p: _num(r.get(p)) for p in PERCENTILES},
            int(_num(r.get("Total Request Count")) or 0),
            int(_num(r.get("Total Failure Count")) or 0)))
    return LocustRun(prefix, [s for s in stats if s.name != "Aggregated"], aggregated, history,
                     _csv_rows(Path(f"{prefix}_failures.csv")),
                     _json_object(Path(f"{prefix}_target.json")),
                     _clients(_json_object(Path(f"{prefix}_clients.json"))))


def _json_object(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _clients(data: dict | None) -> dict | None:
    """Keep the well-formed parts of a clients file (phases, sessions)."""
    if data is None:
        return None
    phases = [p for p in data.get("phases") or [] if isinstance(p, dict)
              and isinstance(p.get("percentiles"), dict)]
    sessions = {k: v for k, v in (data.get("sessions") or {}).items()
                if isinstance(v, dict) and isinstance(v.get("percentiles"), dict)}
    return {**data, "phases": phases, "sessions": sessions}


# -- benchmark --------------------------------------------------------------------------------

def load_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        return {"error": f"{path.name} is not JSON: {exc}"}


# -- scenarios (JUnit) ------------------------------------------------------------------------

@dataclass
class Case:
    module: str        # scenarios.test_imap_smoke
    test: str          # test_login_literals[plain]   (the target taken out of the id)
    target: str | None
    protocol: str
    outcome: str       # passed | failed | error | skipped | xfailed
    message: str = ""
    text: str = ""     # failure text: the transcript
    seconds: float = 0.0
    references: list[str] = field(default_factory=list)   # "RFC 3501 §6.1.1", "docs/behaviour.md §7.5"
    grammar: str = ""  # the RFC grammar check: passed | failed | known deviations | ...


@dataclass
class JunitRun:
    path: Path
    cases: list[Case] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)   # scenarios.json: by protocol / reference

    @property
    def targets(self) -> list[str]:
        seen = {c.target for c in self.cases if c.target}
        return [t for t in TARGET_NAMES if t in seen] + sorted(seen - set(TARGET_NAMES))

    @property
    def scenarios(self) -> list[Case]:
        return [c for c in self.cases if c.target]


_ID = re.compile(r"^(?P<base>[^\[]+)(?:\[(?P<params>.*)\])?$")


def _split_id(name: str, targets: tuple[str, ...] = TARGET_NAMES) -> tuple[str, str | None]:
    """``test_x[plain-postern]`` -> (``test_x[plain]``, ``postern``)."""
    m = _ID.match(name)
    if not m or not m.group("params"):
        return name, None
    parts = m.group("params").split("-")
    target = next((p for p in parts if p in targets), None)
    rest = [p for p in parts if p != target]
    return m.group("base") + (f"[{'-'.join(rest)}]" if rest else ""), target


def _protocol(module: str, test: str) -> str:
    for text in (module.rsplit(".", 1)[-1], test):
        for p in PROTOCOLS:
            if re.search(rf"(^|_){p}(_|$)", text):
                return p
    return "general"


def load_junit(path: str | Path) -> JunitRun | None:
    path = Path(path)
    if not path.exists():
        return None
    run = JunitRun(path)
    for tc in ET.parse(path).getroot().iter("testcase"):
        module, name = tc.get("classname", ""), tc.get("name", "")
        test, target = _split_id(name)
        outcome, message, text = "passed", "", ""
        for child in tc:
            tag = child.tag
            if tag in ("failure", "error"):
                outcome = "failed" if tag == "failure" else "error"
            elif tag == "skipped":
                outcome = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
            else:
                continue
            message, text = child.get("message", ""), child.text or ""
            break
        run.cases.append(Case(module, test, target, _protocol(module, test), outcome, message,
                              text, _num(tc.get("time")) or 0.0))
    for c in run.cases:
        run.totals[c.outcome] = run.totals.get(c.outcome, 0) + 1
    return run


def load_scenarios(path: str | Path) -> JunitRun | None:
    """``results/scenarios.json`` read into the JUnit shape (so the scenario matrix can use
    either), each case with its references and grammar verdict, and the file's summary."""
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
        return None
    run = JunitRun(Path(path), summary=data.get("summary") or {})
    for t in data["tests"]:
        if not isinstance(t, dict):
            continue
        scenario = str(t.get("scenario", ""))
        module = scenario.split("::")[0].removesuffix(".py").replace("/", ".")
        test, _ = _split_id(str(t.get("id", "")).rpartition("::")[2])
        refs = t.get("references") or {}
        run.cases.append(Case(
            module, test, t.get("target"), str(t.get("protocol") or "general"),
            str(t.get("outcome", "?")), str(t.get("message", ""))[:500],
            str(t.get("transcript") or t.get("message") or ""), _num(t.get("duration")) or 0.0,
            [*refs.get("rfc", []), *refs.get("cve", []), *refs.get("nginx", [])],
            str((t.get("checks") or {}).get("grammar", ""))))
    for c in run.cases:
        run.totals[c.outcome] = run.totals.get(c.outcome, 0) + 1
    return run


# -- check-auth -------------------------------------------------------------------------------

@dataclass
class CheckAuthRun:
    rows: list[dict]
    meta: dict = field(default_factory=dict)  # url, auth_server, summary, settings


def load_check_auth(path: str | Path) -> CheckAuthRun | None:
    """``check-auth --json``: {"checks": [...], "url", "summary", ...} (schema 1), or a
    bare list of {check, verdict, reason, client_sees}."""
    data = load_json(path)
    if data is None:
        return None
    meta: dict = {}
    if isinstance(data, dict):
        meta = {k: data[k] for k in ("url", "auth_server", "summary", "settings", "error")
                if k in data}
        data = data.get("checks") or data.get("results") or []
    rows = []
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, dict):
            continue
        exchanges = []
        for ex in item.get("exchanges") or []:
            if isinstance(ex, dict):
                exchanges.append("\n".join(str(ex[k]) for k in ("request", "reply", "error")
                                           if ex.get(k)))
        rows.append({"id": str(item.get("id", "") or ""),
                     "check": str(item.get("check") or item.get("title") or item.get("id")
                                  or "?"),
                     "verdict": str(item.get("verdict", item.get("status", "?"))),
                     "reason": str(item.get("reason", "") or ""),
                     "client_sees": item.get("client_sees") or "",
                     "exchanges": exchanges})
    return CheckAuthRun(rows, meta)
