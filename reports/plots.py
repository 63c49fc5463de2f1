"""The report's figures, as inline SVG (text kept as text, so it stays searchable).

Each function takes loaded results and returns an ``<svg>`` string, or None when there is
nothing to draw.
"""

from __future__ import annotations

import io
import itertools
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, MaxNLocator
from postern.reports.sources import JunitRun, LocustRun

plt.rcParams.update({
    "svg.fonttype": "none", "font.size": 9, "axes.titlesize": 10, "axes.grid": True,
    "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "legend.fontsize": 8, "legend.frameon": False,
})
TARGET_COLOURS = {"postern": "#2b6cb0", "nginx": "#2f855a", "direct": "#975a16",
                  "external": "#6b46c1"}
OUTCOME_COLOURS = {"passed": "#38a169", "failed": "#e53e3e", "error": "#9b2c2c",
                   "xfailed": "#d69e2e", "skipped": "#a0aec0"}
_salt = itertools.count()


def svg(fig) -> str:
    """The figure as an inline <svg> element; ids salted so several can share a page."""
    buf = io.StringIO()
    with plt.rc_context({"svg.hashsalt": f"fig{next(_salt)}"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


class _Clock:
    """x values: seconds since the run's first history row (the page gives the date)."""

    start = 0.0


def _times(rows) -> list[float]:
    return [r.time - _Clock.start for r in rows]


def _time_axis(ax) -> None:
    ax.set_xlabel("seconds since start")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))


def set_start(run: LocustRun) -> None:
    times = [rows[0].time for rows in run.history.values() if rows]
    _Clock.start = min(times, default=0.0)


def _phases_of(run: LocustRun, protocol: str) -> list[tuple[str, str]]:
    order = [(s.type, s.name) for s in run.stats if s.protocol == protocol]
    return [k for k in order if k in run.history]


def throughput(run: LocustRun, protocol: str, keys: list[tuple[str, str]] | None = None
               ) -> str | None:
    """Requests/s of every phase of one protocol over time (``keys``: the phases in the
    order to list them), with the user count; phases whose curves coincide share a line."""
    keys = [k for k in keys if k in run.history] if keys is not None else \
        _phases_of(run, protocol)
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(11, 3.4))
    series = [(key[1], {str(i): r.rps for i, r in enumerate(run.history[key])})
              for key in keys]
    for label, values in merge_curves(series):
        rows = run.history[next(k for k in keys if k[1] == label.split(", ")[0])]
        ax.plot(_times(rows), [values[str(i)] for i in range(len(rows))], label=label,
                linewidth=1.2)
    ax.set_ylabel("requests/s")
    ax.set_title(f"{protocol.upper()}: throughput per phase")
    _time_axis(ax)
    agg = run.history.get(("", "Aggregated"))
    if agg:
        users = ax.twinx()
        users.plot(_times(agg), [r.users for r in agg], color="#718096", linestyle="--",
                   linewidth=1, label="users")
        users.set_ylabel("users", color="#718096")
        users.grid(False)
        users.spines["right"].set_visible(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.06, 1), ncol=1)
    return svg(fig)


def latency_grid(run: LocustRun, protocol: str) -> str | None:
    """p50/p95/p99 over time, one small panel per phase (locust's sliding window)."""
    keys = _phases_of(run, protocol)
    if not keys:
        return None
    cols = min(3, len(keys))
    rows_n = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(11, 2.3 * rows_n), squeeze=False,
                             sharex=True)
    for ax, key in zip(axes.flat, keys, strict=False):
        rows = run.history[key]
        times = _times(rows)
        for pct, style in (("50%", "-"), ("95%", "--"), ("99%", ":")):
            ax.plot(times, [r.percentiles.get(pct) for r in rows], style, linewidth=1.2,
                    label=f"p{pct[:-1]}")
        ax.set_title(key[1])
        ax.set_ylabel("ms")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        ax.tick_params(labelbottom=True)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    for ax in list(axes.flat)[len(keys) - cols:len(keys)]:
        ax.set_xlabel("seconds since start")
    axes.flat[0].legend(loc="upper right")
    fig.suptitle(f"{protocol.upper()}: response time percentiles per phase", y=1.0)
    fig.tight_layout()
    return svg(fig)


