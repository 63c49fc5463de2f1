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

from postern.loadtest import _bench_client as client
from postern.loadtest import _bench_procs as procs

TARGETS = ("postern", "nginx", "direct")
PROTOCOLS = ("imap", "pop3", "smtp")
# results[target][SECTION[protocol]]: IMAP's keeps its original name
SECTION = {"imap": "sessions", "pop3": "pop3_sessions", "smtp": "smtp_sessions"}
USER, PASSWORD = "bench", "secret"
DEFAULT_OUTPUT = procs.ROOT / "results" / "bench.json"
FULL = {"duration": 10.0, "clients": 50, "fetch_mib": 200.0, "idle_sessions": 5000,
        "warmup": 2.0, "settle": 1.0, "rounds": 3, "release_wait": 6.0}
QUICK = {"duration": 1.0, "clients": 10, "fetch_mib": 8.0, "idle_sessions": 200,
         "warmup": 0.3, "settle": 0.3, "rounds": 1, "release_wait": 0.3}


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
    p.add_argument("--targets", default=",".join(TARGETS),
                   help="comma-separated subset of postern,nginx,direct (default: all)")
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
    return args


# -- one target -------------------------------------------------------------------------------

class Target:
    """Where the load goes and whose CPU/RSS counts as the proxy's."""

    def __init__(self, name: str, ports: dict[str, int], instance=None) -> None:
        self.name, self.ports, self.instance = name, ports, instance
        self.initial_workers = self.workers()

    def workers(self) -> list[int]:
        if self.instance is None:
            return []
        return procs.wait_children(self.instance.pid, 1)

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


def sessions_test(loop, target: Target, fakes: dict, args, protocol: str = "imap") -> dict:
    """--rounds measured runs after one warm-up: the median of each rate and latency, the
    spread kept under "rounds" (a shared machine's noise shows there)."""
    def run(duration: float) -> client.SessionStats:
        return loop.run_until_complete(client.run_sessions(
            "127.0.0.1", target.ports[protocol], clients=args.clients, duration=duration,
            user=USER, password=PASSWORD, protocol=protocol))

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


def fetch_test(target: Target, fakes: dict, args) -> dict:
    timeout = max(60.0, args.fetch_mib / 5)
    result, cpu = _measure(target, fakes, lambda: client.fetch_largest(
        "127.0.0.1", target.ports["imap"], user=USER, password=PASSWORD, timeout=timeout))
    mib = result.bytes / (1 << 20)
    per_gib = cpu["proxy_cpu_s"] / mib * 1024 if "proxy_cpu_s" in cpu else None
    return {"bytes": result.bytes, "seconds": round(result.seconds, 3),
            "mib_per_s": round(mib / result.seconds, 1) if result.seconds else None, **cpu,
            "proxy_cpu_s_per_gib": round(per_gib, 3) if per_gib is not None else None}


def idle_test(loop, target: Target, fakes: dict, args) -> dict:
    time.sleep(args.settle)
    workers = target.workers()
    before = procs.rss_bytes(workers)
    backend_before = procs.rss_bytes([fakes["imap"].pid])
    idle = loop.run_until_complete(client.open_idle(
        "127.0.0.1", target.ports["imap"], args.idle_sessions, user=USER, password=PASSWORD))
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
        "requested": args.idle_sessions, "sessions": opened, "errors": idle.stats.errors,
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


def run_target(name: str, loop, fakes: dict, args, workdir: Path) -> dict:
    instance = None
    if name == "direct":
        ports = {protocol: fakes[protocol].port for protocol in args.protocols}
    else:
        instance, ports = procs.make_proxy(name, workdir / name, fakes["auth"].port,
                                           connections=2 * args.idle_sessions + 1024,
                                           protocols=tuple(args.protocols))
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
        if "imap" in args.protocols:
            print(f"{name}: FETCH of {args.fetch_mib:g} MiB...", flush=True)
            _attempt(results, "fetch", lambda: fetch_test(target, fakes, args))
            if instance is not None:
                print(f"{name}: {args.idle_sessions} idle sessions...", flush=True)
                _attempt(results, "idle", lambda: idle_test(loop, target, fakes, args))
        if instance is not None:
            results["worker_restarts"] = target.restarts()
    finally:
        if instance is not None:
            instance.stop()
    return results


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
)


NO_RATIO = {"errors", "proxy_busy_pct"}


def _value(results: dict, target: str, test: str, key: str):
    return results.get(target, {}).get(test, {}).get(key)


def ratios(results: dict) -> dict:
    out = {}
    for _, test, key, _, _ in ROWS:
        if key in NO_RATIO:
            continue
        p, n = _value(results, "postern", test, key), _value(results, "nginx", test, key)
        if isinstance(p, (int, float)) and isinstance(n, (int, float)) and n:
            out[f"{test}.{key}"] = round(p / n, 3)
    return out


def table(report: dict) -> str:
    results, targets = report["targets"], list(report["targets"])
    heads = ["", *targets] + (["postern/nginx"] if {"postern", "nginx"} <= set(targets) else [])
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
        if len(heads) > len(targets) + 1:
            r = report["ratios"].get(f"{test}.{key}")
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
                 "release_wait",
                 "pin")}
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
            fakes["auth"] = procs.FakeProcess(
                "postern.fakes.auth", ["--user", f"{USER}:{PASSWORD}", *backends],
                workdir / "auth.log")
            for name in args.targets:
                try:
                    report["targets"][name] = run_target(name, loop, fakes, args, workdir)
                except Exception as exc:  # noqa: BLE001 - a target that fails: say so, go on
                    report["targets"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                    print(f"{name}: failed: {exc}", file=sys.stderr)
        finally:
            for fake in fakes.values():
                fake.stop()
            loop.close()
            asyncio.set_event_loop(None)
    report["ratios"] = ratios(report["targets"])
    print()
    print(table(report))
    for note in notes:
        print(f"note: {note}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {args.output}")
    return 0


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
