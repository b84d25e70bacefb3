"""LangSmith tracing that costs a run nothing when it cannot work: checked once, before the run, by the CLI.

With LANGSMITH_TRACING=true and no key, or an endpoint that cannot be reached, LangSmith's
client retries every upload in the background and holds the process at exit: a 3-second
run took 14-23 s and printed connection errors, even with -q. So the command line asks
once: without a key, or when the endpoint refuses a connection within a second, tracing
is turned off for this process, with one warning saying why. A notebook keeps whatever
its environment says.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping
from urllib.parse import urlsplit

FLAGS = ("LANGSMITH_TRACING", "LANGSMITH_TRACING_V2", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING")
KEYS = ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY")
ENDPOINTS = ("LANGSMITH_ENDPOINT", "LANGCHAIN_ENDPOINT")
DEFAULT_ENDPOINT = "https://api.smith.langchain.com"
CONNECT_S = 1.0


def tracing_requested(environ: MutableMapping[str, str]) -> bool:
    """Whether the environment turns LangSmith tracing on."""
    return any(environ.get(flag, "").strip().lower() == "true" for flag in FLAGS)


def settle_tracing(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Turn tracing off in `environ` when it cannot work; return the warning to show, or None."""
    if not tracing_requested(environ):
        return None
    if not any(environ.get(key) for key in KEYS):
        why = "no LANGSMITH_API_KEY is set"
    else:
        endpoint = next((environ[e] for e in ENDPOINTS if environ.get(e)), DEFAULT_ENDPOINT)
        if (problem := _unreachable(endpoint)) is None:
            return None
        why = f"{endpoint} cannot be reached ({problem})"
    for flag in FLAGS:
        if flag in environ:
            environ[flag] = "false"
    _forget_cached_settings()
    return f"LangSmith tracing is on but {why}: tracing is off for this run"


def _unreachable(endpoint: str) -> str | None:
    """Why a TCP connection to `endpoint` fails within CONNECT_S seconds, or None if it opens."""
    parts = urlsplit(endpoint)
    if not parts.hostname:
        return "not a URL"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=CONNECT_S):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _forget_cached_settings() -> None:
    """LangSmith caches the environment it read; make it read again (if it was imported already)."""
    import sys

    utils = sys.modules.get("langsmith.utils")
    for name in ("get_env_var", "get_tracer_project"):
        if (cached := getattr(utils, name, None)) is not None and hasattr(cached, "cache_clear"):
            cached.cache_clear()
