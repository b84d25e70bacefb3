"""The map phase on Ray Data, driver side; the workers run pipeline/ray/plan.py and pipeline/ray/calls.py.

    listed inputs ─▶ from_items ─▶ plan_batch (tasks) ─▶ ChatActor (N async actors) ─▶ iter_batches
                     (driver)      read, chunk, prompts,   calls, concurrency/N each    (driver): answers
                                   keys; stored ones out                                 committed as they come

The driver reads the store before the pipeline starts (the stored map keys and the
documents that failed before, handed to the workers as one read-only snapshot), so a
stored answer is never asked for again, and it commits every new answer to the store
as its batch arrives. Results come back a block of documents at a time; a run stopped
part-way loses only the answers of the blocks still on their way.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import os
import re
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import ray
import ray.data
import ray.exceptions
from ray.data import ActorPoolStrategy, Dataset

import pipeline
import prompts
from pipeline import errors
from pipeline.errors import FatalLLMError, InputError, LLMError, SummarizerError
from pipeline.llm.runner import SUMMED, CallStats, Completion
from pipeline.text.loading import DocRef, Entry, load_text, log_warning
from pipeline.ray.calls import CallSettings, ChatActor
from pipeline.ray.plan import PlanSettings, make_snapshot, plan_batch
from pipeline.result_store import PriorDocument, ResultStore
from pipeline.text.language import language_instruction
from pipeline.prompting import Prompt, map_instructions
from pipeline.summarize import DocResult, document_result, needs_retry, settle, settled_result
from prompts import Templates

log = logging.getLogger(__name__)

CALL_BATCH = 16  # documents per actor batch; Ray Data runs 4 batches of a block at once
MAX_BLOCK = 64  # documents per block: what one planning task reads, and one actor task answers
ACTOR_CPUS = 0.25  # an actor mostly waits on the network; the rest is left to planning
PLAN_CPUS = 0.5
REACH_TIMEOUT_S = 5.0  # for a cluster's address to accept a connection
CLOSE_WAIT_S = 60.0  # a stopped run waits this long for its pipeline's last block and shutdown
CALLS_PER_ACTOR = 8  # the default number of actors leaves each at least this many calls in flight


@asynccontextmanager
async def ray_session(address: str | None) -> AsyncIterator[None]:
    """Join the Ray cluster at `address`, or start a local instance; leave it as found on the way out.

    A Ray already initialized in this process (a notebook's, the tests') is used as it is.
    Joining a cluster ships this checkout's `pipeline` and `prompts` to its workers.
    """
    if ray.is_initialized():
        yield
        return
    # A local instance listens on loopback; a cluster gets this checkout's code.
    options: dict[str, Any] = {"runtime_env": {"py_modules": [pipeline, prompts]}} if address else \
        {"_node_ip_address": "127.0.0.1"}
    if address:
        await asyncio.to_thread(_check_reachable, address)
    try:
        # In a thread that lives on (the loop's executor): Ray ties the local instance's
        # processes to the thread that started them.
        await asyncio.to_thread(functools.partial(ray.init, address=address or "local", include_dashboard=False,
                                                  logging_level=logging.ERROR, **options))
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
        hint = ""
        if address and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            # A cluster with token authentication (what `ray start` turns on when it finds a
            # token) turns away a driver that sends none, and Ray says only that it failed.
            hint = ("; if the cluster uses token authentication, set RAY_AUTH_MODE=token and its token in "
                    "RAY_AUTH_TOKEN (or ~/.ray/auth_token)")
        raise InputError(f"cannot {where}: {_first_line(exc)}{hint}") from exc
    try:
        yield
    finally:
        await asyncio.to_thread(ray.shutdown)


def _check_reachable(address: str) -> None:
    """Raise InputError unless something answers at a `host:port` or `ray://host:port` address.

    Ray itself waits a minute for an address where nothing answers, then aborts the process.
    """
    match = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)/?", address.strip())
    if match is None:
        return  # auto, or a form Ray resolves itself
    try:
        socket.create_connection((match[1], int(match[2])), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise InputError(f"cannot join the Ray cluster at {address}: {exc.strerror or exc}") from exc


def actor_count(requested: int | None, concurrency: int) -> int:
    """How many call actors: as asked, else one per CPU of the cluster, each with CALLS_PER_ACTOR or more."""
    if requested:
        return max(1, min(requested, concurrency))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(cpus, concurrency // CALLS_PER_ACTOR))


def build_dataset(entries: Sequence[Entry], plan: PlanSettings, call: CallSettings, snapshot: Any,
                  actors: int) -> Dataset:
    """The map pipeline: listed inputs, planned by tasks, answered by `actors` async actors."""
    block = max(1, min(MAX_BLOCK, math.ceil(len(entries) / (4 * actors))))
    # An actor task answers one block (a batch no larger, so that blocks are not merged
    # and results come back a block at a time), its batches concurrently; enough tasks at
    # once to keep the actor's share of calls busy, and one more arriving.
    tasks = math.ceil(call.chat.concurrency / block) + 1
    items = [{"entry": json.dumps(e)} for e in entries]
    return (ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / block))
            .map_batches(plan_batch, batch_size=None, batch_format="numpy", num_cpus=PLAN_CPUS,
                         fn_kwargs={"settings": plan, "snapshot": snapshot})
            .map_batches(ChatActor, batch_size=min(CALL_BATCH, block), batch_format="numpy", num_cpus=ACTOR_CPUS,
                         fn_constructor_kwargs={"settings": call},
                         compute=ActorPoolStrategy(size=actors, max_concurrent_calls_per_actor=tasks)))


def snapshot_store(store: ResultStore | None, prior: dict[str, PriorDocument], retry_failed: bool) -> Any:
    """Put the store's map keys and earlier failures in Ray's object store, for every planning task."""
    if store is None:
        return None
    failed = {source: p for source, p in prior.items() if p.status == "failed"}
    return ray.put(make_snapshot(store.keys("map"), failed, retry_failed))


async def _checked(batches: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """Pass the batches on; a failure of the pipeline itself (a lost node, a bug) becomes one line."""
    try:
        async for batch in batches:
            yield batch
    except ray.exceptions.RayError as exc:
        raise SummarizerError(f"the map on Ray failed: {_first_line(exc)}") from exc


async def stream_batches(dataset: Dataset) -> AsyncIterator[dict[str, Any]]:
    """Yield the pipeline's output batches as they arrive, without holding the event loop.

    One thread waits on Ray; on the way out (done, failed or cancelled) the same thread
    closes the iterator once any wait in progress ends, which stops the pipeline and its
    actors, and the way out waits for that (at most CLOSE_WAIT_S): when the run returns,
    no call of it is still being made.
    """
    pump = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-results")
    batches = iter(dataset.iter_batches(batch_size=None, batch_format="numpy"))
    loop = asyncio.get_running_loop()
    try:
        while (batch := await loop.run_in_executor(pump, next, batches, None)) is not None:
            yield batch
    finally:
        close: Callable[[], Any] = getattr(batches, "close", lambda: None)
        closed = asyncio.wrap_future(pump.submit(close))
        pump.shutdown(wait=False)
        try:
            await asyncio.wait_for(closed, CLOSE_WAIT_S)
        except Exception as exc:  # noqa: BLE001 - the run's own outcome matters more
            log.warning("the Ray pipeline did not stop cleanly: %s", exc)


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message: Ray's carry whole tracebacks."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _error(name: str, message: str) -> LLMError:
    """The pipeline's error of that name, as a worker raised it."""
    kind = getattr(errors, name, None)
    return kind(message) if isinstance(kind, type) and issubclass(kind, LLMError) else LLMError(message)