def aggregated_history(run: LocustRun) -> str | None:
    """Total throughput, failures and percentiles over time (all a run without
    --csv-full-history has)."""
    rows = run.history.get(("", "Aggregated"))
    if not rows:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3))
    t = _times(rows)
    a.plot(t, [r.rps for r in rows], label="requests/s")
    a.plot(t, [r.fps for r in rows], label="failures/s", color="#e53e3e")
    a.set_title("all phases: throughput")
    a.legend()
    for pct in ("50%", "95%", "99%"):
        b.plot(t, [r.percentiles.get(pct) for r in rows], label=f"p{pct[:-1]}")
    b.set_title("all phases: response time, ms")
    b.legend()
    for ax in (a, b):
        _time_axis(ax)
    fig.tight_layout()
    return svg(fig)


def failures_over_time(run: LocustRun) -> str | None:
    keys = [k for k, rows in run.history.items()
            if k[1] != "Aggregated" and any(r.fps for r in rows)]
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(11, 2.8))
    for key in keys:
        rows = run.history[key]
        ax.plot(_times(rows), [r.fps for r in rows], label=key[1])
    ax.set_title("failures/s per phase")
    _time_axis(ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return svg(fig)


def phase_percentiles(run: LocustRun) -> str | None:
    """Whole-run p50/p95/p99 per phase, horizontal bars (log scale: phases differ 1000x)."""
    stats = [s for s in run.stats if s.requests]
    if not stats:
        return None
    fig, ax = plt.subplots(figsize=(11, 0.32 * len(stats) + 1.2))
    names = [s.name for s in stats][::-1]
    height = 0.26
    for i, (pct, colour) in enumerate((("50%", "#90cdf4"), ("95%", "#3182ce"),
                                       ("99%", "#1a365d"))):
        values = [max(s.percentiles.get(pct) or 0, 0.5) for s in stats][::-1]
        ax.barh([y + (i - 1) * height for y in range(len(names))], values, height=height,
                color=colour, label=f"p{pct[:-1]}")
    ax.set_yticks(range(len(names)), names)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("ms (log scale)")
    ax.set_title("response time per phase, whole run")
    ax.legend(loc="lower right")
    return svg(fig)


def bench_bars(metrics: list[tuple[str, dict[str, float]]],
               spreads: dict[str, dict[str, tuple[float, float]]] | None = None,
               baseline: str = "direct") -> str | None:
    """One small bar panel per metric, a bar per proxy with its values written on it and the
    spread over rounds as an error bar. The ``baseline`` (the fake upstream reached without
    a proxy) is a dashed line, not a bar, and the scale is the proxies': a baseline far above
    them is written at the top instead of squashing their bars."""
    metrics = [(label, values) for label, values in metrics if values]
    if not metrics:
        return None
    spreads = spreads or {}
    cols = min(4, len(metrics))
    rows_n = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(11, 2.6 * rows_n), squeeze=False)
    for ax, (label, values) in zip(axes.flat, metrics, strict=False):
        names = [n for n in values if n != baseline] or list(values)
        heights = [values[n] for n in names]
        spread = spreads.get(label, {})
        err = None
        if any(n in spread for n in names):
            err = [[max(0.0, values[n] - spread.get(n, (values[n], values[n]))[0])
                    for n in names],
                   [max(0.0, spread.get(n, (values[n], values[n]))[1] - values[n])
                    for n in names]]
        bars = ax.bar(names, heights, color=[TARGET_COLOURS.get(n, "#718096") for n in names],
                      yerr=err, capsize=4 if err else 0, ecolor="#4a5568")
        ax.bar_label(bars, labels=[_short(values[n]) for n in names], fontsize=8,
                     label_type="center", color="white")
        ax.set_title(label)
        top = max([*heights, *(spread[n][1] for n in names if n in spread)], default=0)
        if baseline in values and baseline not in names:
            base = values[baseline]
            if top and base > 1.6 * top:  # off the proxies' scale: say it, do not draw it
                ax.text(0.99, 0.97, f"{baseline}: {_short(base)} (off scale)",
                        transform=ax.transAxes, ha="right", va="top", fontsize=8,
                        color=TARGET_COLOURS.get(baseline, "#718096"))
            else:
                ax.axhline(base, linestyle="--", linewidth=1,
                           color=TARGET_COLOURS.get(baseline, "#718096"))
                ax.text(0.99, base, f"{baseline} {_short(base)}", ha="right", va="bottom",
                        fontsize=8, transform=ax.get_yaxis_transform(),
                        color=TARGET_COLOURS.get(baseline, "#718096"))
                top = max(top, base)
        if min(heights, default=0) >= 0:
            ax.set_ylim(bottom=0, top=top * 1.25 if top > 0 else 1)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.tight_layout()
    return svg(fig)


