"""Side-by-side benchmark: Postern, Debian's nginx and the fake upstream directly.

    python -m postern.loadtest.bench                 # or: make bench
    python -m postern.loadtest.bench --quick --targets postern,direct

The fake IMAP, POP3 and SMTP upstreams and the mock auth server run as separate programs
(their own GILs); this process is the load generator (uvloop). Each target gets the same load,
one after another, from the same `mail {}` text (a server per protocol) with one worker process:

1. sessions/s: N clients looping connect, greeting, login, logout for D seconds (--rounds
   times: the median is reported, every round's figure kept for the spread), with the
   p50/p99 latency of the login step (the direct target logs in to the upstream itself, so it
   has no auth_http round trip) and the proxy worker's CPU seconds per 1,000 sessions; for each
   protocol of --protocols:
   - IMAP: LOGIN (timed), LOGOUT;
   - POP3: USER and PASS (timed together), QUIT;
   - SMTP: EHLO, AUTH PLAIN with an initial response (timed), QUIT (the proxies send the
     upstream EHLO and XCLIENT, nginx's default);
2. relay (IMAP): one FETCH of a large message (MiB/s, and the proxy worker's CPU seconds);
3. memory (IMAP): RSS of the proxy worker before and after opening many logged-in idle sessions,
   and what it keeps once they have ended (Postern's worker gives memory back when idle,
   within worker.IDLE_TRIM_INTERVAL, so this waits release_wait seconds).
4. TLS (IMAP, the same throw-away certificate on both proxies; --no-tls leaves it out):
   sessions/s over implicit TLS with a full handshake each, sessions/s with STARTTLS, one
   FETCH over TLS, and RSS per idle TLS session (resumed handshakes are not measured: asyncio's
   TLS client cannot offer a saved session);
5. postern-keepalive: Postern with auth_http_keepalive (beyond nginx), session rows only;
   postern-all: Postern with the production features nginx lacks all on (metrics_listen,
   a buffered access_log, limit_conn, limit_req and limit_auth zones that never refuse),
   session rows only, shown as its cost over plain Postern;
6. scaling: IMAP sessions/s with worker_processes 2 and 4 (--workers); on a machine with
   fewer cores than workers plus the load generator this says so rather than claim scaling.

The table shows each round-measured ratio with its spread: the lowest and highest ratio the
rounds allow (min over max, max over min).

CPU and RSS come from /proc/PID/stat and /proc/PID/statm of the proxy's worker processes.
The machine is shared and noisy: compare CPU per unit of work rather than wall-clock rates.
Results go to results/bench.json; the table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # imported by `locust -f loadtest/` as a top-level module
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from postern.fakes.pki import Authority
from postern.loadtest import _bench_client as client
from postern.loadtest import _bench_procs as procs

# postern-keepalive: Postern with auth_http_keepalive (beyond nginx), session rows only;
# postern-all: every production feature nginx lacks switched on, session rows only
TARGETS = ("postern", "nginx", "direct", "postern-keepalive", "postern-all")
KEEPALIVE = "auth_http_keepalive 16;\n"
# limits high enough never to refuse: what is measured is the bookkeeping
ALL_ON = """metrics_listen 127.0.0.1:{metrics_port};
access_log {workdir}/access.log mail buffer=64k flush=1s;
limit_conn_zone $binary_remote_addr zone=bench_conn:10m;
limit_req_zone $binary_remote_addr zone=bench_req:10m rate=1000000r/s;
limit_auth_zone $login zone=bench_auth:10m failures=1000000 window=1s;
limit_conn bench_conn 1000000;
limit_req zone=bench_req burst=1000000 nodelay;
limit_auth zone=bench_auth;
"""
EXTRA_TARGETS = ("postern-keepalive", "postern-all")  # Postern variants: session rows only
PROTOCOLS = ("imap", "pop3", "smtp")
# results[target][SECTION[protocol]]: IMAP's keeps its original name
SECTION = {"imap": "sessions", "pop3": "pop3_sessions", "smtp": "smtp_sessions"}
USER, PASSWORD = "bench", "secret"
DEFAULT_OUTPUT = procs.ROOT / "results" / "bench.json"
FULL = {"duration": 10.0, "clients": 50, "fetch_mib": 200.0, "idle_sessions": 5000,
        "tls_idle_sessions": 2000, "warmup": 2.0, "settle": 1.0, "rounds": 3,
        "release_wait": 6.0, "workers": "1,2,4"}
QUICK = {"duration": 1.0, "clients": 10, "fetch_mib": 8.0, "idle_sessions": 200,
         "tls_idle_sessions": 50, "warmup": 0.3, "settle": 0.3, "rounds": 1,
         "release_wait": 0.3, "workers": "1"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m postern.loadtest.bench",
                                description="Postern vs nginx vs the fake upstream directly.")
    p.add_argument("--quick", action="store_true",
                   help="small sizes for a smoke run (explicit options still win)")
    p.add_argument("--duration", type=float, help="seconds of the sessions/s run (10)")
    p.add_argument("--warmup", type=float, help="seconds of unmeasured load first (2)")
    p.add_argument("--clients", type=int, help="concurrent clients for sessions/s (50)")
    p.add_argument("--rounds", type=int, help="measured sessions/s runs per target and "
                   "protocol; the median is reported, the spread kept (3)")
    p.add_argument("--fetch-mib", type=float, help="size of the FETCHed message in MiB (200)")
    p.add_argument("--idle-sessions", type=int, help="idle sessions for the memory test (5000)")
    p.add_argument("--tls-idle-sessions", type=int,
                   help="idle TLS sessions for the TLS memory test (2000)")
    p.add_argument("--no-tls", dest="tls", action="store_false",
                   help="leave out the TLS rows (implicit TLS and STARTTLS sessions/s, TLS "
                        "relay, idle TLS sessions)")
    p.add_argument("--workers", help="worker_processes counts of the IMAP scaling rows "
                   "(1,2,4; 1 is the main run)")
    p.add_argument("--targets", default=",".join(TARGETS),
                   help="comma-separated subset of postern,nginx,direct,postern-keepalive,postern-all (default: all)")
    p.add_argument("--protocols", default=",".join(PROTOCOLS),
                   help="comma-separated subset of imap,pop3,smtp (default: all); the FETCH and "
                        "idle-session tests run with imap")
    p.add_argument("--pin", action="store_true",
                   help="pin the proxy to CPU 0 and everything else to the other CPUs")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                   help="where the JSON results go (default results/bench.json)")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(TARGETS)
    if unknown or not args.targets:
        p.error(f"--targets takes names from {','.join(TARGETS)}")
    wanted = {t.strip() for t in args.protocols.split(",") if t.strip()}
    if wanted - set(PROTOCOLS) or not wanted:
        p.error(f"--protocols takes names from {','.join(PROTOCOLS)}")
    args.protocols = [name for name in PROTOCOLS if name in wanted]
    try:
        args.workers = sorted({int(n) for n in str(args.workers).split(",") if n.strip()})
    except ValueError:
        p.error("--workers takes numbers, e.g. 1,2,4")
    if args.tls and "imap" not in args.protocols:
        args.tls = False  # the TLS rows are IMAP's
    return args


# -- one target -------------------------------------------------------------------------------

class Target:
    """Where the load goes and whose CPU/RSS counts as the proxy's."""

    def __init__(self, name: str, ports: dict[str, int], instance=None, count: int = 1) -> None:
        self.name, self.ports, self.instance, self.count = name, ports, instance, count
        self.initial_workers = self.workers()

    def workers(self) -> list[int]:
        if self.instance is None:
            return []
        return procs.wait_children(self.instance.pid, self.count)

    def restarts(self) -> int:
        return len(set(self.workers()) - set(self.initial_workers))


