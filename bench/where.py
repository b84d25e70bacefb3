"""Where the CLI's CPU goes: the whole process sampled by py-spy, its samples split by what the code does.

    python -m bench.where                       # 20,000 files, C=256, L=100 ms
    python -m bench.where --n 5000 --keep /tmp/where.raw

Runs `python run.py FOLDER --base-url ... --concurrency C --language en --no-adapt` under
`py-spy record` (sampling every thread, idle time left out) against the bench's fake server,
then puts each sample in the area of its innermost frame that belongs to one (a sample
under an import is the import's),
and prints each area's share of the samples and its CPU per call: that share of the CPU
time of the same command run once more without py-spy (the kernel's account of the
reaped child) over the calls the server saw. Needs py-spy (`pip install py-spy`) and
permission to trace a child process. Nothing is asserted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.docs import write_docs
from bench.fake_server import BenchServer
from bench.process import scenario_parser, timed

ROOT = Path(__file__).resolve().parent.parent
# (area, pieces of a frame's file path that put a sample there).
AREAS = (
    ("imports", ("<frozen importlib",)),
    ("answer checks (grounding, cleaning, tags)", ("pipeline/answers/",)),
    ("reading and planning files", ("pipeline/text/", "pipeline/planning.py")),
    ("grouping related documents", ("pipeline/grouping.py",)),
    ("HTTP client (ours and aiohttp, JSON)", ("pipeline/llm/client.py", "pipeline/llm/answer.py", "aiohttp/",
                                             "json/")),
    ("result store", ("pipeline/result_store.py", "pipeline/store_thread.py", "sqlite3")),
    ("calls: runner, limits, prompts", ("pipeline/llm/", "pipeline/prompting.py")),
    ("map and reduce steps", ("pipeline/summarize.py",)),
    ("progress, events, report", ("pipeline/progress.py", "tqdm/", "pipeline/outcome.py", "pipeline/report.py",
                                  "pipeline/logs.py", "logging/")),
    ("LangGraph and the graph's nodes", ("langgraph/", "graphs/", "langchain_core/")),
)
OTHER = "event loop and the rest"


def area_of(stack: str) -> str:
    """The area of a sample's stack (py-spy raw: frames joined by ';', outermost first): its innermost frame's."""
    if AREAS[0][1][0] in stack:
        return AREAS[0][0]
    for frame in reversed(stack.split(";")):
        for area, pieces in AREAS[1:]:
            if any(piece in frame for piece in pieces):
                return area
    return OTHER


def shares(raw: str) -> tuple[Counter[str], int]:
    """Samples per area in py-spy's raw output, and their total."""
    found: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            found[area_of(stack)] += int(count)
            total += int(count)
    return found, total


def main(argv: list[str] | None = None) -> int:
    """Run the CLI once under py-spy and print each area's share of its CPU."""
    p = scenario_parser(__doc__)
    p.add_argument("--rate", type=int, default=200, help="samples a second")
    p.add_argument("--keep", type=Path, help="keep py-spy's raw samples here")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryDirectory(prefix="bench-where-") as tmp, \
            BenchServer(latency=args.l, record_bodies=False, reduce_reply_chars=600) as server:
        folder, raw = Path(tmp) / "in", args.keep or Path(tmp) / "samples.raw"
        write_docs(folder, args.n)
        cli = [sys.executable, str(ROOT / "run.py"), str(folder), "--base-url", server.base_url,
               "--concurrency", str(args.c), "--language", "en", "--no-adapt", "--quiet"]
        plain = timed(cli, server, env, ROOT)  # the CLI's own CPU, without py-spy beside it
        if plain["exit"] != 0:
            print(f"the CLI exited with {plain['exit']}: {plain['stderr'].strip()[-300:]}", file=sys.stderr)
            return 1
        done = subprocess.run([spy, "record", "--rate", str(args.rate), "--format", "raw", "--output", str(raw),
                               "--", *cli], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=900, check=False)
        if done.returncode != 0:
            print(done.stderr.decode("utf-8", "replace")[-500:], file=sys.stderr)
            return 1
        found, total = shares(raw.read_text(encoding="utf-8"))
    per_call = plain["cpu_ms_per_call"]
    print(f"{args.n} files, C={args.c}, L={args.l * 1000:.0f} ms: {plain['calls']} calls, "
          f"{per_call:.3f} ms of CPU a call; {total} samples under py-spy")
    for area, _ in (*AREAS, (OTHER, ())):
        share = found[area] / max(total, 1)
        print(f"  {share:6.1%}  {share * per_call:.3f} ms/call  {area}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
