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
import functools
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
from pipeline.llm.batch import BatchCaller, BatchSettings
from pipeline.answers.checks import ANSWER_CHECKS
from pipeline.llm.client import open_session, probe_endpoint, redact_url
from pipeline.llm.embedded import MODEL_NAME, EmbeddedServer
from pipeline.errors import SummarizerError
from pipeline.llm.factory import OPENAI_BASE_URL, ChatSettings, make_runner, open_chat
from pipeline.llm.chat_model import fit_chat_model
from pipeline.llm.limits import AdaptiveLimit
from pipeline.llm.local_model import local_endpoint, peak_rss
from pipeline.llm.runner import STEPS, LLMRunner
from pipeline.llm.memory_guard import MemoryGuard
from pipeline.llm.pool import EndpointPool
from pipeline.planning import PLAN_BATCH
from pipeline.outcome import provenance
from pipeline.progress import EventProgress
from pipeline.result_store import ResultStore
from pipeline.run_lock import RunLock
from pipeline.store_thread import loop_refuses_blocking
from pipeline.summarize import DocResult, Twins
from pipeline.text.chunking import Chunker
from pipeline.text.loading import DocRef
from pipeline.text.counting import BpeCounter, TokenCounter, token_counter
from prompts import Templates

log = logging.getLogger(__name__)

# How many map shards work at once; each keeps up to a shard's documents in memory.
# The memory guard lowers it under pressure, as it lowers the calls in flight.
SHARD_SLOTS = 3
# Batch calls in flight: each only waits on its batch, so a round holds every call of its phase.
BATCH_CALLS = 100_000

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
    map_room: asyncio.Semaphore  # the documents the map may have begun and not finished, across shards
    templates: Templates  # read once per run, with the reader's instructions in them
    embedded: EmbeddedServer | None = None  # the embedded model, where it answers
    shard_slots: AdaptiveLimit = dataclasses.field(default_factory=lambda: AdaptiveLimit(SHARD_SLOTS))
    twins: Twins = dataclasses.field(default_factory=Twins)  # documents of the same content share one summary
    _warming: threading.Thread | None = None

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
        if self.runner is None:
            return {}
        return {**provenance(self.context, self.templates), **call_stats(self.runner, self.context),
                **(peak_rss(self.embedded) if self.embedded else {}),
                **({"store_recovered": self.store.recovered} if self.store and self.store.recovered else {})}

    def commit(self, ref: DocRef, result: DocResult) -> None:
        """Take a summarized document's result: record it in the store, count it done, send it to the stream."""
        if self.store is not None and "prior_error" not in ref:  # a failure carried over is not recorded again
            self.store.record_document(result, kind="file" if "path" in ref else "text")
        self.llm().progress.advance("documents")
        self.emit({"event": "result", "result": result})


def call_stats(runner: LLMRunner, context: Context) -> dict[str, Any]:
    """The counters of `runner`'s calls so far, for the run `context` describes."""
    s = runner.stats
    return {
        "llm_calls": {step: s.calls[step] for step in STEPS},
        "failed_calls": dict(s.failed_calls),
        "from_store": {step: s.from_store[step] for step in STEPS},
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "retries": s.retries,
        "unanswered_calls": s.unanswered,  # counted in llm_calls: sent, never read (the run stopped first)
        "rate_limited": s.rate_limited,
        "concurrency_lowest": runner.concurrency.lowest,
        "peak_in_flight": s.peak_in_flight,
        "answers": {key: s.answers[key] for key in ANSWER_CHECKS},
        "citations": citation_counts(s.citations),
        "peak_rss_mb": round(runner.memory.peak_mb, 1),
        "memory": runner.memory.stats(),
        "model": context.model,
        **({"chat_model": type(context.chat_model).__name__} if context.chat_model is not None else {}),
        "base_url": redact_url(context.base_url),
        "concurrency": runner.concurrency.maximum,
        "concurrency_settled": runner.concurrency.limit,  # where the limit stood at the end
        "concurrency_highest": runner.concurrency.highest,
        # Calls given up on while the server may have gone on working: each may have been paid twice.
        "possible_duplicate_calls": sum(e.limit.timeouts for e in runner.model.endpoints)
        if isinstance(runner.model, EndpointPool) else runner.concurrency.timeouts,
        **({"cost_usd": round(runner.limits.budget.spent, 6)} if runner.limits.budget else {}),
        **({"endpoints": runner.model.report()} if isinstance(runner.model, EndpointPool) else {}),
        **({"batches": runner.model.report()} if isinstance(runner.model, BatchCaller) else {}),
    }


