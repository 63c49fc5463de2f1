"""Assemble the report: find the latest results, shape them for the page, write one file."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from postern.reports import plots
from postern.reports.sources import (
    CheckAuthRun,
    JunitRun,
    LocustRun,
    load_check_auth,
    load_json,
    load_junit,
    load_locust,
    load_scenarios,
)
from postern.reports.template import PAGE

RESULTS = Path("results")
# (id, title) of the page's sections, in page order (the browser test walks them)
SECTIONS = (("sessions", "Sessions"), ("load", "Phases"), ("bench", "Benchmark"),
            ("conformance", "Conformance"), ("scenarios", "Scenarios"),
            ("check-auth", "Auth checks"))
OUTCOMES = ("passed", "failed", "error", "xfailed", "skipped")
# (label, test, key, scale, better) - the benchmark's headline numbers, as loadtest/bench.py's
# ROWS table prints them; any other number in bench.json is listed under them. ``better``:
# which way is better for the proxy ("higher", "lower"), None where neither is.
BENCH_METRICS = (
    ("sessions/s", "sessions", "per_second", 1, "higher"),
    ("LOGIN p50, ms", "sessions", "login_p50_ms", 1, "lower"),
    ("LOGIN p99, ms", "sessions", "login_p99_ms", 1, "lower"),
    ("proxy CPU s per 1,000 sessions", "sessions", "proxy_cpu_s_per_1000", 1, "lower"),
    ("proxy user-space CPU s per 1,000 sessions", "sessions", "proxy_user_s_per_1000", 1,
     "lower"),
    ("proxy worker busy, % of a core", "sessions", "proxy_busy_pct", 1, None),
    ("session errors", "sessions", "errors", 1, "lower"),
    ("relay MiB/s (one FETCH)", "fetch", "mib_per_s", 1, "higher"),
    ("proxy CPU s for the FETCH", "fetch", "proxy_cpu_s", 1, "lower"),
    ("proxy CPU s per GiB relayed", "fetch", "proxy_cpu_s_per_gib", 1, "lower"),
    ("RSS per idle session, KiB", "idle", "bytes_per_session", 1 / 1024, "lower"),
    ("POP3 sessions/s", "pop3_sessions", "per_second", 1, "higher"),
    ("POP3 USER/PASS p50, ms", "pop3_sessions", "login_p50_ms", 1, "lower"),
    ("POP3 USER/PASS p99, ms", "pop3_sessions", "login_p99_ms", 1, "lower"),
    ("POP3 proxy CPU s per 1,000 sessions", "pop3_sessions", "proxy_cpu_s_per_1000", 1,
     "lower"),
    ("SMTP sessions/s", "smtp_sessions", "per_second", 1, "higher"),
    ("SMTP AUTH p50, ms", "smtp_sessions", "login_p50_ms", 1, "lower"),
    ("SMTP AUTH p99, ms", "smtp_sessions", "login_p99_ms", 1, "lower"),
    ("SMTP proxy CPU s per 1,000 sessions", "smtp_sessions", "proxy_cpu_s_per_1000", 1,
     "lower"),
    ("IMAP over TLS sessions/s (full handshake each)", "tls_sessions", "per_second", 1,
     "higher"),
    ("IMAP over TLS proxy CPU s per 1,000 sessions", "tls_sessions", "proxy_cpu_s_per_1000",
     1, "lower"),
    ("STARTTLS sessions/s", "starttls_sessions", "per_second", 1, "higher"),
    ("STARTTLS proxy CPU s per 1,000 sessions", "starttls_sessions", "proxy_cpu_s_per_1000",
     1, "lower"),
    ("TLS relay MiB/s (one FETCH)", "tls_fetch", "mib_per_s", 1, "higher"),
    ("RSS per idle TLS session, KiB", "tls_idle", "bytes_per_session", 1 / 1024, "lower"),
    ("IMAP sessions/s, worker_processes 2", "workers_2", "per_second", 1, "higher"),
    ("IMAP sessions/s, worker_processes 4", "workers_4", "per_second", 1, "higher"),
)
NO_RATIO = {"errors", "proxy_busy_pct"}  # a ratio of these says nothing


@dataclass
class Inputs:
    """Where each kind of result is read from; None: not included."""

    locust: Path | None = None      # a --csv prefix
    bench: Path | None = None
    junit: Path | None = None
    check_auth: Path | None = None
    scenarios: Path | None = None   # results/scenarios.json: the per-RFC matrix

    @classmethod
    def latest(cls, results: Path = RESULTS) -> Inputs:
        """The newest of each kind under ``results`` (missing kinds stay None)."""
        from postern.reports.sources import find_locust_prefix

        found = sorted(results.glob("check-auth*.json"), key=lambda p: p.stat().st_mtime) \
            if results.is_dir() else []
        return cls(find_locust_prefix(results) if results.is_dir() else None,
                   _existing(results / "bench.json"), _existing(results / "junit.xml"),
                   found[-1] if found else None, _existing(results / "scenarios.json"))


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

PROTOCOL_ORDER = ("imap", "pop3", "smtp")


def _hdr_ms(value: float | None) -> str:
    """A clients' histogram value: three significant digits (0.0421, 1.23, 45.6, 1,234)."""
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def session_order(run: LocustRun) -> list[str]:
    """Phase names in the order sessions run them (from the clients' record), protocol by
    protocol; phases the record does not know keep locust's order after them."""
    from postern.loadtest._clients import merge_order

    order: list[str] = []
    sessions = (run.clients or {}).get("sessions", {})
    for protocol in (*PROTOCOL_ORDER, None):
        for s in sessions.values():
            if (s.get("protocol") or None) == protocol or (
                    protocol is None and s.get("protocol") not in PROTOCOL_ORDER):
                merge_order(order, [str(n) for n in s.get("order") or []])
    return order


