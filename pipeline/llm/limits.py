"""Limits on LLM calls: an adaptive concurrency limit and request/token rate limits.

The concurrency limit backs off on 429s (AIMD) and, given each answer's latency, finds
the knee of a server that queues instead of refusing (vLLM, llama.cpp, TGI answer 200,
late): it grows the calls in flight while that buys throughput and gives back what
only lengthens the queue (`KneeSearch`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


START = 4  # calls in flight before a server has shown what it can take
GROW, SHRINK = 1.25, 0.8  # the probing steps around the limit settled on
WORTH = 0.3  # a step pays when throughput moves by at least this share of the step in calls in flight
START_WORTH = 0.45  # slow start's doublings must pay more: one past the knee doubles the queue
CRUISE_ROUNDS = 3  # rounds at the settled limit between probes (a probe costs a little throughput or latency)
ROUND = 8  # fewest answers in one measurement (and at least the limit's worth: about one latency)
QUEUE_RISE = 1.5  # latency per token up (or down) this much at an unchanged limit: the server changed
SLOW_START, CRUISE, PROBE_UP, PROBE_DOWN = range(4)


def call_work(prompt: str | tuple[str, ...], max_tokens: int) -> float:
    """A call's weight for its latency: the tokens it may write, plus its prompt's, read ~8x faster.

    Latency divided by this reads the same for long and short calls, so that a run of
    big reduce prompts is not taken for load. `prompt` is the text, or its messages'
    texts (a `Prompt`); a character is about a quarter of a token.
    """
    chars = len(prompt) if isinstance(prompt, str) else sum(map(len, prompt))
    return 1.0 + max_tokens + chars / 32


class KneeSearch:
    """Find the calls in flight past which a server's latency grows without its throughput.

    Answers are measured in rounds of at least `ROUND` and the limit's worth (about one
    latency), each once the answers sent before the last change, and those sent while
    its queue formed, have come back: the mean calls in flight over the mean latency per
    unit of work is the throughput (Little's law). Slow start doubles the limit while throughput grows with it; then, from the
    last level that paid, it cruises `CRUISE_ROUNDS` rounds and probes one step up (kept
    if throughput grew by `WORTH` of the step: below the knee batching still pays) and
    one step down (kept if throughput held: the step was queue). Latency up by
    `QUEUE_RISE` more than the step in calls in flight explains means a queue formed (the
    server lost capacity): the limit is cut at once to what kept the old latency; at an
    unchanged limit, latency down as much means capacity came back: slow start again. A round where demand leaves the limit unused
    teaches nothing and changes nothing. Feed it with `observe`; it returns a new limit
    when it decides one. A round costs a few float additions per answer, nothing more.
    """

    __slots__ = ("maximum", "base", "phase", "worst", "_ref", "_ref_latency", "_skip", "_round", "_n",
                 "_latency", "_in_flight", "_peak", "_cruised")

    def __init__(self, start: int, maximum: int) -> None:
        self.maximum = maximum
        self.base = start  # the limit settled on, that the probes start from
        self.phase = SLOW_START
        self.worst = 0.0  # the longest latency per work of the last round
        self._ref: tuple[float, float] | None = None  # (calls in flight, throughput) at `base`
        self._ref_latency = 0.0
        self._skip = start  # answers still to come that were sent under an earlier limit (or cold: a new connection)
        self._round = ROUND
        self._n = self._cruised = 0
        self._latency = self._in_flight = self._peak = 0.0

    def observe(self, latency: float, in_flight: int, limit: int) -> int | None:
        """Take one answer's latency per work and the calls then in flight (itself included); maybe a new limit."""
        if self._skip:
            self._skip -= 1
            return None
        self._n += 1
        self._latency += latency
        self._in_flight += in_flight
        if latency > self._peak:
            self._peak = latency
        if self._n < self._round:
            return None
        n = self._n
        mean_latency, mean_in_flight = self._latency / n, self._in_flight / n
        self.worst, self._peak = self._peak, 0.0
        self._n, self._latency, self._in_flight = 0, 0.0, 0.0
        target = self._decide(mean_in_flight, mean_in_flight / mean_latency, mean_latency, limit)
        if target is not None:
            target = max(1, min(self.maximum, target))
            # The answers sent before the change, then those sent into the queue it was building.
            self._skip = in_flight + target
        self._round = max(ROUND, target or limit)
        return target

    def describe(self) -> str:
        """The search's phase and reference, for the debug log."""
        in_flight, throughput = self._ref or (0.0, 0.0)
        phase = ("slow start", "cruise", "probe up", "probe down")[self.phase]
        return f"{phase}, settled on {self.base}: {in_flight:.0f} in flight, {throughput:.4g} work/s"

    def backed_off(self, limit: int, in_flight: int) -> None:
        """Settle on `limit`, set from outside (after a 429): probe from there, measured afresh."""
        self.base, self.phase, self._ref, self._ref_latency = limit, CRUISE, None, 0.0
        self._n, self._cruised, self._latency, self._in_flight = 0, 0, 0.0, 0.0
        self._skip, self._round = in_flight, max(ROUND, limit)

    def _decide(self, in_flight: float, throughput: float, latency: float, limit: int) -> int | None:
        if in_flight < 0.75 * limit:  # demand, not the limit, held the calls in flight
            return None
        if self.phase == SLOW_START:
            if self._ref is None or self._pays(in_flight, throughput, START_WORTH):
                self._settle(in_flight, throughput, latency, limit)
                return limit * 2 if limit < self.maximum else self._probe_down()
            self.phase = CRUISE  # the knee lies between the last level that paid and this one
            return self.base
        before = self._ref_latency
        stepped = max(1.0, in_flight / self._ref[0]) if self._ref else 1.0
        if before and latency > before * QUEUE_RISE * stepped:  # more queue than any step explains: capacity lost
            self.phase, self._cruised = CRUISE, 0
            self.base = max(1, int(limit * before / latency))  # what kept the latency it had
            return self.base
        if self.phase == CRUISE:
            self._settle(in_flight, throughput, latency, self.base)
            if before and latency * QUEUE_RISE < before:  # the server got faster: look for its new knee
                self.phase = SLOW_START
                return limit * 2
            self._cruised += 1
            if self._cruised < CRUISE_ROUNDS:
                return None
            self._cruised = 0
            return self._probe_up()
        if self.phase == PROBE_UP:
            if self._pays(in_flight, throughput):
                self._settle(in_flight, throughput, latency, limit)
                return self._probe_up()
            return self._probe_down()
        if self._holds(in_flight, throughput):  # PROBE_DOWN: nothing lost, the step was queue
            self._settle(in_flight, throughput, latency, limit)
            return self._probe_down()
        self.phase = CRUISE
        return self.base

    def _settle(self, in_flight: float, throughput: float, latency: float, limit: int) -> None:
        self.base, self._ref, self._ref_latency = limit, (in_flight, throughput), latency

    def _probe_up(self) -> int:
        if self.base >= self.maximum:
            return self._probe_down()
        self.phase = PROBE_UP
        return max(self.base + 1, round(self.base * GROW))

    def _probe_down(self) -> int:
        if self.base <= 1:
            self.phase = CRUISE
            return self.base
        self.phase = PROBE_DOWN
        return min(self.base - 1, round(self.base * SHRINK))

    def _pays(self, in_flight: float, throughput: float, worth: float = WORTH) -> bool:
        """Whether throughput grew by at least `worth` of the growth in calls in flight since the reference."""
        ref_in_flight, ref_throughput = self._ref or (in_flight, throughput)
        grown = in_flight / ref_in_flight - 1
        return grown > 0.05 and throughput / ref_throughput - 1 >= worth * grown

    def _holds(self, in_flight: float, throughput: float) -> bool:
        """Whether throughput fell by less than `WORTH` of the fall in calls in flight since the reference."""
        ref_in_flight, ref_throughput = self._ref or (in_flight, throughput)
        return 1 - throughput / ref_throughput <= WORTH * (1 - in_flight / ref_in_flight)


class AdaptiveLimit:
    """An `asyncio.Semaphore` of `maximum` permits whose usable share adapts to the server.

    Additive increase, multiplicative decrease: a 429 halves the limit (at most once per
    `cooldown` seconds, so one burst of 429s counts once); each success adds 1/limit,
    so the limit grows by one per limit's worth of successes, never above `maximum`.
    Given a `start`, the limit begins there instead and successes with their latency
    steer it (`KneeSearch`); 429s still halve it. A separate ceiling, set by `lower` and
    raised by `relax`, lets the memory guard hold the limit down whatever the successes
    say. A lowered limit is enforced by keeping permits back as they are freed or taken,
    and a raised one by handing them out again; calls already holding a permit finish
    undisturbed.
    """

    def __init__(self, maximum: int, *, cooldown: float = 1.0, start: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.maximum = maximum
        self.cooldown = cooldown
        self.clock = clock
        self._semaphore = asyncio.Semaphore(maximum)
        self._limit = float(maximum)
        self._ceiling = maximum
        self._held = 0
        self._last_decrease = -float("inf")
        self.decreases = 0
        self.lowest = maximum
        self.in_use = 0
        self.timeouts = 0  # calls given up on while the server may still have been working on them
        self.knee = KneeSearch(min(start, maximum), maximum) if start is not None else None
        if self.knee is not None:
            self._limit = float(self.knee.base)
            self._held = maximum - self.knee.base
            self._semaphore = asyncio.Semaphore(self.knee.base)
            self.lowest = self.knee.base
        self.highest = self.limit

    @property
    def limit(self) -> int:
        return max(1, min(int(self._limit), self._ceiling))

    async def __aenter__(self) -> None:
        while True:  # at most `maximum` turns: each one withholds a permit
            await self._semaphore.acquire()
            if not self._withhold():
                self.in_use += 1
                return

    def _withhold(self) -> bool:
        """Keep a just-freed permit back if the limit was lowered below the permits in use."""
        if self._held < self.maximum - self.limit:
            self._held += 1
            return True
        return False

    def _hand_back(self) -> None:
        """Release the permits kept back beyond what the current limit needs."""
        while self._held > self.maximum - self.limit:
            self._held -= 1
            self._semaphore.release()

    async def __aexit__(self, *exc: object) -> None:
        self.in_use -= 1
        if not self._withhold():
            self._semaphore.release()

    def on_success(self, latency: float | None = None, work: float = 1.0, in_flight: int | None = None) -> None:
        """Count an answer; with its latency (seconds) and `call_work`, let the knee search steer the limit.

        `in_flight`: the calls out when it came back, itself included (by default those
        holding this limit's permits, and itself).
        """
        knee = self.knee
        if knee is None:
            if self._limit >= self.maximum:
                return
            self._limit = min(float(self.maximum), self._limit + 1.0 / self._limit)
            self._hand_back()
            return
        if latency is None:
            return
        target = knee.observe(latency / work, self.in_use + 1 if in_flight is None else in_flight, self.limit)
        if target is not None:
            log.debug("concurrency %d -> %d (%s)", self.limit, target, knee.describe())
            self._limit = float(target)
            self.lowest = min(self.lowest, self.limit)
            self.highest = max(self.highest, self.limit)
            self._hand_back()

    def call_timeout(self, work: float, ceiling: float, *, factor: float = 4.0, floor: float = 10.0) -> float:
        """How long a call of `work` may take: `factor` times the slowest recent answer for its work.

        Never below `floor` nor above `ceiling`; `ceiling` until answers have come back.
        """
        worst = self.knee.worst if self.knee is not None else 0.0
        return ceiling if not worst else max(min(floor, ceiling), min(ceiling, factor * worst * work))

    def on_failure(self, error: BaseException) -> None:
        """Count a call that timed out, which the server may still be working on; an adaptive limit halves.

        The call's retry then waits for a permit under the halved limit: it is not sent
        again to a server whose queue made it time out until that queue has shrunk.
        """
        if not _timed_out(error):
            return
        self.timeouts += 1
        if self.knee is not None:
            self.on_rate_limited("timed out")

    def on_rate_limited(self, why: str = "rate limited") -> None:
        now = self.clock()
        if now - self._last_decrease < self.cooldown:
            return
        self._last_decrease = now
        self._limit = max(1.0, self._limit / 2)
        self.decreases += 1
        self.lowest = min(self.lowest, self.limit)
        if self.knee is not None:
            self.knee.backed_off(self.limit, self.in_use)
        log.info("%s: lowering concurrency to %d", why, self.limit)

    def lower(self) -> int:
        """Halve the ceiling (not below 1) from the limit in force; return the new limit."""
        self._ceiling = max(1, self.limit // 2)
        self.lowest = min(self.lowest, self.limit)
        return self.limit

    def relax(self, step: int) -> int:
        """Raise the ceiling by `step` (up to `maximum`) and hand out permits it frees; return the limit."""
        self._ceiling = min(self.maximum, self._ceiling + max(1, step))
        self._hand_back()
        return self.limit

    @property
    def lowered(self) -> bool:
        """Whether the ceiling is below the maximum."""
        return self._ceiling < self.maximum


def _timed_out(error: BaseException | None) -> bool:
    """Whether `error`, or what caused it, is a timeout."""
    for _ in range(4):
        if error is None:
            return False
        if isinstance(error, TimeoutError):
            return True
        error = error.__cause__
    return False


class RateLimit:
    """A token bucket refilled continuously: `per_minute` units, spent up to a minute's worth at once."""

    def __init__(self, per_minute: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._level = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, amount: float) -> None:
        """Wait until `amount` units (capped at the bucket's size) are available, then spend them."""
        amount = min(amount, self.capacity)
        async with self._lock:  # first come, first served
            now = time.monotonic()
            self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._level < amount:
                await asyncio.sleep((amount - self._level) / self.rate)
                self._level, self._stamp = amount, time.monotonic()
            self._level -= amount
