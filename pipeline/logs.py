"""Log formats for people and for machines."""

from __future__ import annotations

import json
import logging
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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text or record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


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