@asynccontextmanager
async def open_resources(context: Context, emit: Emit) -> AsyncIterator[Resources]:
    """Open what a run needs inside the running loop, and close all of it on the way out.

    `context` comes resolved and validated (Context.resolved, Context.validate). Its model
    is named here, once, as the run will call it: the embedded model's, the endpoint's first
    listed, or the default; the Resources' context carries it.
    """
    async with AsyncExitStack() as stack:
        if context.store_path and not context.dry_run:  # one run at a time on a store
            lock = RunLock(context.store_path, wait=context.wait_lock)
            await asyncio.to_thread(lock.acquire)
            stack.callback(lock.release)
        # It makes folders: off the event loop. Where the loop refuses blocking calls (`langgraph dev`),
        # the store keeps every SQLite call on a thread of its own; elsewhere it works on the loop, faster.
        off_loop = bool(context.store_path) and loop_refuses_blocking()
        store = await asyncio.to_thread(_open_store, context, off_loop)
        if store is not None:
            # Its error, if it lost writes, only when no other is on its way out (Ctrl-C stays "interrupted").
            stack.push_async_exit(functools.partial(_close_store, store))
        embedded = None
        if context.local and not context.dry_run:
            embedded = await stack.enter_async_context(local_endpoint(context.concurrency, context.local_threads))
            context = dataclasses.replace(context, base_url=embedded.base_url, base_urls=[], api_key=None,
                                          model=embedded.model)
        elif context.local:  # a dry run starts nothing, but counts and keys as the embedded model would
            context = dataclasses.replace(context, base_url=None, base_urls=[], api_key=None, model=MODEL_NAME)
        if context.local_threads is not None and not context.local:
            log.warning("local_threads is the embedded model's setting: this run calls an endpoint, so it is ignored")
        templates = context.templates()
        runner = None
        if not context.dry_run:
            if context.memory_limit_mb:  # the tokenizer (~70 MB, built later otherwise) belongs to the start RSS
                token_counter(context.model or DEFAULT_MODEL).preload()
            memory = MemoryGuard(context.memory_limit_mb)  # the start RSS, before the session and the model
            model, context = await (_batch_caller(context, store, stack) if context.batch
                                    else _chat_model(context, stack, memory.saw_read))
            context.check_spending_cap()
            named = context

            made_by = provenance(context, templates)

            def counters() -> dict[str, Any]:  # sent with the progress, which only the runner below advances
                return {**made_by, **call_stats(made, named), **(peak_rss(embedded) if embedded else {}),
                        **({"store_recovered": store.recovered} if store and store.recovered else {})}

            progress = EventProgress(emit, stats=counters)
            settings = chat_settings(context)
            if context.batch:  # a batch call only waits on its batch: a round holds every call of its phase
                settings = dataclasses.replace(settings, concurrency=BATCH_CALLS)
            runner = made = make_runner(model, settings, context.model or DEFAULT_MODEL, store=store,
                                        memory=memory, progress=progress)
            most = runner.concurrency.maximum
            log.info("calling %s, up to %d call%s at a time", _shown(context), most, "" if most == 1 else "s")
            if context.engine == "ray":  # after the endpoint answered: a bad key fails before Ray starts
                from pipeline.ray.engine import ray_session

                await stack.enter_async_context(ray_session(context.ray_address))
            stack.callback(progress.close)  # the last counts, even from a run that fails
        elif context.chat_model is not None:  # a dry run calls nothing, but names and prices the model it would
            context = _settled(context)
        else:  # a dry run calls nothing, but the model decides the store's keys and the prices
            context = dataclasses.replace(context, model=context.model or await _listed_model(context))
        count = token_counter(context.model or DEFAULT_MODEL)
        # A run needs only the spans, a dry run the token counts of every document as well.
        chunker = Chunker(context.chunk_tokens, count, count_fitting=context.dry_run)
        # Planning runs at most two batches ahead of the calls the runner lets out.
        room = asyncio.Semaphore((runner.concurrency.maximum if runner else context.concurrency) + 2 * PLAN_BATCH)
        resources = Resources(context, count, chunker, store, runner, emit, room, templates, embedded)
        if runner is not None:
            runner.memory.watch("shard_slots", resources.shard_slots)
        yield resources