def absorb(row: dict[str, Any], store: ResultStore | None, stats: CallStats,
           templates: Templates, texts: dict[int, str] | None = None) -> tuple[DocRef, DocResult | None, FatalLLMError | None]:
    """Commit a document's new answers, fetch its stored ones, and make its result.

    Its points are held to its text: `texts` (the in-memory inputs, by id), or its file
    read again. Returns its reference, its result, and the error that stops the run if a
    call hit one.
    """
    ref: DocRef = row["ref"]
    log_warning(ref)  # from planning on a worker, logged here as in-process
    if (settled := settled_result(ref)) is not None:
        return ref, settled, None
    language = row["language"]
    # Cleaning an answer needs only the instructions it was given, which follow from its language.
    prompt = Prompt(map_instructions(language_instruction(language), templates), "")
    outcomes: list[object] = []
    for (key, firm_key), outcome in zip(row["keys"], row["outcomes"]):
        kind = outcome[0]
        if kind == "ok":
            answers = [Completion(*answer) for answer in outcome[1]]
            if store is not None and key:
                for answer_key, answer in zip((key, firm_key), answers):
                    store.put(answer_key, "map", answer.text, answer.tokens_in, answer.tokens_out)
        elif kind == "stored":
            hit = store.get(key) if store is not None else None
            if hit is None:
                outcomes.append(LLMError("its stored answer left the store during the run; run again"))
                continue
            stats.from_store["map"] += 1
            answers = [Completion(hit.text, hit.tokens_in, hit.tokens_out)]
            if needs_retry(hit.text, language):
                if (again := store.get(firm_key) if firm_key else None) is not None:
                    stats.from_store["map"] += 1
                    answers.append(Completion(again.text, again.tokens_in, again.tokens_out))
                else:  # a run stopped between the two calls; this one takes the first answer as it is
                    stats.answers["wrong_language"] += 1
        else:
            outcomes.append(_error(outcome[1], outcome[2]))
            continue
        text = settle(prompt, language, answers[0].text, answers[1].text if len(answers) > 1 else None,
                      stats.answers, templates.reader)
        outcomes.append(Completion(text, sum(a.tokens_in for a in answers), sum(a.tokens_out for a in answers)))
    try:
        text = (texts or {}).get(ref["id"]) or (load_text(ref) if "path" in ref else None) \
            if all(isinstance(o, Completion) for o in outcomes) else None
    except InputError:
        text = None  # changed since planning: its points cannot be held to it, and go as they are
    try:
        return ref, document_result(ref, outcomes, text=text, counts=stats.answers), None
    except FatalLLMError as exc:
        return ref, None, exc


