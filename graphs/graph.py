"""The map-reduce summarization graph.

    summarize: async with open_resources(...) ──▶ the map-reduce subgraph:

        plan ──Send(shard)──▶ map_shard ──▶ collect ──▶ collapse ⟲ ──▶ final
          ├──(engine ray)──▶ map_ray ──┘                 (while over token_max)
          └──(dry run)──▶ preview

The outer graph has one node, which opens the run's resources and runs the subgraph
inside that block (graphs/resources.py says why). Planning streams: `plan` only lists
the inputs, and each shard reads, decodes and chunks its own documents when its turn
comes, so the first calls leave once the first shard is planned, and the graph state
holds a name per document rather than its chunk spans. Progress and each document's
result go out as they happen through LangGraph's stream writer (`stream_mode="custom"`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime, get_runtime
from langgraph.types import Send

import prompts
from graphs.context import Context
from graphs.ray_map import map_ray
from graphs.resources import Resources, open_resources
from graphs.state import InputState, OutputState, RunState, ShardState, State, add_counts
from pipeline.answers.citations import cited
from pipeline.answers.evidence import cite_lines, trace
from pipeline.errors import CollapseError, InputError
from pipeline.text.language import answer_language
from pipeline.answers.length import parse_length
from pipeline.text.loading import DocRef, Entry, expand_named, list_inputs, plan_entries
from pipeline.preview import preview as preview_calls
from pipeline.prompting import escape_label
from pipeline.result_store import compare_with_prior, removed_sources
from pipeline.summarize import (
    DocResult,
    collapse_level,
    final_summary,
    max_collapse_levels,
    own_words,
    represent,
    summarize_shard,
    to_pieces,
)

log = logging.getLogger(__name__)

MIN_SHARD = 64
# The subgraph's step budget: plan, map, collect, every collapse level, final. The collapse
# bounds its own levels by the pieces it finds (a single document may give thousands),
# so this only stops a runaway graph.
RECURSION_LIMIT = 4 + max_collapse_levels(2**62) + 2


def shard_size(concurrency: int) -> int:
    """Documents per Send: large enough that a few shards keep every call slot busy."""
    return max(MIN_SHARD, 2 * concurrency)


def reduce_budget(context: Context, count: Any) -> int:
    """Tokens of summaries one reduce call may take: token_max less the prompt's own."""
    template = max(prompts.COLLAPSE, prompts.FINAL, key=len) + prompts.SUMMARIES
    return context.token_max - count(template) - 64


# --- the map-reduce subgraph ---------------------------------------------------------


async def plan(state: RunState, runtime: Runtime[Resources]) -> dict[str, Any]:
    """List the inputs, numbering them; nothing is read yet (each shard plans its own)."""
    res = runtime.context
    paths, texts = state.get("paths") or [], state.get("texts") or []
    if not paths and not texts:
        raise InputError("nothing to summarize: give `paths` or `texts`")
    if res.runner is not None:
        res.runner.progress.add_total("documents", len(paths) + len(texts))
    return {"started_at": time.time()}


def after_plan(state: RunState, runtime: Runtime[Resources]) -> list[Send] | Literal["preview", "map_ray"]:
    """Send each shard of inputs to a summarizer, hand them all to Ray, or only preview a dry run.

    A shard is a slice of the input lists and the number of its first input: an entry
    per document would be held by the run from start to end.
    """
    if runtime.context.context.dry_run:
        return "preview"
    if runtime.context.context.engine == "ray":
        return "map_ray"
    paths, texts = state.get("paths") or [], state.get("texts") or []
    size, n = shard_size(runtime.context.context.concurrency), len(paths)
    return [Send("map_shard", ShardState(first_id=i + 1, paths=paths[i:i + size],
                                         texts=texts[max(0, i - n):max(0, i + size - n)]))
            for i in range(0, n + len(texts), size)]


# Planning shares the process with the calls in flight. Small documents are planned on
# the event loop a few at a time, yielding between batches: a worker thread would fight
# the loop for the GIL and slow every call. A big one goes to a thread, so that the loop
# is never held for long.
PLAN_BATCH = 16
PLAN_IN_THREAD_BYTES = 256 * 1024


def _big(entry: Entry) -> bool:
    if "text" in entry:
        return len(entry["text"]) > PLAN_IN_THREAD_BYTES
    try:
        return os.stat(entry["path"]).st_size > PLAN_IN_THREAD_BYTES
    except OSError:
        return False  # planning it will say why


