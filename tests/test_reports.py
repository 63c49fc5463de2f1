"""The HTML report: rendered from the small fixture results in tests/fixtures/reports/."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import pytest

from reports import Inputs, render_report
from reports.__main__ import main as reports_main
from reports.sources import _split_id, load_check_auth, load_junit, load_locust

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


def test_load_table_carries_the_csv_numbers(page):
    #           type   phase          reqs   fails  req/s   p50  p95  p99   max   avg   bytes
    assert _cells(page, "imap connect") == ["IMAP", "imap connect", "120", "0", "12", "2",
                                            "6", "9", "14", "2.5", "16"]
    login = _cells(page, "imap login")
    assert login[2:4] == ["118", "2"] and login[5:8] == ["3", "11", "40"]
    assert _cells(page, "pop3 retr")[2] == "40"
    assert re.search(r"requests</span><b>396</b>", page)
    assert re.search(r"failures</span><b>2</b>", page)
    assert re.search(r"peak users</span><b>10</b>", page)


def test_load_failures_and_target(page):
    reason = "PhaseFailed('IMAP4.error: [AUTHENTICATIONFAILED] Authentication failed.')"
    assert _cells(page, reason, column=2) == ["IMAP", "imap login", reason, "2"]
    assert _cells(page, "127.0.0.1:41143") == ["IMAP", "127.0.0.1:41143", "postern", "starttls"]
    assert "POP3 goes straight to its fake backend" in page


def test_load_figures_per_protocol_and_phase(page):
    imap_latency = _svg_with(page, "IMAP: response time percentiles per phase")
    for phase in ("imap connect", "imap login", "imap fetch body"):
        assert f">{phase}<" in imap_latency
    assert ">pop3 retr<" in _svg_with(page, "POP3: throughput per phase")
    assert ">imap login<" in _svg_with(page, "failures/s per phase")  # the only failing phase
    assert ">imap connect<" not in _svg_with(page, "failures/s per phase")
    _svg_with(page, "response time per phase, whole run")


def test_bench_bars_and_table(page):
    assert _cells(page, "sessions/s") == ["sessions/s", "812", "1,534", "2,300", "0.53×"]
    assert _cells(page, "RSS per idle session, KiB") == ["RSS per idle session, KiB", "40", "2",
                                                        "–", "20.00×"]
    bars = _svg_with(page, "sessions/s")
    assert all(f">{v}<" in bars for v in ("812", "1,534", "2,300"))
    for name in ("postern", "nginx", "direct"):
        assert f">{name}<" in bars
    assert "direct fetch: TimeoutError: no answer" in page  # a failed test is said, not hidden
    assert "machine was busy" in page


def test_scenario_matrix(page):
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
    assert "No check-auth results" in page
    assert _cells(page, "sessions/s")[1] == "812"


def test_odd_bench_and_partial_locust_files(tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps(
        {"targets": {"postern": {"error": "ServerStartError: no"}, "nginx": {"sessions": {}}}}))
    for suffix in ("_stats.csv",):  # no history, failures or target file
        shutil.copy(FIXTURES / f"load{suffix}", tmp_path / f"run{suffix}")
    page = render_report(Inputs.latest(tmp_path), tmp_path / "r.html").read_text()
    assert "postern: ServerStartError: no" in page
    assert "--csv-full-history" in page
    assert _cells(page, "imap connect")[2] == "120"


def test_readers():
    run = load_locust(FIXTURES / "load")
    assert run is not None and run.full_history and run.aggregated.requests == 396
    assert [s.name for s in run.stats][:2] == ["imap connect", "imap login"]
    junit = load_junit(FIXTURES / "junit.xml")
    assert junit.targets == ["postern", "nginx"]
    assert junit.totals == {"passed": 4, "failed": 2, "skipped": 1, "xfailed": 1}
    assert _split_id("test_x[plain-postern]") == ("test_x[plain]", "postern")
    assert _split_id("test_x[nginx]") == ("test_x", "nginx")
    assert _split_id("test_y") == ("test_y", None)
    checks = load_check_auth(FIXTURES / "check-auth.json")
    assert [c["verdict"] for c in checks.rows] == ["pass", "fail", "warn"]


def test_check_auth_schema_1(tmp_path):
    """The document `postern check-auth --json` writes (proxy/check_auth/report.py)."""
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
