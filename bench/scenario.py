"""Measure one benchmark scenario in this process and print one JSON line.

    python -m bench.scenario --mode pipeline --n 5000 --c 256 --l 0.1
    python -m bench.scenario --mode bare --n 5000 --c 256 --l 0.1 --phases 5000,20,1

`pipeline` runs the real graph (`graphs.graph` with `graphs.Context`); `bare` makes the
same number of chat calls, phase by phase, with a plain asyncio + aiohttp client (one
semaphore of C, one pooled TCPConnector): the floor the pipeline is compared with.
Either way the fake OpenAI-compatible server runs in a child process on 127.0.0.1 with a
fixed latency (bench.fake_server: the tests' FakeOpenAI, reduce answers of a fixed size), so its CPU is not charged to the client measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

import prompts
from bench.bare import map_messages, reduce_messages, split
from bench.docs import make_text, make_texts, write_docs
from bench.fake_server import BenchServer

MODEL = "fake-model"


def _peak_rss() -> int:
    """The kernel's high-water mark of this process's RSS, in bytes (Linux: ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def ideal_seconds(phases: list[int], concurrency: int, latency: float) -> float:
    """The physical limit: each phase needs ceil(calls / C) rounds of one latency each."""
    return sum(math.ceil(calls / concurrency) for calls in phases if calls) * latency


class _LevelCalls(logging.Handler):
    """Record each collapse level's call count from the graph's 'collapse level' log line."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.calls: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("collapse level") and record.args:
            self.calls.append(int(record.args[-1]))  # type: ignore[index]


def _context(args: argparse.Namespace, base_url: str, concurrency: int,
             memory_limit_mb: float | None = None) -> Any:
    from graphs import Context

    return Context(base_url=base_url, model=MODEL, concurrency=concurrency, token_max=args.token_max,
                   map_max_tokens=args.map_max_tokens, timeout=60.0, max_retries=2, language="en",
                   memory_limit_mb=memory_limit_mb)


async def _warm_up(args: argparse.Namespace, base_url: str) -> None:
    """One tiny run, so imports, BPE tables and first-call costs are not measured."""
    from graphs import graph

    await graph.ainvoke({"texts": make_texts(4, args.words)}, context=_context(args, base_url, 4))


async def run_pipeline(args: argparse.Namespace, base_url: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Run the real graph once; return its stats and the per-phase call counts."""
    from graphs import graph

    levels = _LevelCalls()
    logger = logging.getLogger("graphs.graph")
    logger.addHandler(levels)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if args.memory_headroom_mb:  # a run with a limit builds the tokenizer before it measures its start
        from pipeline.text.counting import token_counter

        token_counter(MODEL).preload()
    limit = args.memory_headroom_mb and psutil.Process().memory_info().rss / 2**20 + args.memory_headroom_mb
    out = await graph.ainvoke(inputs, context=_context(args, base_url, args.c, limit or None))
    stats = out["stats"]
    per_level = levels.calls
    if sum(per_level) != stats["llm_calls"]["collapse"]:  # the log line changed: one lump phase
        per_level = [stats["llm_calls"]["collapse"]] if stats["llm_calls"]["collapse"] else []
    summaries = [r["summary"] for r in out["results"] if r.get("summary")]
    return {
        "phases": [stats["llm_calls"]["map"], *per_level, stats["llm_calls"]["final"]],
        "ok": sum(r["status"] == "ok" for r in out["results"]),
        "summary_chars": sum(len(s) for s in summaries),
        "summary_bytes": sum(sys.getsizeof(s) for s in summaries),
        "map_s": stats["map_seconds"], "reduce_s": stats["reduce_seconds"],
        "collapse_levels": stats["collapse_levels"], "client_peak_in_flight": stats["peak_in_flight"],
        "memory": stats["memory"],
    }


async def run_bare(args: argparse.Namespace, base_url: str, phases: list[int]) -> dict[str, Any]:
    """Make the same calls as the pipeline with nothing but aiohttp: the floor."""
    sources = [f"doc-{i:05d}" for i in range(1, phases[0] + 1)]
    map_prompts = [map_messages(source, make_text(i, args.words)) for i, source in enumerate(sources, start=1)]
    url = base_url + "/chat/completions"
    semaphore = asyncio.Semaphore(args.c)
    connector = aiohttp.TCPConnector(limit=args.c, limit_per_host=args.c, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def call(messages: list[dict[str, str]], max_tokens: int) -> str:
            payload = {"model": MODEL, "messages": messages, "temperature": 0.0, "seed": 0, "stream": False,
                       "max_tokens": max_tokens}
            async with semaphore, session.post(url, json=payload) as resp:
                body = await resp.read()
            return json.loads(body)["choices"][0]["message"]["content"]

        start = time.monotonic()
        answers = await asyncio.gather(*(call(p, 400) for p in map_prompts))
        map_s = time.monotonic() - start
        del map_prompts
        blocks: list[str] = [f"{source}\n{answer}" for source, answer in zip(sources, answers)]
        for level, calls in enumerate(phases[1:], start=2):
            blocks = await asyncio.gather(*(call(reduce_messages(group, final=level == len(phases)), 1200)
                                            for group in split(blocks, calls)))
    return {"phases": phases, "ok": len(answers), "summary_chars": sum(len(a) for a in answers),
            "summary_bytes": sum(sys.getsizeof(a) for a in answers), "map_s": round(map_s, 3),
            "reduce_s": round(time.monotonic() - start - map_s, 3), "collapse_levels": len(phases) - 2,
            "client_peak_in_flight": None}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Start the fake server, prepare the inputs, run the scenario and collect every number."""
    with tempfile.TemporaryDirectory(prefix="bench-docs-") as tmp, \
            BenchServer(latency=args.l, record_bodies=False, reduce_reply_chars=args.reduce_reply_chars) as server:
        inputs: dict[str, Any] = {}
        if args.mode == "pipeline":
            await _warm_up(args, server.base_url)
            if args.input == "paths":
                inputs["paths"] = write_docs(Path(tmp), args.n, args.words)
            else:
                inputs["texts"] = make_texts(args.n, args.words)
        phases = [int(p) for p in args.phases.split(",")] if args.phases else [args.n]
        await server.areset_stats()
        assert server.proc is not None
        server_proc = psutil.Process(server.proc.pid)
        server_cpu_before = sum(server_proc.cpu_times()[:2])
        proc = psutil.Process()
        rss_before = proc.memory_info().rss
        cpu_before, wall_before = time.process_time(), time.monotonic()
        if args.mode == "pipeline":
            result = await run_pipeline(args, server.base_url, inputs)
        else:
            result = await run_bare(args, server.base_url, phases)
        wall = time.monotonic() - wall_before
        cpu = time.process_time() - cpu_before
        peak = _peak_rss()
        srv = await server.astats()
        server_cpu = sum(server_proc.cpu_times()[:2]) - server_cpu_before
    calls = srv["chat_calls"]
    ideal = ideal_seconds(result["phases"], args.c, args.l)
    growth = max(0, peak - rss_before)
    return {
        "mode": args.mode, "n": args.n, "c": args.c, "l": args.l, "input": args.input if args.mode == "pipeline"
        else "memory", "token_max": args.token_max, **result,
        "wall_s": round(wall, 3), "ideal_s": round(ideal, 3), "wall_ratio": round(wall / ideal, 3),
        "cpu_s": round(cpu, 3), "llm_calls": calls, "cpu_ms_per_call": round(1000 * cpu / max(calls, 1), 3),
        "rss_before_mb": round(rss_before / 2**20, 1), "peak_rss_mb": round(peak / 2**20, 1),
        "rss_growth_per_doc_b": round(growth / args.n),
        "rss_growth_net_per_doc_b": round((growth - result["summary_bytes"]) / args.n),
        "server_cpu_ms_per_call": round(1000 * server_cpu / max(calls, 1), 3),
        "server_peak_in_flight": srv["peak_in_flight"], "connections_opened": srv["connections_opened"],
        "server_status": srv["status_counts"], "code": str(Path(prompts.__file__).parent.parent),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the scenario's options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("pipeline", "bare"), default="pipeline")
    p.add_argument("--n", type=int, default=1000, help="documents (map calls)")
    p.add_argument("--c", type=int, default=64, help="concurrency: most calls in flight")
    p.add_argument("--l", type=float, default=0.1, help="fake server latency per call, seconds")
    p.add_argument("--input", choices=("paths", "texts"), default="paths")
    p.add_argument("--words", type=int, default=60, help="words per document")
    p.add_argument("--token-max", type=int, default=8000)
    p.add_argument("--map-max-tokens", type=int, default=400)
    p.add_argument("--reduce-reply-chars", type=int, default=600, help="fixed size of reduce answers")
    p.add_argument("--phases", default="", help="bare mode: calls per phase, e.g. 5000,20,1")
    p.add_argument("--memory-headroom-mb", type=float, default=0.0,
                   help="pipeline mode: --memory-limit-mb set this far above the RSS just before the run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run one scenario and print its measurements as one JSON line."""
    print(json.dumps(asyncio.run(measure(parse_args(argv)))), flush=True)


if __name__ == "__main__":
    main()