async def _plan_batch(res: Resources, batch: list[Entry],
                      keep: dict[int, str] | None = None) -> tuple[list[DocRef], dict[str, int]]:
    """Read, decode and chunk a few documents while other calls go on; compare them with the store.

    With `keep`, the files' texts stay there for the summarizer that follows.
    """
    context = res.context
    options: dict[str, Any] = {"guess_language": context.language == "auto", "keep": keep}
    if any(map(_big, batch)):
        refs = await asyncio.to_thread(plan_entries, batch, res.chunker, **options)
    else:
        refs = plan_entries(batch, res.chunker, **options)
        await asyncio.sleep(0)
    files: dict[str, int] = {}
    if res.store is not None:
        prior = res.store.prior_documents([r["source"] for r in refs])
        files = compare_with_prior(refs, prior, context.retry_failed)
    return refs, files


async def _plan_shard(res: Resources, entries: list[Entry]) -> tuple[list[DocRef], dict[str, int]]:
    """Plan every document of `entries`, a batch at a time; count them against the store."""
    refs: list[DocRef] = []
    files: dict[str, int] = {}
    for i in range(0, len(entries), PLAN_BATCH):
        batch_refs, batch_files = await _plan_batch(res, entries[i:i + PLAN_BATCH])
        refs += batch_refs
        files = add_counts(files, batch_files)
    return refs, files


async def map_shard(state: ShardState, runtime: Runtime[Resources]) -> dict[str, Any]:
    """Plan one shard's documents a batch at a time, summarizing those planned while the next are.

    All shards together begin at most the run's concurrency and two batches of documents
    beyond those finished, so the first calls leave once the first batch is planned, and
    the run holds a bounded number of texts and prompts whatever the corpus. The progress
    totals grow as batches are planned.
    """
    res, context = runtime.context, runtime.context.context
    runner = res.llm()
    files: dict[str, int] = {}
    not_retried: set[int] = set()  # failed in an earlier run, and not sent again
    in_memory: set[int] = set()

    async def planned() -> AsyncIterator[tuple[DocRef, str | None]]:
        nonlocal files
        entries = list_inputs(state["paths"], state["texts"], first_id=state["first_id"])
        for i in range(0, len(entries), PLAN_BATCH):
            texts: dict[int, str] = {}  # read once: planned here, summarized right after
            refs, batch_files = await _plan_batch(res, entries[i:i + PLAN_BATCH], keep=texts)
            files = add_counts(files, batch_files)
            runner.progress.add_total("map", sum(len(r["spans"]) for r in refs if "prior_error" not in r))
            not_retried.update(r["id"] for r in refs if "prior_error" in r)
            in_memory.update(r["id"] for r in refs if "text" in r)
            for ref in refs:
                yield ref, texts.pop(ref["id"], None)

    def on_result(result: DocResult) -> None:
        res.warm_tokenizer()  # once the first calls are answered, while the others are out
        if res.store is not None and result["id"] not in not_retried:
            res.store.record_document(result, kind="text" if result["id"] in in_memory else "file")
        runner.progress.advance("documents")
        res.emit({"event": "result", "result": result})

    async with res.shard_slots:
        results = await summarize_shard(
            runner, planned(), max_tokens=context.map_max_tokens, on_result=on_result,
            room=res.map_room(runner.concurrency.maximum + 2 * PLAN_BATCH),
            language_of=lambda ref: answer_language(context.language, [ref.get("language")]))
    return {"results": results, "files": files}


async def collect(state: RunState, runtime: Runtime[Resources]) -> dict[str, Any]:
    """Gather the documents' summaries as the first reduce level, ordered by source.

    Ordered by source rather than by input position, so that listing the same files in
    another order makes the same reduce calls.
    """
    res, context = runtime.context, runtime.context.context
    results = state.get("results", [])
    cap = context.collapse_max_tokens
    pieces = [piece for r in sorted(results, key=lambda r: (r["source"], r["id"])) if r["status"] == "ok"
              for piece in to_pieces(r, res.count, cap)]
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "failed", "skipped")}
    log.info("map done: %(ok)d summarized, %(failed)d failed, %(skipped)d skipped", counts)
    removed: dict[str, int] = {}  # added to the shards' counts
    if res.store is not None:
        gone = removed_sources(res.store.prior_documents(), _sources(state))
        res.store.forget_documents(gone)
        removed = {"removed": len(gone)}
        files = state.get("files") or {}
        log.info("files: %d new, %d changed, %d unchanged, %d removed", files.get("new", 0),
                 files.get("changed", 0), files.get("unchanged", 0), len(gone))
    return {"pieces": pieces, "level": 0, "max_levels": max_collapse_levels(len(pieces)), "mapped_at": time.time(),
            "files": removed, "reduce_language": answer_language(context.language, (r.get("language") for r in results))}


