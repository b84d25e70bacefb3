"""Throughput over an endpoint pool against the sum of its servers' capacities.

    python -m bench.pool                      # 3 servers, 4,000 documents
    python -m bench.pool --n 8000 --servers 0.05:32,0.1:48,0.2:64   # twice the rate

Each server is the bench's fake (bench.fake_server) in its own child process on
127.0.0.1 with a fixed latency L; the pool gives it a concurrency C, so its capacity is
C / L calls per second. The real graph runs over the pool with --concurrency equal to
the sum of the C's; the map phase's calls per second are compared with the sum of the
capacities (target: within 10%), and each server's share of the calls with its share
of the capacity. A bare floor follows: plain aiohttp, one session and semaphore of C per
server, each server handed exactly its capacity's share of the same map prompts, all at
once: what this machine (client and servers on the same cores) allows. The map phase
is timed from its first call leaving to its last answer arriving (the graph's own
map_seconds also holds planning), by wrapping the pool's `acomplete` in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import aiohttp

from bench.bare import map_messages
from bench.docs import make_text, make_texts
from bench.fake_server import BenchServer
from bench.scenario import MODEL


def _time_calls() -> tuple[list[float], list[float]]:
    """Record when each pool call starts and ends (bench only: wraps EndpointPool.acomplete)."""
    from pipeline.llm.pool import EndpointPool

    starts: list[float] = []
    ends: list[float] = []
    plain = EndpointPool.acomplete

    async def timed(self: EndpointPool, prompt: str, max_tokens: int) -> Any:
        starts.append(time.monotonic())
        try:
            return await plain(self, prompt, max_tokens)
        finally:
            ends.append(time.monotonic())

    EndpointPool.acomplete = timed  # type: ignore[method-assign]
    return starts, ends


async def bare_floor(urls: list[str], servers: list[tuple[float, int]], n: int, words: int) -> float:
    """Seconds for plain aiohttp to make n map calls split by capacity over the servers (see the docstring)."""
    capacity = [c / lat for lat, c in servers]
    shares = [round(n * cap / sum(capacity)) for cap in capacity]
    shares[0] += n - sum(shares)
    texts = [map_messages(f"doc-{i:05d}", make_text(i, words)) for i in range(n)]

    async def one_server(url: str, concurrency: int, batch: list[list[dict[str, str]]]) -> None:
        semaphore = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=60)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            async def call(messages: list[dict[str, str]]) -> str:
                payload = {"model": MODEL, "messages": messages, "temperature": 0.0, "seed": 0, "stream": False,
                           "max_tokens": 400}
                async with semaphore, session.post(url + "/chat/completions", json=payload) as resp:
                    body = await resp.read()
                return json.loads(body)["choices"][0]["message"]["content"]

            await asyncio.gather(*(call(p) for p in batch))

    bounds = [sum(shares[:i]) for i in range(len(shares) + 1)]
    start = time.monotonic()
    await asyncio.gather(*(one_server(url, c, texts[bounds[i]:bounds[i + 1]])
                           for i, (url, (_, c)) in enumerate(zip(urls, servers))))
    return time.monotonic() - start


async def measure(servers: list[tuple[float, int]], n: int, words: int) -> None:
    """Start the servers, run the graph once to warm up and once measured, print the table."""
    from graphs import Context, graph

    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(BenchServer(latency=lat, record_bodies=False, reduce_reply_chars=600))
                 for lat, _ in servers]
        urls = [f"{p.base_url}=concurrency:{c}" for p, (_, c) in zip(procs, servers)]
        total = sum(c for _, c in servers)

        def context(concurrency: int) -> Context:
            return Context(base_urls=urls, model=MODEL, concurrency=concurrency, timeout=60.0, max_retries=2,
                           language="en")

        await graph.ainvoke({"texts": make_texts(len(servers) * 4, words)}, context=context(len(servers)))
        for p in procs:
            await p.areset_stats()
        starts, ends = _time_calls()
        out = await graph.ainvoke({"texts": make_texts(n, words)}, context=context(total))
        stats = [await p.astats() for p in procs]
        floor_s = await bare_floor([p.base_url for p in procs], servers, n, words)
    ok = sum(r["status"] == "ok" for r in out["results"])
    capacity = [c / lat for lat, c in servers]
    calls = [s["chat_calls"] for s in stats]
    print(f"{'server':<28} {'L ms':>5} {'C':>4} {'cap/s':>7} {'cap %':>6} {'calls':>6} {'calls %':>7} "
          f"{'peak':>5} {'p50 ms':>7} {'p95 ms':>7}")
    for (lat, c), cap, s, e in zip(servers, capacity, stats, out["stats"]["endpoints"]):
        print(f"{e['url']:<28} {lat * 1000:>5.0f} {c:>4} {cap:>7.0f} {100 * cap / sum(capacity):>6.1f} "
              f"{s['chat_calls']:>6} {100 * s['chat_calls'] / sum(calls):>7.1f} {s['peak_in_flight']:>5} "
              f"{e['latency_ms']['p50']:>7} {e['latency_ms']['p95']:>7}")
    map_calls = out["stats"]["llm_calls"]["map"]
    map_s = sorted(ends)[map_calls - 1] - min(starts)
    print(f"documents ok {ok}/{n}; planning and map {out['stats']['map_seconds']:.2f} s; map calls: {map_calls} in "
          f"{map_s:.2f} s = {map_calls / map_s:.0f} calls/s against a capacity of {sum(capacity):.0f} calls/s: "
          f"{map_calls / map_s / sum(capacity):.2f} of it")
    print(f"bare floor: {n} calls in {floor_s:.2f} s = {n / floor_s:.0f} calls/s: {n / floor_s / sum(capacity):.2f} "
          f"of the capacity; the pool's map phase took {map_s / floor_s:.2f}x the floor")


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run the measurement."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4000, help="documents (map calls)")
    p.add_argument("--words", type=int, default=60, help="words per document")
    p.add_argument("--servers", default="0.1:32,0.2:48,0.4:64",
                   help="comma-separated LATENCY_S:CONCURRENCY, one per fake server")
    args = p.parse_args(argv)
    servers = [(float(lat), int(c)) for lat, c in (s.split(":") for s in args.servers.split(","))]
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(measure(servers, args.n, args.words))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
