"""The side-by-side benchmark runs end to end in a tiny mode and writes its results file.

Only the shape of the results is checked: the figures themselves depend on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from postern.loadtest import bench
from postern.scenarios.kit.real.nginx import NginxInstance

ROOT = Path(__file__).resolve().parent.parent
FETCH_MIB = 2


def test_tiny_run_writes_results(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "postern.loadtest.bench", "--quick", "--duration", "0.5", "--warmup",
         "0.1", "--clients", "4", "--fetch-mib", str(FETCH_MIB), "--idle-sessions", "20",
         "--tls-idle-sessions", "5",
         "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for row in ("sessions/s", "POP3 sessions/s", "SMTP sessions/s"):
        assert row in done.stdout  # the table was printed
    report = json.loads(out.read_text())

    assert {"date", "cpu_count", "python", "nginx"} <= report["machine"].keys()
    assert report["settings"]["idle_sessions"] == 20
    expected = ["postern", "nginx", "direct", "postern-keepalive", "postern-all"]
    if not NginxInstance.available():
        expected.remove("nginx")
        assert any("nginx" in note for note in report["notes"])
    assert list(report["targets"]) == expected
    # what the beyond-nginx production features cost, as a ratio to plain Postern
    assert report["all_on_cost"]["sessions.proxy_cpu_s_per_1000"] > 0
    assert "all-on/postern" in done.stdout

    assert report["settings"]["protocols"] == ["imap", "pop3", "smtp"]
    for name, results in report["targets"].items():
        for section in ("sessions", "pop3_sessions", "smtp_sessions"):
            sessions = results[section]
            assert sessions["errors"] == 0, (name, section, sessions["error_kinds"])
            assert sessions["sessions"] > 0
            assert {"per_second", "login_p50_ms", "login_p99_ms", "proxy_cpu_s_per_1000"} \
                <= sessions.keys()
            assert sessions["login_p50_ms"] is not None
            proxied = sessions["proxy_cpu_s_per_1000"] is not None
            assert proxied == (name != "direct"), (name, section)
        if name in ("postern-keepalive", "postern-all"):  # the session rows only
            assert not {"fetch", "idle", "tls_sessions"} & results.keys()
            continue
        fetch = results["fetch"]
        assert fetch["bytes"] == FETCH_MIB << 20
        assert fetch["mib_per_s"] > 0
        if name == "direct":
            assert "idle" not in results
            continue
        assert "proxy_cpu_s" in fetch
        idle = results["idle"]
        assert idle["sessions"] == 20 and idle["errors"] == 0
        assert isinstance(idle["bytes_per_session"], int)
        assert results["worker_restarts"] == 0
        # the TLS rows, with the same certificate on both proxies
        for section in ("tls_sessions", "starttls_sessions"):
            assert results[section]["errors"] == 0, (name, section,
                                                     results[section]["error_kinds"])
            assert results[section]["sessions"] > 0
        assert results["tls_fetch"]["bytes"] == FETCH_MIB << 20
        assert results["tls_idle"]["sessions"] == 5 and results["tls_idle"]["errors"] == 0
    if "nginx" in expected:
        assert {"sessions.per_second", "pop3_sessions.per_second",
                "smtp_sessions.login_p99_ms", "smtp_sessions.proxy_cpu_s_per_1000",
                "tls_sessions.per_second", "tls_fetch.mib_per_s"} \
            <= report["ratios"].keys()
        assert "sessions.per_second" in report["keepalive_ratios"]
    assert any("resumed handshakes" in note for note in report["notes"])


def test_protocols_option_runs_only_those(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--duration", "0.3", "--warmup", "0", "--clients", "2",
                       "--targets", "postern,direct", "--protocols", "smtp,pop3",
                       "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["protocols"] == ["pop3", "smtp"]
    for name, results in report["targets"].items():
        assert {"pop3_sessions", "smtp_sessions"} <= results.keys(), name
        assert not {"sessions", "fetch", "idle"} & results.keys(), name
        assert results["smtp_sessions"]["errors"] == 0, results["smtp_sessions"]["error_kinds"]
    table = capsys.readouterr().out
    assert "SMTP AUTH p50, ms" in table and "LOGIN p50" not in table


def test_protocols_option_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--protocols", "imap,nntp"])
    assert "--protocols takes names from imap,pop3,smtp" in capsys.readouterr().err


def test_without_nginx_runs_the_rest_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench.procs, "nginx_unavailable", lambda: "nginx is not installed")
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--duration", "0.3", "--warmup", "0", "--clients", "2",
                       "--fetch-mib", "1", "--idle-sessions", "5", "--targets", "postern,nginx",
                       "--no-tls", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["targets"]) == ["postern"]
    assert report["notes"] == ["nginx skipped: nginx is not installed"]
    assert report["ratios"] == {}
    assert "nginx is unavailable" in capsys.readouterr().err


def test_table_shows_each_target_and_the_ratio():
    targets = {
        "postern": {"sessions": {"per_second": 100.0, "errors": 0},
                    "idle": {"bytes_per_session": 4096}},
        "nginx": {"sessions": {"per_second": 400.0, "errors": 0},
                  "idle": {"bytes_per_session": 8192}},
        "direct": {"sessions": {"per_second": 1000.0, "errors": 0}},
    }
    report = {"targets": targets, "ratios": bench.ratios(targets)}
    assert report["ratios"] == {"sessions.per_second": 0.25, "idle.bytes_per_session": 0.5}
    lines = bench.table(report).splitlines()
    assert lines[0].split() == ["postern", "nginx", "direct", "postern/nginx", "(rounds)"]
    rate = next(line for line in lines if line.startswith("sessions/s"))
    assert rate.split()[-4:] == ["100", "400", "1000", "0.25x"]
    memory = next(line for line in lines if line.startswith("RSS per idle"))
    assert memory.split()[-4:] == ["4.0", "8.0", "-", "0.50x"]


def test_table_shows_the_memory_kept_after_the_idle_sessions_end():
    targets = {"postern": {"idle": {"rss_after_close": 40 << 20}},
               "nginx": {"idle": {"rss_after_close": 10 << 20}}}
    report = {"targets": targets, "ratios": bench.ratios(targets),
              "settings": {"idle_sessions": 5000}}
    kept = next(line for line in bench.table(report).splitlines()
                if line.startswith("RSS kept after 5,000 sessions end, MiB"))
    assert kept.split()[-3:] == ["40.0", "10.0", "4.00x"]


def test_spread_is_the_widest_ratio_the_rounds_allow():
    targets = {"postern": {"sessions": {"rounds": {"per_second": [90.0, 100.0, 110.0]}}},
               "nginx": {"sessions": {"rounds": {"per_second": [100.0, 120.0, 125.0]}}}}
    assert bench.spreads(targets) == {"sessions.per_second": [0.72, 1.1]}
    report = {"targets": targets, "ratios": {"sessions.per_second": 0.83},
              "spread": bench.spreads(targets)}
    rate = next(line for line in bench.table(report).splitlines()
                if line.startswith("sessions/s"))
    assert rate.split()[-2:] == ["0.83x", "0.72-1.10"]


def test_workers_option_takes_counts(capsys):
    assert bench.parse_args(["--workers", "4,1,2"]).workers == [1, 2, 4]
    assert bench.parse_args(["--quick"]).workers == [1]
    with pytest.raises(SystemExit):
        bench.parse_args(["--workers", "two"])
