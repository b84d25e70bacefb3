"""The concurrency limit finds a queueing server's capacity from latency alone (simulated, no wall clock)."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.llm.limits import START, AdaptiveLimit, call_work
from tests.capacity_model import best_fixed_throughput, simulate


def _settled(limits: list[int]) -> float:
    return statistics.median(limits[len(limits) // 2:])


def test_it_grows_to_about_the_slot_count_of_a_big_server_without_building_a_queue() -> None:
    run = simulate(slots=96, calls=8000)

    assert 0.75 * 96 <= _settled([lim for _, lim, _ in run.limits]) <= 1.35 * 96
    assert run.throughput >= 0.85 * best_fixed_throughput(96)
    # Slow start's last doubling overshoots for one round; the queue never outgrows the slots.
    assert run.peak_queue <= 96
    assert run.peak_queue_after(run.seconds / 3) <= 0.4 * 96  # a probe up, 1.25x the limit settled on
    assert run.p95() <= 3 * 0.2 * 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_slow_start_reaches_a_big_servers_slots_within_a_few_service_times(seed: int) -> None:
    # Each doubling waits for the answers sent before it, then half a round far below the knee.
    # (Measuring whole rounds took 6.4 service times here.)
    run = simulate(slots=96, calls=3000, seed=seed)

    reached = next(t for t, limit, _ in run.limits if limit >= 0.9 * 96)
    assert reached <= 5 * 0.2 * (1 + 95 / 96)  # a call's service time in a full batch


def test_a_small_server_is_never_flooded() -> None:
    run = simulate(slots=4, calls=600)

    assert run.limits[0][1] == START
    assert _settled([lim for _, lim, _ in run.limits]) <= 5
    assert run.peak_queue <= 4
    assert run.throughput >= 0.9 * best_fixed_throughput(4)


@settings(max_examples=12, deadline=None)
@given(slots=st.integers(2, 160), seed=st.integers(0, 1000))
def test_the_limit_settles_near_the_knee_whatever_the_slot_count(slots: int, seed: int) -> None:
    run = simulate(slots=slots, calls=max(600, 60 * slots), seed=seed)

    settled = _settled([lim for _, lim, _ in run.limits])
    assert 0.6 * slots - 1 <= settled <= 1.5 * slots + 2
    # Slow start's last doubling, one round past the knee, queues about a slot count; nothing after it does.
    assert run.peak_queue <= 1.25 * slots + 2 * START
    assert run.peak_queue_after(run.seconds / 2) <= 0.5 * slots + START


def test_it_backs_off_when_the_server_loses_half_its_capacity_and_grows_back_after() -> None:
    run = simulate(slots=64, calls=9000, capacity=[(15.0, 32), (30.0, 64)])

    assert 48 <= _settled(run.limits_between(8, 15)) <= 90
    assert _settled(run.limits_between(20, 30)) <= 1.4 * 32  # within five seconds of the drop
    assert run.peak_queue_after(20) <= 32
    assert _settled(run.limits_between(36, 45)) >= 48  # and back up within six of the recovery


@pytest.mark.parametrize("seed", range(6))
def test_a_probe_down_that_meets_a_capacity_rise_climbs_back_at_once(seed: int) -> None:
    # The bench's shared server: 32 slots, 16 from 8 s to 18 s. A probe down that straddles the
    # rise sees more throughput at fewer calls in flight: the server changed, and a probe up follows.
    run = simulate(slots=32, calls=4000, capacity=[(8.0, 16), (18.0, 32)], seed=seed)

    back = next(t for t, limit, _ in run.limits if t >= 18 and limit >= 0.8 * 32)
    assert back - 18 <= 4.5  # within a few seconds (6 when the step down was taken as queue and probed further)
    assert run.peak_queue_after(19) <= 32


def test_it_halves_on_429s_and_stays_under_the_servers_rate_limit() -> None:
    run = simulate(slots=96, calls=6000, refuse_above=40)

    assert run.refused >= 1 and run.limit is not None and run.limit.decreases >= 1
    assert run.peak_in_flight <= 40
    assert _settled([lim for _, lim, _ in run.limits]) >= 15  # the knee search still probes upward


def test_long_and_short_answers_do_not_read_as_load() -> None:
    # Half the calls may write ten times the tokens, and take ten times as long.
    run = simulate(slots=48, calls=8000, max_tokens=(100, 1000))

    assert 0.7 * 48 <= _settled([lim for _, lim, _ in run.limits]) <= 1.4 * 48


def test_demand_below_the_limit_teaches_nothing() -> None:
    limit = AdaptiveLimit(256, start=8)
    for _ in range(2000):  # two calls in flight at most, answered fast: nothing says the server could take more
        limit.in_use = 1
        limit.on_success(0.05, call_work("x" * 100, 50))
    assert limit.limit == 8


def test_without_a_start_it_is_the_plain_aimd_limit() -> None:
    limit = AdaptiveLimit(16, cooldown=0)
    assert limit.limit == 16 and limit.knee is None
    limit.on_success(5.0, 1.0)  # a latency changes nothing here
    limit.on_rate_limited()
    assert limit.limit == 8


def test_the_timeout_follows_what_the_server_has_shown() -> None:
    limit = AdaptiveLimit(64, start=START)
    assert limit.call_timeout(call_work("x" * 2000, 400), 120.0) == 120.0  # nothing seen yet: the user's timeout
    work = call_work("x" * 2000, 400)
    for _ in range(40):
        limit.on_success(0.5, work)
    assert limit.call_timeout(work, 120.0) == 10.0  # four times 0.5 s, but never below the floor
    for _ in range(40):
        limit.on_success(20.0, work)
    assert limit.call_timeout(work, 120.0) == 80.0
    assert limit.call_timeout(10 * work, 120.0) == 120.0  # never above the user's


def test_a_calls_work_counts_the_tokens_it_may_write_and_its_prompt() -> None:
    from pipeline.prompting import Prompt

    assert call_work(Prompt("s" * 300, "u" * 700), 400) == call_work("x" * 1000, 400)
    assert call_work("x" * 1000, 1200) > 2 * call_work("x" * 1000, 400)
    assert call_work("x" * 64000, 400) > call_work("x" * 1000, 400)
