"""Progress reporting: a tqdm bar on a terminal, periodic log lines otherwise.

The pipeline only sees the `Progress` protocol; the CLI chooses the implementation.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress(Protocol):
    """Receives counts as work is planned and as each LLM call completes."""

    def add_total(self, phase: str, n: int) -> None: ...
    def advance(self, phase: str, n: int = 1) -> None: ...
    def close(self) -> None: ...


class NoProgress:
    """Report nothing."""

    def add_total(self, phase: str, n: int) -> None: pass
    def advance(self, phase: str, n: int = 1) -> None: pass
    def close(self) -> None: pass


class BarProgress:
    """One tqdm bar per phase, on stderr."""

    def __init__(self) -> None:
        self._bars: dict[str, tqdm] = {}

    def _bar(self, phase: str) -> tqdm:
        if phase not in self._bars:
            self._bars[phase] = tqdm(total=0, desc=f"{phase:>6}", unit="call",
                                     position=len(self._bars), leave=True, dynamic_ncols=True)
        return self._bars[phase]

    def add_total(self, phase: str, n: int) -> None:
        bar = self._bar(phase)
        bar.total += n
        bar.refresh()

    def advance(self, phase: str, n: int = 1) -> None:
        self._bar(phase).update(n)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


class LogProgress:
    """A log line every `every` seconds with done/total, rate and ETA, for unattended runs."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self._totals: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._start = time.monotonic()
        self._last = self._start

    def add_total(self, phase: str, n: int) -> None:
        self._totals[phase] = self._totals.get(phase, 0) + n
        self._done.setdefault(phase, 0)

    def advance(self, phase: str, n: int = 1) -> None:
        self._done[phase] = self._done.get(phase, 0) + n
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._log(now)

    def _log(self, now: float) -> None:
        for phase, done in self._done.items():
            total = self._totals.get(phase, 0)
            rate = done / max(now - self._start, 1e-9)
            eta = (total - done) / rate if rate and total > done else 0.0
            log.info("%s: %d/%d calls, %.1f/s, eta %.0fs", phase, done, total, rate, eta)

    def close(self) -> None:
        if self._done:
            self._log(time.monotonic())
