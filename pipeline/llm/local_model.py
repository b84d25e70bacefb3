"""The embedded model as a run's endpoint: the settings it runs best with, and its start and stop.

A run that names no endpoint (or the model `local`) gets it, from any entry point: the
run's resources start it and stop it (graphs/resources.py). The server itself, and the
weights it loads, are in pipeline.llm.embedded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pipeline.llm.embedded import EmbeddedServer, default_settings

log = logging.getLogger(__name__)

LOCAL = "local"  # the model name that asks for the embedded model even where an endpoint is set

# The embedded model is small: short chunks, short answers, greedy decoding with a
# repetition penalty (it loops at higher temperatures), one request per server slot, and
# one request at a time: on 2 cores four slots were slower (62 s for data/*.txt against
# 54 s), and llama.cpp's batching of concurrent requests turned near-tie tokens one way or
# the other from run to run; one at a time, two runs give the same summary.
# Each applies only where the run leaves the setting unset.
TUNING: dict[str, Any] = {
    "concurrency": 1,
    "chunk_tokens": 800,
    "token_max": 2000,
    "temperature": 0.0,
    "extra_body": {"repeat_penalty": 1.1},
    "map_max_tokens": 150,
    "final_max_tokens": 500,
}


@asynccontextmanager
async def local_endpoint(concurrency: int, threads: int | None = None) -> AsyncIterator[EmbeddedServer]:
    """Run the embedded model for the block, with a slot per call in flight; yield it (its base_url, model)."""
    log.info("no endpoint configured: starting the embedded local model, a small demo-grade model "
             "(set OPENAI_BASE_URL or OPENAI_API_KEY, or give base_url, to use a real one)")
    # In a worker thread: counting the cores lists /sys, which the dev server forbids on the event loop.
    settings = await asyncio.to_thread(default_settings, concurrency, threads=threads)
    async with EmbeddedServer(settings) as server:
        yield server


def peak_rss(server: EmbeddedServer) -> dict[str, float]:
    """The server's peak resident memory as a report entry; nothing where it is unknown."""
    peak = server.peak_rss_mb()
    return {} if peak is None else {"embedded_server_peak_rss_mb": round(peak, 1)}
