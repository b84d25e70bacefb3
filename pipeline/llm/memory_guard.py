"""Watch the process's and the machine's memory: steer the run down under pressure, stop above the hard limit.

`--memory-limit-mb` is absolute: the resident memory (RSS) the process may reach. The
headroom is judged from the RSS measured when the run starts: a limit that leaves less
than `MIN_HEADROOM_MB` above it is refused, and the soft limit sits at `SOFT_RATIO` of
the way from the start RSS to the limit, not at a share of an absolute figure the
interpreter may already exceed.

Under pressure the guard never sleeps: it lowers the limits it watches (calls in flight,
shards of documents held), lets the work in hand finish, and raises them again slowly
once memory is back under the soft limit. RSS of a Python process rarely falls, so
waiting for it to fall would only stall the run.
"""

from __future__ import annotations

import functools
import gc
import logging
import math
import os
import sys
import time
from typing import Any

import psutil

from pipeline.errors import InputError, MemoryLimitError
from pipeline.llm.limits import AdaptiveLimit

log = logging.getLogger(__name__)

SOFT_RATIO = 0.85  # of the headroom between the start RSS and the limit
MIN_HEADROOM_MB = 32  # the least a limit must leave above the start RSS
MACHINE_PERCENT = 80.0  # psutil.virtual_memory().percent above which the run steers down
_CHECK_EVERY_S = 0.25
_STEER_EVERY_S = 1.0  # at most one step down, or one step up, per second
_GC_EVERY_S = 10.0
_RAISE_SHARE = 8  # a step up gives back 1/8 of a limit's maximum (at least 1)
_GROWN_BYTES = 16 * 2**20  # more RSS than at the last step down, by this much, steps down again
_GROWN_PERCENT = 1.0  # likewise, for the machine's memory in use


def process_rss() -> int:
    """Return this process's resident memory in bytes."""
    return _this_process(os.getpid()).memory_info().rss


@functools.lru_cache(maxsize=4)
def _this_process(pid: int) -> psutil.Process:
    """One psutil handle per process (a fork gets its own), not one made at every check."""
    return psutil.Process(pid)


def machine_percent() -> float:
    """Return the share of the machine's memory in use, in percent."""
    return float(psutil.virtual_memory().percent)


def _peak_rss_bytes() -> int:
    """Return the kernel's high-water mark for this process where it keeps one."""
    if sys.platform.startswith("win"):
        return int(getattr(psutil.Process().memory_info(), "peak_wset", 0))
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _check_limit(limit_mb: float, start: int) -> None:
    """Refuse a limit that leaves the run no room above what the process already uses."""
    start_mb, least = start / 2**20, math.ceil(start / 2**20 + MIN_HEADROOM_MB)
    if limit_mb * 2**20 < start + MIN_HEADROOM_MB * 2**20:
        where = "below" if limit_mb * 2**20 <= start else f"within {MIN_HEADROOM_MB} MB of"
        raise InputError(f"--memory-limit-mb {limit_mb:g} is {where} the {start_mb:.0f} MB this process "
                         f"already uses; give at least {least}")


