"""The HTML report: rendered from the small fixture results in tests/fixtures/reports/."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from postern.reports import Inputs, render_report
from postern.reports.__main__ import main as reports_main
from postern.reports.sources import _split_id, load_check_auth, load_junit, load_locust

FIXTURES = Path(__file__).parent / "fixtures" / "reports"


def _cells(page: str, key: str, column: int | None = None) -> list[str]:
    """The text of each cell of the first table row with ``key`` in cell ``column``
    (default: in one of its first two cells)."""
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", page, re.DOTALL):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]
        if (key in cells[:2]) if column is None else (cells[column:column + 1] == [key]):
            return cells
    raise AssertionError(f"no table row for {key!r}")


def _svgs(page: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", page, re.DOTALL)


def _svg_with(page: str, title: str) -> str:
    found = [s for s in _svgs(page) if f">{title}<" in s]
    assert found, f"no figure titled {title!r}"
    return found[0]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("report") / "report.html"
    path = render_report(Inputs.latest(FIXTURES), out)
    assert path == out
    return out.read_text(encoding="utf-8")


def test_one_self_contained_file(page):
    assert page.startswith("<!doctype html>")
    # nothing fetched from anywhere: no scripts, stylesheets or remote images
    assert not re.search(r"<script|<link|<img|<iframe|(src|href)=\"(https?:|//)", page)
    assert len(_svgs(page)) >= 8


def test_load_table_carries_the_csv_numbers_and_the_clients_percentiles(page):
    # type   phase   reqs  fails req/s | p50 p95 p99 max avg: the clients' HdrHistograms, ms | bytes
    assert _cells(page, "imap connect") == ["IMAP", "imap connect", "120", "0", "12", "0.44",
                                            "0.49", "0.49", "0.49", "0.445", "16"]
    login = _cells(page, "imap login")
    assert login[2:4] == ["118", "2"] and login[5:8] == ["3.4", "3.9", "3.9"]
    assert _cells(page, "pop3 retr")[2] == "40"
    assert re.search(r"requests</span><b>396</b>", page)
    assert re.search(r"failures</span><b>2</b>", page)
    assert re.search(r"peak users</span><b>10</b>", page)


def test_phases_in_session_order(page):
    """locust's CSV is alphabetical; the table follows the sessions' own order."""
    table = page[page.index('<table class="phases">'):]
    table = table[:table.index("</table>")]
    order = [table.index(f">{n}<") for n in ("imap connect", "imap login", "imap fetch body",
                                             "pop3 retr")]
    assert order == sorted(order)


def test_sessions_headline_comes_first(page):
    sessions = page[page.index('<section id="sessions">'):page.index('<section id="load">')]
    assert re.search(r"sessions/s</span><b>15.8</b>", sessions)   # 158 sessions in 10 s
    assert re.search(r"success rate</span><b>98.73 %</b>", sessions)
    assert re.search(r"duration p50, ms</span><b>[0-9.]+</b>", sessions)
    reason = "imap login: IMAP4.error: [AUTHENTICATIONFAILED] Authentication failed."
    assert _cells(sessions, reason) == [reason, "2"]
    assert _cells(sessions, "imap thunderbird")[1:6] == ["imap", "118", "11.8", "2", "98.31 %"]
    assert _cells(sessions, "pop3 leave on server")[5] == "100 %"
    _svg_with(sessions, "session duration by percentile, per profile")
    # DeliveryUser's verdicts (loadtest/_delivery.py): lost is red, the others are not
    assert 'class="card bad"><span class="muted">messages lost</span><b>1 of 40</b>' in sessions
    assert 'class="card "><span class="muted">bodies mismatched</span><b>0 of 40</b>' in sessions


def test_conformance_matrix(page):
    section = page[page.index('<section id="conformance">'):page.index('<section id="scenarios">')]
    #        protocol  RFC section         postern      nginx       differs from nginx
    assert _cells(section, "RFC 3501 §6.2.3") == ["imap", "RFC 3501 §6.2.3", "1 failed",
                                                  "1 passed",
                                                  "1 scenariotest_imap_login::test_login_literals"]
    assert _cells(section, "RFC 3501 §6.1.1")[2:] == ["1 passed", "1 passed", "–"]
    assert _cells(section, "RFC 1939 §7")[2:4] == ["1 passed", "1 xfailed"]
    assert _cells(section, "nginx behaviour")[0] == "smtp"
    # sections in number order (§6.1.10 after §6.1.1), protocols grouped
    refs = re.findall(r"RFC \d+ §[\d.]+", section)
    assert refs.index("RFC 3501 §6.1.1") < refs.index("RFC 3501 §6.1.10") \
        < refs.index("RFC 3501 §6.2.3") < refs.index("RFC 1939 §7")
    assert re.search(r"differ from nginx</span><b>2</b>", section)


def test_load_failures_and_target(page):
    reason = "PhaseFailed('IMAP4.error: [AUTHENTICATIONFAILED] Authentication failed.')"
    assert _cells(page, reason, column=2) == ["IMAP", "imap login", reason, "2"]
    assert _cells(page, "127.0.0.1:41143") == ["IMAP", "127.0.0.1:41143", "postern", "starttls"]
    assert "POP3 goes straight to its fake backend" in page


def test_load_figures_per_protocol_and_phase(page):
    imap_latency = _svg_with(page, "IMAP: response time percentiles per phase")
    # connect and fetch body coincide within 10 %: one line, both named
    assert ">imap connect, imap fetch body<" in imap_latency and ">imap login<" in imap_latency
    assert ">pop3 retr<" in _svg_with(page, "POP3: throughput per phase")
    assert ">imap login<" in _svg_with(page, "failures/s per phase")  # the only failing phase
    assert ">imap connect<" not in _svg_with(page, "failures/s per phase")


def test_bench_bars_and_table(page):
    # median (lowest–highest of the rounds), which way is better, and what the ratio means
    assert _cells(page, "sessions/s") == ["sessions/s", "↑ higher", "812 (790–830)",
                                          "1,534 (1,500–1,560)", "2,300", "0.53× worse"]
    assert _cells(page, "RSS per idle session, KiB") == ["RSS per idle session, KiB", "↓ lower",
                                                        "40", "2", "–", "20.00× worse"]
    assert _cells(page, "session errors")[-1] == ""   # no ratio of error counts
    bars = _svg_with(page, "sessions/s")
    assert all(f">{v}<" in bars for v in ("812", "1,534", "postern", "nginx"))
    # the direct baseline is a reference line, not a bar that sets the scale
    assert ">direct 2,300<" in bars and ">direct<" not in bars
    assert "direct fetch: TimeoutError: no answer" in page  # a failed test is said, not hidden
    assert "machine was busy" in page


def test_scenario_matrix(page):
    page = page[page.index('<section id="scenarios">'):]
    row = _cells(page, "test_imap_login::test_login_literals[plain]")
    assert row[0] == "imap" and row[2].startswith("failed") and row[3] == "passed"
    assert "S: a1 BAD invalid command &lt;transcript&gt;" in page  # the transcript, escaped
    assert _cells(page, "test_imap_smoke::test_greeting")[2:] == ["passed", "passed"]
    # scenarios that need a look come first; the ones every target passed are folded
    assert page.index("test_login_literals") < page.index("1 scenario passed on every target")
    assert page.index("1 scenario passed on every target") < page.index("test_greeting")
    apop = _cells(page, "test_pop3_basic::test_apop")
    assert apop[2].startswith("skipped") and apop[3].startswith("xfailed")
    assert _cells(page, "imap")[1:3] == ["1 passed, 1 failed", "2 passed"]
    outcomes = _svg_with(page, "scenario outcomes per target and protocol")
    assert ">postern / imap<" in outcomes and ">nginx / pop3<" in outcomes
    assert "tests.test_conf::test_unknown_directive" in page  # a failing unit test is listed
    assert "tests.test_conf::test_parse_listen" not in page   # passing ones are only counted


def test_check_auth_table(page):
    row = _cells(page, "missing-auth-wait")
    assert row[1:3] == ["fail", "Auth-Wait missing on a temporary failure"]
    assert "a1 NO [UNAVAILABLE] Temporary &lt;failure&gt;" in page
    assert '"delay_s": 4.2' in html.unescape(page)
    _svg_with(page, "check-auth verdicts")


def test_missing_results_are_said_not_fatal(tmp_path):
    shutil.copy(FIXTURES / "bench.json", tmp_path / "bench.json")
    page = render_report(Inputs.latest(tmp_path), tmp_path / "r.html").read_text()
    assert "No locust results" in page and "No scenario results" in page
    assert "No check-auth results" in page and "No conformance results" in page
    assert "No session results" in page
    assert _cells(page, "sessions/s")[2] == "812 (790–830)"


def test_odd_bench_and_partial_locust_files(tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps(
        {"targets": {"postern": {"error": "ServerStartError: no"}, "nginx": {"sessions": {}}}}))
    for suffix in ("_stats.csv",):  # no history, failures or target file
        shutil.copy(FIXTURES / f"load{suffix}", tmp_path / f"run{suffix}")
    page = render_report(Inputs.latest(tmp_path), tmp_path / "r.html").read_text()
    assert "postern: ServerStartError: no" in page
    assert "--csv-full-history" in page
    # without the clients' record: locust's whole-millisecond percentiles, and no headline
    assert _cells(page, "imap connect")[2:8] == ["120", "0", "12", "2", "6", "9"]
    assert "No session results" in page
    _svg_with(page, "response time per phase, whole run")


def test_readers():
    run = load_locust(FIXTURES / "load")
    assert run is not None and run.full_history and run.aggregated.requests == 396
    assert [s.name for s in run.stats][:2] == ["imap connect", "imap fetch body"]  # as in the CSV
    assert run.hdr("IMAP", "imap login")["percentiles"]["50"] == 3.401
    assert run.clients["sessions"]["imap thunderbird"]["failed"] == 2
    junit = load_junit(FIXTURES / "junit.xml")
    assert junit.targets == ["postern", "nginx"]
    assert junit.totals == {"passed": 4, "failed": 2, "skipped": 1, "xfailed": 1}
    assert _split_id("test_x[plain-postern]") == ("test_x[plain]", "postern")
    assert _split_id("test_x[nginx]") == ("test_x", "nginx")
    assert _split_id("test_y") == ("test_y", None)
    checks = load_check_auth(FIXTURES / "check-auth.json")
    assert [c["verdict"] for c in checks.rows] == ["pass", "fail", "warn"]


def test_check_auth_schema_1(tmp_path):
    """The document `postern check-auth --json` writes (checkauth/report.py)."""
    path = tmp_path / "check-auth.json"
    path.write_text(json.dumps({
        "schema": 1, "url": "http://127.0.0.1:9000/auth",
        "summary": {"pass": 1, "warn": 0, "fail": 1, "exit_status": 1},
        "checks": [
            {"id": "imap.plain.right", "title": "imap plain, right password",
             "check": "imap plain, right password", "verdict": "pass", "reason": "ok",
             "client_sees": None, "exchanges": []},
            {"id": "imap.auth-wait", "title": "imap Auth-Wait", "check": "imap Auth-Wait",
             "verdict": "fail", "reason": "no Auth-Wait", "client_sees": "a1 NO x\\r\\n",
             "exchanges": [{"request": "GET /auth HTTP/1.0\r\nAuth-Pass: ***\r\n",
                            "reply": "HTTP/1.0 200 OK\r\nAuth-Status: x\r\n",
                            "elapsed_ms": 1.2, "error": None}]}]}))
    run = load_check_auth(path)
    assert [r["id"] for r in run.rows] == ["imap.plain.right", "imap.auth-wait"]
    assert run.rows[0]["client_sees"] == "" and run.meta["summary"]["fail"] == 1
    page = render_report(Inputs(check_auth=path), tmp_path / "r.html").read_text()
    assert _cells(page, "fail", column=1)[2].startswith("no Auth-Wait")
    assert "Auth-Status: x" in page
    assert "http://127.0.0.1:9000/auth · 1 pass, 0 warn, 1 fail" in page
    assert ">null<" not in page


def test_check_auth_bare_list(tmp_path):
    path = tmp_path / "check-auth.json"
    path.write_text(json.dumps([{"check": "c", "verdict": "pass"}]))
    assert load_check_auth(path).rows == [{"id": "", "check": "c", "verdict": "pass",
                                           "reason": "", "client_sees": "", "exchanges": []}]


def test_command_prints_the_path(tmp_path, capsys):
    for name in ("bench.json", "junit.xml"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    out = tmp_path / "out" / "report.html"
    assert reports_main(["--results", str(tmp_path), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.exists() and ">812<" in out.read_text()


def _need_chromium() -> None:
    from postern.reports.browser import chromium_path

    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing (scripts/ensure-system-deps installs it)")
        pytest.skip("chromium is not installed (scripts/ensure-system-deps installs it)")


@pytest.mark.timeout(120)
def test_report_in_a_real_browser(page, tmp_path):
    """Chromium renders every section, with figures and tables, and says nothing on its
    console; a screenshot of each section is taken (docs/ keeps a set)."""
    from postern.reports.browser import check_page
    from postern.reports.render import SECTIONS

    _need_chromium()
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    check = check_page(path, [i for i, _ in SECTIONS])
    assert check.console == []
    for section in check.sections:
        assert section.found and not section.empty, section
        assert section.tables and section.rows > 1, section
        assert section.box[3] > 100, section   # it takes room on the page
        assert section.screenshot.startswith(b"\x89PNG"), section.id
    drawn = {s.id: (s.figures, s.drawn) for s in check.sections}
    assert all(n == d for n, d in drawn.values()), drawn   # every figure has a size on screen
    assert drawn["load"][0] >= 3 and drawn["sessions"][0] == 1


@pytest.mark.timeout(120)
def test_browser_check_sees_console_errors_and_missing_sections(tmp_path):
    from postern.reports.browser import check_page

    _need_chromium()
    path = tmp_path / "broken.html"
    path.write_text('<!doctype html><html><body><section id="a"><h2>A</h2></section>'
                    '<script>console.error("bad thing"); undefinedFunction();</script>'
                    '</body></html>')
    check = check_page(path, ["a", "b"], screenshots=False)
    assert [s.found for s in check.sections] == [True, False]
    assert any("bad thing" in line for line in check.console), check.console
    assert any("undefinedFunction" in line for line in check.console), check.console
