"""Log formats for people and for machines."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone


class RedactFilter(logging.Filter):
    """Pass every record through `redact` before any handler formats it: message, traceback, stack."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self.redact = redact
        self._tracebacks = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._tracebacks.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def _entry(created: float, level: str, logger: str, message: str) -> dict[str, str]:
    return {"ts": datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": level, "logger": logger, "message": message}


# Fields a log call may pass in `extra=`, written as they are beside the message for a log
# pipeline to aggregate: what happened, in which phase, how far, to which document, at what cost.
FIELDS = ("event", "phase", "done", "total", "rate", "eta_seconds", "document", "status", "calls", "tokens",
          "seconds", "batch", "exit_code")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the structured FIELDS given (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = dict(_entry(record.created, record.levelname.lower(), record.name,
                                               record.getMessage()))
        for name in FIELDS:
            if (value := record.__dict__.get(name)) is not None:
                entry[name] = value
        if record.exc_text or record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def error_line(message: str, *, as_json: bool, level: str = "error") -> str:
    """Format the run's closing error (or warning): `error: ...`, or with JSON logs a log line from "run"."""
    if as_json:
        return json.dumps(_entry(time.time(), level, "run", message), ensure_ascii=False)
    return f"{level}: {message}"


def setup_logging(*, quiet: bool, as_json: bool, verbose: bool = False,
                  redact: Callable[[str], str] | None = None) -> None:
    """Send logs to stderr, as text or JSON lines; keep the libraries' chatter down.

    With `redact`, every line (and traceback) passes through it before it is written.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    if redact is not None:
        handler.addFilter(RedactFilter(redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    for noisy in ("httpx", "aiohttp", "langchain", "langgraph", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