def _sources(state: RunState) -> set[str]:
    """The names of the run's inputs: the files' paths and the texts' ids."""
    return {*(state.get("paths") or []), *(t["id"] for t in state.get("texts") or [])}


def should_collapse(state: RunState, runtime: Runtime[Resources]) -> Literal["collapse", "final"]:
    """Collapse again while the summaries together exceed the reduce budget."""
    total = sum(p["tokens"] for p in state["pieces"])
    return "collapse" if total > reduce_budget(runtime.context.context, runtime.context.count) else "final"


async def collapse(state: RunState, runtime: Runtime[Resources]) -> dict[str, Any]:
    """Merge groups of summaries that fit the budget, all groups concurrently."""
    res, context = runtime.context, runtime.context.context
    level = state["level"] + 1
    if level > state["max_levels"]:
        raise CollapseError(f"summaries still exceed --token-max after {state['max_levels']} collapse levels")
    calls_before = res.llm().stats.calls["collapse"]
    pieces = await collapse_level(
        res.llm(), state["pieces"], budget=reduce_budget(context, res.count), max_tokens=context.collapse_max_tokens,
        language=state["reduce_language"], count=res.count, summary_of=_summaries(state))
    log.info("collapse level %d: %d summaries -> %d in %d calls", level, len(state["pieces"]), len(pieces),
             res.llm().stats.calls["collapse"] - calls_before)
    return {"pieces": pieces, "level": level}


UNCITED_NAMED = 50  # past this many, the documents a summary leaves out are counted, not named


def _sources_legend(summary: str, state: RunState) -> str:
    """List the documents the summary cites by tag, in input order, and say which it leaves out."""
    ids = set(cited(summary))
    summarized = sorted((r for r in state["results"] if r["status"] == "ok"), key=lambda r: r["id"])
    lines = [f"- [D{d['id']}] {escape_label(d['source'])}" for d in summarized if d["id"] in ids]
    legend = "\n\n**Sources**\n\n" + "\n".join(lines) + "\n" if lines else ""
    left_out = [d for d in summarized if d["id"] not in ids]
    if left_out:
        named = ", ".join(f"[D{d['id']}] {escape_label(d['source'])}" for d in left_out[:UNCITED_NAMED])
        more = f", and {len(left_out) - UNCITED_NAMED} more (see summaries.jsonl)" if len(left_out) > UNCITED_NAMED else ""
        legend += f"\n**Summarized but not cited above:** {named}{more}\n"
    return legend


def _summaries(state: RunState) -> Callable[[int], str]:
    """Each summarized document's name and map summary, by id: what reduce answers are checked against."""
    by_id = {r["id"]: r for r in state["results"] if r["status"] == "ok"}  # made into text when asked for
    return lambda doc: own_words(by_id[doc]) if doc in by_id else ""


async def final(state: RunState, runtime: Runtime[Resources]) -> dict[str, Any]:
    """Write the final summary and name its sources."""
    res, context = runtime.context, runtime.context.context
    summary, fitted, evidence = "", None, []
    if pieces := state["pieces"]:
        ok = [r for r in state["results"] if r["status"] == "ok"]
        text, fitted = await final_summary(
            res.llm(), pieces, max_tokens=context.final_max_tokens, language=state["reduce_language"],
            summary_of=_summaries(state), documents=len(ok), length=parse_length(context.length),
            whole=len(ok) == 1 and ok[0]["chunks"] == 1)
        # Only a length asked for may leave documents out; by default each is represented.
        text = text if context.length != "auto" else represent(text, ok)
        evidence = trace(text, {r["id"]: r for r in ok})
        shown = cite_lines(text, evidence) if context.cite == "lines" else text
        summary = shown.rstrip() + "\n" + _sources_legend(text, state)
    stats = _stats(state, res)
    if fitted is not None:
        stats["length"] = fitted
    return {"summary": summary, "stats": stats, "evidence": evidence}


def _stats(state: RunState, res: Resources) -> dict[str, Any]:
    now = time.time()
    started, mapped = state.get("started_at", now), state.get("mapped_at", now)
    return {**res.call_stats(), "files": state.get("files", {}), "collapse_levels": state.get("level", 0),
            "wall_seconds": round(now - started, 3), "map_seconds": round(mapped - started, 3),
            "reduce_seconds": round(now - mapped, 3)}


