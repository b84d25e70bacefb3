"""The adaptive concurrency limit and the rate limits, on a clock the test controls."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.llm import limits
from pipeline.llm.limits import AdaptiveLimit, RateLimit


async def _peak(limit: AdaptiveLimit, tasks: int) -> int:
    active = peak = 0

    async def call() -> None:
        nonlocal active, peak
        async with limit:
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0)
            active -= 1

    await asyncio.gather(*(call() for _ in range(tasks)))
    return peak


async def test_a_429_halves_the_limit_and_successes_restore_it() -> None:
    limit = AdaptiveLimit(8, cooldown=0)

    limit.on_rate_limited()
    assert limit.limit == 4
    assert await _peak(limit, 40) <= 4

    for _ in range(100):
        limit.on_success()
    assert limit.limit == 8
    assert await _peak(limit, 40) == 8


async def test_the_limit_never_drops_below_one_nor_grows_past_the_maximum() -> None:
    limit = AdaptiveLimit(4, cooldown=0)
    for _ in range(10):
        limit.on_rate_limited()
    assert limit.limit == 1 and await _peak(limit, 10) == 1
    for _ in range(1000):
        limit.on_success()
    assert limit.limit == 4


async def test_a_burst_of_429s_counts_once_within_the_cooldown() -> None:
    limit = AdaptiveLimit(16, cooldown=60)
    for _ in range(5):
        limit.on_rate_limited()
    assert limit.limit == 8 and limit.decreases == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_rate_limit_spends_a_minutes_budget_then_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(limits.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(limits.asyncio, "sleep", clock.sleep)
    rpm = RateLimit(60)  # one request a second once the first minute's worth is spent

    for _ in range(60):
        await rpm.take(1)
    assert clock.slept == []
    await rpm.take(1)
    assert clock.slept == [pytest.approx(1.0)]


async def test_a_rate_limit_that_holds_calls_back_says_so_once(monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    monkeypatch.setattr(limits.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(limits.asyncio, "sleep", clock.sleep)
    tpm = RateLimit(1, "tpm")  # less than any call: one call a minute, and a run that looks stuck

    for _ in range(3):
        await tpm.take(900)

    assert clock.slept == [pytest.approx(60.0)] * 2
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert said == ["the tpm limit, 1 a minute, is less than one call's 900: one call a minute at most"]


async def test_a_long_wait_for_a_rate_limit_is_said_once(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    monkeypatch.setattr(limits.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(limits.asyncio, "sleep", clock.sleep)
    rpm = RateLimit(3, "rpm")

    for _ in range(6):
        await rpm.take(1)

    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert said == ["the rpm limit, 3 a minute, holds calls back: the next one waits 20 s"]