def _ordered_stats(run: LocustRun) -> list:
    order = session_order(run)
    rank = {name: i for i, name in enumerate(order)}
    protocols = {p: i for i, p in enumerate(PROTOCOL_ORDER)}
    return sorted(run.stats, key=lambda s: (protocols.get(s.protocol, len(protocols)),
                                            rank.get(s.name, len(rank))))


def sessions_section(run: LocustRun) -> dict[str, Any] | None:
    """The headline: whole sessions per profile, from the clients' record."""
    clients = run.clients or {}
    sessions = clients.get("sessions") or {}
    if not sessions:
        return None
    seconds = clients.get("seconds") or 0
    rows, errors, total_ok, total_failed = [], {}, 0, 0
    for profile, s in sorted(sessions.items(), key=lambda kv: (
            PROTOCOL_ORDER.index(kv[1].get("protocol")) if kv[1].get("protocol")
            in PROTOCOL_ORDER else 9, kv[0])):
        ok, failed = int(s.get("ok") or 0), int(s.get("failed") or 0)
        total_ok, total_failed = total_ok + ok, total_failed + failed
        pct = s.get("percentiles") or {}
        rows.append({"profile": profile, "protocol": s.get("protocol", ""),
                     "sessions": ok + failed, "failed": failed,
                     "rate": _fmt((ok + failed) / seconds, 2) if seconds else "–",
                     "success": _pct(ok, ok + failed),
                     "p50": _hdr_ms(pct.get("50")), "p95": _hdr_ms(pct.get("95")),
                     "p99": _hdr_ms(pct.get("99")), "max": _hdr_ms(pct.get("100"))})
        for kind, n in (s.get("errors") or {}).items():
            errors[kind] = errors.get(kind, 0) + int(n)
    total = total_ok + total_failed
    merged = _merged_percentiles(sessions)
    curves = [(f"{r['profile']}", sessions[r["profile"]]["percentiles"]) for r in rows]
    return {
        "seconds": _fmt(seconds, 0), "total": total,
        "rate": _fmt(total / seconds, 1) if seconds else "–",
        "success": _pct(total_ok, total), "failed": total_failed,
        "p50": _hdr_ms(merged.get("50")), "p95": _hdr_ms(merged.get("95")),
        "p99": _hdr_ms(merged.get("99")), "rows": rows,
        "errors": sorted(errors.items(), key=lambda kv: (-kv[1], kv[0])),
        "figure": plots.hdr_percentiles(curves, "session duration by percentile, per profile"),
        "delivery": delivery_headline(clients.get("delivery")),
    }


def delivery_headline(counts: Any) -> list[dict[str, Any]] | None:
    """DeliveryUser's verdicts as "messages lost: 0 of N" cards (loadtest/_delivery.py)."""
    if not isinstance(counts, dict) or not counts.get("submitted"):
        return None
    total = int(counts["submitted"])
    return [{"label": label, "value": f"{int(counts.get(kind) or 0)} of {total}",
             "bad": bool(counts.get(kind))}
            for kind, label in (("lost", "messages lost"), ("duplicated", "messages duplicated"),
                                ("mismatched", "bodies mismatched"),
                                ("flags mismatched", "flags mismatched"))]


def _pct(part: int, whole: int) -> str:
    if not whole:
        return "–"
    value = 100 * part / whole
    return "100 %" if part == whole else f"{min(value, 99.99):.2f} %"