async def preview(state: RunState, runtime: Runtime[Resources]) -> dict[str, Any]:
    """Plan every document and count the calls, tokens and cost the run would take, calling nothing."""
    res, context = runtime.context, runtime.context.context
    docs, files = await _plan_shard(res, list_inputs(state.get("paths") or [], state.get("texts") or []))
    if res.store is not None:
        files["removed"] = len(removed_sources(res.store.prior_documents(), {d["source"] for d in docs}))
    reduce_language = answer_language(context.language, (d.get("language") for d in docs))
    estimate = await asyncio.to_thread(
        preview_calls, docs, count=res.count, map_max_tokens=context.map_max_tokens,
        collapse_max_tokens=context.collapse_max_tokens, final_max_tokens=context.final_max_tokens,
        budget=reduce_budget(context, res.count), identity=context.identity, store=res.store,
        price=context.price, language_of=lambda ref: answer_language(context.language, [ref.get("language")]),
        reduce_language=reduce_language, length=parse_length(context.length))
    estimate["reduce_language"] = reduce_language
    estimate["model"] = context.model
    return {"preview": estimate, "stats": {"files": files}}


mapreduce_builder = StateGraph(RunState, context_schema=Resources)
mapreduce_builder.add_node("plan", plan)
mapreduce_builder.add_node("map_shard", map_shard)
mapreduce_builder.add_node("map_ray", map_ray)
mapreduce_builder.add_node("collect", collect)
mapreduce_builder.add_node("collapse", collapse)
mapreduce_builder.add_node("final", final)
mapreduce_builder.add_node("preview", preview)
mapreduce_builder.add_edge(START, "plan")
mapreduce_builder.add_conditional_edges("plan", after_plan, ["map_shard", "map_ray", "preview"])
mapreduce_builder.add_edge("map_shard", "collect")
mapreduce_builder.add_edge("map_ray", "collect")
mapreduce_builder.add_conditional_edges("collect", should_collapse, ["collapse", "final"])
mapreduce_builder.add_conditional_edges("collapse", should_collapse, ["collapse", "final"])
mapreduce_builder.add_edge("final", END)
mapreduce_builder.add_edge("preview", END)
mapreduce = mapreduce_builder.compile(name="map-reduce")


# --- the outer graph: one run, its resources around the subgraph ------------------------


def make_builder(endpoint: Mapping[str, Any] | None = None) -> StateGraph:
    """The summarizer's graph builder; `endpoint` (base_url, api_key, model) serves runs that name none.

    The server entry point (graphs/server.py) passes the endpoint it reads from the
    environment; a notebook or the CLI names its endpoint in the context.
    Compile it with a checkpointer to keep threads: `builder.compile(checkpointer=...)`.
    """
    endpoint = dict(endpoint or {})

    async def summarize(state: State, config: RunnableConfig) -> dict[str, Any]:
        """Open the run's resources, run the map-reduce inside them, and close them."""
        context = (get_runtime(Context).context or Context()).with_endpoint(endpoint)
        context.validate()
        emit = get_stream_writer()
        # In a worker thread: a folder or a glob is listed from disk, off the event loop.
        paths = await asyncio.to_thread(expand_named, state.get("paths") or [])
        run_input = RunState(paths=paths, texts=state.get("texts") or [])
        async with open_resources(context, emit) as resources:
            out = await mapreduce.ainvoke(run_input, config={"recursion_limit": RECURSION_LIMIT},
                                          context=resources)
        results = sorted(out.get("results", []), key=lambda r: r["id"])
        # Every key, every run: a reused thread must not show the last run's preview.
        return {"summary": out.get("summary", ""), "results": results, "stats": out.get("stats", {}),
                "preview": out.get("preview"), "evidence": out.get("evidence", [])}

    def summarize_sync(state: State, config: RunnableConfig) -> dict[str, Any]:
        # `graph.invoke`: the run is async (one HTTP session, many calls in flight), so it
        # gets a loop of its own in a worker thread, which also works where a loop already
        # runs in this one (a notebook). Ctrl-C here cancels the run there.
        loop = asyncio.new_event_loop()
        task = loop.create_task(summarize(state, config), context=contextvars.copy_context())
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            return pool.submit(loop.run_until_complete, task).result()
        except NotImplementedError as exc:
            raise RuntimeError("this checkpointer has no async methods, and the run is async: use its "
                               "async variant (e.g. AsyncSqliteSaver) and `await graph.ainvoke(...)`") from exc
        except BaseException:
            loop.call_soon_threadsafe(task.cancel)
            raise
        finally:
            pool.shutdown(wait=True)
            loop.close()

    builder = StateGraph(State, context_schema=Context, input_schema=InputState, output_schema=OutputState)
    builder.add_node("summarize", RunnableLambda(summarize_sync, afunc=summarize, name="summarize"))
    builder.add_edge(START, "summarize")
    builder.add_edge("summarize", END)
    return builder


NAME = "map-reduce-summarizer"
builder = make_builder()
graph = builder.compile(name=NAME)
