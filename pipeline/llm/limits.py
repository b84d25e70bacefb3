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

from pipeline.llm.knee import START, KneeSearch, call_work

__all__ = ["START", "AdaptiveLimit", "KneeSearch", "RateLimit", "RecentLatency", "call_work", "timed_out"]

log = logging.getLogger(__name__)

TIMEOUT_FACTOR = 4.0  # a call may take this many times the recent p95 for its work ...
TIMEOUT_FLOOR_S = 10.0  # ... and never less than this
TIMEOUT_SEEN = 16  # answers seen before the timeout follows them (until then: the user's --timeout)


class RecentLatency:
    """The 95th percentile of the last `size` answers' latency per work, worked out anew every `every` answers.

    A sort of a few dozen floats every few answers: negligible beside a call.
    """

    __slots__ = ("size", "every", "seen", "p95", "_ring")

    def __init__(self, size: int = 64, every: int = 8) -> None:
        self.size, self.every = size, every
        self.seen = 0
        self.p95 = 0.0
        self._ring: list[float] = []

    def add(self, latency_per_work: float) -> None:
        """Keep one answer's latency per work; refresh the percentile every `every` answers."""
        if len(self._ring) < self.size:
            self._ring.append(latency_per_work)
        else:
            self._ring[self.seen % self.size] = latency_per_work
        self.seen += 1
        if self.seen % self.every == 0:
            ordered = sorted(self._ring)
            self.p95 = ordered[int(0.95 * (len(ordered) - 1))]


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
    undisturbed. An adapting limit also scales each call's timeout to the answers'
    recent latency (`call_timeout`).
    """

    def __init__(self, maximum: int, *, cooldown: float = 1.0, start: int | None = None,
                 clock: Callable[[], float] = time.monotonic, timeout_floor: float = TIMEOUT_FLOOR_S) -> None:
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
        self.timeout_floor = timeout_floor
        self.recent = RecentLatency()  # over every kind of call
        self._recent: dict[int | None, RecentLatency] = {}  # by kind (the tokens a call may write: its step's)
        self.knee = KneeSearch(min(start, maximum), maximum) if start is not None else None
        if self.knee is not None:
            self._limit = float(self.knee.base)
            self._held = maximum - self.knee.base
            self._semaphore = asyncio.Semaphore(self.knee.base)
            self.lowest = self.knee.base
        self._recount()
        self.highest = self.limit

    @property
    def limit(self) -> int:
        return self._whole

    def _recount(self) -> None:
        """Work out the limit in force and the permits it keeps back, after the limit or the ceiling moved.

        Kept rather than worked out on every read: each call reads them twice.
        """
        self._whole = max(1, min(int(self._limit), self._ceiling))
        self._spare = self.maximum - self._whole

    async def __aenter__(self) -> None:
        while True:  # at most `maximum` turns: each one withholds a permit
            await self._semaphore.acquire()
            if not self._withhold():
                self.in_use += 1
                return

    def _withhold(self) -> bool:
        """Keep a just-freed permit back if the limit was lowered below the permits in use."""
        if self._held < self._spare:
            self._held += 1
            return True
        return False

    def _hand_back(self) -> None:
        """Release the permits kept back beyond what the current limit needs."""
        while self._held > self._spare:
            self._held -= 1
            self._semaphore.release()

    async def __aexit__(self, *exc: object) -> None:
        self.in_use -= 1
        if not self._withhold():
            self._semaphore.release()

    def on_success(self, latency: float | None = None, work: float = 1.0, in_flight: int | None = None,
                   kind: int | None = None) -> None:
        """Count an answer; with its latency (seconds) and `call_work`, let the knee search steer the limit.

        `in_flight`: the calls out when it came back, itself included (by default those
        holding this limit's permits, and itself). `kind` tells calls of one step from
        another's (their max_tokens): each kind's timeout follows its own answers.
        """
        knee = self.knee
        if knee is None:
            if self._limit >= self.maximum:
                return
            self._limit = min(float(self.maximum), self._limit + 1.0 / self._limit)
            self._recount()
            self._hand_back()
            return
        if latency is None:
            return
        self.saw(latency, work, kind)
        target = knee.observe(latency / work, self.in_use + 1 if in_flight is None else in_flight, self.limit)
        if target is not None:
            log.debug("concurrency %d -> %d (%s)", self.limit, target, knee.describe())
            self._limit = float(target)
            self._recount()
            self.lowest = min(self.lowest, self.limit)
            self.highest = max(self.highest, self.limit)
            self._hand_back()

    def saw(self, latency: float, work: float, kind: int | None = None) -> None:
        """Keep a call's latency per work for the timeouts: an answer's, or a timed-out call's time so far."""
        self.recent.add(latency / work)
        if kind is not None:
            if (own := self._recent.get(kind)) is None:
                own = self._recent[kind] = RecentLatency()
            own.add(latency / work)

    def call_timeout(self, work: float, ceiling: float, kind: int | None = None) -> float:
        """How long a call of `work` may take: `TIMEOUT_FACTOR` times the recent p95 latency for its work.

        Never below the floor nor above `ceiling` (the user's --timeout), and `ceiling`
        until `TIMEOUT_SEEN` answers of its `kind` have come back: a final call that writes
        a thousand tokens is not timed by map calls that wrote twenty of theirs. Only a limit
        that adapts scales it: a fixed concurrency may have built a queue that its first
        answers did not show.
        """
        recent = self.recent if kind is None else self._recent.get(kind)
        if self.knee is None or recent is None or recent.seen < TIMEOUT_SEEN:
            return ceiling
        return max(min(self.timeout_floor, ceiling), min(ceiling, TIMEOUT_FACTOR * recent.p95 * work))

    def on_failure(self, error: BaseException) -> None:
        """Count a call that timed out, which the server may still be working on; an adaptive limit halves.

        The call's retry then waits for a permit under the halved limit: it is not sent
        again to a server whose queue made it time out until that queue has shrunk.
        """
        if not timed_out(error):
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
        self._recount()
        self.decreases += 1
        self.lowest = min(self.lowest, self.limit)
        if self.knee is not None:
            self.knee.backed_off(self.limit, self.in_use)
        log.info("%s: lowering concurrency to %d", why, self.limit)

    def lower(self) -> int:
        """Halve the ceiling (not below 1) from the limit in force; return the new limit."""
        self._ceiling = max(1, self.limit // 2)
        self._recount()
        self.lowest = min(self.lowest, self.limit)
        return self.limit

    def relax(self, step: int) -> int:
        """Raise the ceiling by `step` (up to `maximum`) and hand out permits it frees; return the limit."""
        self._ceiling = min(self.maximum, self._ceiling + max(1, step))
        self._recount()
        self._hand_back()
        return self.limit

    @property
    def lowered(self) -> bool:
        """Whether the ceiling is below the maximum."""
        return self._ceiling < self.maximum


def timed_out(error: BaseException | None) -> bool:
    """Whether `error`, or what caused it, is a timeout."""
    for _ in range(4):
        if error is None:
            return False
        if isinstance(error, TimeoutError):
            return True
        error = error.__cause__
    return False


HELD_BACK_S = 10.0  # a wait for a rate limit this long is said once, so that a slow run is not a silent one


class RateLimit:
    """A token bucket refilled continuously: `per_minute` units, spent up to a minute's worth at once."""

    def __init__(self, per_minute: float, name: str = "rate") -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.name = name  # "rpm", "tpm": for the one line that says calls are held back
        self._level = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()
        self._told = False

    async def take(self, amount: float) -> None:
        """Wait until `amount` units (capped at the bucket's size) are available, then spend them."""
        if amount > self.capacity and not self._told:
            self._told = True
            log.warning("the %s limit, %g a minute, is less than one call's %.0f: one call a minute at most",
                        self.name, self.capacity, amount)
        amount = min(amount, self.capacity)
        async with self._lock:  # first come, first served
            now = time.monotonic()
            self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._level < amount:
                wait = (amount - self._level) / self.rate
                if wait >= HELD_BACK_S and not self._told:
                    self._told = True
                    log.warning("the %s limit, %g a minute, holds calls back: the next one waits %.0f s",
                                self.name, self.capacity, wait)
                await asyncio.sleep(wait)
                self._level, self._stamp = amount, time.monotonic()
            self._level -= amount