def _measure(target: Target, fakes: dict, work: Callable[[], object],
             protocol: str = "imap") -> tuple[object, dict]:
    """Run ``work`` and return its result with the CPU seconds each party spent on it (the
    proxy's split into user and kernel time: the kernel's share is the same work for any
    proxy, the user share is where implementations differ)."""
    parties = {"proxy": target.workers, "backend": lambda: [fakes[protocol].pid],
               "auth": lambda: [fakes["auth"].pid], "loadgen": lambda: [os.getpid()]}
    if target.instance is None:
        del parties["proxy"], parties["auth"]  # direct: neither is in the path
    before = {k: procs.cpu_times(pids()) for k, pids in parties.items()}
    result = work()
    after = {k: procs.cpu_times(pids()) for k, pids in parties.items()}
    cpu = {f"{k}_cpu_s": round(sum(after[k]) - sum(before[k]), 3) for k in parties}
    if "proxy" in parties:
        cpu["proxy_user_s"] = round(after["proxy"][0] - before["proxy"][0], 3)
        cpu["proxy_sys_s"] = round(after["proxy"][1] - before["proxy"][1], 3)
    return result, cpu


def _ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


# Per-round numbers: the result keeps their median and the list under "rounds".
ROUND_KEYS = ("per_second", "login_p50_ms", "login_p99_ms", "login_mean_ms",
              "proxy_cpu_s_per_1000", "proxy_user_s_per_1000", "proxy_busy_pct")


