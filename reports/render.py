"""Assemble the report: find the latest results, shape them for the page, write one file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from reports import plots
from reports.sources import (
    CheckAuthRun,
    JunitRun,
    LocustRun,
    load_check_auth,
    load_json,
    load_junit,
    load_locust,
)
from reports.template import PAGE

RESULTS = Path("results")
OUTCOMES = ("passed", "failed", "error", "xfailed", "skipped")
# (label, test, key, scale) - the benchmark's headline numbers, as loadtest/bench.py's
# ROWS table prints them; any other number in bench.json is listed under them.
BENCH_METRICS = (
    ("sessions/s", "sessions", "per_second", 1),
    ("LOGIN p50, ms", "sessions", "login_p50_ms", 1),
    ("LOGIN p99, ms", "sessions", "login_p99_ms", 1),
    ("proxy CPU s per 1,000 sessions", "sessions", "proxy_cpu_s_per_1000", 1),
    ("proxy user-space CPU s per 1,000 sessions", "sessions", "proxy_user_s_per_1000", 1),
    ("proxy worker busy, % of a core", "sessions", "proxy_busy_pct", 1),
    ("session errors", "sessions", "errors", 1),
    ("relay MiB/s (one FETCH)", "fetch", "mib_per_s", 1),
    ("proxy CPU s for the FETCH", "fetch", "proxy_cpu_s", 1),
    ("proxy CPU s per GiB relayed", "fetch", "proxy_cpu_s_per_gib", 1),
    ("RSS per idle session, KiB", "idle", "bytes_per_session", 1 / 1024),
    ("POP3 sessions/s", "pop3_sessions", "per_second", 1),
    ("POP3 USER/PASS p50, ms", "pop3_sessions", "login_p50_ms", 1),
    ("POP3 USER/PASS p99, ms", "pop3_sessions", "login_p99_ms", 1),
    ("POP3 proxy CPU s per 1,000 sessions", "pop3_sessions", "proxy_cpu_s_per_1000", 1),
    ("SMTP sessions/s", "smtp_sessions", "per_second", 1),
    ("SMTP AUTH p50, ms", "smtp_sessions", "login_p50_ms", 1),
    ("SMTP AUTH p99, ms", "smtp_sessions", "login_p99_ms", 1),
    ("SMTP proxy CPU s per 1,000 sessions", "smtp_sessions", "proxy_cpu_s_per_1000", 1),
)
NO_RATIO = {"errors", "proxy_busy_pct"}  # a ratio of these says nothing


@dataclass
class Inputs:
    """Where each kind of result is read from; None: not included."""

    locust: Path | None = None      # a --csv prefix
    bench: Path | None = None
    junit: Path | None = None
    check_auth: Path | None = None

    @classmethod
    def latest(cls, results: Path = RESULTS) -> Inputs:
        """The newest of each kind under ``results`` (missing kinds stay None)."""
        from reports.sources import find_locust_prefix

        found = sorted(results.glob("check-auth*.json"), key=lambda p: p.stat().st_mtime) \
            if results.is_dir() else []
        return cls(find_locust_prefix(results) if results.is_dir() else None,
                   _existing(results / "bench.json"), _existing(results / "junit.xml"),
                   found[-1] if found else None)


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def _ms(value: float | None) -> str:
    """A locust percentile: whole milliseconds, rounded, so 0 means under half of one."""
    return "<1" if value == 0 else _fmt(value)


def _sig(value: float | None) -> str:
    """Three significant digits for small numbers (CPU seconds), grouped for large ones."""
    if value is None:
        return "–"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"


# -- locust -----------------------------------------------------------------------------------

def locust_section(run: LocustRun) -> dict[str, Any]:
    rows = [{"type": s.type, "name": s.name, "requests": s.requests, "failures": s.failures,
             "rps": _fmt(s.rps, 2), "p50": _ms(s.percentiles["50%"]),
             "p95": _ms(s.percentiles["95%"]), "p99": _ms(s.percentiles["99%"]),
             "max": _fmt(s.max), "avg": _fmt(s.average), "size": _fmt(s.avg_size, 0)}
            for s in run.stats]
    plots.set_start(run)
    figures = [plots.phase_percentiles(run)]
    protocols = list(dict.fromkeys(s.protocol for s in run.stats))
    if run.full_history:
        for p in protocols:
            figures += [plots.throughput(run, p), plots.latency_grid(run, p)]
        figures.append(plots.failures_over_time(run))
    else:
        figures.append(plots.aggregated_history(run))
    agg = run.aggregated
    history = run.history.get(("", "Aggregated"), [])
    span = ""
    if history:
        start, end = history[0].time, history[-1].time
        span = (f"{datetime.fromtimestamp(start):%Y-%m-%d %H:%M:%S}, "
                f"{end - start:.0f} s recorded")
    total_requests = agg.requests if agg else sum(s.requests for s in run.stats)
    total_failures = agg.failures if agg else sum(s.failures for s in run.stats)
    target = None
    if isinstance(run.target, dict):
        endpoints = run.target.get("endpoints")
        target = {"endpoints": {p: {k: e.get(k, "?") for k in ("host", "port", "via", "tls")}
                                for p, e in endpoints.items() if isinstance(e, dict)}
                  if isinstance(endpoints, dict) else {},
                  "notes": [str(n) for n in run.target.get("notes") or []]}
    failures = [{k: f.get(k, "") for k in ("Method", "Name", "Error", "Occurrences")}
                for f in run.failures]
    return {
        "prefix": str(run.prefix), "rows": rows, "figures": [f for f in figures if f],
        "failures": failures, "target": target, "full_history": run.full_history,
        "span": span, "total_requests": total_requests, "total_failures": total_failures,
        "total_rps": _fmt(agg.rps if agg else None, 1),
        "total_p95": _ms(agg.percentiles["95%"] if agg else None),
        "peak_users": max((r.users for r in history), default=0),
    }


# -- benchmark --------------------------------------------------------------------------------

def _numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a nested dict, as dotted keys."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(_numbers(v, f"{prefix}{k}."))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out[prefix[:-1]] = float(data)
    return out


def bench_section(path: Path, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        data = {"error": "bench.json does not hold an object"}
    targets_data = data.get("targets") if isinstance(data.get("targets"), dict) else {}
    targets = list(targets_data)
    errors = [("bench", data["error"])] if "error" in data else []
    for t, results in targets_data.items():
        if not isinstance(results, dict):
            continue
        if "error" in results:
            errors.append((t, results["error"]))
        for test, value in results.items():
            if isinstance(value, dict) and "error" in value:
                errors.append((f"{t} {test}", value["error"]))
    metrics, rows, used = [], [], set()
    has_ratio = {"postern", "nginx"} <= set(targets)
    for label, test, key, scale in BENCH_METRICS:
        values = {}
        for t in targets:
            v = (targets_data.get(t) or {}).get(test, {})
            v = v.get(key) if isinstance(v, dict) else None
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                values[t] = v * scale
        used.add(f"{test}.{key}")
        if not values:
            continue
        if any(values.values()):  # an all-zero panel says nothing the table does not
            metrics.append((label, values))
        ratio = ""
        if has_ratio and values.get("nginx") and "postern" in values and key not in NO_RATIO:
            ratio = f"{values['postern'] / values['nginx']:.2f}×"
        rows.append({"label": label, "cells": [_sig(values.get(t)) for t in targets],
                     "ratio": ratio})
    flat = {t: _numbers(targets_data.get(t)) for t in targets}
    other_keys = sorted({k for f in flat.values() for k in f} - used)
    other = [{"label": k, "cells": [_sig(flat[t].get(k)) for t in targets]}
             for k in other_keys]
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    machine = data.get("machine")
    return {
        "path": str(path), "targets": targets, "rows": rows, "other": other,
        "has_ratio": has_ratio, "errors": errors, "notes": data.get("notes") or [],
        "figure": plots.bench_bars(metrics),
        "settings": ", ".join(f"{k}: {v}" for k, v in settings.items()
                              if not isinstance(v, (dict, list))),
        "machine": ", ".join(f"{k}: {v}" for k, v in machine.items())
        if isinstance(machine, dict) else (machine or ""),
    }


# -- scenarios --------------------------------------------------------------------------------

def junit_section(run: JunitRun) -> dict[str, Any]:
    targets = run.targets
    matrix: dict[tuple[str, str], dict[str, Any]] = {}
    for c in run.scenarios:
        row = matrix.setdefault((c.protocol, f"{c.module.rsplit('.', 1)[-1]}::{c.test}"), {})
        row[c.target] = c
    rows = []
    for (protocol, name), cells in sorted(matrix.items()):
        ordered = [cells.get(t) for t in targets]
        rows.append({"protocol": protocol, "name": name, "cells": ordered,
                     "bad": any(c and c.outcome in ("failed", "error") for c in ordered),
                     "clean": all(c and c.outcome == "passed" for c in ordered)})
    summary = []
    for protocol in sorted({c.protocol for c in run.scenarios}):
        cells = []
        for t in targets:
            mine = [c.outcome for c in run.scenarios if c.protocol == protocol and c.target == t]
            cells.append(", ".join(f"{mine.count(o)} {o}" for o in OUTCOMES if o in mine)
                         or "–")
        summary.append({"protocol": protocol, "cells": cells})
    others = [c for c in run.cases if not c.target]
    others_totals: dict[str, int] = {}
    for c in others:
        others_totals[c.outcome] = others_totals.get(c.outcome, 0) + 1
    return {
        "path": str(run.path), "targets": targets, "summary": summary,
        # what needs a look first; scenarios every target passed, folded below
        "matrix": [r for r in rows if not r["clean"]], "clean": [r for r in rows if r["clean"]],
        "totals": [(o, run.totals[o]) for o in OUTCOMES if o in run.totals], "figure": plots.junit_outcomes(run),
        "others": [c for c in others if c.outcome in ("failed", "error")],
        "others_totals": [(o, others_totals[o]) for o in OUTCOMES if o in others_totals],
    }


def checks_section(path: Path, run: CheckAuthRun) -> dict[str, Any]:
    shaped = []
    for r in run.rows:
        sees = r["client_sees"]
        if not isinstance(sees, str):
            sees = json.dumps(sees, indent=1)
        shaped.append({**r, "client_sees": sees, "colour": plots.verdict_colour(r["verdict"])})
    meta = run.meta
    summary = meta.get("summary") if isinstance(meta.get("summary"), dict) else {}
    about = ", ".join(str(meta[k]) for k in ("url",) if meta.get(k))
    if summary:
        about += (" · " if about else "") + ", ".join(
            f"{v} {k}" for k, v in summary.items() if k in ("pass", "warn", "fail"))
    causes = [c for c in summary.get("causes") or [] if isinstance(c, dict)]
    return {"path": str(path), "rows": shaped, "figure": plots.verdict_counts(run.rows),
            "about": about, "error": str(meta.get("error", "")),
            "causes": [{"reason": str(c.get("reason", "")), "count": len(c.get("checks") or [])}
                       for c in causes]}


# -- the page ---------------------------------------------------------------------------------

def render_report(inputs: Inputs | None = None, out: str | Path = RESULTS / "report.html",
                  title: str = "Postern results") -> Path:
    """Write one self-contained HTML report from whatever results ``inputs`` names
    (default: the latest under results/) and return its path."""
    inputs = inputs or Inputs.latest()
    run = load_locust(inputs.locust) if inputs.locust else None
    bench = load_json(inputs.bench) if inputs.bench else None
    junit = load_junit(inputs.junit) if inputs.junit else None
    checks = load_check_auth(inputs.check_auth) if inputs.check_auth else None
    context = {
        "title": title, "generated": f"{datetime.now():%Y-%m-%d %H:%M:%S}",
        "load": locust_section(run) if run else None,
        "bench": bench_section(inputs.bench, bench) if bench is not None else None,
        "junit": junit_section(junit) if junit else None,
        "checks": checks_section(inputs.check_auth, checks) if checks else None,
        "sections": [("load", "Load test"), ("bench", "Benchmark"),
                     ("scenarios", "Scenarios"), ("check-auth", "Auth checks")],
        "sources": [(label, str(path)) for label, path in (
            ("locust", inputs.locust), ("bench", inputs.bench), ("junit", inputs.junit),
            ("check-auth", inputs.check_auth)) if path],
    }
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(PAGE).render(**context)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
