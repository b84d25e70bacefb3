"""Per-run resources: the LLM runner, its HTTP session and counters, opened inside the loop.

A graph run spans several nodes, so the resources it opens in its first node are kept
here under the run's id and closed by its last node, or by whichever node fails first.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from pydantic import SecretStr

from graphs.context import Context
from pipeline.client import OpenAICompatChat, open_session
from pipeline.budget import Budget
from pipeline.limits import RateLimit
from pipeline.llm import CallLimits, LLMRunner
from pipeline.memory import MemoryGuard
from pipeline.store import ResultStore
from pipeline.progress import NoProgress
from pipeline.tokens import Chunker, TokenCounter, token_counter

log = logging.getLogger(__name__)

# How many map shards work at once; each keeps up to a shard's documents in memory.
SHARD_SLOTS = 3


@dataclass
class RunResources:
    """What one run holds open."""

    context: Context
    runner: LLMRunner
    count: TokenCounter
    chunker: Chunker
    session: aiohttp.ClientSession | None
    shard_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(SHARD_SLOTS))
    store: ResultStore | None = None
    marks: dict[str, float] = field(default_factory=lambda: {"start": time.monotonic()})
    collapse_levels: int = 0
    files: dict[str, int] = field(default_factory=dict)

    async def aclose(self) -> None:
        if self.store is not None:
            self.store.close()
        if self.session is not None and not self.session.closed:
            await self.session.close()

    def stats(self) -> dict[str, Any]:
        """The run's counters, as they stand."""
        s = self.runner.stats
        now = time.monotonic()
        marks = self.marks
        return {
            "llm_calls": {step: s.calls[step] for step in ("map", "collapse", "final")},
            "failed_calls": dict(s.failed_calls),
            "from_store": {step: s.from_store[step] for step in ("map", "collapse", "final")},
            "files": self.files,
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "retries": s.retries,
            "rate_limited": s.rate_limited,
            "concurrency_lowest": self.runner.concurrency.lowest,
            "peak_in_flight": s.peak_in_flight,
            "peak_rss_mb": round(self.runner.memory.peak_mb, 1),
            "memory_pauses": self.runner.memory.pauses,
            "wall_seconds": round(now - marks["start"], 3),
            "map_seconds": round(marks.get("map_end", now) - marks.get("map_start", now), 3),
            "reduce_seconds": round(now - marks.get("map_end", now), 3),
            "model": self.context.model if self.context.chat_model is None else type(self.context.chat_model).__name__,
            "concurrency": self.context.concurrency,
            "collapse_levels": self.collapse_levels,
            **({"cost_usd": round(self.runner.limits.budget.spent, 6)} if self.runner.limits.budget else {}),
        }


_RUNS: dict[str, RunResources] = {}


def open_run(context: Context) -> str:
    """Open a run's resources in the running loop and return the run's id."""
    context.validate()
    count = token_counter(context.model)
    store = ResultStore(context.store_path) if context.store_path else None
    session = None
    model = context.chat_model
    if model is None:
        session = open_session(context.concurrency, context.timeout)
        model = OpenAICompatChat(model=context.model, base_url=context.base_url or "",
                                 api_key=SecretStr(context.api_key) if context.api_key else None,
                                 temperature=context.temperature, extra_body=context.extra_body,
                                 session=session)
    price = context.price
    limits = CallLimits(
        rpm=RateLimit(context.rpm) if context.rpm else None,
        tpm=RateLimit(context.tpm) if context.tpm else None,
        budget=Budget(price, context.max_cost) if price else None,
        memory=MemoryGuard(context.memory_limit_mb))
    runner = LLMRunner(model, concurrency=context.concurrency, timeout=context.timeout,
                       max_retries=context.max_retries, count_tokens=count, limits=limits, store=store,
                       progress=context.progress or NoProgress(), identity=context.identity)
    run_id = uuid.uuid4().hex
    _RUNS[run_id] = RunResources(context, runner, count, Chunker(context.chunk_tokens, count),
                                 session=session, store=store)
    return run_id


def get_run(run_id: str) -> RunResources:
    """Return an open run's resources."""
    return _RUNS[run_id]


async def close_run(run_id: str) -> None:
    """Close a run's resources; closing twice is harmless."""
    run = _RUNS.pop(run_id, None)
    if run is not None:
        try:
            if run.context.on_stats is not None:
                run.context.on_stats(run.stats())
        finally:
            await run.aclose()


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def closes_run_on_failure(node: F) -> F:
    """Wrap a node so that an exception (or cancellation) in it closes the run's resources."""

    @functools.wraps(node)
    async def wrapper(state: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await node(state, *args, **kwargs)
        except BaseException:
            if run_id := state.get("run_id"):
                await asyncio.shield(close_run(run_id))
            raise

    return wrapper  # type: ignore[return-value]
