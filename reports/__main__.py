"""`python -m postern.reports [--out results/report.html]`: render the latest results into one HTML
file and print its path. Each input defaults to the newest of its kind under --results;
name one explicitly to pick another run, or pass "" to leave it out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from postern.reports.render import RESULTS, Inputs, render_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m postern.reports", description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS,
                   help="where to look for the latest results (default: results/)")
    p.add_argument("--out", type=Path, default=None,
                   help="the HTML file to write (default: RESULTS/report.html)")
    p.add_argument("--locust", help="a locust --csv prefix (default: the newest *_stats.csv)")
    p.add_argument("--bench", help="bench.json (default: RESULTS/bench.json)")
    p.add_argument("--junit", help="pytest JUnit XML (default: RESULTS/junit.xml)")
    p.add_argument("--scenarios", help="the scenario runner's scenarios.json "
                   "(default: RESULTS/scenarios.json)")
    p.add_argument("--check-auth", help="check-auth --json output "
                   "(default: the newest RESULTS/check-auth*.json)")
    p.add_argument("--title", default="Postern results")
    args = p.parse_args(argv)
    inputs = Inputs.latest(args.results)
    for name in ("locust", "bench", "junit", "scenarios", "check_auth"):
        given = getattr(args, name)
        if given is not None:
            setattr(inputs, name, Path(given) if given else None)
    out = render_report(inputs, args.out or args.results / "report.html", args.title)
    found = [n for n in ("locust", "bench", "junit", "scenarios", "check_auth") if getattr(inputs, n)]
    print(f"report: {out}  (from {', '.join(found) or 'no results'})", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
