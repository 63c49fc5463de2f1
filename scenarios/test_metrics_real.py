"""metrics_listen read by the real tools: a private Prometheus (Debian package `prometheus`)
scrapes Postern and answers queries on what real sessions did, and `promtool check metrics`
finds nothing to say about the exposition. Postern-only (nginx's mail module has no metrics);
without Prometheus the scenarios are skipped, except under CI, where that is a failure."""

from __future__ import annotations

import subprocess
import time

import pytest
from postern.fakes.auth import Reply
from postern.scenarios.kit.metrics_support import (
    WHY,
    exposition,
    metrics_directive,
    value,
    wait_value,
)
from postern.scenarios.kit.real.common import available
from postern.scenarios.kit.real.prometheus import PrometheusInstance, promtool_check_metrics
from postern.scenarios.kit.tls_support import GREETINGS, client_context, pki, tls_connect

__all__ = ["pki"]

pytestmark = pytest.mark.postern_only(WHY)


def _logins(lab, proxy, count: int) -> None:
    for _ in range(count):
        lab.ok()
        with proxy.connect() as c:
            lab.login(c)
            c.send(b"a2 LOGOUT\r\n")
            c.read_all()


def test_prometheus_scrapes_the_auth_outcomes_of_real_logins(lab, tmp_path):
    """metrics_listen: three logins and one refused password, scraped by a real Prometheus
    every second; its query API answers 3 and 1 for the two outcomes."""
    directive, port = metrics_directive()
    proxy = lab.proxy(mail=directive)
    server = f'server="127.0.0.1:{proxy.port}"'
    _logins(lab, proxy, 3)
    lab.auth.push(Reply.fail("Invalid login or password"))
    with proxy.connect() as c:
        c.expect(b"* OK IMAP4 ready\r\n")
        c.send(b"a1 LOGIN alice wrong\r\n")
        assert c.readline().startswith(b"a1 NO"), c.dump()
    with available(PrometheusInstance, f"127.0.0.1:{port}", tmp_path / "prometheus") as prom:
        deadline = time.monotonic() + 30
        while True:
            ok = prom.query(f'sum(postern_auth_requests_total{{outcome="ok",{server}}})')
            failed = prom.query(f'sum(postern_auth_requests_total{{outcome="failed",{server}}})')
            got = (ok and float(ok[0]["value"][1]), failed and float(failed[0]["value"][1]))
            if got == (3.0, 1.0):
                break
            assert time.monotonic() < deadline, (got, prom.targets(), prom.log()[-2000:])
            time.sleep(0.2)
        (target,) = prom.targets()
        assert target["health"] == "up", target


def test_promtool_finds_the_exposition_clean(lab, pki):
    """metrics_listen: after logins, a TLS handshake, a failed one (plaintext on a TLS port)
    and histograms with samples, `promtool check metrics` exits 0 and prints nothing."""
    directive, port = metrics_directive()
    proxy = lab.proxy(mail=directive, server=pki.server(), listen_params="ssl")
    server = {"server": f"127.0.0.1:{proxy.port}", "protocol": "imap"}
    lab.ok()
    with tls_connect(proxy, client_context(pki)) as c:
        c.expect(GREETINGS["imap"])
        c.send(b"a1 LOGIN alice secret\r\n")
        assert c.readline().startswith(b"a1 OK"), c.dump()
    with proxy.connect() as c:
        c.send(b"a1 CAPABILITY\r\n")
        c.read_all()
    wait_value(port, "postern_tls_handshake_failures_total", 1, mode="implicit", **server)
    assert value(port, "postern_tls_handshakes_total", mode="implicit", **server) == 1
    text = exposition(port)
    available(PrometheusInstance, "", "")  # skips (fails under CI) without promtool
    status, said = promtool_check_metrics(text)
    assert (status, said) == (0, ""), said


def test_promtool_accepts_the_dashboards_queries(tmp_path):
    """metrics_listen: every query of examples/grafana/postern-dashboard.json parses as
    PromQL (`promtool check rules` on them as recording rules, Grafana's variables filled)."""
    import json
    from pathlib import Path

    available(PrometheusInstance, "", "")
    dashboard = json.loads((Path(__file__).parents[1] / "examples" / "grafana" /
                            "postern-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    filled = [e.replace("$__rate_interval", "1m").replace("$server", ".*")
              .replace("$protocol", ".*") for e in exprs]
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n  - name: dashboard\n    rules:\n" + "".join(
        f"      - record: dashboard:query{i}\n        expr: {json.dumps(e)}\n"
        for i, e in enumerate(filled)))
    done = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout, done.stdout
