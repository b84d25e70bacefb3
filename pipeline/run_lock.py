"""One run at a time on a result store: an advisory lock on a file beside it.

    with RunLock(store_path, wait=False):     # LockedError naming the holder if another run has it
        ...

The lock is `flock` on `<store>.lock`, which the kernel releases when its holder's
process ends however it ends, so a lock left by a killed run is never in the way: the
file may stay, the lock does not. The file holds the holder's pid, host and start time,
only to name it in the message. Two runs over the same store (a cron job overlapping the
night before) would otherwise both pay for every call that neither had stored yet.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from pipeline.errors import LockedError

log = logging.getLogger(__name__)

POLL_S = 0.5


class RunLock:
    """Hold `<path>.lock` for a run; wait for it (up to `timeout` seconds) or refuse at once."""

    def __init__(self, path: str | os.PathLike[str], *, wait: bool = False, timeout: float | None = None) -> None:
        self.path = Path(f"{os.fspath(path)}.lock")
        self.wait = wait
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise LockedError naming the run that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        told = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = _holder(fd)
                    if not self.wait or (deadline is not None and time.monotonic() >= deadline):
                        raise LockedError(f"another run is using {self.path.with_suffix('')} ({holder}); "
                                          "wait for it to end, or pass --wait-lock to wait") from None
                    if not told:
                        log.warning("another run is using %s (%s); waiting for it to end", self.path.with_suffix(""),
                                    holder)
                        told = True
                    time.sleep(POLL_S)
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Let the next run in (the file stays: removing it could race with a run taking it)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _holder(fd: int) -> str:
    """Who holds the lock, as its file says (pid and start), for the message."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a run that has not yet said who it is"