def _short(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def junit_outcomes(run: JunitRun) -> str | None:
    """Stacked outcome counts per target and protocol."""
    groups: dict[tuple[str, str], dict[str, int]] = {}
    for c in run.scenarios:
        counts = groups.setdefault((c.target, c.protocol), {})
        counts[c.outcome] = counts.get(c.outcome, 0) + 1
    if not groups:
        return None
    keys = sorted(groups, key=lambda k: (run.targets.index(k[0]), k[1]))
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(keys) + 1.2))
    labels = [f"{t} / {p}" for t, p in keys][::-1]
    left = [0] * len(keys)
    for outcome, colour in OUTCOME_COLOURS.items():
        values = [groups[k].get(outcome, 0) for k in keys][::-1]
        if not any(values):
            continue
        bars = ax.barh(labels, values, left=left, color=colour, label=outcome)
        ax.bar_label(bars, labels=[str(v) if v else "" for v in values], label_type="center",
                     fontsize=8, color="white")
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel("scenarios")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("scenario outcomes per target and protocol")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return svg(fig)


def verdict_counts(rows: list[dict]) -> str | None:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    if not counts:
        return None
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(counts) + 1))
    names = sorted(counts)
    bars = ax.barh(names, [counts[n] for n in names],
                   color=[verdict_colour(n) for n in names])
    ax.bar_label(bars, fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("check-auth verdicts")
    return svg(fig)


def verdict_colour(verdict: str) -> str:
    v = verdict.lower()
    if v in ("pass", "passed", "ok", "good"):
        return "#38a169"
    if v in ("fail", "failed", "bad", "error"):
        return "#e53e3e"
    if v in ("warn", "warning", "risky"):
        return "#d69e2e"
    return "#a0aec0"


# -- the clients' own histograms ------------------------------------------------------------

NINES_TICKS = (0, 50, 90, 99, 99.9, 99.99)
COINCIDE = 0.10   # curves within 10 % of each other at every percentile are drawn as one


def _nines(pct: float) -> float:
    """Percentile on the "number of nines" axis: 90 -> 1, 99 -> 2, 99.9 -> 3."""
    return -math.log10(1 - pct / 100)


def _points(percentiles: dict[str, float]) -> list[tuple[float, float]]:
    return sorted((float(p), v) for p, v in percentiles.items()
                  if v is not None and float(p) < 100)


def coincide(a: dict[str, float], b: dict[str, float], tolerance: float = COINCIDE) -> bool:
    shared = set(a) & set(b)
    return bool(shared) and set(a) == set(b) and all(
        abs(a[p] - b[p]) <= tolerance * max(a[p], b[p], 1e-3) for p in shared)


def merge_curves(curves: list[tuple[str, dict[str, float]]],
                 tolerance: float = COINCIDE) -> list[tuple[str, dict[str, float]]]:
    """Curves that coincide with the first of a group join it; the group's label lists
    them all, its line is the first one's (the others are within ``tolerance`` of it)."""
    groups: list[tuple[list[str], dict[str, float]]] = []
    for label, values in curves:
        for names, first in groups:
            if coincide(first, values, tolerance):
                names.append(label)
                break
        else:
            groups.append(([label], values))
    return [(", ".join(names), first) for names, first in groups]


def hdr_percentiles(curves: list[tuple[str, dict[str, float]]], title: str,
                    width: float = 11) -> str | None:
    """Latency by percentile from HdrHistograms, log-scaled milliseconds; coinciding curves
    merged into one line."""
    curves = [(label, v) for label, v in curves if _points(v)]
    if not curves:
        return None
    merged = merge_curves(curves)
    fig, ax = plt.subplots(figsize=(width, 3.6))
    for label, values in merged:
        pts = _points(values)
        ax.plot([_nines(p) for p, _ in pts], [v for _, v in pts], marker=".", linewidth=1.3,
                 label=label)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xticks([_nines(p) for p in NINES_TICKS], [f"p{p:g}" for p in NINES_TICKS])
    ax.set_xlabel("percentile")
    ax.set_ylabel("ms (log scale)")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return svg(fig)
