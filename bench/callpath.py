"""The CPU of one map call's path, layer by layer: the client, the runner around it, the map step's `ask`.

    python -m bench.callpath                 # both measures below, 4,000 calls each
    python -m bench.callpath --only wrapper  # only our code, against a session that answers at once

`wrapper`: each layer against a stand-in HTTP session that answers at once, with no
socket and no aiohttp, so that what is timed is our code alone (encoding the request,
reading the answer, the runner's limits and counters, the answer checks of `ask`), one
call after the other: microseconds a call, the least of 7 rounds.
`server`: the same layers, C calls at a time, against the tests' fake server in a child
process, beside the bare aiohttp floor (bench/bare.py's messages, `json=`, one
semaphore): milliseconds of the process's CPU a call, least and median of the rounds.
The machine's other work moves these by 10-30%: compare layers of one run, or repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp.payload import JsonPayload

import prompts
from bench.bare import map_messages
from pipeline.llm.client import OpenAICompatChat, open_session
from pipeline.llm.factory import ChatSettings, make_runner
from pipeline.progress import EventProgress
from pipeline.prompting import Prompt
from pipeline.summarize import ask
from tests.fake_openai import FakeOpenAIProcess

LAYERS = ("client", "runner", "ask")
MODEL = "fake-model"
TEXT = ("The committee met on Tuesday to review the budget for the coming year. Members agreed that the library "
        "needs new shelves and that the park should get more benches. A vote is planned for next month.")
ANSWER = json.dumps({"id": "x", "object": "chat.completion", "model": MODEL, "choices": [{
    "index": 0, "message": {"role": "assistant", "content": "- The committee met on Tuesday to review the budget."},
    "finish_reason": "stop"}], "usage": {"prompt_tokens": 300, "completion_tokens": 12}}).encode()


class _Answered:
    """A response that has already arrived whole."""

    status, content_length, headers = 200, len(ANSWER), {}  # noqa: RUF012 - read only

    async def read(self) -> bytes:
        return ANSWER

    async def __aenter__(self) -> _Answered:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _AtOnce:
    """A session whose every post is answered at once: what remains is the caller's own CPU.

    A body given as `json=` is encoded as aiohttp encodes it, so that a client that leaves
    the encoding to aiohttp is charged for it too.
    """

    closed = False

    def post(self, url: str, **options: Any) -> _Answered:
        if "json" in options:
            JsonPayload(options["json"])
        return _Answered()


def _prompts(n: int) -> list[Prompt]:
    return [Prompt(*(m["content"] for m in map_messages(f"doc{i}.txt", f"{TEXT} Item {i}."))) for i in range(n)]


def _layer(layer: str, url: str, session: Any, c: int) -> Callable[[Prompt], Awaitable[object]]:
    """One call through `layer`, the run's settings as the CLI makes them (adaptive limit, one session)."""
    chat = OpenAICompatChat.model_construct(model=MODEL, base_url=url, api_key=None, temperature=0.0, max_tokens=None,
                                            extra_body={"seed": 0}, session=session, on_read=None)
    settings = ChatSettings(model=MODEL, default_model=MODEL, base_url=url, endpoints=[], api_key=None,
                            concurrency=c, timeout=60.0, max_retries=2, temperature=0.0, seed=0,
                            request_body={"seed": 0}, identity="bench", adapt=True)
    runner = make_runner(chat, settings, MODEL, progress=EventProgress(lambda event: None))
    reader = prompts.load().reader
    if layer == "client":
        return lambda p: chat.acomplete(p, 400, timeout=10.0)
    if layer == "runner":
        return lambda p: runner.complete("map", p, 400, phase="map")
    return lambda p: ask(runner, "map", p, 400, phase="map", language="en", reader=reader)


async def _wrapper(layer: str, calls: list[Prompt]) -> float:
    call = _layer(layer, "http://127.0.0.1:9/v1", _AtOnce(), 256)
    for prompt in calls[:200]:
        await call(prompt)
    rounds = []
    for _ in range(7):
        began = time.process_time()
        for prompt in calls:
            await call(prompt)
        rounds.append((time.process_time() - began) / len(calls) * 1e6)
    return min(rounds)


async def _floor(url: str, calls: list[Prompt], c: int) -> float:
    semaphore = asyncio.Semaphore(c)
    connector = aiohttp.TCPConnector(limit=c, limit_per_host=c, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def call(prompt: Prompt) -> str:
            async with semaphore:
                body = {"model": MODEL, "messages": [{"role": "system", "content": prompt.system},
                                                     {"role": "user", "content": prompt.user}],
                        "temperature": 0.0, "seed": 0, "stream": False, "max_tokens": 400}
                async with session.post(url + "/chat/completions", json=body) as resp:
                    return json.loads(await resp.read())["choices"][0]["message"]["content"]

        return await _timed(call, calls)


async def _through(layer: str, url: str, calls: list[Prompt], c: int) -> float:
    async with open_session(c, 60.0) as session:
        call = _layer(layer, url, session, c)
        if layer == "client":  # the client holds no limit of its own
            semaphore, bare = asyncio.Semaphore(c), call

            async def call(prompt: Prompt) -> object:
                async with semaphore:
                    return await bare(prompt)

        return await _timed(call, calls)


async def _timed(call: Callable[[Prompt], Awaitable[object]], calls: list[Prompt]) -> float:
    await asyncio.gather(*(call(p) for p in calls[:64]))  # connections opened, tables built
    began = time.process_time()
    await asyncio.gather(*(call(p) for p in calls))
    return (time.process_time() - began) / len(calls) * 1e3


def main(argv: list[str] | None = None) -> int:
    """Time each layer of the call path and print its CPU a call."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4000, help="calls per round")
    p.add_argument("--c", type=int, default=64, help="calls at a time against the server")
    p.add_argument("--rounds", type=int, default=5, help="rounds against the server")
    p.add_argument("--only", choices=("wrapper", "server"))
    args = p.parse_args(argv)
    calls = _prompts(args.n)
    if args.only != "server":
        for layer in LAYERS:
            print(f"wrapper {layer:7s} {asyncio.run(_wrapper(layer, calls)):6.2f} us a call (our code alone)")
    if args.only != "wrapper":
        times: dict[str, list[float]] = {name: [] for name in ("floor", *LAYERS)}
        with FakeOpenAIProcess(latency=0.0) as server:
            for _ in range(args.rounds):
                for name, found in times.items():
                    found.append(asyncio.run(_floor(server.base_url, calls, args.c) if name == "floor"
                                             else _through(name, server.base_url, calls, args.c)))
        for name, found in times.items():
            print(f"server  {name:7s} {min(found):.3f} ms a call (median {statistics.median(found):.3f}), "
                  f"x floor {min(found) / min(times['floor']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