def chat_settings(context: Context) -> ChatSettings:
    """What the run's chat client and runner are built from, as `context` says (the Ray actors' too)."""
    return ChatSettings(
        model=context.model, default_model=DEFAULT_MODEL, base_url=None if context.base_urls else context.base_url,
        endpoints=context.endpoints if context.base_urls and context.chat_model is None else [],
        api_key=SecretStr(context.api_key) if context.api_key else None, concurrency=context.concurrency,
        timeout=context.timeout, max_retries=context.max_retries, temperature=context.temperature, seed=context.seed,
        request_body=context.request_body, identity=context.identity, rpm=context.rpm, tpm=context.tpm,
        price=context.price, max_cost=context.max_cost, adapt=context.adapt_concurrency and not context.batch)


def _open_store(context: Context, off_loop: bool) -> ResultStore | None:
    """The run's result store, if it keeps one (a dry run only reads one that exists)."""
    if context.store_path and (not context.dry_run or Path(context.store_path).exists()):
        return ResultStore(context.store_path, read_only=context.dry_run, recover=context.store_recover,
                           off_loop=off_loop)
    return None


async def _close_store(store: ResultStore, kind: type[BaseException] | None, *_: object) -> bool:
    await store.aclose(raise_errors=kind is None)
    return False


async def _chat_model(context: Context, stack: AsyncExitStack,
                      on_read: Callable[[int], None] | None = None) -> tuple[Any, Context]:
    """The chat model the context asks for, with its session; the context with its model named."""
    if context.chat_model is not None:
        context = _settled(context)
        return context.chat_model, context
    model, name = await open_chat(chat_settings(context), stack, on_read=on_read)
    return model, dataclasses.replace(context, model=name)


def _settled(context: Context) -> Context:
    """`context` with its chat model as the run calls it, and the model, temperature, seed and extra fields it sends.

    What the report then says is what the calls carry: the chat model's own model name,
    and None for a temperature or seed left to the model (see pipeline.llm.chat_model).
    """
    assert context.chat_model is not None
    called, sent = fit_chat_model(context.chat_model, temperature=context.temperature, seed=context.seed,
                                  extra_body=context.extra_body)
    return dataclasses.replace(context, chat_model=called, model=sent.model, temperature=sent.temperature,
                               seed=sent.seed, extra_body=sent.extra_body)


async def _batch_caller(context: Context, store: ResultStore | None,
                        stack: AsyncExitStack) -> tuple[BatchCaller, Context]:
    """The Batch API caller for the run's one endpoint (OpenAI's for a key alone), journaling in the store."""
    base_url = context.base_url or OPENAI_BASE_URL
    session = open_session(8, context.timeout)
    stack.push_async_callback(session.close)
    if not context.model:
        listed = await probe_endpoint(base_url, context.api_key, session=session)
        context = dataclasses.replace(context, model=listed[0] if listed else DEFAULT_MODEL)
    caller = BatchCaller(session, base_url, context.api_key, model=context.model or DEFAULT_MODEL,
                         temperature=context.temperature, extra_body=context.request_body,
                         settings=BatchSettings(wait=context.batch_wait), journal=store)
    stack.push_async_callback(caller.aclose)
    return caller, context


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


def _shown(context: Context) -> str:
    """The model and where its calls go, for a log line: no credentials."""
    if context.chat_model is not None:
        return f"{context.model} through the chat model given ({type(context.chat_model).__name__})"
    if context.base_urls:
        urls = ", ".join(redact_url(s.url) or "" for s in context.endpoints)
        return f"{context.model} at {len(context.base_urls)} endpoints ({urls})"
    return f"{context.model} at {redact_url(context.base_url) or 'OpenAI'}"