def sessions_test(loop, target: Target, fakes: dict, args, protocol: str = "imap",
                  port: str | None = None, tls: str | None = None) -> dict:
    """--rounds measured runs after one warm-up: the median of each rate and latency, the
    spread kept under "rounds" (a shared machine's noise shows there). ``port`` names the
    server (default: the protocol's), ``tls`` as for client.run_sessions."""
    def run(duration: float) -> client.SessionStats:
        return loop.run_until_complete(client.run_sessions(
            "127.0.0.1", target.ports[port or protocol], clients=args.clients,
            duration=duration, user=USER, password=PASSWORD, protocol=protocol, tls=tls))

    warmup = run(args.warmup) if args.warmup > 0 else client.SessionStats()
    rounds = [_session_round(*_measure(target, fakes, lambda: run(args.duration), protocol))
              for _ in range(max(1, args.rounds))]
    result = dict(rounds[len(rounds) // 2])
    for key in ROUND_KEYS:
        values = [r[key] for r in rounds if r.get(key) is not None]
        result[key] = round(statistics.median(values), 4) if values else None
    errors = sum((r.pop("_error_kinds") for r in rounds), warmup.error_kinds)
    result.pop("_error_kinds", None)
    result.update({
        "clients": args.clients, "warmup_sessions": warmup.sessions,
        "sessions": sum(r["sessions"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds) + warmup.errors,
        "error_kinds": dict(errors.most_common(5)),
        "rounds": {key: [r.get(key) for r in rounds] for key in ROUND_KEYS},
    })
    return result


def _session_round(stats: client.SessionStats, cpu: dict) -> dict:
    rate = stats.sessions / stats.seconds if stats.seconds else 0.0
    proxied = stats.sessions and "proxy_cpu_s" in cpu
    per_1000 = cpu["proxy_cpu_s"] / stats.sessions * 1000 if proxied else None
    user_per_1000 = cpu["proxy_user_s"] / stats.sessions * 1000 if proxied else None
    lat = stats.login_latencies
    return {
        "sessions": stats.sessions, "errors": stats.errors, "_error_kinds": stats.error_kinds,
        "seconds": round(stats.seconds, 3), "per_second": round(rate, 1),
        # near 100: the proxy is the bottleneck; well below: the harness is
        "proxy_busy_pct": round(100 * cpu["proxy_cpu_s"] / stats.seconds, 1)
        if "proxy_cpu_s" in cpu and stats.seconds else None,
        "login_p50_ms": _ms(lat, 0.50), "login_p99_ms": _ms(lat, 0.99),
        "login_mean_ms": round(statistics.fmean(lat) * 1000, 3) if lat else None,
        **cpu,
        "proxy_cpu_s_per_1000": round(per_1000, 4) if per_1000 is not None else None,
        "proxy_user_s_per_1000":
            round(user_per_1000, 4) if user_per_1000 is not None else None,
    }


def fetch_test(target: Target, fakes: dict, args, tls: bool = False) -> dict:
    timeout = max(60.0, args.fetch_mib / 5)
    port = target.ports["imaps" if tls else "imap"]
    result, cpu = _measure(target, fakes, lambda: client.fetch_largest(
        "127.0.0.1", port, user=USER, password=PASSWORD, timeout=timeout, tls=tls))
    mib = result.bytes / (1 << 20)
    per_gib = cpu["proxy_cpu_s"] / mib * 1024 if "proxy_cpu_s" in cpu else None
    return {"bytes": result.bytes, "seconds": round(result.seconds, 3),
            "mib_per_s": round(mib / result.seconds, 1) if result.seconds else None, **cpu,
            "proxy_cpu_s_per_gib": round(per_gib, 3) if per_gib is not None else None}


def idle_test(loop, target: Target, fakes: dict, args, tls: bool = False) -> dict:
    time.sleep(args.settle)
    workers = target.workers()
    before = procs.rss_bytes(workers)
    backend_before = procs.rss_bytes([fakes["imap"].pid])
    count = args.tls_idle_sessions if tls else args.idle_sessions
    idle = loop.run_until_complete(client.open_idle(
        "127.0.0.1", target.ports["imaps" if tls else "imap"], count, user=USER,
        password=PASSWORD, tls="implicit" if tls else None))
    try:
        time.sleep(args.settle)
        after = procs.rss_bytes(workers)
        backend_after = procs.rss_bytes([fakes["imap"].pid])
    finally:
        idle.close()
        loop.run_until_complete(asyncio.sleep(args.settle))
    time.sleep(args.release_wait)
    ended = procs.rss_bytes(workers)
    opened = idle.stats.sessions
    return {
        "requested": count, "sessions": opened, "errors": idle.stats.errors,
        "error_kinds": dict(idle.stats.error_kinds.most_common(5)),
        "open_seconds": round(idle.stats.seconds, 3),
        "rss_before": before, "rss_after": after, "rss_after_close": ended,
        "bytes_per_session": round((after - before) / opened) if opened else None,
        "backend_bytes_per_session":
            round((backend_after - backend_before) / opened) if opened else None,
    }


def _attempt(results: dict, key: str, test: Callable[[], dict]) -> None:
    try:
        results[key] = test()
    except Exception as exc:  # noqa: BLE001 - one failed test must not lose the others
        results[key] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"  {key}: failed: {exc}", file=sys.stderr)


def _variant_directives(name: str, workdir: Path) -> str:
    if name == "postern-keepalive":
        return KEEPALIVE
    if name == "postern-all":
        workdir.mkdir(parents=True, exist_ok=True)
        return ALL_ON.format(metrics_port=procs.free_port(), workdir=workdir)
    return ""


def run_target(name: str, loop, fakes: dict, args, workdir: Path) -> dict:
    instance = None
    variant = name in EXTRA_TARGETS
    tls = args.tls and name in ("postern", "nginx")
    if name == "direct":
        ports = {protocol: fakes[protocol].port for protocol in args.protocols}
    else:
        instance, ports = procs.make_proxy(
            "postern" if variant else name, workdir / name, fakes["auth"].port,
            connections=2 * args.idle_sessions + 1024, protocols=tuple(args.protocols),
            tls_directives=fakes["tls"].directives() if tls else None,
            extra=_variant_directives(name, workdir / name))
        instance.start()
    results: dict = {}
    try:
        target = Target(name, ports, instance)
        if args.pin and instance is not None:
            procs.pin([instance.pid, *target.workers()], {0})
        for protocol in args.protocols:
            print(f"{name}: {protocol} sessions ({args.clients} clients, {args.duration:g}s)...",
                  flush=True)
            _attempt(results, SECTION[protocol],
                     lambda p=protocol: sessions_test(loop, target, fakes, args, p))
        if "imap" in args.protocols and not variant:
            print(f"{name}: FETCH of {args.fetch_mib:g} MiB...", flush=True)
            _attempt(results, "fetch", lambda: fetch_test(target, fakes, args))
            if instance is not None:
                print(f"{name}: {args.idle_sessions} idle sessions...", flush=True)
                _attempt(results, "idle", lambda: idle_test(loop, target, fakes, args))
        if tls:
            _tls_tests(results, loop, target, fakes, args)
        if instance is not None:
            results["worker_restarts"] = target.restarts()
    finally:
        if instance is not None:
            instance.stop()
    return results


def _tls_tests(results: dict, loop, target: Target, fakes: dict, args) -> None:
    """The TLS rows, all IMAP with the same certificate on both proxies: sessions/s with a
    full handshake each (implicit TLS), STARTTLS sessions/s, one FETCH over TLS, idle TLS
    sessions."""
    name = target.name
    print(f"{name}: IMAP sessions over implicit TLS ({args.clients} clients)...", flush=True)
    _attempt(results, "tls_sessions", lambda: sessions_test(
        loop, target, fakes, args, "imap", port="imaps", tls="implicit"))
    print(f"{name}: IMAP sessions with STARTTLS ({args.clients} clients)...", flush=True)
    _attempt(results, "starttls_sessions", lambda: sessions_test(
        loop, target, fakes, args, "imap", port="imap-starttls", tls="starttls"))
    print(f"{name}: FETCH of {args.fetch_mib:g} MiB over TLS...", flush=True)
    _attempt(results, "tls_fetch", lambda: fetch_test(target, fakes, args, tls=True))
    print(f"{name}: {args.tls_idle_sessions} idle TLS sessions...", flush=True)
    _attempt(results, "tls_idle", lambda: idle_test(loop, target, fakes, args, tls=True))


def run_scaling(name: str, workers: int, loop, fakes: dict, args, workdir: Path) -> dict:
    """IMAP sessions/s with ``workers`` worker processes (the scaling rows)."""
    instance, ports = procs.make_proxy(name, workdir / f"{name}-{workers}", fakes["auth"].port,
                                       connections=4096, protocols=("imap",), workers=workers)
    instance.start()
    try:
        target = Target(name, ports, instance, count=workers)
        print(f"{name}: imap sessions with worker_processes {workers}...", flush=True)
        return sessions_test(loop, target, fakes, args, "imap")
    finally:
        instance.stop()


# -- report -----------------------------------------------------------------------------------

# (label, test, key, format, scale)
ROWS = (
    ("sessions/s", "sessions", "per_second", "{:.0f}", 1),
    ("LOGIN p50, ms", "sessions", "login_p50_ms", "{:.2f}", 1),
    ("LOGIN p99, ms", "sessions", "login_p99_ms", "{:.2f}", 1),
    ("proxy CPU s per 1,000 sessions", "sessions", "proxy_cpu_s_per_1000", "{:.3f}", 1),
    ("  of which user space", "sessions", "proxy_user_s_per_1000", "{:.3f}", 1),
    ("proxy worker busy, % of a core", "sessions", "proxy_busy_pct", "{:.0f}", 1),
    ("session errors", "sessions", "errors", "{:.0f}", 1),
    ("relay MiB/s (one FETCH)", "fetch", "mib_per_s", "{:.0f}", 1),
    ("proxy CPU s for the FETCH", "fetch", "proxy_cpu_s", "{:.2f}", 1),
    ("RSS per idle session, KiB", "idle", "bytes_per_session", "{:.1f}", 1 / 1024),
    ("RSS kept after {n} sessions end, MiB", "idle", "rss_after_close", "{:.1f}", 1 / 2**20),
    ("POP3 sessions/s", "pop3_sessions", "per_second", "{:.0f}", 1),
    ("POP3 USER/PASS p50, ms", "pop3_sessions", "login_p50_ms", "{:.2f}", 1),
    ("POP3 USER/PASS p99, ms", "pop3_sessions", "login_p99_ms", "{:.2f}", 1),
    ("POP3 proxy CPU s per 1,000", "pop3_sessions", "proxy_cpu_s_per_1000", "{:.3f}", 1),
    ("POP3 session errors", "pop3_sessions", "errors", "{:.0f}", 1),
    ("SMTP sessions/s", "smtp_sessions", "per_second", "{:.0f}", 1),
    ("SMTP AUTH p50, ms", "smtp_sessions", "login_p50_ms", "{:.2f}", 1),
    ("SMTP AUTH p99, ms", "smtp_sessions", "login_p99_ms", "{:.2f}", 1),
    ("SMTP proxy CPU s per 1,000", "smtp_sessions", "proxy_cpu_s_per_1000", "{:.3f}", 1),
    ("SMTP session errors", "smtp_sessions", "errors", "{:.0f}", 1),
    ("IMAP over TLS sessions/s (full handshake each)", "tls_sessions", "per_second", "{:.0f}",
     1),
    ("IMAP over TLS proxy CPU s per 1,000", "tls_sessions", "proxy_cpu_s_per_1000", "{:.3f}",
     1),
    ("STARTTLS sessions/s", "starttls_sessions", "per_second", "{:.0f}", 1),
    ("STARTTLS proxy CPU s per 1,000", "starttls_sessions", "proxy_cpu_s_per_1000", "{:.3f}",
     1),
    ("TLS session errors", "tls_sessions", "errors", "{:.0f}", 1),
    ("TLS relay MiB/s (one FETCH)", "tls_fetch", "mib_per_s", "{:.0f}", 1),
    ("proxy CPU s for the TLS FETCH", "tls_fetch", "proxy_cpu_s", "{:.2f}", 1),
    ("RSS per idle TLS session, KiB", "tls_idle", "bytes_per_session", "{:.1f}", 1 / 1024),
    ("IMAP sessions/s, worker_processes 2", "workers_2", "per_second", "{:.0f}", 1),
    ("IMAP sessions/s, worker_processes 4", "workers_4", "per_second", "{:.0f}", 1),
    ("  proxy CPU s per 1,000, 4 workers", "workers_4", "proxy_cpu_s_per_1000", "{:.3f}", 1),
)
# what has no measurement here, and why (printed under the table, kept in the report)
NOT_MEASURED = [
    ("TLS resumed handshakes/s: not measured (asyncio's TLS client cannot offer a saved "
     "session, so every bench handshake is a full one)"),
]


NO_RATIO = {"errors", "proxy_busy_pct"}


def _value(results: dict, target: str, test: str, key: str):
    return results.get(target, {}).get(test, {}).get(key)


def ratios(results: dict, of: str = "postern", over: str = "nginx") -> dict:
    """Target ``of`` over ``over``, row by row (the medians where there were rounds)."""
    out = {}
    for _, test, key, _, _ in ROWS:
        if key in NO_RATIO:
            continue
        p, n = _value(results, of, test, key), _value(results, over, test, key)
        if isinstance(p, (int, float)) and isinstance(n, (int, float)) and n:
            out[f"{test}.{key}"] = round(p / n, 3)
    return out


def spreads(results: dict) -> dict:
    """For rows measured in rounds, the widest and narrowest ratio the rounds allow:
    [min(postern) / max(nginx), max(postern) / min(nginx)]."""
    out = {}
    for _, test, key, _, _ in ROWS:
        if key not in ROUND_KEYS or key in NO_RATIO:
            continue
        p = [v for v in (_value(results, "postern", test, "rounds") or {}).get(key, [])
             if v is not None]
        n = [v for v in (_value(results, "nginx", test, "rounds") or {}).get(key, [])
             if v is not None]
        if len(p) > 1 and len(n) > 1 and min(n) > 0:
            out[f"{test}.{key}"] = [round(min(p) / max(n), 3), round(max(p) / min(n), 3)]
    return out


def table(report: dict) -> str:
    results, targets = report["targets"], list(report["targets"])
    paired = {"postern", "nginx"} <= set(targets)
    keepalive = paired and "postern-keepalive" in targets
    all_on = {"postern", "postern-all"} <= set(targets)
    heads = ["", *targets] + (["postern/nginx", "(rounds)"] if paired else []) + \
        (["keepalive/nginx"] if keepalive else []) + (["all-on/postern"] if all_on else [])
    rows = [heads]
    n = report.get("settings", {}).get("idle_sessions")
    for label, test, key, fmt, scale in ROWS:
        label = label.replace("{n}", f"{n:,}" if n else "N")
        if not any(test in (results.get(t) or {}) for t in targets):
            continue  # a protocol or test this run left out
        row = [label]
        for t in targets:
            v = _value(results, t, test, key)
            row.append("-" if v is None else fmt.format(v * scale))
        if paired:
            r = report["ratios"].get(f"{test}.{key}")
            row.append("-" if r is None else f"{r:.2f}x")
            low_high = report.get("spread", {}).get(f"{test}.{key}")
            row.append("" if low_high is None else "{:.2f}-{:.2f}".format(*low_high))
        if keepalive:
            r = report.get("keepalive_ratios", {}).get(f"{test}.{key}")
            row.append("-" if r is None else f"{r:.2f}x")
        if all_on:
            r = report.get("all_on_cost", {}).get(f"{test}.{key}")
            row.append("-" if r is None else f"{r:.2f}x")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(heads))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notes: list[str] = []
    if "nginx" in args.targets and (reason := procs.nginx_unavailable()) is not None:
        args.targets.remove("nginx")
        notes.append(f"nginx skipped: {reason}")
        print(f"nginx is unavailable ({reason}); running {', '.join(args.targets)}",
              file=sys.stderr)
    # the generator holds every idle session, the proxy twice that (client + upstream)
    limit = procs.raise_nofile(2 * args.idle_sessions + 4096)
    if limit < 2 * args.idle_sessions + 256:
        args.idle_sessions = max(1, (limit - 256) // 2)
        notes.append(f"RLIMIT_NOFILE {limit}: idle sessions lowered to {args.idle_sessions}")
    if args.pin:
        others = set(os.sched_getaffinity(0)) - {0}
        if others:
            os.sched_setaffinity(0, others)  # the fakes inherit it
        else:
            notes.append("--pin ignored: only one CPU")
            args.pin = False
    settings = {k: getattr(args, k) for k in
                ("duration", "warmup", "clients", "rounds", "fetch_mib", "idle_sessions",
                 "tls_idle_sessions", "release_wait", "pin", "tls", "workers")}
    report = {"benchmark": "postern-nginx-direct", "machine": procs.machine_info(),
              "settings": {**settings, "targets": args.targets, "protocols": args.protocols},
              "targets": {},
              "ratios": {}, "notes": notes}
    loop = _new_loop()
    with tempfile.TemporaryDirectory(prefix="postern-bench-") as tmp:
        workdir = Path(tmp)
        fakes: dict = {}
        try:
            upstream_args = {
                "imap": ["--shared-content",
                         "--large-message", str(int(args.fetch_mib * (1 << 20)))],
                "pop3": ["--shared-content"], "smtp": []}
            for protocol in args.protocols:
                fakes[protocol] = procs.FakeProcess(
                    f"fakes.{protocol}", ["--user", f"{USER}:{PASSWORD}",
                                          *upstream_args[protocol]],
                    workdir / f"{protocol}.log")
            backends = [f"--backend={p}=127.0.0.1:{fakes[p].port}" for p in args.protocols]
            # --keepalive: HTTP/1.1 requests (postern-keepalive's) are kept alive, nginx's
            # HTTP/1.0 ones are closed after the reply as before
            fakes["auth"] = procs.FakeProcess(
                "postern.fakes.auth", ["--user", f"{USER}:{PASSWORD}", "--keepalive",
                                       *backends], workdir / "auth.log")
            if args.tls:
                fakes["tls"] = Authority().server_files(workdir)  # one certificate for both
            for name in args.targets:
                try:
                    report["targets"][name] = run_target(name, loop, fakes, args, workdir)
                except Exception as exc:  # noqa: BLE001 - a target that fails: say so, go on
                    report["targets"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                    print(f"{name}: failed: {exc}", file=sys.stderr)
            _scaling(report, loop, fakes, args, workdir)
        finally:
            for fake in fakes.values():
                if isinstance(fake, procs.FakeProcess):
                    fake.stop()
            loop.close()
            asyncio.set_event_loop(None)
    report["ratios"] = ratios(report["targets"])
    report["spread"] = spreads(report["targets"])
    if "postern-keepalive" in report["targets"]:
        report["keepalive_ratios"] = ratios(report["targets"], "postern-keepalive")
    if {"postern", "postern-all"} <= set(report["targets"]):
        # what the production features cost: postern-all over plain Postern, row by row
        report["all_on_cost"] = ratios(report["targets"], "postern-all", over="postern")
    if args.tls:
        notes.extend(NOT_MEASURED)
    print()
    print(table(report))
    for note in notes:
        print(f"note: {note}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {args.output}")
    return 0


def _scaling(report: dict, loop, fakes: dict, args, workdir: Path) -> None:
    """The worker_processes rows (1 is the main run's), for the proxies in this run."""
    counts = [n for n in args.workers if n > 1]
    if not counts or "imap" not in args.protocols:
        return
    cores = len(os.sched_getaffinity(0))
    if max(counts) + 1 > cores:
        report["notes"].append(
            f"worker_processes {','.join(map(str, counts))} on {cores} CPUs: the load generator "
            "and the fakes share them, so sessions/s cannot scale with the worker count here; "
            "the rows show what more workers cost, not how far they scale")
    for name in ("postern", "nginx"):
        results = report["targets"].get(name)
        if results is None or "error" in results:
            continue
        for n in counts:
            _attempt(results, f"workers_{n}",
                     lambda name=name, n=n: run_scaling(name, n, loop, fakes, args, workdir))


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


if __name__ == "__main__":
    sys.exit(main())
