"""The report page: one self-contained HTML file (inline CSS, inline SVG figures, no JS)."""

PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
 body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1a202c;
        margin: 0 auto; max-width: 1180px; padding: 0 24px 48px; }
 header { border-bottom: 2px solid #2b6cb0; margin-bottom: 8px; }
 h1 { margin: 20px 0 4px; font-size: 24px; }
 h2 { margin: 32px 0 8px; font-size: 20px; border-bottom: 1px solid #e2e8f0; }
 h3 { margin: 20px 0 6px; font-size: 15px; }
 nav a { margin-right: 14px; }
 .muted { color: #718096; font-size: 12px; }
 .figure { margin: 8px 0 16px; overflow-x: auto; }
 .figure svg { max-width: 100%; height: auto; }
 table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13px; }
 th, td { border-bottom: 1px solid #e2e8f0; padding: 3px 9px; text-align: right;
          vertical-align: top; }
 th { background: #f7fafc; position: sticky; top: 0; }
 td.l, th.l { text-align: left; }
 tr.bad td { background: #fff5f5; }
 .cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 8px 0 12px; }
 .card { border: 1px solid #e2e8f0; border-radius: 6px; padding: 6px 14px; min-width: 110px; }
 .card b { display: block; font-size: 20px; }
 .card.bad b { color: #c53030; }
 .o { display: inline-block; min-width: 56px; padding: 0 6px; border-radius: 3px;
      color: #fff; font-size: 12px; text-align: center; }
 .o-passed { background: #38a169; } .o-failed { background: #e53e3e; }
 .o-error { background: #9b2c2c; } .o-xfailed { background: #d69e2e; }
 .o-skipped { background: #a0aec0; } .o-missing { background: #edf2f7; color: #718096; }
 details summary { cursor: pointer; }
 pre { background: #f7fafc; border: 1px solid #e2e8f0; padding: 6px; font-size: 12px;
       white-space: pre-wrap; max-height: 320px; overflow: auto; text-align: left; margin: 4px 0; }
 .note { background: #fffaf0; border-left: 3px solid #d69e2e; padding: 4px 10px; margin: 4px 0; }
 .empty { color: #718096; font-style: italic; }
 .v { font-size: 12px; padding: 0 4px; border-radius: 3px; }
 .v-better { background: #c6f6d5; } .v-worse { background: #fed7d7; } .v-same { background: #edf2f7; }
 .o { white-space: nowrap; }
</style>
</head>
<body>
<header>
<h1>{{ title }}</h1>
<p class="muted">Generated {{ generated }}.
{% for label, path in sources %}{{ label }}: <code>{{ path }}</code>{% if not loop.last %} · {% endif %}{% endfor %}</p>
<nav>{% for id, label in sections %}<a href="#{{ id }}">{{ label }}</a>{% endfor %}</nav>
</header>

<section id="sessions">
<h2>Load test: sessions</h2>
{% if not load or not load.sessions %}<p class="empty">No session results (locust with
<code>--csv results/load</code> writes <code>results/load_clients.json</code>, the clients' own
record of every session).</p>{% else %}{% set ss = load.sessions %}
<p class="muted">Whole client sessions, from connect to logout, over {{ ss.seconds }} s; durations
from the clients' own HdrHistograms (microsecond resolution), IDLE holds and think times included
where a profile has them.</p>
<div class="cards">
 <div class="card"><span class="muted">sessions/s</span><b>{{ ss.rate }}</b></div>
 <div class="card {{ 'bad' if ss.failed else '' }}"><span class="muted">success rate</span><b>{{ ss.success }}</b></div>
 <div class="card"><span class="muted">sessions</span><b>{{ ss.total }}</b></div>
 <div class="card"><span class="muted">duration p50, ms</span><b>{{ ss.p50 }}</b></div>
 <div class="card"><span class="muted">duration p95, ms</span><b>{{ ss.p95 }}</b></div>
 <div class="card"><span class="muted">duration p99, ms</span><b>{{ ss.p99 }}</b></div>
</div>
{% if ss.delivery %}<p class="muted">Mail that survives the trip: messages submitted over SMTP
and looked for in the recipient's INBOX over IMAP and POP3 (DeliveryUser).</p>
<div class="cards delivery">{% for c in ss.delivery %}
 <div class="card {{ 'bad' if c.bad else '' }}"><span class="muted">{{ c.label }}</span><b>{{ c.value }}</b></div>{% endfor %}
</div>{% endif %}
<h3>Errors by kind</h3>
{% if ss.errors %}<table class="errors"><tr><th class="l">first failed phase: reason</th><th>sessions</th></tr>
{% for kind, n in ss.errors %}<tr class="bad"><td class="l">{{ kind }}</td><td>{{ n }}</td></tr>{% endfor %}
</table>{% else %}<p>None: every session completed.</p>{% endif %}
<h3>Profiles</h3>
<table class="profiles"><tr><th class="l">profile</th><th class="l">protocol</th><th>sessions</th><th>sessions/s</th>
<th>failed</th><th>success</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>max ms</th></tr>
{% for r in ss.rows %}<tr class="{{ 'bad' if r.failed else '' }}"><td class="l">{{ r.profile }}</td><td class="l">{{ r.protocol }}</td>
<td>{{ r.sessions }}</td><td>{{ r.rate }}</td><td>{{ r.failed }}</td><td>{{ r.success }}</td><td>{{ r.p50 }}</td>
<td>{{ r.p95 }}</td><td>{{ r.p99 }}</td><td>{{ r.max }}</td></tr>{% endfor %}
</table>
{% if ss.figure %}<div class="figure">{{ ss.figure|safe }}</div>{% endif %}
{% endif %}
</section>

<section id="load">
<h2>Load test: phases (locust)</h2>
{% if not load %}<p class="empty">No locust results (run locust with <code>--csv results/load
--csv-full-history</code>).</p>{% else %}
<p class="muted">From <code>{{ load.prefix }}_stats.csv</code>{% if load.span %}, {{ load.span }}{% endif %}.
Each protocol phase is its own row, in the order sessions run them; <code>imap idle</code>
counts entering and leaving IDLE, not the time it was held.
{% if load.hdr %}Percentiles come from the clients' own HdrHistograms (three significant
digits); lines that coincide within 10 % are drawn as one.{% else %}Percentiles are locust's,
rounded to whole milliseconds (&lt;1: under half of one).{% endif %}</p>
{% if load.target %}
<table><tr><th class="l">protocol</th><th class="l">address</th><th class="l">via</th><th class="l">TLS</th></tr>
{% for p, e in load.target.endpoints.items() %}<tr><td class="l">{{ p|upper }}</td>
<td class="l">{{ e.host }}:{{ e.port }}</td><td class="l">{{ e.via }}</td><td class="l">{{ e.tls }}</td></tr>{% endfor %}
</table>
{% for n in load.target.notes %}<div class="note">{{ n }}</div>{% endfor %}
{% endif %}
<div class="cards">
 <div class="card"><span class="muted">requests</span><b>{{ load.total_requests }}</b></div>
 <div class="card {{ 'bad' if load.total_failures else '' }}"><span class="muted">failures</span><b>{{ load.total_failures }}</b></div>
 <div class="card"><span class="muted">requests/s</span><b>{{ load.total_rps }}</b></div>
 <div class="card"><span class="muted">peak users</span><b>{{ load.peak_users }}</b></div>
 <div class="card"><span class="muted">p95 (all), ms</span><b>{{ load.total_p95 }}</b></div>
</div>
<table class="phases">
<tr><th class="l">type</th><th class="l">phase</th><th>requests</th><th>failures</th><th>req/s</th>
<th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>max ms</th><th>avg ms</th><th>avg bytes</th></tr>
{% for s in load.rows %}<tr class="{{ 'bad' if s.failures else '' }}"><td class="l">{{ s.type }}</td>
<td class="l">{{ s.name }}</td><td>{{ s.requests }}</td><td>{{ s.failures }}</td><td>{{ s.rps }}</td>
<td>{{ s.p50 }}</td><td>{{ s.p95 }}</td><td>{{ s.p99 }}</td><td>{{ s.max }}</td><td>{{ s.avg }}</td>
<td>{{ s.size }}</td></tr>{% endfor %}
</table>
{% for fig in load.figures %}<div class="figure">{{ fig|safe }}</div>{% endfor %}
{% if not load.full_history %}<p class="muted">Per-phase curves need
<code>--csv-full-history</code>; only the totals over time were recorded.</p>{% endif %}
<h3>Failures</h3>
{% if load.failures %}
<table><tr><th class="l">type</th><th class="l">phase</th><th class="l">reason</th><th>occurrences</th></tr>
{% for f in load.failures %}<tr class="bad"><td class="l">{{ f.Method }}</td><td class="l">{{ f.Name }}</td>
<td class="l">{{ f.Error }}</td><td>{{ f.Occurrences }}</td></tr>{% endfor %}
</table>
{% else %}<p>None.</p>{% endif %}
{% endif %}
</section>

<section id="bench">
<h2>Benchmark: Postern, nginx, direct</h2>
{% if not bench %}<p class="empty">No benchmark results (<code>make bench</code> writes
<code>results/bench.json</code>).</p>{% else %}
<p class="muted">From <code>{{ bench.path }}</code>. {{ bench.settings }}</p>
{% if bench.machine %}<p class="muted">{{ bench.machine }}</p>{% endif %}
{% for n in bench.notes %}<div class="note">{{ n }}</div>{% endfor %}
{% for t, e in bench.errors %}<div class="note">{{ t }}: {{ e }}</div>{% endfor %}
{% if bench.figure %}<div class="figure">{{ bench.figure|safe }}</div>{% endif %}
<p class="muted">{% if bench.rounds > 1 %}Median of {{ bench.rounds }} rounds, the spread
(lowest–highest round) in brackets and as error bars. {% endif %}The direct target is the fake
upstream without a proxy: the floor any proxy adds to, drawn as a dashed line.</p>
<table class="bench"><tr><th class="l">measure</th><th class="l">better</th>{% for t in bench.targets %}<th>{{ t }}</th>{% endfor %}
{% if bench.has_ratio %}<th>postern / nginx</th>{% endif %}</tr>
{% for row in bench.rows %}<tr><td class="l">{{ row.label }}</td><td class="l">{{ row.better }}</td>{% for v in row.cells %}<td>{{ v }}</td>{% endfor %}
{% if bench.has_ratio %}<td>{{ row.ratio }}{% if row.verdict %} <span class="v v-{{ row.verdict }}">{{ row.verdict }}</span>{% endif %}</td>{% endif %}</tr>{% endfor %}
</table>
{% if bench.other %}<details><summary>every other number in bench.json</summary>
<table><tr><th class="l">key</th>{% for t in bench.targets %}<th>{{ t }}</th>{% endfor %}</tr>
{% for row in bench.other %}<tr><td class="l">{{ row.label }}</td>{% for v in row.cells %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}
</table></details>{% endif %}
{% endif %}
</section>

{% macro matrix(rows) %}
<table class="matrix"><tr><th class="l">protocol</th><th class="l">scenario</th>{% for t in junit.targets %}<th class="l">{{ t }}</th>{% endfor %}</tr>
{% for row in rows %}<tr class="{{ 'bad' if row.bad else '' }}"><td class="l">{{ row.protocol }}</td><td class="l">{{ row.name }}</td>
{% for c in row.cells %}<td class="l">{% if c %}<span class="o o-{{ c.outcome }}">{{ c.outcome }}</span>
{% if c.outcome != 'passed' and (c.text or c.message) %}<details><summary>{{ c.message|truncate(90) or 'details' }}</summary><pre>{{ c.text or c.message }}</pre></details>{% endif %}
{% else %}<span class="o o-missing">not run</span>{% endif %}</td>{% endfor %}</tr>{% endfor %}
</table>
{% endmacro %}
<section id="conformance">
<h2>Conformance by RFC section</h2>
{% if not conformance %}<p class="empty">No conformance results (the scenario runner writes
<code>results/scenarios.json</code>).</p>{% else %}{% set cf = conformance %}
<p class="muted">From <code>{{ cf.path }}</code>: each scenario counted under every RFC section it
names{% if cf.grammar %}; RFC grammar check: {{ cf.grammar }}{% endif %}.</p>
<div class="cards">{% for outcome, n in cf.totals %}
 <div class="card {{ 'bad' if outcome in ('failed', 'error') and n else '' }}"><span class="muted">{{ outcome }}</span><b>{{ n }}</b></div>{% endfor %}
{% if cf.compare %} <div class="card {{ 'bad' if cf.differ_total else '' }}"><span class="muted">differ from nginx</span><b>{{ cf.differ_total }}</b></div>{% endif %}
</div>
<table class="conformance"><tr><th class="l">protocol</th><th class="l">RFC section</th>{% for t in cf.targets %}<th class="l">{{ t }}</th>{% endfor %}
{% if cf.compare %}<th class="l">differs from nginx</th>{% endif %}</tr>
{% for r in cf.rows %}<tr class="{{ 'bad' if r.bad or r.differs else '' }}"><td class="l">{{ r.protocol }}</td><td class="l">{{ r.reference }}</td>
{% for c in r.cells %}<td class="l"><span class="o o-{{ c.worst }}">{{ c.text }}</span></td>{% endfor %}
{% if cf.compare %}<td class="l">{% if r.differs %}<details><summary>{{ r.differs|length }} scenario{{ 's' if r.differs|length != 1 }}</summary>{% for n in r.differs %}<div>{{ n }}</div>{% endfor %}</details>{% else %}–{% endif %}</td>{% endif %}</tr>{% endfor %}
</table>
{% endif %}
</section>

<section id="scenarios">
<h2>Scenarios (pytest JUnit)</h2>
{% if not junit %}<p class="empty">No scenario results (<code>make test</code> writes
<code>results/junit.xml</code>).</p>{% else %}
<p class="muted">From <code>{{ junit.path }}</code>.</p>
<div class="cards">{% for outcome, n in junit.totals %}
 <div class="card {{ 'bad' if outcome in ('failed', 'error') and n else '' }}"><span class="muted">{{ outcome }}</span><b>{{ n }}</b></div>{% endfor %}
</div>
{% if junit.figure %}<div class="figure">{{ junit.figure|safe }}</div>{% endif %}
{% if junit.summary %}
<table><tr><th class="l">protocol</th>{% for t in junit.targets %}<th>{{ t }}</th>{% endfor %}</tr>
{% for row in junit.summary %}<tr><td class="l">{{ row.protocol }}</td>{% for cell in row.cells %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}
</table>
<h3>Scenarios not passed on every target</h3>
{% if junit.matrix %}{{ matrix(junit.matrix) }}{% else %}<p>None: every scenario passed on every target.</p>{% endif %}
{% if junit.clean %}<details><summary>{{ junit.clean|length }} scenario{{ 's' if junit.clean|length != 1 }} passed on every target</summary>
{{ matrix(junit.clean) }}</details>{% endif %}
{% endif %}
{% if junit.others %}<h3>Other tests (no target)</h3>
<p>{% for outcome, n in junit.others_totals %}{{ n }} {{ outcome }}{% if not loop.last %}, {% endif %}{% endfor %}.</p>
{% for c in junit.others %}<details><summary><span class="o o-{{ c.outcome }}">{{ c.outcome }}</span>
{{ c.module }}::{{ c.test }}</summary><pre>{{ c.text or c.message }}</pre></details>{% endfor %}
{% endif %}
{% endif %}
</section>

<section id="check-auth">
<h2>Auth server checks (check-auth)</h2>
{% if not checks %}<p class="empty">No check-auth results (<code>check-auth --json &gt;
results/check-auth.json</code>).</p>{% else %}
<p class="muted">From <code>{{ checks.path }}</code>{% if checks.about %}: {{ checks.about }}{% endif %}.</p>
{% if checks.error %}<div class="note">{{ checks.error }}</div>{% endif %}
{% if checks.causes %}<div class="note">Failures by cause:<ul>{% for c in checks.causes %}<li>{{ c.count }} &times; {{ c.reason }}</li>{% endfor %}</ul></div>{% endif %}
{% if checks.figure %}<div class="figure">{{ checks.figure|safe }}</div>{% endif %}
<table><tr><th class="l">check</th><th class="l">verdict</th><th class="l">reason</th><th class="l">what the client sees</th></tr>
{% for r in checks.rows %}<tr class="{{ 'bad' if r.verdict in ('fail', 'failed') else '' }}"><td class="l">{{ r.check }}{% if r.id %}<br><span class="muted">{{ r.id }}</span>{% endif %}</td>
<td class="l"><span class="o" style="background: {{ r.colour }}">{{ r.verdict }}</span></td>
<td class="l">{{ r.reason }}{% if r.exchanges %}<details><summary>auth_http exchange{{ 's' if r.exchanges|length > 1 }}</summary>{% for ex in r.exchanges %}<pre>{{ ex }}</pre>{% endfor %}</details>{% endif %}</td>
<td class="l">{% if r.client_sees %}<pre>{{ r.client_sees }}</pre>{% endif %}</td></tr>{% endfor %}
</table>
{% endif %}
</section>
</body>
</html>
"""
