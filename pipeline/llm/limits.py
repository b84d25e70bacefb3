"""Limits on LLM calls: an adaptive concurrency limit (AIMD) and request/token rate limits."""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger(__name__)


class AdaptiveLimit:
    """An `asyncio.Semaphore` of `maximum` permits whose usable share shrinks on 429s or memory pressure.

    Additive increase, multiplicative decrease: a 429 halves the limit (at most once per
    `cooldown` seconds, so one burst of 429s counts once); each success adds 1/limit,
    so the limit grows by one per limit's worth of successes, never above `maximum`.
    A separate ceiling, set by `lower` and raised by `relax`, lets the memory guard hold
    the limit down whatever the successes say. A lowered limit is enforced by keeping
    permits back as they are freed or taken, and a raised one by handing them out again;
    calls already holding a permit finish undisturbed.
    """

    def __init__(self, maximum: int, *, cooldown: float = 1.0) -> None:
        self.maximum = maximum
        self.cooldown = cooldown
        self._semaphore = asyncio.Semaphore(maximum)
        self._limit = float(maximum)
        self._ceiling = maximum
        self._held = 0
        self._last_decrease = -float("inf")
        self.decreases = 0
        self.lowest = maximum

    @property
    def limit(self) -> int:
        return max(1, min(int(self._limit), self._ceiling))

    async def __aenter__(self) -> None:
        while True:  # at most `maximum` turns: each one withholds a permit
            await self._semaphore.acquire()
            if not self._withhold():
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
        if not self._withhold():
            self._semaphore.release()

    def on_success(self) -> None:
        if self._limit >= self.maximum:
            return
        self._limit = min(float(self.maximum), self._limit + 1.0 / self._limit)
        self._hand_back()

    def on_rate_limited(self) -> None:
        now = time.monotonic()
        if now - self._last_decrease < self.cooldown:
            return
        self._last_decrease = now
        self._limit = max(1.0, self._limit / 2)
        self.decreases += 1
        self.lowest = min(self.lowest, self.limit)
        log.info("rate limited: lowering concurrency to %d", self.limit)

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