def _merged_percentiles(sessions: dict) -> dict[str, float]:
    """All profiles' session durations together: merged from the encoded histograms."""
    try:
        from hdrh.histogram import HdrHistogram
    except ImportError:  # the report can be made without the load extras
        return {}
    total = None
    for s in sessions.values():
        encoded = s.get("histogram")
        if not isinstance(encoded, str):
            continue
        try:
            hist = HdrHistogram.decode(encoded.encode())
        except Exception:  # noqa: BLE001 - a damaged histogram: leave the headline out
            return {}
        if total is None:
            total = hist
        else:
            total.add(hist)
    if total is None or not total.get_total_count():
        return {}
    return {f"{p:g}": total.get_value_at_percentile(p) / 1000 for p in (50, 95, 99, 100)}


def locust_section(run: LocustRun) -> dict[str, Any]:
    stats = _ordered_stats(run)
    rows = []
    for s in stats:
        hdr = run.hdr(s.type, s.name)
        pct = hdr["percentiles"] if hdr else None
        rows.append({
            "type": s.type, "name": s.name, "requests": s.requests, "failures": s.failures,
            "rps": _fmt(s.rps, 2),
            "p50": _hdr_ms(pct.get("50")) if pct else _ms(s.percentiles["50%"]),
            "p95": _hdr_ms(pct.get("95")) if pct else _ms(s.percentiles["95%"]),
            "p99": _hdr_ms(pct.get("99")) if pct else _ms(s.percentiles["99%"]),
            "max": _hdr_ms(pct.get("100")) if pct else _fmt(s.max),
            "avg": _hdr_ms(hdr.get("mean")) if hdr else _fmt(s.average),
            "size": _fmt(s.avg_size, 0)})
    plots.set_start(run)
    protocols = list(dict.fromkeys(s.protocol for s in stats))
    hdr = bool(run.clients and run.clients.get("phases"))
    figures = []
    for p in protocols:
        if hdr:
            curves = [(s.name, run.hdr(s.type, s.name)["percentiles"]) for s in stats
                      if s.protocol == p and run.hdr(s.type, s.name)]
            figures.append(plots.hdr_percentiles(
                curves, f"{p.upper()}: response time percentiles per phase"))
        if run.full_history:
            figures.append(plots.throughput(run, p, [(s.type, s.name) for s in stats
                                                     if s.protocol == p]))
            if not hdr:
                figures.append(plots.latency_grid(run, p))
    if run.full_history:
        figures.append(plots.failures_over_time(run))
    else:
        figures.append(plots.aggregated_history(run))
    if not hdr:
        figures.insert(0, plots.phase_percentiles(run))
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
        "hdr": hdr, "sessions": sessions_section(run),
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
    metrics, rows, used, spreads = [], [], set(), {}
    has_ratio = {"postern", "nginx"} <= set(targets)
    for label, test, key, scale, better in BENCH_METRICS:
        values, spread = {}, {}
        for t in targets:
            section = (targets_data.get(t) or {}).get(test, {})
            v = section.get(key) if isinstance(section, dict) else None
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                values[t] = v * scale
                rounds = _rounds(section, key)
                if len(rounds) > 1:
                    spread[t] = (min(rounds) * scale, max(rounds) * scale)
        used.add(f"{test}.{key}")
        if not values:
            continue
        if any(values.values()):  # an all-zero panel says nothing the table does not
            metrics.append((label, values))
            spreads[label] = spread
        ratio, verdict = "", ""
        if has_ratio and values.get("nginx") and "postern" in values and key not in NO_RATIO:
            r = values["postern"] / values["nginx"]
            ratio = f"{r:.2f}×"
            if better and abs(r - 1) >= 0.05:
                verdict = "better" if (r > 1) == (better == "higher") else "worse"
            elif better:
                verdict = "same"
        cells = []
        for t in targets:
            cell = _sig(values.get(t))
            if t in spread:
                cell += f" ({_sig(spread[t][0])}–{_sig(spread[t][1])})"
            cells.append(cell)
        rows.append({"label": label, "cells": cells, "ratio": ratio, "verdict": verdict,
                     "better": {"higher": "↑ higher", "lower": "↓ lower"}.get(better or "", "")})
    rounds_n = max((len(_rounds(sec, k)) for t in targets
                    for sec in (targets_data.get(t) or {}).values() if isinstance(sec, dict)
                    for k in sec), default=0)
    flat = {t: _numbers(targets_data.get(t)) for t in targets}
    other_keys = sorted({k for f in flat.values() for k in f} - used)
    other = [{"label": k, "cells": [_sig(flat[t].get(k)) for t in targets]}
             for k in other_keys]
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    machine = data.get("machine")
    return {
        "path": str(path), "targets": targets, "rows": rows, "other": other,
        "has_ratio": has_ratio, "errors": errors, "notes": data.get("notes") or [],
        "figure": plots.bench_bars(metrics, spreads), "rounds": rounds_n,
        "settings": ", ".join(f"{k}: {v}" for k, v in settings.items()
                              if not isinstance(v, (dict, list))),
        "machine": ", ".join(f"{k}: {v}" for k, v in machine.items())
        if isinstance(machine, dict) else (machine or ""),
    }