class MemoryGuard:
    """Admit new LLM calls, steering the watched limits down under memory pressure.

    Checks are throttled to one every quarter second, so the guard costs nothing
    measurable per call. Pressure is RSS above the soft limit, or the machine's memory
    in use above `MACHINE_PERCENT` (watched with or without a limit, since a nightly job
    shares its machine). Under pressure each watched limit is halved (not below 1), at
    most once a second and only while the pressure still grows, and a garbage collection
    runs at most every ten seconds; without it, the limits climb back by an eighth of
    their maximum a second. Only RSS above the hard limit stops the run.
    """

    def __init__(self, limit_mb: float | None) -> None:
        self.start = process_rss()
        if limit_mb:
            _check_limit(limit_mb, self.start)
        self.limit = int(limit_mb * 2**20) if limit_mb else None
        self.soft = int(self.start + SOFT_RATIO * (self.limit - self.start)) if self.limit else None
        self._watched: dict[str, AdaptiveLimit] = {}
        self._last_check = self._last_steer = self._last_gc = -math.inf
        self._steered_at: tuple[int, float] | None = None  # the readings at the last step down
        self._rss = self.peak = self.start
        self.machine_peak = 0.0
        self.steered_down = self.steered_up = self.gc_runs = 0
        self.lowest: dict[str, int] = {}

    def watch(self, name: str, limit: AdaptiveLimit) -> None:
        """Steer `limit` with the others: halve it under pressure, raise it slowly after."""
        self._watched[name] = limit
        self.lowest.setdefault(name, limit.limit)

    @property
    def peak_mb(self) -> float:
        return max(self.peak, _peak_rss_bytes()) / 2**20

    def _check_hard(self, rss: int) -> None:
        if self.limit and rss > self.limit:
            raise MemoryLimitError(f"memory use reached {rss / 2**20:.0f} MB, over the "
                                   f"{self.limit / 2**20:.0f} MB limit (--memory-limit-mb); stopping")

    def admit(self) -> None:
        """Return at once; steer the watched limits; raise MemoryLimitError over the hard limit."""
        now = time.monotonic()
        if now - self._last_check < _CHECK_EVERY_S:
            self._check_hard(self._rss)  # the last reading: once over the limit, no call starts
            return
        self._last_check = now
        rss, machine = process_rss(), machine_percent()
        self._rss, self.peak, self.machine_peak = rss, max(self.peak, rss), max(self.machine_peak, machine)
        self._check_hard(rss)
        over_soft = self.soft is not None and rss > self.soft
        if over_soft or machine > MACHINE_PERCENT:
            self._pressed(now, rss, machine, over_soft)
        else:
            self._steered_at = None
            if now - self._last_steer >= _STEER_EVERY_S and any(lim.lowered for lim in self._watched.values()):
                self._last_steer = now
                self.steered_up += 1
                raised = {name: lim.relax(lim.maximum // _RAISE_SHARE) for name, lim in self._watched.items()}
                log.info("memory at %.0f MB, machine at %.0f%%: raising %s", rss / 2**20, machine, _named(raised))

    def saw_read(self, nbytes: int) -> None:
        """Check memory while a big answer is being read, as before a call (the HTTP client calls this)."""
        self.admit()

    def _pressed(self, now: float, rss: int, machine: float, over_soft: bool) -> None:
        """Collect garbage now and then; halve the watched limits while the pressure grows."""
        if now - self._last_gc >= _GC_EVERY_S:
            self._last_gc = now
            self.gc_runs += 1
            gc.collect()
        if now - self._last_steer < _STEER_EVERY_S:
            return
        last = self._steered_at
        # Still growing, judged by what presses: this process's RSS, or else the machine's
        # memory alone (a long run's RSS creeps up while others fill the machine).
        if last is not None and not (rss > last[0] + _GROWN_BYTES if over_soft else machine > last[1] + _GROWN_PERCENT):
            return  # steady under the lowered limits: let the work in hand finish
        self._last_steer, self._steered_at = now, (rss, machine)
        self.steered_down += 1
        lowered = {name: lim.lower() for name, lim in self._watched.items()}
        for name, value in lowered.items():
            self.lowest[name] = min(self.lowest.get(name, value), value)
        why = (f"RSS {rss / 2**20:.0f} MB is above the soft limit of {self.soft / 2**20:.0f} MB" if over_soft
               and self.soft is not None else f"the machine's memory is {machine:.0f}% in use")
        log.warning("%s: lowering %s", why, _named(lowered))

    def stats(self) -> dict[str, Any]:
        """What the guard saw and did, for the run report."""
        mb = lambda n: None if n is None else round(n / 2**20, 1)  # noqa: E731
        return {"limit_mb": mb(self.limit), "soft_limit_mb": mb(self.soft), "start_rss_mb": mb(self.start),
                "peak_rss_mb": round(self.peak_mb, 1), "machine_peak_percent": round(self.machine_peak, 1),
                "steered_down": self.steered_down, "steered_up": self.steered_up, "gc_runs": self.gc_runs,
                "lowest": dict(self.lowest)}


def _named(limits: dict[str, int]) -> str:
    return ", ".join(f"{name} to {value}" for name, value in limits.items())
