"""`make fuzz`: every property test of tests/test_fuzz.py fed 10^6 buffers through
hypothesis's entry point for external fuzzers, `.hypothesis.fuzz_one_input`.

hypothesis stays the engine of record (the buffer is its choice sequence, a failure goes
to .hypothesis/ like any other, and the next `pytest tests/test_fuzz.py` replays and shrinks
it); this driver only replaces hypothesis's own generation loop, which spends most of its
time on bookkeeping a fuzzer does not need. Inputs are fresh random buffers mixed with
mutations (flips, inserts, deletes, splices) of a small corpus of earlier valid buffers.
atheris would add coverage feedback, but its wheels exist for Linux x86-64 only, and here
hypothesis's draws, not the code under test, take most of each input's time.

    python -m tests.fuzz [--inputs N] [--jobs J] [--seed S] [TARGET ...]
    python -m tests.fuzz --replay results/fuzz/TARGET-HASH.bin

Each target is cut into shards run by J processes; a progress line per target reports the
inputs run and the rate. A failing buffer is written to results/fuzz/ with the one-line
command that replays it, and the run exits 1.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import queue
import random
import signal
import sys
import time
import traceback

# the profile with hypothesis's example database on (set before tests.test_fuzz is imported)
os.environ.setdefault("HYPOTHESIS_PROFILE", "fuzz")
OUT = os.path.join("results", "fuzz")
CORPUS = 256  # earlier valid buffers kept for mutation
TAIL = 512  # random bytes after a mutant, so that a longer draw does not run out


class Hang(Exception):
    """An input that ran longer than --timeout seconds."""


def targets() -> dict[str, object]:
    from tests import test_fuzz
    return {name[5:]: fn for name, fn in sorted(vars(test_fuzz).items())
            if name.startswith("test_") and hasattr(fn, "hypothesis")}


def mutate(rng: random.Random, buf: bytes, corpus: list[bytes]) -> bytes:
    b = bytearray(buf)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:  # a bit
            b[pos % len(b)] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # a byte: extremes move a draw to its bounds
            b[pos % len(b)] = rng.choice((0, 0xFF, rng.randrange(256)))
        elif op == 2:
            b[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:
            del b[pos:pos + rng.randint(1, 16)]
        elif op == 4 and b:  # repeat a stretch: more of the same list element
            n = rng.randint(1, 32)
            b[pos:pos] = b[pos:pos + n]
        else:  # splice another buffer in
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            b[pos:] = other[cut:]
    return bytes(b) + rng.randbytes(TAIL)


def run_shard(target: str, shard: int, n: int, seed: int, timeout: float, progress) -> dict:
    fuzz_one_input = targets()[target].hypothesis.fuzz_one_input
    rng = random.Random(f"{seed}:{target}:{shard}")
    corpus: list[bytes] = []

    def on_alarm(_sig, _frame):
        raise Hang(f"one input ran longer than {timeout:g}s")

    signal.signal(signal.SIGALRM, on_alarm)
    start = last = time.monotonic()
    valid = 0
    progress.put((target, shard, 0, 0))
    for done in range(n):
        if corpus and rng.random() < 0.6:
            buf = mutate(rng, rng.choice(corpus), corpus)
        else:
            buf = rng.randbytes(rng.choice((32, 128, 512, 2048, 8192)))
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            kept = fuzz_one_input(buf)
        except BaseException as e:  # noqa: BLE001 - every exception is a finding
            signal.setitimer(signal.ITIMER_REAL, 0)
            os.makedirs(OUT, exist_ok=True)
            path = os.path.join(OUT, f"{target}-{hashlib.sha1(buf).hexdigest()[:12]}.bin")
            with open(path, "wb") as f:
                f.write(buf)
            where = traceback.extract_tb(e.__traceback__)[-1]
            error = "".join(traceback.format_exception_only(e)).strip().splitlines()[-1]
            return {"target": target, "done": done + 1, "valid": valid,
                    "seconds": time.monotonic() - start, "failure": path,
                    "error": f"{error} at {where.filename}:{where.lineno}"}
        signal.setitimer(signal.ITIMER_REAL, 0)
        if kept is not None:
            valid += 1
            if len(corpus) < CORPUS:
                corpus.append(kept)
            elif rng.random() < 0.05:
                corpus[rng.randrange(CORPUS)] = kept
        if done & 1023 == 0 and (now := time.monotonic()) - last >= 5:
            last = now
            progress.put((target, shard, done, valid))
    return {"target": target, "done": n, "valid": valid,
            "seconds": time.monotonic() - start, "failure": None, "error": None}


def replay(path: str) -> int:
    """Run one saved buffer again, with hypothesis's report of the failure."""
    name = os.path.basename(path).rsplit("-", 1)[0]
    with open(path, "rb") as f:
        buf = f.read()
    result = targets()[name].hypothesis.fuzz_one_input(buf)
    print(f"{name}: {path} passes now" + (" (invalid input)" if result is None else ""))
    return 0