def _rounds(section: dict, key: str) -> list[float]:
    """The per-round values of ``key`` (bench.py --rounds keeps them under "rounds")."""
    rounds = section.get("rounds")
    values = rounds.get(key) if isinstance(rounds, dict) else None
    return [v for v in values or [] if isinstance(v, (int, float)) and not isinstance(v, bool)]


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


def _section_key(ref: str) -> tuple:
    """RFC 3501 §6.1.10 sorts after §6.1.2: numbers compared as numbers."""
    return tuple(int(x) if x.isdigit() else x for x in re.split(r"(\d+)", ref))


def conformance_section(run: JunitRun) -> dict[str, Any]:
    """protocol x RFC section x target, from results/scenarios.json: what passed, what
    failed, and where Postern's outcome differs from nginx's on the same scenario."""
    targets = [t for t in run.targets if t != "differential"]
    cells: dict[tuple[str, str], dict[str, dict[str, int]]] = {}
    scenarios: dict[tuple[str, str], set[str]] = {}
    outcome: dict[tuple[str, str], str] = {}
    for c in run.scenarios:
        name = f"{c.module.rsplit('.', 1)[-1]}::{c.test}"
        outcome[name, c.target] = c.outcome
        rfcs = [r for r in c.references if r.upper().startswith("RFC")]
        refs = rfcs or (["nginx behaviour"] if any(
            not r.upper().startswith(("RFC", "CVE")) for r in c.references) else
            ["(no reference)"])
        for ref in refs:
            key = (c.protocol, ref)
            counts = cells.setdefault(key, {}).setdefault(c.target, {})
            counts[c.outcome] = counts.get(c.outcome, 0) + 1
            scenarios.setdefault(key, set()).add(name)
    rows = []
    for key in sorted(cells, key=lambda k: (k[0], k[1].startswith("("), _section_key(k[1]))):
        differs = sorted(n for n in scenarios[key]
                         if (n, "postern") in outcome and (n, "nginx") in outcome
                         and outcome[n, "postern"] != outcome[n, "nginx"])
        row_cells = []
        for t in targets:
            counts = cells[key].get(t, {})
            worst = next((o for o in ("failed", "error", "xfailed", "skipped", "passed")
                          if counts.get(o)), "missing")
            row_cells.append({"worst": worst, "text": ", ".join(
                f"{n} {o}" for o, n in sorted(counts.items(), key=lambda kv: OUTCOMES.index(
                    kv[0]) if kv[0] in OUTCOMES else 9)) or "not run"})
        rows.append({"protocol": key[0], "reference": key[1], "cells": row_cells,
                     "differs": differs,
                     "bad": any(c["worst"] in ("failed", "error") for c in row_cells)})
    summary = run.summary if isinstance(run.summary, dict) else {}
    return {"path": str(run.path), "targets": targets, "rows": rows,
            "compare": {"postern", "nginx"} <= set(targets),
            "totals": [(o, run.totals[o]) for o in OUTCOMES if o in run.totals],
            "grammar": ", ".join(f"{v} {k}" for k, v in (summary.get("grammar") or {}).items()),
            "differ_total": len({n for r in rows for n in r["differs"]})}


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
    conformance = load_scenarios(inputs.scenarios) if inputs.scenarios else None
    context = {
        "title": title, "generated": f"{datetime.now():%Y-%m-%d %H:%M:%S}",
        "load": locust_section(run) if run else None,
        "bench": bench_section(inputs.bench, bench) if bench is not None else None,
        "junit": junit_section(junit) if junit else None,
        "checks": checks_section(inputs.check_auth, checks) if checks else None,
        "conformance": conformance_section(conformance) if conformance else None,
        "sections": SECTIONS,
        "sources": [(label, str(path)) for label, path in (
            ("locust", inputs.locust), ("bench", inputs.bench), ("junit", inputs.junit),
            ("scenarios", inputs.scenarios), ("check-auth", inputs.check_auth)) if path],
    }
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(PAGE).render(**context)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
