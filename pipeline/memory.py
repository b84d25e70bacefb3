"""Watch the process's resident memory: pause new work above a soft limit, stop above the hard one."""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import psutil

from pipeline.errors import MemoryLimitError

log = logging.getLogger(__name__)

SOFT_RATIO = 0.85
_CHECK_EVERY_S = 0.25
_PAUSE_STEP_S = 0.5
_PAUSE_MAX_S = 60.0


def _peak_rss_bytes() -> int:
    """Return the kernel's high-water mark for this process where it keeps one."""
    if sys.platform.startswith("win"):
        return int(getattr(psutil.Process().memory_info(), "peak_wset", 0))
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class MemoryGuard:
    """Admit new LLM calls only while RSS is under the limits.

    Checks are throttled to one every quarter second, so the guard costs nothing
    measurable per call. Above the soft limit (85% of the hard one) new calls wait up
    to a minute for memory to come down; above the hard limit the run stops.
    """

    def __init__(self, limit_mb: float | None) -> None:
        self._process = psutil.Process()
        self.limit = int(limit_mb * 2**20) if limit_mb else None
        self.soft = int(self.limit * SOFT_RATIO) if self.limit else None
        self._last_check = 0.0
        self._rss = self._process.memory_info().rss
        self.peak = self._rss
        self.pauses = 0

    def sample(self) -> int:
        """Read RSS now and fold it into the peak."""
        self._rss = self._process.memory_info().rss
        self._last_check = time.monotonic()
        self.peak = max(self.peak, self._rss)
        return self._rss

    @property
    def peak_mb(self) -> float:
        return max(self.peak, _peak_rss_bytes()) / 2**20

    def _check_hard(self, rss: int) -> None:
        if self.limit and rss > self.limit:
            raise MemoryLimitError(f"memory use reached {rss / 2**20:.0f} MB, over the "
                                   f"{self.limit / 2**20:.0f} MB limit (--memory-limit-mb); stopping")

    async def admit(self) -> None:
        """Return when a new call may start; raise MemoryLimitError over the hard limit."""
        if time.monotonic() - self._last_check < _CHECK_EVERY_S:
            self._check_hard(self._rss)  # the last reading: once over the limit, no call starts
            return
        rss = self.sample()
        self._check_hard(rss)
        if not self.soft or rss <= self.soft:
            return
        self.pauses += 1
        log.warning("memory at %.0f MB, above the soft limit of %.0f MB: pausing new LLM calls",
                    rss / 2**20, self.soft / 2**20)
        deadline = time.monotonic() + _PAUSE_MAX_S
        while rss > self.soft and time.monotonic() < deadline:
            await asyncio.sleep(_PAUSE_STEP_S)
            rss = self.sample()
            self._check_hard(rss)
        log.info("memory at %.0f MB: resuming LLM calls", rss / 2**20)
