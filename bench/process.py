"""Time the CLI as a whole process, start to exit with imports, against a bare floor process.

    python -m bench.process                     # 20,000 files, C=256, L=100 ms, 3 rounds
    python -m bench.process --n 5000 --repeat 1

Each round runs `python run.py FOLDER --base-url ... --concurrency C --language en` as a
child process, then `python -m bench.floor` (asyncio + aiohttp only) making the same calls
per phase, both against one fake server in its own child process on 127.0.0.1. A round
prints both walls (from spawning the child to reaping it), their ratio, each child's CPU
per call and peak RSS (from the kernel's accounting of the reaped child), and when its
first chat request reached the server (polled every 10 ms). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.docs import write_docs
from bench.fake_server import BenchServer

ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.01
TIMEOUT_S = 900
# The graph logs one line per collapse level: "collapse level 2: 120 summaries -> 14 in 13 calls".
_LEVEL = re.compile(r"collapse level \d+: \d+ summaries -> \d+ in (\d+) calls")


def timed(argv: list[str], server: BenchServer, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run one child to its exit; return wall, first request, CPU, peak RSS, exit code and stderr."""
    server.reset_stats()
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = None
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)  # drained while polling, so a chatty child never blocks
    err = b""
    while first is None and time.monotonic() - start < TIMEOUT_S:
        err += proc.stderr.read() or b""
        if server.stats()["chat_calls"] > 0:
            first = time.monotonic() - start
        elif proc.poll() is not None:
            break
        else:
            time.sleep(POLL_S)
    os.set_blocking(proc.stderr.fileno(), True)
    err += proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    calls = server.stats()["chat_calls"]
    return {"wall_s": round(wall, 3), "first_request_s": round(first or -1, 3),
            "exit": os.waitstatus_to_exitcode(status), "calls": calls,
            "cpu_ms_per_call": round(1000 * (usage.ru_utime + usage.ru_stime) / max(calls, 1), 3),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stderr": err.decode("utf-8", "replace")}


def phases_of(stderr: str, calls: int) -> list[int]:
    """The CLI's calls per phase: map, each collapse level (from its log lines), final."""
    levels = [int(n) for n in _LEVEL.findall(stderr)]
    return [calls - sum(levels) - 1, *levels, 1]


def scenario_parser(doc: str) -> argparse.ArgumentParser:
    """A parser described by `doc`'s first line, with the scenario's options: files, concurrency, latency."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000, help="files")
    p.add_argument("--c", type=int, default=256, help="concurrency")
    p.add_argument("--l", type=float, default=0.1, help="server latency, seconds")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print one JSON line per process, then the best and median ratios."""
    p = scenario_parser(__doc__)
    p.add_argument("--repeat", type=int, default=3, help="rounds of CLI then floor")
    p.add_argument("--src", type=Path, default=ROOT, help="checkout whose run.py to measure")
    p.add_argument("--no-adapt", action="store_true",
                   help="hold the CLI at C calls in flight from the start, as the floor is (its own client's cost "
                        "alone, without the adaptive limit's search for the server's capacity)")
    args = p.parse_args(argv)
    src = args.src.resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["PYTHONPATH"] = os.pathsep.join([str(src), str(ROOT)])
    rows: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-process-") as tmp, \
            BenchServer(latency=args.l, record_bodies=False, reduce_reply_chars=600) as server:
        folder = Path(tmp) / "in"
        write_docs(folder, args.n)
        print(f"code under test: {src}; {args.n} files, C={args.c}, L={args.l * 1000:.0f} ms", flush=True)
        for round_ in range(1, args.repeat + 1):
            cli = timed([sys.executable, str(src / "run.py"), str(folder), "--base-url", server.base_url,
                         "--concurrency", str(args.c), "--language", "en", *(["--no-adapt"] if args.no_adapt else [])],
                        server, env, src)
            if cli["exit"] != 0:
                print(json.dumps({"round": round_, "mode": "cli", "error": cli["stderr"].strip()[-300:]}))
                return 1
            phases = phases_of(cli["stderr"], cli["calls"])
            floor = timed([sys.executable, "-m", "bench.floor", str(folder), "--base-url", server.base_url,
                           "--c", str(args.c), "--phases", ",".join(map(str, phases))], server, env, ROOT)
            for mode, row in (("cli", cli), ("floor", floor)):
                row.pop("stderr")
                print(json.dumps({"round": round_, "mode": mode, "phases": phases, **row,
                                  **({"x_floor": round(cli["wall_s"] / floor["wall_s"], 3)} if mode == "cli" else {})}),
                      flush=True)
            rows.append((cli["wall_s"], floor["wall_s"]))
    ratios = [c / f for c, f in rows]
    best_cli, best_floor = min(c for c, _ in rows), min(f for _, f in rows)
    print(f"process wall / floor: median of rounds {statistics.median(ratios):.3f}, "
          f"best ({best_cli:.2f} s / {best_floor:.2f} s) {best_cli / best_floor:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
