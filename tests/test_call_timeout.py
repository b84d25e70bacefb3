"""A call's timeout follows what the server has shown: a hung call is given up long before --timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from langchain_openai import ChatOpenAI

import pipeline.llm.runner as llm
from pipeline.llm.client import OpenAICompatChat
from pipeline.llm.limits import START, TIMEOUT_FLOOR_S, TIMEOUT_SEEN, AdaptiveLimit, call_work
from pipeline.llm.pool import EndpointSpec, open_pool
from pipeline.llm.runner import LLMRunner
from tests.fake_openai import FakeOpenAI

RUN_TIMEOUT = 60.0  # the user's --timeout: far longer than any of these tests may take
GUARD = 20.0  # a test still waiting this long has waited for the hang, not the scaled timeout


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm, "BACKOFF_BASE_S", 0.001)


def _answered(limit: AdaptiveLimit, latency: float, work: float, n: int) -> None:
    for _ in range(n):
        limit.on_success(latency, work)


def test_the_timeout_grows_with_the_work_asked_and_the_latency_seen() -> None:
    short, long = call_work("", 100), call_work("", 1600)
    limit = AdaptiveLimit(64, start=START)
    _answered(limit, 1.0, short, TIMEOUT_SEEN - 1)
    assert limit.call_timeout(short, 120.0) == 120.0  # too few answers yet: the user's timeout

    _answered(limit, 1.0, short, 1)
    assert limit.call_timeout(short, 120.0) == TIMEOUT_FLOOR_S  # 4 s asked for, but never under the floor
    assert 50.0 < limit.call_timeout(long, 120.0) < 70.0  # 16 times the tokens: about 16 times 4 s
    _answered(limit, 5.0, short, 64)  # the server got five times slower
    assert limit.call_timeout(short, 120.0) == pytest.approx(20.0)
    assert limit.call_timeout(long, 120.0) == 120.0  # never past the user's

    fixed = AdaptiveLimit(64)  # --no-adapt: its calls may queue where the first answers did not
    _answered(fixed, 1.0, short, 100)
    assert fixed.call_timeout(short, 120.0) == 120.0


def test_the_timeout_leaves_room_for_the_slow_answers_of_a_variable_server() -> None:
    work = call_work("x" * 2000, 400)
    limit = AdaptiveLimit(64, start=START, timeout_floor=0.0)
    for i in range(64):  # a variable server: one answer in ten takes three times as long
        limit.on_success(3.0 if i % 10 == 0 else 1.0, work)

    assert limit.call_timeout(work, 120.0) == pytest.approx(12.0)  # four times the slow ones, not the usual


@asynccontextmanager
async def _model(kind: str, base_url: str) -> AsyncIterator[Any]:
    if kind == "builtin":
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=RUN_TIMEOUT)) as session:
            yield OpenAICompatChat(model="fake-model", base_url=base_url, session=session)
    else:  # a LangChain chat model brought by the user
        yield ChatOpenAI(model="fake-model", base_url=base_url, api_key="sk-test", max_retries=0,
                         timeout=RUN_TIMEOUT)


@pytest.mark.parametrize("kind", ["builtin", "langchain"])
async def test_a_hung_call_is_given_up_at_the_scaled_timeout_and_counted_as_possibly_paid_twice(kind: str) -> None:
    async with FakeOpenAI(latency=0.01, hang_seconds=RUN_TIMEOUT) as fake, _model(kind, fake.base_url) as model:
        limit = AdaptiveLimit(8, start=START, timeout_floor=0.3)
        runner = LLMRunner(model, concurrency=limit, timeout=RUN_TIMEOUT, max_retries=2,
                           count_tokens=lambda text: len(text.split()))
        for i in range(TIMEOUT_SEEN + 4):
            await runner.complete("map", f"Report {i}: the depot counted {i} crates.", 50, "map")
        assert limit.call_timeout(call_work("x", 50), RUN_TIMEOUT) < 1.0
        fake.script.append("hang")
        done = await asyncio.wait_for(runner.complete("map", "Report: the depot hung.", 50, "map"), GUARD)

    assert done.text
    assert limit.timeouts == 1  # what the report shows as possible_duplicate_calls
    assert runner.stats.retries == 1
    assert fake.chat_calls == TIMEOUT_SEEN + 4 + 2  # the warm-up, the hung call and its retry


async def test_a_pool_sends_a_timed_out_call_and_the_next_ones_where_no_queue_shows() -> None:
    async with FakeOpenAI(latency=0.01, hang_seconds=RUN_TIMEOUT) as a, FakeOpenAI(latency=0.01) as b:
        pool, _ = await open_pool([EndpointSpec(a.base_url), EndpointSpec(b.base_url)], concurrency=16,
                                  timeout=RUN_TIMEOUT, api_key=None, model="fake-model", default_model="fake-model",
                                  temperature=0.0, extra_body={}, adapt=True)
        try:
            for ep in pool.endpoints:
                ep.limit.timeout_floor = 0.3
            for i in range(TIMEOUT_SEEN + 4):  # in pairs: one to each endpoint
                await asyncio.gather(*(pool.acomplete(f"Report {i}-{j}.", 50) for j in range(2)))
            assert (a.chat_calls, b.chat_calls) == (TIMEOUT_SEEN + 4, TIMEOUT_SEEN + 4)
            a.script.append("hang")
            text, _ = await asyncio.wait_for(pool.acomplete("Report: the depot hung.", 50), GUARD)
            for i in range(3):  # one at a time: both endpoints free, the first in order is the one that hung
                await pool.acomplete(f"Report after {i}.", 50)
            first = pool.endpoints[0]
        finally:
            await pool.aclose()

    assert text
    assert first.limit.timeouts == 1 and first.queueing
    assert a.chat_calls == TIMEOUT_SEEN + 4 + 1  # the hung call, and nothing after it
    assert b.chat_calls == TIMEOUT_SEEN + 4 + 1 + 3  # its retry and the calls after it


def test_a_step_is_timed_by_its_own_answers_not_another_steps() -> None:
    """Map calls that write 20 of their 400 tokens say nothing of a final call that writes its 1,200."""
    limit = AdaptiveLimit(64, start=START, timeout_floor=0.0)
    short, final = call_work("x" * 200, 400), call_work("x" * 32_000, 1200)
    for _ in range(200):
        limit.on_success(0.7, short, kind=400)

    assert limit.call_timeout(short, 120.0, 400) < 5.0
    assert limit.call_timeout(final, 120.0, 1200) == 120.0  # no final answer seen yet: the user's timeout


async def test_a_call_that_timed_out_is_retried_with_the_whole_timeout() -> None:
    """A server that only got slower (another job on it) answers the retry: no document fails for it."""
    slow = False

    class Caller:
        timeouts: list[float | None] = []

        async def acomplete(self, prompt: Any, max_tokens: int, timeout: float | None = None) -> tuple[str, Any]:
            self.timeouts.append(timeout)
            async with asyncio.timeout(timeout or RUN_TIMEOUT):
                await asyncio.sleep(0.3 if slow else 0.01)
            return "- a point", {"input_tokens": 1, "output_tokens": 1, "finish_reason": "stop"}

    caller = Caller()
    limit = AdaptiveLimit(8, start=START, timeout_floor=0.05)
    runner = LLMRunner(caller, concurrency=limit, timeout=RUN_TIMEOUT, max_retries=2,
                       count_tokens=lambda t: len(t.split()))
    runner._timed = True  # a caller that takes a timeout per call, as the built-in client does
    await asyncio.gather(*(runner.complete("map", f"note {i}", 50, "map") for i in range(40)))
    slow = True

    done = await runner.complete("map", "note 41", 50, "map")

    assert done.text == "- a point" and limit.timeouts == 1
    assert caller.timeouts[-2] is not None and caller.timeouts[-2] < 0.3  # the scaled one, given up
    assert caller.timeouts[-1] is None  # the retry: the run's whole --timeout
