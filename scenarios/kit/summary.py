"""The end-of-run sections of the scenario runner: RFC grammar, differential, external."""

from __future__ import annotations

from collections import Counter, defaultdict

from postern.scenarios.kit import external


def summary_sections(plugin, config) -> list[tuple[str, list[str]]]:
    records = [r for r in plugin.records.values() if r.outcome != "not run"]
    out = []
    if plugin.plan_lines:
        out.append(("external plan: configure your proxy with this", plugin.plan_lines))
    grammar = _grammar(records)
    if grammar:
        out.append(("RFC reply grammar", grammar))
    if plugin.pair:
        out.append((f"differential: {plugin.pair[0]} vs {plugin.pair[1]}",
                    _differential(records)))
    state = external.STATE
    if state is not None and not state.plan:
        out.append(("external target", _external(records, state, plugin.external_verdict)))
    path = config.getoption("scenario_json")
    if path and records and not (state is not None and state.plan):
        out.append(("scenario results", [f"{len(records)} results written to {path}"]))
    return out


def _grammar(records) -> list[str]:
    checked = [r for r in records if r.checks.get("grammar") != "not checked"]
    if not checked:
        return []
    per_target: dict[str, Counter] = defaultdict(Counter)
    known: Counter = Counter()
    failing = []
    for r in checked:
        per_target[r.target or "-"][r.checks["grammar"]] += 1
        for v in r.grammar:
            if v["known"]:
                known[(r.target, v["known"])] += 1
            else:
                failing.append(f"  {r.id}: connection {v['connection']} line {v['number']} "
                               f"{v['line'][:80]!r}: {v['problem']} [{v['rule']}]")
    lines = [f"{target}: " + ", ".join(f"{n} {k}" for k, n in sorted(c.items()))
             for target, c in sorted(per_target.items())]
    if failing:
        lines += ["violations:", *failing[:30]]
        if len(failing) > 30:
            lines.append(f"  ... and {len(failing) - 30} more (results JSON)")
    if known:
        lines.append("known nginx deviations seen (reported, not failed):")
        lines += [f"  {target}: {n}x {why}" for (target, why), n in sorted(known.items())]
    return lines


def _differential(records) -> list[str]:
    diffs = [r for r in records if r.target == "differential"]
    counts = Counter(r.outcome for r in diffs)
    names = {"passed": "same transcripts", "failed": "differ", "xfailed": "differ as expected",
             "xpassed": "same although a difference was expected", "skipped": "not compared"}
    lines = [", ".join(f"{n} {names.get(k, k)}" for k, n in sorted(counts.items())) or
             "nothing compared"]
    for r in diffs:
        if r.outcome == "failed":
            lines.append(f"  differ: {r.scenario}  [{'; '.join(r.references['groups'])}]")
    for r in diffs:
        if r.outcome == "xfailed":
            lines.append(f"  expected: {r.scenario}")
    return lines


def _external(records, state, verdict: list[str]) -> list[str]:
    runs = [r for r in records if r.target == "external"]
    counts = Counter(r.outcome for r in runs)
    skipped = Counter(_skip_kind(r.skip_reason) for r in runs if r.outcome == "skipped")
    lines = [", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no scenario ran",
             *(f"  {n} skipped: {kind}" for kind, n in skipped.most_common()), *verdict]
    failed = [r for r in runs if r.outcome in ("failed", "error")]
    if failed:
        lines.append("behaviours that differ from nginx's (the scenarios' expected bytes):")
        for r in failed:
            named = "; ".join(r.references["rfc"] + r.references["cve"] + r.references["nginx"])
            lines.append(f"  {r.id.split('::')[-1]} [{named}]: {r.title[:100]}")
    grammar = [r for r in runs if r.checks.get("grammar") == "failed"]
    if grammar:
        lines.append(f"{len(grammar)} scenarios with RFC grammar violations (see above)")
    if state.unmatched:  # only blocks a user can declare get here (external.server_for)
        lines.append("most wanted server blocks (declare them to run more scenarios):")
        for key, ids in sorted(state.unmatched.items(), key=lambda kv: -len(kv[1]))[:8]:
            lines.append(f"  {len(ids)}x {external.describe(key)}")
    return lines


def _skip_kind(reason: str) -> str:
    for prefix, kind in (("external target: no declared", "no matching server block declared"),
                         ("external target: the server block this scenario needs cannot",
                          "their server block cannot be declared (per-run ports or files)"),
                         ("external target: needs nginx", "they need a newer nginx")):
        if reason.startswith(prefix):
            return kind
    return reason[:100]
