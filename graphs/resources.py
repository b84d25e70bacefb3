"""A run's resources: the chat model and its HTTP session, the call runner, the result store.

They are opened by the outer graph's one node with `async with`, around the map-reduce
subgraph, which receives them as its runtime context. So they live exactly as long as
that node runs: a run that finishes, fails or is cancelled closes them on the way out,
and a run resumed from a checkpoint, in this process or another, opens its own, since
nothing of them is kept in state. Opening them in a first node and closing them in a
last one cannot promise that: a run can end between nodes (the recursion limit, a
cancelled stream, a rerun from a checkpoint), and then nothing closes them, or a later
node finds them missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from graphs.context import DEFAULT_MODEL, Context
from pipeline.answers.attribution import citation_counts
from pipeline.llm.budget import Budget
from pipeline.answers.checks import ANSWER_CHECKS
from pipeline.llm.client import OpenAICompatChat, open_session, probe_endpoint
from pipeline.errors import SummarizerError
from pipeline.llm.limits import START, AdaptiveLimit, RateLimit
from pipeline.llm.runner import CallLimits, LLMRunner
from pipeline.llm.memory_guard import MemoryGuard
from pipeline.llm.pool import EndpointPool, open_pool
from pipeline.progress import EventProgress
from pipeline.result_store import ResultStore
from pipeline.text.chunking import BpeCounter, Chunker, TokenCounter, token_counter

log = logging.getLogger(__name__)

# How many map shards work at once; each keeps up to a shard's documents in memory.
# The memory guard lowers it under pressure, as it lowers the calls in flight.
SHARD_SLOTS = 3

Emit = Callable[[dict[str, Any]], None]


@dataclass
class Resources:
    """What one run holds open, handed to the map-reduce steps as their runtime context."""

    context: Context  # as given, with the model resolved
    count: TokenCounter
    chunker: Chunker
    store: ResultStore | None
    runner: LLMRunner | None  # None for a dry run, which calls nothing
    emit: Emit  # LangGraph's stream writer of the run: progress and per-document events
    shard_slots: AdaptiveLimit = dataclasses.field(default_factory=lambda: AdaptiveLimit(SHARD_SLOTS))
    _warming: threading.Thread | None = None
    _map_room: asyncio.Semaphore | None = None

    def map_room(self, size: int) -> asyncio.Semaphore:
        """The documents the map may have begun and not finished, across shards: `size`, set on first use."""
        if self._map_room is None:
            self._map_room = asyncio.Semaphore(size)
        return self._map_room

    def warm_tokenizer(self) -> None:
        """Build the tokenizer in a worker thread, once, so that the reduce's first count need not wait.

        Planning small documents counts nothing, so the first calls leave without it;
        built while they are out, it uses CPU the event loop leaves idle.
        """
        if self._warming is None and isinstance(self.count, BpeCounter):
            # A daemon thread, not the loop's executor: a run stopped meanwhile (Ctrl-C)
            # exits at once instead of waiting for the tables.
            self._warming = threading.Thread(target=self.count.preload, name="tokenizer", daemon=True)
            self._warming.start()

    def llm(self) -> LLMRunner:
        """The call runner; a dry run has none."""
        if self.runner is None:
            raise RuntimeError("a dry run makes no LLM calls")
        return self.runner

    def call_stats(self) -> dict[str, Any]:
        """The counters of the run's calls so far."""
        runner = self.runner
        if runner is None:
            return {}
        s = runner.stats
        return {
            "llm_calls": {step: s.calls[step] for step in ("map", "collapse", "final")},
            "failed_calls": dict(s.failed_calls),
            "from_store": {step: s.from_store[step] for step in ("map", "collapse", "final")},
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "retries": s.retries,
            "rate_limited": s.rate_limited,
            "concurrency_lowest": runner.concurrency.lowest,
            "peak_in_flight": s.peak_in_flight,
            "answers": {key: s.answers[key] for key in ANSWER_CHECKS},
            "citations": citation_counts(s.citations),
            "peak_rss_mb": round(runner.memory.peak_mb, 1),
            "memory": runner.memory.stats(),
            "model": self.context.model if self.context.chat_model is None
            else type(self.context.chat_model).__name__,
            "concurrency": runner.concurrency.maximum,
            "concurrency_settled": runner.concurrency.limit,  # where the limit stood at the end
            "concurrency_highest": runner.concurrency.highest,
            # Calls given up on while the server may have gone on working: each may have been paid twice.
            "possible_duplicate_calls": sum(e.limit.timeouts for e in runner.model.endpoints)
            if isinstance(runner.model, EndpointPool) else runner.concurrency.timeouts,
            **({"cost_usd": round(runner.limits.budget.spent, 6)} if runner.limits.budget else {}),
            **({"endpoints": runner.model.report()} if isinstance(runner.model, EndpointPool) else {}),
        }


