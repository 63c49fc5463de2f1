"""Scenario results for the reports: results/scenarios.json, grouped by protocol and by the
RFC or nginx behaviour each scenario names.

One record per collected scenario run (and per differential check):

    {"id": "scenarios/test_imap_smoke.py::test_greeting_and_capability[nginx]",
     "scenario": "scenarios/test_imap_smoke.py::test_greeting_and_capability",
     "target": "nginx", "protocol": "imap",
     "references": {"rfc": ["RFC 3501 §6.1.1"], "nginx": [], "cve": [], "groups": [...]},
     "title": "the docstring, shortened",
     "outcome": "passed|failed|error|skipped|xfailed|xpassed",
     "checks": {"bytes": "passed", "grammar": "passed|failed|known deviations|not checked"},
     "grammar": [{"connection": 1, "scope": "full", "number": 3, "line": "...",
                  "rule": "RFC 3501 §9 ...", "problem": "...", "known": null}],
     "duration": 0.12, "message": "...", "transcript": "C: ... / S: ..." (on failure)}

The file also carries a summary: totals, per target, per protocol and per reference group
(outcome counts each), so a report can show "RFC 3501: 80 passed, 2 failed" directly.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from postern.scenarios.kit.references import References

SCHEMA = 1
DEFAULT_PATH = Path("results/scenarios.json")


@dataclass
class Record:
    id: str
    scenario: str
    target: str | None
    protocol: str
    references: dict
    title: str
    outcome: str = "not run"
    checks: dict = field(default_factory=lambda: {"bytes": "not run", "grammar": "not checked"})
    grammar: list[dict] = field(default_factory=list)
    duration: float = 0.0
    message: str = ""
    transcript: str = ""
    skip_reason: str = ""

    @classmethod
    def new(cls, nodeid: str, scenario: str, target: str | None, protocol: str,
            refs: References, title: str) -> Record:
        return cls(nodeid, scenario, target, protocol, refs.as_dict(), title)

    def add_report(self, report) -> None:
        """Fold one phase report (setup/call/teardown) into the outcome."""
        self.duration += report.duration
        wasxfail = hasattr(report, "wasxfail")
        if report.when == "call" or (report.when == "setup" and not report.passed):
            if report.skipped:
                self.outcome = "xfailed" if wasxfail else "skipped"
                if not wasxfail and isinstance(report.longrepr, tuple):
                    self.skip_reason = str(report.longrepr[2]).removeprefix("Skipped: ")
            elif report.failed:
                self.outcome = "error" if report.when == "setup" else "failed"
            else:
                self.outcome = "xpassed" if wasxfail else "passed"
            self.checks["bytes"] = self.outcome
        elif report.when == "teardown" and report.failed and self.outcome == "passed" \
                and self.checks["grammar"] != "failed":
            self.outcome = "error"
        if report.failed:
            self.message = (self.message + "\n" if self.message else "") + \
                str(report.longreprtext)[:8000]


def summarise(records: list[Record]) -> dict:
    totals: Counter = Counter()
    by_target: dict[str, Counter] = defaultdict(Counter)
    by_protocol: dict[str, Counter] = defaultdict(Counter)
    by_reference: dict[str, Counter] = defaultdict(Counter)
    grammar: Counter = Counter()
    for r in records:
        totals[r.outcome] += 1
        by_target[r.target or "-"][r.outcome] += 1
        by_protocol[r.protocol][r.outcome] += 1
        for group in r.references.get("groups", []) or ["(none named)"]:
            by_reference[group][r.outcome] += 1
        grammar[r.checks.get("grammar", "not checked")] += 1
    plain = lambda d: {k: dict(v) for k, v in sorted(d.items())}
    return {"totals": dict(totals), "by_target": plain(by_target),
            "by_protocol": plain(by_protocol), "by_reference": plain(by_reference),
            "grammar": dict(grammar)}


def write(path: Path, records: list[Record], meta: dict) -> Path:
    """Atomically (others may run scenarios in the same tree at the same time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta,
            "summary": summarise(records), "tests": [asdict(r) for r in records]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".scenarios-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, ensure_ascii=False)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
