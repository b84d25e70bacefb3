"""Memory back-pressure: under pressure the run holds fewer calls and documents, and only the hard limit stops it.

RSS and the machine's memory are simulated by replacing the guard's readings; nothing
here allocates memory to make a point.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from graphs import Context, graph
from pipeline.llm import memory_guard as memory
from pipeline.errors import InputError, MemoryLimitError
from pipeline.llm.limits import AdaptiveLimit
from pipeline.llm.memory_guard import MemoryGuard
from tests.fake_openai import FakeOpenAI

MB = 2**20
START = 200 * MB


def _texts(n: int) -> list[dict[str, str]]:
    return [{"id": f"doc-{i:03d}", "text": f"Document {i} " + " ".join(f"fact{i}-{j}" for j in range(40))}
            for i in range(n)]


@pytest.fixture
def every_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check memory before every call and steer as often as asked, so that a short run sees it."""
    monkeypatch.setattr(memory, "_CHECK_EVERY_S", 0.0)
    monkeypatch.setattr(memory, "_STEER_EVERY_S", 0.0)
    monkeypatch.setattr(memory, "machine_percent", lambda: 30.0)


def _rss(monkeypatch: pytest.MonkeyPatch, readings: list[int]) -> None:
    """Make the guard read `readings` in turn, then the last one for ever."""
    it = iter(readings)
    last = [readings[0]]

    def read() -> int:
        last[0] = next(it, last[0])
        return last[0]

    monkeypatch.setattr(memory, "process_rss", read)


def test_rss_above_the_soft_limit_halves_the_watched_limits_and_steady_rss_holds_them(
        monkeypatch: pytest.MonkeyPatch, every_reading: None) -> None:
    # limit 400 MB from a 200 MB start: soft limit at 370 MB; growth counts past 16 MB
    _rss(monkeypatch, [START, 375 * MB, 395 * MB, 398 * MB, 398 * MB, 300 * MB, 300 * MB])
    guard, calls, shards = MemoryGuard(400), AdaptiveLimit(64), AdaptiveLimit(3)
    guard.watch("concurrency", calls)
    guard.watch("shard_slots", shards)

    guard.admit()
    assert (calls.limit, shards.limit) == (32, 1)
    guard.admit()  # still growing
    assert (calls.limit, shards.limit) == (16, 1)
    guard.admit(), guard.admit()  # steady: the work in hand finishes under the lowered limits
    assert calls.limit == 16 and guard.steered_down == 2
    guard.admit(), guard.admit()  # back under the soft limit: raised by an eighth of the maximum each step
    assert (calls.limit, shards.limit) == (32, 3) and guard.steered_up == 2
    assert guard.lowest == {"concurrency": 16, "shard_slots": 1}


def test_only_the_hard_limit_raises(monkeypatch: pytest.MonkeyPatch, every_reading: None) -> None:
    _rss(monkeypatch, [START, 299 * MB, 301 * MB])
    guard = MemoryGuard(300)
    guard.admit()
    with pytest.raises(MemoryLimitError, match="301 MB, over the 300 MB limit"):
        guard.admit()


@pytest.mark.parametrize("limit, where", [(150, "below"), (210, "within 32 MB of")])
def test_a_limit_without_room_above_the_start_rss_is_refused(monkeypatch: pytest.MonkeyPatch, limit: int,
                                                             where: str) -> None:
    _rss(monkeypatch, [START])
    with pytest.raises(InputError) as caught:
        MemoryGuard(limit)
    assert str(caught.value) == (f"--memory-limit-mb {limit} is {where} the 200 MB this process already uses; "
                                 "give at least 232")


