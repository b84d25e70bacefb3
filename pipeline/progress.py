"""Progress: counted where calls complete, sent as stream events, shown where the run is watched.

The runner counts calls per phase through the `Progress` protocol; `EventProgress`
sends those counts as LangGraph custom stream events (`{"event": "progress", ...}`), a
few times a second rather than once a call. Whoever watches the stream shows them: tqdm
bars (a terminal's, or a notebook's widgets where ipywidgets is installed, else one line
of text), log lines for unattended runs, or nothing.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from tqdm.std import tqdm

log = logging.getLogger(__name__)

EVERY_S = 0.2  # the most often progress is sent


class Progress(Protocol):
    """Receives counts as work is planned and as each LLM call completes."""

    def add_total(self, phase: str, n: int) -> None: ...
    def advance(self, phase: str, n: int = 1) -> None: ...
    def close(self) -> None: ...


class NoProgress:
    """Count nothing."""

    def add_total(self, phase: str, n: int) -> None: pass
    def advance(self, phase: str, n: int = 1) -> None: pass
    def close(self) -> None: pass


class EventProgress:
    """Count calls per phase and send the counts (and the run's counters) as stream events, at most every EVERY_S s."""

    def __init__(self, emit: Callable[[dict[str, Any]], None], every: float = EVERY_S,
                 stats: Callable[[], dict[str, Any]] | None = None) -> None:
        self.emit, self.every, self.stats = emit, every, stats
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self._changed: set[str] = set()
        self._last = 0.0
        # One dict, sent with every stats event and refilled in place: a watcher in this
        # process that keeps it sees the counts of close() too, even when the stream was
        # cut short (a signal) before that last event could reach it.
        self.latest: dict[str, Any] = {}

    def add_total(self, phase: str, n: int) -> None:
        new = phase not in self.totals
        self.totals[phase] = self.totals.get(phase, 0) + n
        self.done.setdefault(phase, 0)
        self._changed.add(phase)
        # A new phase shows at once; a total that grows as batches are planned goes out
        # at the usual rate, not once a batch.
        self._send(force=new)

    def advance(self, phase: str, n: int = 1) -> None:
        self.done[phase] = self.done.get(phase, 0) + n
        self._changed.add(phase)
        self._send()

    def close(self) -> None:
        self._send(force=True)

    def _send(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        for phase in sorted(self._changed):
            self.emit({"event": "progress", "phase": phase, "done": self.done[phase],
                       "total": self.totals.get(phase, 0)})
        self._changed.clear()
        if self.stats is not None:  # so that a run stopped half-way still reports what it spent
            fresh = self.stats()
            self.latest.clear()
            self.latest.update(fresh)
            self.emit({"event": "stats", "stats": self.latest})


class View(Protocol):
    """Shows the counts that progress events carry."""

    def show(self, phase: str, done: int, total: int) -> None: ...
    def close(self) -> None: ...


class NoView:
    """Show nothing."""

    def show(self, phase: str, done: int, total: int) -> None: pass
    def close(self) -> None: pass


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (notebook, lab, VS Code, Colab, JupyterLite)."""
    return "ipykernel.zmqshell" in sys.modules or "IPython.utils._process_emscripten" in sys.modules


def notebook_widgets() -> type | None:
    """tqdm's widget bar where ipywidgets can draw it, else None (and no warning printed)."""
    try:
        from tqdm import notebook
    except ImportError:
        return None
    return notebook.tqdm if notebook.IProgress is not None else None


class BarView:
    """One bar per phase: tqdm's on a terminal or as notebook widgets; elsewhere one line of text.

    Bars stacked on a terminal move the cursor up to redraw; where that cannot be done
    (a notebook without ipywidgets, a file), every phase shares a single line instead.
    """

    def __init__(self) -> None:
        self._bars: dict[str, Any] = {}
        widgets = notebook_widgets() if in_notebook() else None
        self._bar: Any = widgets or tqdm
        self._one_line = widgets is None and not sys.stderr.isatty()  # bars cannot be stacked
        self._line: Any = None
        self._counts: dict[str, tuple[int, int]] = {}

    def show(self, phase: str, done: int, total: int) -> None:
        if self._one_line:
            if self._line is None:
                self._line = tqdm(bar_format="{desc}", file=sys.stderr, leave=True)
            self._counts[phase] = (done, max(total, done))
            self._line.set_description_str("  ".join(f"{p} {d}/{t}" for p, (d, t) in self._counts.items()))
            return
        bar = self._bars.get(phase)
        if bar is None:
            bar = self._bars[phase] = self._bar(total=total, desc=f"{phase:>9}",
                                                unit="doc" if phase == "documents" else "call",
                                                position=len(self._bars), leave=True, dynamic_ncols=True)
        bar.total = max(total, done)
        bar.update(done - bar.n)

    def close(self) -> None:
        if self._line is not None:
            self._line.close()
        for bar in self._bars.values():
            bar.close()


class LogView:
    """A log line per phase every `every` seconds with done/total, rate and ETA, for unattended runs.

    The lines come on time whether or not calls complete meanwhile (`tick`, called about
    once a second by whoever runs the stream): a slow model or a long reduce call still
    shows the run alive. Counts already logged are not logged again at the end.
    """

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self._counts: dict[str, tuple[int, int]] = {}
        self._logged: dict[str, tuple[int, int]] = {}
        self._began: dict[str, float] = {}  # when each phase was first seen: its rate is its own
        self._ended: dict[str, float] = {}  # when it was last seen complete
        self._start = self._last = time.monotonic()

    def show(self, phase: str, done: int, total: int) -> None:
        self._counts[phase] = (done, total)
        now = time.monotonic()
        self._began.setdefault(phase, now)
        if total and done >= total:
            self._ended.setdefault(phase, now)
        else:
            self._ended.pop(phase, None)  # a total that grew: the phase goes on
        self.tick()

    def tick(self) -> None:
        now = time.monotonic()
        if self._counts and now - self._last >= self.every:
            self._last = now
            self._log(now)

    def _log(self, now: float) -> None:
        for phase, (done, total) in self._counts.items():
            if self._logged.get(phase) == (done, total) and phase in self._ended:
                continue  # finished, and said so already
            elapsed = self._ended.get(phase, now) - self._began.get(phase, self._start)
            rate = done / max(elapsed, 1e-9)
            unit = ("document" if phase == "documents" else "call") + ("" if total == 1 else "s")
            # No estimate before the phase has finished anything to estimate from.
            eta = (total - done) / rate if done and total > done else None
            shown = "done" if total and done >= total else "eta unknown" if eta is None else f"eta {eta:.0f}s"
            log.info("%s: %d/%d %s, %.1f/s, %s", phase, done, total, unit, rate, shown,
                     extra={"event": "progress", "phase": phase, "done": done, "total": total,
                            "rate": round(rate, 2), "eta_seconds": None if eta is None else round(eta, 1),
                            "seconds": round(elapsed, 1)})
        self._logged = dict(self._counts)

    def close(self) -> None:
        if self._counts and self._counts != self._logged:
            self._log(time.monotonic())