@asynccontextmanager
async def open_resources(context: Context, emit: Emit) -> AsyncIterator[Resources]:
    """Open what a run needs inside the running loop, and close all of it on the way out."""
    async with AsyncExitStack() as stack:
        store = None
        if context.store_path and (not context.dry_run or Path(context.store_path).exists()):
            store = ResultStore(context.store_path, read_only=context.dry_run)
            # Its error, if it lost writes, only when no other is on its way out (Ctrl-C stays "interrupted").
            stack.push(lambda kind, _error, _tb, store=store: store.close(raise_errors=kind is None))
        runner = None
        if not context.dry_run:
            if context.memory_limit_mb:  # the tokenizer (~70 MB, built later otherwise) belongs to the start RSS
                token_counter(context.model or DEFAULT_MODEL).preload()
            memory = MemoryGuard(context.memory_limit_mb)  # the start RSS, before the session and the model
            model, context = await _chat_model(context, stack)
            context.validate()  # again, now that the model is known (a spending cap needs its price)
            runner = _runner(context, model, store, memory)
            if context.engine == "ray":  # after the endpoint answered: a bad key fails before Ray starts
                from pipeline.ray.engine import ray_session

                await stack.enter_async_context(ray_session(context.ray_address))
        else:  # a dry run calls nothing, but the model decides the store's keys and the prices
            context = dataclasses.replace(context, model=context.model or await _listed_model(context))
        count = token_counter(context.model or DEFAULT_MODEL)
        # A run needs only the spans, a dry run the token counts of every document as well.
        chunker = Chunker(context.chunk_tokens, count, count_fitting=context.dry_run)
        resources = Resources(context, count, chunker, store, runner, emit)
        if runner is not None:
            runner.memory.watch("shard_slots", resources.shard_slots)
            runner.progress = EventProgress(emit, stats=resources.call_stats)
            stack.callback(runner.progress.close)  # the last counts, even from a run that fails
        yield resources


async def _chat_model(context: Context, stack: AsyncExitStack) -> tuple[Any, Context]:
    """The chat model the context asks for, with its session; the context with its model named."""
    if context.chat_model is not None:
        return context.chat_model, context
    if context.base_urls:
        pool, name = await open_pool(context.endpoints, concurrency=context.concurrency, timeout=context.timeout,
                                     api_key=context.api_key, model=context.model, default_model=DEFAULT_MODEL,
                                     temperature=context.temperature, extra_body=context.request_body,
                                     adapt=context.adapt_concurrency)
        stack.push_async_callback(pool.aclose)
        return pool, dataclasses.replace(context, model=name)
    if context.base_url:
        session = open_session(context.concurrency, context.timeout)
        stack.push_async_callback(session.close)
        listed = await probe_endpoint(context.base_url, context.api_key, session=session)
        context = dataclasses.replace(context, model=context.model or (listed[0] if listed else DEFAULT_MODEL))
        return OpenAICompatChat(model=context.model, base_url=context.base_url,
                                api_key=SecretStr(context.api_key) if context.api_key else None,
                                temperature=context.temperature, extra_body=context.request_body,
                                session=session), context
    # A key alone means OpenAI itself, through langchain-openai and its own endpoint.
    from langchain_openai import ChatOpenAI

    context = dataclasses.replace(context, model=context.model or DEFAULT_MODEL)
    model = ChatOpenAI(model=context.model, api_key=SecretStr(context.api_key or ""),
                       temperature=context.temperature, seed=context.seed, timeout=context.timeout,
                       max_retries=0)  # the runner retries, with backoff and adaptive concurrency
    return model, context


async def _listed_model(context: Context) -> str:
    """The endpoint's first model, as a real run would take it; the default where it cannot say."""
    if context.endpoints:
        try:
            listed = await probe_endpoint(context.endpoints[0].url, context.api_key, timeout=5.0)
        except SummarizerError as exc:
            log.warning("cannot ask the endpoint for its model (%s); estimating for %s (give --model)",
                        exc, DEFAULT_MODEL)
        else:
            if listed:
                return listed[0]
    return DEFAULT_MODEL


def _runner(context: Context, model: Any, store: ResultStore | None, memory: MemoryGuard) -> LLMRunner:
    price = context.price
    limits = CallLimits(
        rpm=RateLimit(context.rpm) if context.rpm else None,
        tpm=RateLimit(context.tpm) if context.tpm else None,
        budget=Budget(price, context.max_cost) if price else None,
        memory=memory)
    # A pool takes at most its endpoints' concurrencies together; each of them finds its own server's knee.
    concurrency = context.concurrency
    if isinstance(model, EndpointPool):
        concurrency = min(concurrency, model.concurrency)
    adapt = context.adapt_concurrency and not isinstance(model, EndpointPool)
    limit = AdaptiveLimit(concurrency, start=START if adapt else None)
    return LLMRunner(model, concurrency=limit, timeout=context.timeout,
                     max_retries=context.max_retries, count_tokens=token_counter(context.model or DEFAULT_MODEL),
                     limits=limits, store=store, identity=context.identity)
