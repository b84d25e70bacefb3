"""The map phase through Ray against in-process: wall against the ideal, same calls, same store.

    python -m bench.ray_engine                  # N=20,000, C=256, L=100 ms
    python -m bench.ray_engine --n 2000 --actors 2

The bench's fake server (bench.fake_server) runs in a child process on 127.0.0.1 with a
fixed latency L. N small files are written to a temp dir and summarized twice, each into
a fresh store: in this process (`engine="local"`), then on a local Ray instance of this
machine's CPUs (`engine="ray"`), started before the clock runs (its start is printed on
its own). Each engine first summarizes a few documents to warm up (imports, tokenizer
tables, Ray's task workers); Ray's call actors start anew with every run, and that
start is part of its wall. The ideal is ceil(calls / C) * L per phase (map, each collapse
level, final). Printed per engine: wall, ideal, their ratio, map and reduce seconds,
calls the server saw; then whether the summaries, the server's call counts and the two
stores' contents (every result and document row, timestamps aside) are the same.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.docs import write_docs
from bench.fake_server import BenchServer
from bench.scenario import MODEL, _LevelCalls, ideal_seconds


def _store_rows(path: Path) -> tuple[list[Any], list[Any]]:
    """A store's results and documents, sorted, without timestamps."""
    db = sqlite3.connect(path)
    try:
        return (sorted(db.execute("SELECT key, step, text, tokens_in, tokens_out FROM results")),
                sorted(db.execute("SELECT source, sha256, status, summary, error, chunks, tokens_in, tokens_out, "
                                  "kind FROM documents")))
    finally:
        db.close()


async def _run(paths: list[str], server: BenchServer, args: argparse.Namespace, engine: str,
               store: Path) -> dict[str, Any]:
    """Summarize `paths` with one engine; return its timings, phases and the server's call count."""
    from graphs import Context, graph

    levels = _LevelCalls()
    logger = logging.getLogger("graphs.graph")
    logger.addHandler(levels)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    context = Context(base_url=server.base_url, model=MODEL, concurrency=args.c, timeout=60.0, max_retries=2,
                      language="en", store_path=str(store), engine=engine, ray_actors=args.actors)
    await server.areset_stats()
    started = time.monotonic()
    try:
        out = await graph.ainvoke({"paths": paths}, context=context)
    finally:
        logger.removeHandler(levels)
    wall = time.monotonic() - started
    stats = out["stats"]
    phases = [stats["llm_calls"]["map"], *levels.calls, stats["llm_calls"]["final"]]
    ideal = ideal_seconds(phases, args.c, args.l)
    server_stats = await server.astats()
    return {"engine": engine, "wall_s": wall, "ideal_s": ideal, "ratio": wall / ideal, "phases": phases,
            "map_s": stats["map_seconds"], "reduce_s": stats["reduce_seconds"], "calls": server_stats["chat_calls"],
            "peak": server_stats["peak_in_flight"], "ok": sum(r["status"] == "ok" for r in out["results"]),
            "summary": out["summary"]}


async def measure(args: argparse.Namespace) -> int:
    """Run both engines on the same files; print a table and the equality checks."""
    import ray

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp, \
            BenchServer(latency=args.l, record_bodies=False, reduce_reply_chars=600) as server:
        root = Path(tmp)
        paths = write_docs(root / "docs", args.n)
        warm = write_docs(root / "warm", 8)
        started = time.monotonic()
        ray.init(include_dashboard=False, logging_level="ERROR", _node_ip_address="127.0.0.1")  # loopback only
        print(f"local Ray instance started in {time.monotonic() - started:.1f} s "
              f"({ray.cluster_resources().get('CPU', 0):.0f} CPUs)", flush=True)
        rows = []
        try:
            for engine in ("local", "ray"):
                await _run(warm, server, args, engine, root / f"warm-{engine}.sqlite")
                rows.append(await _run(paths, server, args, engine, root / f"{engine}.sqlite"))
                r = rows[-1]
                print(f"{engine:<6} N={args.n} C={args.c} L={args.l * 1000:.0f}ms  wall {r['wall_s']:6.2f} s  "
                      f"ideal {r['ideal_s']:6.2f} s  wall/ideal {r['ratio']:.2f}  map {r['map_s']:.2f} s  "
                      f"reduce {r['reduce_s']:.2f} s  calls {r['calls']} (phases {r['phases']})  "
                      f"ok {r['ok']}  server peak in flight {r['peak']}", flush=True)
        finally:
            ray.shutdown()
        local, on_ray = rows
        same_store = _store_rows(root / "local.sqlite") == _store_rows(root / "ray.sqlite")
    print(f"same calls: {local['calls'] == on_ray['calls']} ({local['calls']} / {on_ray['calls']}); "
          f"same store contents: {same_store}; same summary: {local['summary'] == on_ray['summary']}; "
          f"Ray wall / in-process wall: {on_ray['wall_s'] / local['wall_s']:.2f}")
    return 0 if same_store and local["calls"] == on_ray["calls"] else 1


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run the comparison."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000, help="documents (one map call each)")
    p.add_argument("--c", type=int, default=256, help="concurrency: most calls in flight, all actors together")
    p.add_argument("--l", type=float, default=0.1, help="fake server latency per call, seconds")
    p.add_argument("--actors", type=int, default=None, help="Ray call actors (default: one per CPU)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return asyncio.run(measure(args))


if __name__ == "__main__":
    raise SystemExit(main())
