"""One worker thread that runs a store's SQLite work in order, for loops that refuse blocking calls.

`langgraph dev` raises BlockingError for any sqlite3 call made on its event loop. There
the result store hands every statement to this thread: reads are awaited, writes are
queued and not waited for, and whenever the queue runs dry (or a long stream of work has
gone by) `on_idle` commits what was written. The order of the work is the order it was
handed over, so a read sees every write queued before it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
# Most jobs run between two commits while the queue never runs dry: what a kill can cost.
GROUP = 256
_STOP = object()

_Job = tuple[Callable[..., Any], tuple[Any, ...], "Future[Any] | None"]


def loop_refuses_blocking() -> bool:
    """Whether the running loop's thread refuses a blocking SQLite call (a checker such as blockbuster is on).

    Call it on the event loop: a trivial statement on an in-memory database, which such a
    checker refuses with its BlockingError.
    """
    import sqlite3

    db = sqlite3.connect(":memory:")
    try:
        db.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - the checker's own error class, not importable here
        if type(exc).__name__ == "BlockingError":
            return True
        raise
    finally:
        db.close()
    return False


class StoreThread:
    """Run jobs one at a time on one daemon thread, calling `on_idle` after each run of them."""

    def __init__(self, name: str, on_idle: Callable[[], None]) -> None:
        self._jobs: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._on_idle = on_idle
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue `fn(*args)` and return at once; what it raises is its own to record."""
        self._jobs.put((fn, args, None))

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue `fn(*args)`; its result, or what it raised, in the future."""
        future: Future[T] = Future()
        self._jobs.put((fn, args, future))
        return future

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in the thread and wait for it (from this thread itself: at once)."""
        if threading.get_ident() == self._thread.ident:
            return fn(*args)
        return self.submit(fn, *args).result()

    async def acall(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in the thread and await it."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def stop(self, last: Callable[[], None]) -> Future[None]:
        """Run what is queued, then `last`, and end the thread; the future is done once `last` has run."""
        done = self.submit(last)
        self._jobs.put(_STOP)
        return done

    def join(self) -> None:
        """Wait for the thread to end (after `stop`)."""
        if threading.get_ident() != self._thread.ident:
            self._thread.join()

    def _work(self) -> None:
        job: _Job | object | None = None
        while True:
            if job is None:
                job = self._jobs.get()
            for _ in range(GROUP):  # a group ends when the queue runs dry, or after GROUP jobs
                if job is _STOP:
                    return
                self._run(job)  # type: ignore[arg-type]
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    job = None
                    break
            self._idle()  # (a job taken and not yet run is carried to the next group)

    def _run(self, job: _Job) -> None:
        fn, args, future = job
        if future is not None and not future.set_running_or_notify_cancel():
            return
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits, or logged
            if future is not None:
                future.set_exception(exc)
            else:
                log.error("result store: a queued write failed: %s", exc)
            return
        if future is not None:
            future.set_result(result)

    def _idle(self) -> None:
        try:
            self._on_idle()
        except Exception:  # noqa: BLE001 - the store records its own failures; this is a bug
            log.exception("result store: the commit after queued writes failed")
