"""Run N documents with and without a memory limit; print peak RSS against the limit and wall against no limit.

    python -m bench.memory                       # N=20,000, C=256, L=100 ms, limits 40 and 80 MB above the start
    python -m bench.memory --n 5000 --headroom 40,60,100

Each run is a fresh interpreter (`bench.scenario`, files in a temp dir, the fake server in
a child process on 127.0.0.1). The limit of a run is its RSS just before the run plus the
headroom, as `--memory-limit-mb` counts it (absolute, with the soft limit at 85% of the
room above the start). A run that passes its hard limit stops, and shows as such.
"""

from __future__ import annotations

import argparse
import sys

from bench.run import Scenario, run_scenario


def _row(label: str, r: dict, base_wall: float | None) -> str:
    if "error" in r:
        return f"{label:<10} stopped: {r['error'][-150:]}"
    m = r["memory"]
    limit = f"{m['limit_mb']:.0f}" if m["limit_mb"] else "-"
    soft = f"{m['soft_limit_mb']:.0f}" if m["soft_limit_mb"] else "-"
    vs = f"{r['wall_s'] / base_wall:.2f}" if base_wall else "1.00"
    lowest = m["lowest"]
    return (f"{label:<10} {r['n']:>6} {r['ok']:>6} {m['start_rss_mb']:>8.0f} {soft:>6} {limit:>6} "
            f"{r['peak_rss_mb']:>7.0f} {m['steered_down']:>5} {m['steered_up']:>4} "
            f"{lowest.get('concurrency', '-'):>6} {lowest.get('shard_slots', '-'):>6} "
            f"{r['server_peak_in_flight']:>8} {r['wall_s']:>7.2f} {vs:>8}")


def main(argv: list[str] | None = None) -> int:
    """Run the unlimited baseline, then one run per headroom; print one line each."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--c", type=int, default=256)
    p.add_argument("--l", type=float, default=0.1)
    p.add_argument("--headroom", default="40,80", help="MB above the start RSS, comma-separated")
    args = p.parse_args(argv)
    s = Scenario("memory", args.n, args.c, args.l)
    print(f"{'limit':<10} {'N':>6} {'ok':>6} {'start MB':>8} {'soft':>6} {'limit':>6} {'peak MB':>7} "
          f"{'down':>5} {'up':>4} {'low C':>6} {'low sh':>6} {'srv peak':>8} {'wall s':>7} {'x none':>8}",
          flush=True)
    base = run_scenario(s, "pipeline")
    print(_row("none", base, None), flush=True)
    base_wall = base.get("wall_s")
    for headroom in (float(h) for h in args.headroom.split(",") if h):
        r = run_scenario(s, "pipeline", extra=["--memory-headroom-mb", str(headroom)])
        print(_row(f"+{headroom:g} MB", r, base_wall), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
