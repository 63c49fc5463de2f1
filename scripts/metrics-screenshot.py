#!/usr/bin/env python3
"""Renders docs/metrics-prometheus.png from a real run: Postern (2 workers, metrics_listen)
in front of the fakes, a private Prometheus scraping it every second, a few minutes of IMAP
and POP3 sessions (logins, refused passwords, invalid commands, one reload), then the
dashboard's main queries drawn by Prometheus's own graph page in headless chromium.

Grafana is not packaged for Debian, so the picture is Prometheus's UI showing the same
queries as examples/grafana/postern-dashboard.json.

    .venv/bin/python scripts/metrics-screenshot.py [--seconds 120] [--out docs/metrics-prometheus.png]
"""

from __future__ import annotations

import argparse
import imaplib
import poplib
import random
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from postern.fakes.stack import Stack
from postern.scenarios.kit.real.common import free_ports
from postern.scenarios.kit.real.prometheus import PrometheusInstance

SHOT = (900, 1100)  # one panel's page
# what is kept of it: the query's text, then the graph and its legend
STRIPS = ((0, 108, 900, 158), (0, 380, 900, 1040))
PANELS = [  # (PromQL, as the dashboard's panels with every server and protocol)
    "sum by (protocol) (rate(postern_connections_accepted_total[30s]))",
    "sum by (outcome) (rate(postern_auth_requests_total[30s]))",
    "histogram_quantile(0.95, sum by (le) (rate(postern_auth_request_duration_seconds_bucket[30s])))",
    "sum by (phase) (postern_sessions)",
    "sum by (direction) (rate(postern_relayed_bytes_total[30s]))",
    "sum(rate(postern_protocol_errors_total[30s]))",
]


def imap_session(port: int, rng: random.Random) -> None:
    c = imaplib.IMAP4("127.0.0.1", port)
    try:
        if rng.random() < 0.15:
            c.login("alice", "wrong")
        if rng.random() < 0.1:
            c.xatom("FROB")  # an invalid command: BAD
        c.login("alice", "secret")
        c.select()
        c.fetch("1:*", "(FLAGS RFC822.SIZE)")
        time.sleep(rng.uniform(0.2, 3.0))  # keep it open a while: sessions in relay
        c.logout()
    except (imaplib.IMAP4.error, OSError):
        pass


def pop3_session(port: int, rng: random.Random) -> None:
    try:
        c = poplib.POP3("127.0.0.1", port)
        c.user("alice")
        c.pass_("secret" if rng.random() > 0.1 else "wrong")
        c.list()
        c.quit()
    except (poplib.error_proto, OSError):
        pass


def drive(ports: dict[str, int], seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    end = time.monotonic() + seconds
    threads: list[threading.Thread] = []
    while time.monotonic() < end:
        kind = imap_session if rng.random() < 0.7 else pop3_session
        port = ports["imap" if kind is imap_session else "pop3"]
        t = threading.Thread(target=kind, args=(port, random.Random(rng.random())))
        t.start()
        threads.append(t)
        time.sleep(rng.uniform(0.02, 0.15) * (2 if (time.monotonic() % 60) < 20 else 1))
    for t in threads:
        t.join(10)


def graph_url(prom: PrometheusInstance, expr: str, minutes: int) -> str:
    query = {"g0.expr": expr, "g0.tab": "0", "g0.stacked": "0", "g0.range_input": f"{minutes}m"}
    return f"{prom.url}/classic/graph?" + urllib.parse.urlencode(query)


def screenshot(url: str, out: Path) -> None:
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--screenshot={out}", f"--window-size={SHOT[0]},{SHOT[1]}",
                    "--virtual-time-budget=10000", url],
                   check=True, capture_output=True, timeout=120)


def grid(shots: list[Path], out: Path) -> None:
    """The panels two by two (Pillow comes with matplotlib, of the [load] extra)."""
    from PIL import Image

    images = []
    for shot in shots:
        page = Image.open(shot)
        parts = [page.crop(box) for box in STRIPS]
        panel = Image.new("RGB", (parts[0].width, sum(p.height for p in parts)), "white")
        y = 0
        for part in parts:
            panel.paste(part, (0, y))
            y += part.height
        images.append(panel)
    w, h = images[0].size
    sheet = Image.new("RGB", (2 * w, h * ((len(images) + 1) // 2)), "white")
    for i, image in enumerate(images):
        sheet.paste(image, ((i % 2) * w, (i // 2) * h))
    sheet.save(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--out", default="docs/metrics-prometheus.png")
    args = p.parse_args()
    metrics_port, imap_port, pop3_port = free_ports(3)
    work = Path(tempfile.mkdtemp(prefix="postern-metrics-shot-"))
    with Stack(users={"alice": "secret"}) as stack:
        mail = (f"auth_http 127.0.0.1:{stack.auth.port}/auth;\n"
                f"metrics_listen 127.0.0.1:{metrics_port};\n"
                f"server {{ listen 127.0.0.1:{imap_port}; protocol imap; }}\n"
                f"server {{ listen 127.0.0.1:{pop3_port}; protocol pop3; }}\n")
        postern = stack.start_target(mail, work / "postern", name="postern",
                                     main="worker_processes 2;")
        with PrometheusInstance(f"127.0.0.1:{metrics_port}", work / "prometheus") as prom:
            ports = {"imap": imap_port, "pop3": pop3_port}
            drive(ports, args.seconds / 2, seed=1)
            postern.reload()  # new workers; the counters go on
            drive(ports, args.seconds / 2, seed=2)
            time.sleep(3)
            minutes = max(2, round(args.seconds / 60) + 1)
            shots = [work / f"panel{i}.png" for i in range(len(PANELS))]
            for expr, shot in zip(PANELS, shots):
                screenshot(graph_url(prom, expr, minutes), shot)
            out = Path(args.out).resolve()
            grid(shots, out)
            print(f"wrote {out} (panels in {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
