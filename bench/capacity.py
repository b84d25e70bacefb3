"""Default settings against servers that batch and queue: throughput against the best fixed concurrency.

    python -m bench.capacity                      # every profile, about four minutes on 2 cores
    python -m bench.capacity --profile small      # one of them
    python -m bench.capacity --profile big --sweep 16,96 --n 3000

The fake server (the tests' FakeOpenAI in a child process, `--slots`) serves at most S
requests at once, each taking `latency * (1 + (batch - 1) / S)`, and queues the rest in
order; it never answers 429. Each profile runs the real graph once with default settings
(the limit starts at 4 and follows the server) and once per fixed `--concurrency` of the
sweep (`adapt_concurrency=False`), and prints map throughput, the server's p50/p95
latency (queueing included), its peak queue and the requests it finished after the
client had given up. Profiles: `big` (S=96, a GPU server), `small` (S=4, llama.cpp's
slots) and `shared` (S=32, halved for a while mid-run, as when another job shares the
server); `shared` also prints how long the queue took to drain after the drop.
A fixed run makes fewer calls (it needs no ramp-up; its rate is what counts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from bench.docs import make_texts
from bench.fake_server import BenchServer

MODEL = "fake-model"


@dataclass(frozen=True)
class Profile:
    """A server's slots, its per-request latency alone, calls to make and its capacity changes (s, slots)."""

    slots: int
    n: int
    changes: tuple[tuple[float, int], ...] = ()


PROFILES = {
    "big": Profile(slots=96, n=4000),
    "small": Profile(slots=4, n=300),
    "shared": Profile(slots=32, n=1800, changes=((8.0, 16), (18.0, 32))),
}


def full_batch(slots: int, latency: float) -> float:
    """The service time of a request in a full batch."""
    return latency * (1 + (slots - 1) / slots)


async def _watch(server: BenchServer, changes: tuple[tuple[float, int], ...],
                 samples: list[tuple[float, int, int]], stop: asyncio.Event) -> None:
    """Apply the capacity changes on time; sample (seconds, serving, queued) every 0.25 s."""
    start, pending = time.monotonic(), list(changes)
    for _ in range(4 * 600):  # ten minutes at most
        now = time.monotonic() - start
        while pending and pending[0][0] <= now:
            await asyncio.to_thread(server.set_slots, pending.pop(0)[1])
        stats = await server.astats()
        samples.append((now, stats["serving"], stats["queued"]))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)
        if stop.is_set():
            return


async def run_once(server: BenchServer, profile: Profile, n: int, concurrency: int | None,
                   timeout: float) -> dict[str, Any]:
    """Run the graph on `n` documents, with default settings (None) or a fixed concurrency; measure."""
    from graphs import Context, graph

    await asyncio.to_thread(server.set_slots, profile.slots)
    await server.areset_stats()
    fixed = {} if concurrency is None else {"concurrency": concurrency, "adapt_concurrency": False}
    context = Context(base_url=server.base_url, model=MODEL, language="en", timeout=timeout, **fixed)
    samples: list[tuple[float, int, int]] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(server, profile.changes, samples, stop))
    try:
        out = await graph.ainvoke({"texts": make_texts(n)}, context=context)
    finally:
        stop.set()
        await watcher
    stats, served = out["stats"], await server.astats()
    return {
        "concurrency": "default" if concurrency is None else concurrency,
        "ok": sum(r["status"] == "ok" for r in out["results"]), "n": n,
        "throughput": round(stats["llm_calls"]["map"] / stats["map_seconds"], 1),
        "p50_s": served["latency_p50"], "p95_s": served["latency_p95"], "peak_queue": served["peak_queue"],
        "peak_serving": served["peak_serving"], "abandoned": served["abandoned"],
        "retries": stats["retries"], "settled": stats.get("concurrency_settled"),
        "drain_s": _drain_seconds(samples, profile),
    }


def _drain_seconds(samples: list[tuple[float, int, int]], profile: Profile) -> float | None:
    """Seconds from the first capacity drop until the server's queue stays at most a quarter of its slots."""
    drops = [(t, s) for t, s in profile.changes if s < profile.slots]
    if not drops:
        return None
    at, slots = drops[0]
    after = [(t, queued) for t, _, queued in samples if t >= at]
    ends = [t for t, _ in profile.changes if t > at]
    window = [(t, q) for t, q in after if not ends or t < ends[0]]
    late = [t for t, q in window if q > slots / 4]
    return round((late[-1] if late else at) - at, 2)


async def run_profile(name: str, profile: Profile, sweep: list[int], latency: float, timeout: float,
                      n: int | None) -> list[dict[str, Any]]:
    """Run the defaults and each fixed concurrency against one server; return the rows."""
    total = n or profile.n
    with BenchServer(latency=latency, record_bodies=False, reduce_reply_chars=600, slots=profile.slots) as server:
        from graphs import Context, graph

        await graph.ainvoke({"texts": make_texts(4)}, context=Context(base_url=server.base_url, model=MODEL,
                                                                      language="en"))  # warm-up
        rows = [await run_once(server, profile, total, None, timeout)]
        for c in sweep:
            shorter = total if profile.changes else min(total, max(120, 30 * min(c, profile.slots)))
            rows.append(await run_once(server, profile, shorter, c, timeout))
    best = max(rows[1:], key=lambda r: r["throughput"], default=None)
    for row in rows:
        row["profile"], row["slots"] = name, profile.slots
        row["vs_best_fixed"] = round(row["throughput"] / best["throughput"], 2) if best else None
        row["p95_vs_full_batch"] = round(row["p95_s"] / full_batch(profile.slots, latency), 2) if row["p95_s"] else None
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    print(f"{'profile':8} {'S':>3} {'conc.':>8} {'calls/s':>8} {'vs best':>7} {'p50 s':>6} {'p95 s':>6} "
          f"{'p95/full':>8} {'queue':>5} {'serving':>7} {'abandoned':>9} {'drain s':>7}")
    for r in rows:
        print(f"{r['profile']:8} {r['slots']:>3} {r['concurrency']!s:>8} {r['throughput']:>8} "
              f"{r['vs_best_fixed']!s:>7} {r['p50_s']!s:>6} {r['p95_s']!s:>6} {r['p95_vs_full_batch']!s:>8} "
              f"{r['peak_queue']:>5} {r['peak_serving']:>7} {r['abandoned']:>9} {r['drain_s']!s:>7}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the chosen profiles and print one table (and JSON lines with --json)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=[*PROFILES, "all"], default="all")
    p.add_argument("--sweep", default="", help="fixed concurrencies to compare with (default 4,16,96; "
                                               "16,32 for shared)")
    p.add_argument("--latency", type=float, default=0.2, help="a request's service time alone, seconds")
    p.add_argument("--timeout", type=float, default=30.0, help="--timeout of every run")
    p.add_argument("--n", type=int, help="documents per run (default: the profile's)")
    p.add_argument("--json", action="store_true", help="also print every row as a JSON line")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = list(PROFILES) if args.profile == "all" else [args.profile]
    rows: list[dict[str, Any]] = []
    for name in names:
        sweep = [int(c) for c in args.sweep.split(",") if c] or ([16, 32] if PROFILES[name].changes else [4, 16, 96])
        rows += asyncio.run(run_profile(name, PROFILES[name], sweep, args.latency, args.timeout, args.n))
    _print(rows)
    if args.json:
        for row in rows:
            print(json.dumps(row))


if __name__ == "__main__":
    main()
