"""Run the benchmark matrix, each scenario in a fresh subprocess, and print a table.

    python -m bench.run            # the full matrix (several minutes)
    python -m bench.run --quick    # N <= 1000, under a minute
    python -m bench.run --json out.jsonl   # also keep the raw measurements
    python -m bench.run --src /path/to/checkout   # benchmark another copy of the code

For every (N, C, L) the real pipeline runs first; the bare aiohttp floor then makes the
same number of calls per phase (map, each collapse level, final) with the same C.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_TIMEOUT_S = 900


@dataclass(frozen=True)
class Scenario:
    """One cell of the matrix."""

    name: str
    n: int
    c: int
    l: float
    input: str = "paths"
    token_max: int = 8000
    map_max_tokens: int = 400
    reduce_reply_chars: int = 600


FULL = [
    Scenario("n1k", 1000, 64, 0.1),
    Scenario("n5k", 5000, 256, 0.1),
    Scenario("n20k", 20000, 256, 0.1),
    Scenario("n20k-texts", 20000, 256, 0.1, input="texts"),
    Scenario("n5k-fast", 5000, 256, 0.02),
    # Forces several collapse levels: a small reduce budget holds few summaries per call.
    Scenario("collapse", 2000, 256, 0.1, token_max=1600, map_max_tokens=400, reduce_reply_chars=1200),
]
QUICK = [
    Scenario("n1k", 1000, 64, 0.1),
    Scenario("n1k-fast", 1000, 256, 0.02, input="texts"),
    Scenario("collapse", 1000, 256, 0.1, token_max=1600, map_max_tokens=400, reduce_reply_chars=1200),
]


def run_scenario(s: Scenario, mode: str, phases: list[int] | None = None, src: Path = ROOT,
                 extra: list[str] | None = None) -> dict[str, Any]:
    """Measure one scenario in a fresh interpreter, importing the code under `src`; return its JSON line."""
    argv = [sys.executable, "-m", "bench.scenario", "--mode", mode, "--n", str(s.n), "--c", str(s.c),
            "--l", str(s.l), "--input", s.input, "--token-max", str(s.token_max),
            "--map-max-tokens", str(s.map_max_tokens), "--reduce-reply-chars", str(s.reduce_reply_chars)]
    if phases:
        argv += ["--phases", ",".join(map(str, phases))]
    argv += extra or []
    # `src` comes first on sys.path (ahead of the editable install); `bench` itself from ROOT.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    done = subprocess.run(argv, cwd=src, env=env, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-5:]
        return {"mode": mode, "n": s.n, "c": s.c, "l": s.l, "error": " | ".join(tail) or f"exit {done.returncode}"}
    return json.loads(lines[-1])


COLUMNS = [
    ("scenario", 11, lambda r: r["scenario"]),
    ("mode", 8, lambda r: r["mode"]),
    ("N", 6, lambda r: r["n"]),
    ("C", 4, lambda r: r["c"]),
    ("L ms", 5, lambda r: round(r["l"] * 1000)),
    ("phases", 15, lambda r: "+".join(map(str, r["phases"]))),
    ("wall s", 7, lambda r: f"{r['wall_s']:.2f}"),
    ("ideal s", 7, lambda r: f"{r['ideal_s']:.2f}"),
    ("ratio", 6, lambda r: f"{r['wall_ratio']:.2f}"),
    ("x floor", 7, lambda r: f"{r['x_floor']:.2f}" if "x_floor" in r else "-"),
    ("map s", 6, lambda r: f"{r['map_s']:.2f}"),
    ("red. s", 6, lambda r: f"{r['reduce_s']:.2f}"),
    ("lvls", 4, lambda r: r["collapse_levels"]),
    ("cpu ms/call", 11, lambda r: f"{r['cpu_ms_per_call']:.3f}"),
    ("srv cpu ms", 10, lambda r: f"{r['server_cpu_ms_per_call']:.3f}"),
    ("peak MB", 7, lambda r: f"{r['peak_rss_mb']:.0f}"),
    ("B/doc", 6, lambda r: r["rss_growth_per_doc_b"]),
    ("net B/doc", 9, lambda r: r["rss_growth_net_per_doc_b"]),
    ("srv peak", 8, lambda r: r["server_peak_in_flight"]),
    ("conns", 5, lambda r: r["connections_opened"]),
]


def report_row(line: str, row: dict[str, Any], json_path: Path | None) -> None:
    """Print a table line now, and keep the raw measurement in `json_path` if given."""
    print(line, flush=True)
    if json_path:
        with json_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def format_row(row: dict[str, Any]) -> str:
    """One table line; a failed scenario shows its error instead."""
    if "error" in row:
        return f"{row['scenario']:<11} {row['mode']:<8} ERROR {row['error']}"
    return " ".join(f"{str(get(row)):>{width}}" if i > 1 else f"{str(get(row)):<{width}}"
                    for i, (_, width, get) in enumerate(COLUMNS))


def header() -> str:
    """The table's header line."""
    return " ".join(f"{name:>{width}}" if i > 1 else f"{name:<{width}}" for i, (name, width, _) in enumerate(COLUMNS))


def main(argv: list[str] | None = None) -> int:
    """Run the matrix and print the table (rows appear as scenarios finish)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small configuration, under a minute")
    p.add_argument("--only", default="", help="comma-separated scenario names to run")
    p.add_argument("--no-bare", action="store_true", help="skip the bare aiohttp floor")
    p.add_argument("--json", type=Path, help="append every raw measurement to this JSONL file")
    p.add_argument("--src", type=Path, default=ROOT, help="checkout whose graphs/pipeline to measure")
    args = p.parse_args(argv)
    matrix = QUICK if args.quick else FULL
    if args.only:
        matrix = [s for s in matrix if s.name in args.only.split(",")]
    print(f"code under test: {args.src.resolve()}", flush=True)
    print(header(), flush=True)
    for s in matrix:
        rows = [run_scenario(s, "pipeline", src=args.src.resolve())]
        if not args.no_bare and "error" not in rows[0]:
            rows.append(run_scenario(s, "bare", rows[0]["phases"], src=args.src.resolve()))
        if len(rows) == 2 and "error" not in rows[1]:
            rows[0]["x_floor"] = round(rows[0]["wall_s"] / rows[1]["wall_s"], 2)
            rows[1]["x_floor"] = 1.0
        for row in rows:
            row["scenario"] = s.name
            report_row(format_row(row), row, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
