"""Time from starting the CLI to its first chat request, and to its exit, on many small files.

    python -m bench.first_call                  # 200,000 files of ~50 bytes, C=256, L=100 ms
    python -m bench.first_call --n 20000
    python -m bench.first_call --first-only    # stop the CLI once its first request has left
    python -m bench.first_call --first-only --src /path/to/other/checkout

The CLI runs as its own process (imports included) against the fake server in another
child process on 127.0.0.1; this process polls the server's counters every 10 ms, so
the first-request figure is good to about that. Nothing is asserted: figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.fake_server import BenchServer

ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.01
TIMEOUT_S = 1800


def write_small_files(folder: Path, n: int) -> None:
    """Write `n` one-line reports, 5,000 to a folder."""
    for i in range(n):
        sub = folder / f"d{i // 5000:03d}"
        if i % 5000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"r{i:06d}.txt").write_text(f"Report {i}: the depot moved {i % 97} crates.\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="number of files")
    p.add_argument("--c", type=int, default=256, help="concurrency")
    p.add_argument("--l", type=float, default=0.1, help="server latency, seconds")
    p.add_argument("--first-only", action="store_true", help="stop the CLI (SIGTERM) after its first request")
    p.add_argument("--src", type=Path, default=ROOT, help="checkout whose run.py to measure")
    args = p.parse_args(argv)
    src = args.src.resolve()
    with tempfile.TemporaryDirectory(prefix="bench-first-") as tmp, \
            BenchServer(latency=args.l, record_bodies=False, reduce_reply_chars=600) as server:
        folder = Path(tmp) / "in"
        write_small_files(folder, args.n)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env["PYTHONPATH"] = str(src)  # ahead of the editable install
        argv_cli = [sys.executable, str(src / "run.py"), str(folder), "--base-url", server.base_url,
                    "--concurrency", str(args.c), "--language", "en", "-q"]
        start = time.monotonic()
        proc = subprocess.Popen(argv_cli, cwd=src, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        first = None
        while proc.poll() is None and time.monotonic() - start < TIMEOUT_S:
            if first is None and server.stats()["chat_calls"] > 0:
                first = time.monotonic() - start
                if args.first_only:
                    proc.terminate()
            time.sleep(POLL_S if first is None else 0.5)
        if proc.poll() is None:
            proc.kill()
        wall = time.monotonic() - start
        err = proc.stderr.read().decode() if proc.stderr else ""
        stats = server.stats()
    print(json.dumps({"files": args.n, "c": args.c, "l": args.l, "first_request_s": round(first or -1, 2),
                      "wall_s": round(wall, 2), "ideal_map_s": round(-(-args.n // args.c) * args.l, 2),
                      "chat_calls": stats["chat_calls"], "exit": proc.returncode,
                      **({"stderr": err.strip().splitlines()[-1:]} if proc.returncode and not args.first_only
                         else {})}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