def add_counters(stats: CallStats, counters: dict[str, Any], peaks: dict[str, int]) -> None:
    """Add an actor's counters to the run's; keep each actor's peak of calls in flight."""
    for name in SUMMED:
        setattr(stats, name, getattr(stats, name) + counters[name])
    stats.calls["map"] += counters["calls"]
    stats.failed_calls["map"] += counters["failed_calls"]
    peaks[counters["actor"]] = max(peaks.get(counters["actor"], 0), counters["peak_in_flight"])


async def map_documents(entries: Sequence[Entry], *, plan: PlanSettings, call: CallSettings, actors: int,
                        store: ResultStore | None, prior: dict[str, PriorDocument], retry_failed: bool,
                        stats: CallStats, on_document: Callable[[DocRef, DocResult], None]) -> None:
    """Summarize `entries` on Ray, handing each document's reference and result to `on_document` as it lands.

    Raises the first error that stops the run (a refused key), once the answers of its
    batch are written to the store.
    """
    # The run shows its own progress; Ray Data's bars and status lines would only repeat it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
    snapshot = snapshot_store(store, prior, retry_failed)
    texts = {e["id"]: e["text"] for e in entries if "text" in e}  # to hold their points to
    dataset = build_dataset(entries, plan, call, snapshot, actors)
    peaks: dict[str, int] = {}
    try:
        async for batch in _checked(stream_batches(dataset)):
            stop: FatalLLMError | None = None
            for raw, counters in zip(batch["doc"], batch["stats"]):
                if counters:
                    add_counters(stats, json.loads(counters), peaks)
                ref, result, fatal = absorb(json.loads(raw), store, stats, plan.templates, texts)
                if result is not None:
                    on_document(ref, result)
                stop = stop or fatal
            if stop is not None:
                raise stop
    finally:
        stats.peak_in_flight = max(stats.peak_in_flight, sum(peaks.values()))