# A rough cost per input (targets that draw more run longer), to start the slow ones first.
COST = {"imap_dialogue": 3, "pop3_dialogue": 3, "smtp_dialogue": 3, "config_lexer_and_handlers": 3,
        "backend_logins": 2, "oauth_dialogues": 3, "oauth_backend_logins": 2, "auth_http_reply_parser": 1.5, "certificate_fields": 1.5}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", help="names as in test_fuzz.py without test_ (default: all)")
    ap.add_argument("--inputs", type=int, default=1_000_000, help="per target (default 10^6)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shards", type=int, default=0, help="per target (default: --jobs)")
    ap.add_argument("--seed", type=int, default=None, help="default: from the clock, printed")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds for one input")
    ap.add_argument("--replay", metavar="FILE")
    args = ap.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    known = targets()
    names = args.targets or list(known)
    if unknown := [n for n in names if n not in known]:
        ap.error(f"unknown target(s) {unknown}; known: {' '.join(known)}")
    seed = args.seed if args.seed is not None else int(time.time())
    shards = max(1, args.shards or args.jobs)
    work = [(name, i, args.inputs // shards + (i < args.inputs % shards))
            for name in names for i in range(shards)]
    work.sort(key=lambda w: -COST.get(w[0], 1) * w[2])
    print(f"fuzz: {len(names)} targets x {args.inputs:,} inputs, {args.jobs} processes, "
          f"seed {seed}", flush=True)

    ctx = multiprocessing.get_context("fork")
    progress = ctx.Manager().Queue()
    seen: dict[str, dict[int, tuple[int, int]]] = {n: {} for n in names}
    started: dict[str, float] = {}
    finished: dict[str, list[dict]] = {n: [] for n in names}
    t0 = time.monotonic()
    with ctx.Pool(args.jobs, maxtasksperchild=1) as pool:
        pending = [pool.apply_async(run_shard, (name, i, n, seed, args.timeout, progress))
                   for name, i, n in work]
        printed: dict[str, float] = {}
        while pending or not progress.empty():
            try:
                name, shard, done, valid = progress.get(timeout=1)
            except queue.Empty:
                pass
            else:
                started.setdefault(name, time.monotonic())
                seen[name][shard] = (done, valid)
                now = time.monotonic()
                if done and now - printed.get(name, 0) >= 30:
                    printed[name] = now
                    total = sum(d for d, _ in seen[name].values())
                    total += sum(r["done"] for r in finished[name])
                    print(f"fuzz {name}: {total:,}/{args.inputs:,} inputs, "
                          f"{total / (now - started[name]):,.0f}/s", flush=True)
            for res in [p for p in pending if p.ready()]:
                pending.remove(res)
                r = res.get()
                finished[r["target"]].append(r)
                if r["failure"]:
                    python = os.path.relpath(sys.executable)
                    print(f"fuzz {r['target']}: FAILED: {r['error']}\n  input saved as "
                          f"{r['failure']} (and in .hypothesis/)\n  replay: "
                          f"{python} -m tests.fuzz --replay {r['failure']}\n  or shrink: "
                          f"HYPOTHESIS_PROFILE=fuzz {python} -m pytest tests/test_fuzz.py "
                          f"-k {r['target']}", flush=True)
    wall = time.monotonic() - t0

    lines = [f"{'target':28} {'inputs':>10} {'valid':>10} {'shard s':>8} {'inputs/s':>9}"]
    failures = 0
    for name in names:
        rs = finished[name]
        done, valid = sum(r["done"] for r in rs), sum(r["valid"] for r in rs)
        cpu = sum(r["seconds"] for r in rs)
        failures += sum(bool(r["failure"]) for r in rs)
        lines.append(f"{name:28} {done:>10,} {valid:>10,} {cpu:>8.0f} {done / cpu:>9,.0f}")
    lines.append(f"wall time {wall:.0f} s on {args.jobs} processes, seed {seed}, "
                 f"{failures} failure(s)")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "summary.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
