"""Time the runner's store lookups and writes: microseconds per call, answered or from the store.

    python -m bench.store_calls [--n 20000] [--off-loop]

A model that answers at once leaves only the runner's own work per call: the first
pass calls and stores every answer, the second finds each in the store. Without a store
the same calls give the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.llm.runner import LLMRunner
from pipeline.result_store import ResultStore


class _Instant:
    """A model that answers every prompt at once."""

    async def acomplete(self, prompt: Any, max_tokens: int) -> tuple[str, dict[str, Any]]:
        return "an answer", {"input_tokens": 10, "output_tokens": 2, "finish_reason": "stop"}


async def _pass(runner: LLMRunner, n: int, concurrency: int) -> float:
    """Seconds per call for `n` calls, `concurrency` at a time."""
    started = time.perf_counter()
    for i in range(0, n, concurrency):
        await asyncio.gather(*(runner.complete("map", f"prompt {j}", 64, "map", key=runner.key("map", 64, str(j)))
                               for j in range(i, min(n, i + concurrency))))
    return (time.perf_counter() - started) / n


async def _measure(n: int, concurrency: int, off_loop: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        bare = LLMRunner(_Instant(), concurrency=concurrency, timeout=10, max_retries=0, count_tokens=len)
        floor = await _pass(bare, n, concurrency)
        store = ResultStore(Path(folder) / "store.sqlite", off_loop=off_loop)
        runner = LLMRunner(_Instant(), concurrency=concurrency, timeout=10, max_retries=0, count_tokens=len,
                           store=store, identity="bench")
        stored = await _pass(runner, n, concurrency)
        found = await _pass(runner, n, concurrency)
        await store.aclose()
    return {"floor_us": round(floor * 1e6, 1), "store_miss_us": round(stored * 1e6, 1),
            "store_hit_us": round(found * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--c", type=int, default=256, help="calls at a time")
    parser.add_argument("--off-loop", action="store_true", help="the store's worker-thread mode")
    args = parser.parse_args()
    print(json.dumps({"n": args.n, "off_loop": args.off_loop, **asyncio.run(_measure(args.n, args.c, args.off_loop))}))


if __name__ == "__main__":
    main()
