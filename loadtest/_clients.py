"""The clients' own measurements: HdrHistograms of every phase and of whole sessions.

Locust keeps response times in whole milliseconds, which turns most proxy phases into 0, 1
or 2. Each load process also records every phase and every session here, in microseconds
(HdrHistogram, 3 significant digits), with the outcome of each session and the order in which
a session runs its phases. Workers ship what they recorded since their last report to the
master with locust's ``report_to_master`` event; the master (or the single local process)
merges and writes ``PREFIX_clients.json`` next to locust's CSV files, which the HTML report
reads. No locust import here, so the merge and the file format are testable on their own.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from hdrh.histogram import HdrHistogram

LOWEST_US, HIGHEST_US, DIGITS = 1, 3_600_000_000, 3   # 1 µs .. 1 h, 0.1 % resolution
# The percentiles written out: dense where latency curves bend.
PERCENTILES = (0, 10, 25, 50, 75, 90, 95, 98, 99, 99.5, 99.9, 99.99, 100)
FORMAT = 1
# DeliveryUser's counts: messages accepted by SMTP, and the verdicts of loadtest/_delivery.py
DELIVERY = ("submitted", "delivered", "lost", "duplicated", "mismatched", "flags mismatched")


def _histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def _us(seconds: float) -> int:
    return min(HIGHEST_US, max(LOWEST_US, round(seconds * 1_000_000)))


class SessionTally:
    """Whole sessions of one profile: duration histogram, outcomes, failure reasons."""

    def __init__(self) -> None:
        self.histogram = _histogram()
        self.ok = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()

    def note(self, seconds: float, error: str | None) -> None:
        self.histogram.record_value(_us(seconds))
        if error is None:
            self.ok += 1
        else:
            self.failed += 1
            self.errors[error] += 1


def merge_order(order: list[str], sequence: list[str]) -> None:
    """Fold one session's phase sequence into ``order``: a phase not seen before goes right
    after the phase that preceded it in this session (alternatives such as ``login`` and
    ``auth plain`` end up side by side, where sessions run them)."""
    previous = None
    for phase in sequence:
        if phase not in order:
            order.insert(order.index(previous) + 1 if previous in order else 0, phase)
        previous = phase


class Recorder:
    """What one process measured since its last report (or since the start)."""

    def __init__(self) -> None:
        self.phases: dict[tuple[str, str], HdrHistogram] = {}
        self.sessions: dict[str, SessionTally] = {}
        self.order: dict[str, list[str]] = {}      # profile -> phase names in session order
        self.protocols: dict[str, str] = {}         # profile -> protocol
        self.delivery: Counter[str] = Counter()     # DeliveryUser's verdicts (_delivery.py)
        self.started: float | None = None
        self.stopped: float | None = None

    def phase(self, kind: str, name: str, seconds: float) -> None:
        hist = self.phases.get((kind, name))
        if hist is None:
            hist = self.phases[kind, name] = _histogram()
        hist.record_value(_us(seconds))

    def session(self, profile: str, protocol: str, seconds: float, error: str | None,
                sequence: list[str]) -> None:
        tally = self.sessions.get(profile)
        if tally is None:
            tally = self.sessions[profile] = SessionTally()
        tally.note(seconds, error)
        self.protocols[profile] = protocol
        merge_order(self.order.setdefault(profile, []), sequence)

    # -- shipping between processes -------------------------------------------------------

    def take(self) -> dict:
        """Everything recorded so far, encoded, and start afresh (a worker's report)."""
        data = {
            "phases": [[k, n, h.encode().decode()] for (k, n), h in self.phases.items()],
            "sessions": {p: {"histogram": t.histogram.encode().decode(), "ok": t.ok,
                             "failed": t.failed, "errors": dict(t.errors)}
                         for p, t in self.sessions.items()},
            "order": self.order, "protocols": self.protocols,
            "delivery": dict(self.delivery),
        }
        self.phases, self.sessions, self.delivery = {}, {}, Counter()
        self.order = {p: list(o) for p, o in self.order.items()}
        return data

    def merge(self, data: dict) -> None:
        for kind, name, encoded in data.get("phases", []):
            hist = HdrHistogram.decode(encoded.encode())
            if (kind, name) in self.phases:
                self.phases[kind, name].add(hist)
            else:
                self.phases[kind, name] = hist
        for profile, s in data.get("sessions", {}).items():
            tally = self.sessions.setdefault(profile, SessionTally())
            tally.histogram.add(HdrHistogram.decode(s["histogram"].encode()))
            tally.ok += s["ok"]
            tally.failed += s["failed"]
            tally.errors.update(s["errors"])
        for profile, sequence in data.get("order", {}).items():
            merge_order(self.order.setdefault(profile, []), sequence)
        self.protocols.update(data.get("protocols", {}))
        self.delivery.update(data.get("delivery", {}))

    # -- the results file -------------------------------------------------------------------

    def summary(self) -> dict:
        """The JSON document the report reads (times in milliseconds, as locust's)."""
        seconds = None
        if self.started is not None:
            seconds = round((self.stopped or time.time()) - self.started, 3)
        return {
            "format": FORMAT, "unit": "ms", "started": self.started, "seconds": seconds,
            "phases": [{"type": k, "name": n, **_describe(h)}
                       for (k, n), h in self.phases.items()],
            "sessions": {p: {"protocol": self.protocols.get(p, ""), "ok": t.ok,
                             "failed": t.failed, "errors": dict(t.errors.most_common()),
                             "order": self.order.get(p, []), **_describe(t.histogram)}
                         for p, t in self.sessions.items()},
            **({"delivery": {k: self.delivery.get(k, 0) for k in DELIVERY}}
               if self.delivery else {}),
        }

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary(), indent=1) + "\n")
        return path


def _describe(hist: HdrHistogram) -> dict:
    count = hist.get_total_count()
    pct = hist.get_percentile_to_value_dict(list(PERCENTILES)) if count else {}
    return {
        "count": count,
        "mean": round(hist.get_mean_value() / 1000, 4) if count else None,
        "percentiles": {f"{p:g}": round(pct[p] / 1000, 4) for p in PERCENTILES if count},
        "histogram": hist.encode().decode(),   # for whoever wants to merge runs
    }


recorder = Recorder()   # this process's