async def test_a_run_pushed_past_the_soft_limit_holds_fewer_calls_and_finishes(
        fake_in_loop: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, every_reading: None) -> None:
    fake_in_loop.latency = 0.01
    start = psutil.Process().memory_info().rss
    in_flight_late: list[int] = []

    def rss() -> int:  # one more MB per call up to 90 (soft limit at 85 MB above the start), then steady
        calls = fake_in_loop.chat_calls
        if calls > 120:
            in_flight_late.append(fake_in_loop.in_flight)
        return start + min(calls, 90) * MB

    monkeypatch.setattr(memory, "process_rss", rss)
    async with asyncio.timeout(60):  # a bound, not a measurement: the old guard paused up to a minute
        out = await graph.ainvoke({"texts": _texts(160)}, context=Context(
            base_url=fake_in_loop.base_url, concurrency=16, memory_limit_mb=start / MB + 100))

    assert [r["status"] for r in out["results"]] == ["ok"] * 160
    assert out["summary"].startswith("- ")
    steering = out["stats"]["memory"]
    assert steering["steered_down"] >= 1 and steering["steered_up"] == 0
    assert steering["lowest"]["concurrency"] < 16 and steering["lowest"]["shard_slots"] < 3
    assert steering["limit_mb"] == round(start / MB + 100, 1)
    assert in_flight_late and max(in_flight_late) < 16  # fewer calls in flight once steered


async def test_a_run_over_the_hard_limit_stops_before_any_call(
        fake_in_loop: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, every_reading: None) -> None:
    start = psutil.Process().memory_info().rss
    _rss(monkeypatch, [start, start + 200 * MB])

    with pytest.raises(MemoryLimitError, match="over the .* MB limit"):
        await graph.ainvoke({"texts": _texts(3)}, context=Context(
            base_url=fake_in_loop.base_url, memory_limit_mb=start / MB + 100))
    assert fake_in_loop.chat_calls == 0


async def test_a_machine_short_of_memory_collects_and_steers_down_without_a_limit(
        fake_in_loop: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_CHECK_EVERY_S", 0.0)
    monkeypatch.setattr(memory, "_STEER_EVERY_S", 0.0)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(percent=memory.MACHINE_PERCENT + 5))
    collected: list[int] = []
    monkeypatch.setattr(memory.gc, "collect", lambda: collected.append(1) or 0)

    out = await graph.ainvoke({"texts": _texts(40)}, context=Context(base_url=fake_in_loop.base_url,
                                                                     concurrency=8, adapt_concurrency=False))

    assert [r["status"] for r in out["results"]] == ["ok"] * 40
    steering = out["stats"]["memory"]
    assert steering["steered_down"] == 1  # steady pressure: one step down, then the lowered limits hold
    assert steering["lowest"] == {"concurrency": 4, "shard_slots": 1}
    assert steering["machine_peak_percent"] == memory.MACHINE_PERCENT + 5
    assert steering["gc_runs"] == len(collected) == 1


def test_cli_limit_below_the_start_rss_is_one_line_and_exit_1(cli, fake: FakeOpenAI, docs: Path) -> None:
    result = cli(str(docs / "*.txt"), "--memory-limit-mb", "1", base_url=fake.base_url)

    assert result.code == 1
    assert result.err.strip().count("\n") == 0
    assert "--memory-limit-mb 1 is below the" in result.err and "give at least" in result.err
    assert fake.chat_calls == 0


def test_report_json_says_how_memory_was_steered(cli, fake: FakeOpenAI, docs: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(percent=memory.MACHINE_PERCENT + 1))
    monkeypatch.setattr(memory.gc, "collect", lambda: 0)

    result = cli(str(docs / "*.txt"), "--no-adapt", "--concurrency", "16", base_url=fake.base_url)

    assert result.code == 0, result.err
    steering = result.report()["memory"]
    assert steering["limit_mb"] is None and steering["steered_down"] == 1
    assert steering["lowest"]["concurrency"] == 8 and steering["peak_rss_mb"] >= steering["start_rss_mb"] > 0


def test_a_full_machine_that_stops_filling_holds_the_run_where_it_is(
        monkeypatch: pytest.MonkeyPatch, every_reading: None) -> None:
    # The machine sits at 82% (others' doing) while this run's RSS creeps up a little each step.
    _rss(monkeypatch, [START, *(START + i * 2 * MB for i in range(1, 9))])
    monkeypatch.setattr(memory, "machine_percent", lambda: 82.0)
    guard, calls = MemoryGuard(None), AdaptiveLimit(256)
    guard.watch("concurrency", calls)

    for _ in range(8):
        guard.admit()

    assert calls.limit == 128 and guard.steered_down == 1  # one step down, then held, not ratcheted to 1
