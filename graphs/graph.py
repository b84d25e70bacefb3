"""The map-reduce summarization graph.

    summarize: async with open_resources(...) ──▶ the map-reduce subgraph:

        plan ──Send(shard)──▶ map_shard ──▶ collect ──▶ collapse ⟲ ──▶ final
          ├──(engine ray)──▶ map_ray ──┘                 (while over token_max)
          └──(dry run)──▶ preview

The outer graph has one node, which opens the run's resources and runs the subgraph
inside that block (graphs/resources.py says why); LangGraph finds the subgraph through
that node, so Studio and `get_graph(xray=True)` draw its steps. Planning streams: `plan`
only lists the inputs, and each shard reads, decodes and chunks its own documents when
its turn comes, so the first calls leave once the first shard is planned, and the graph
state holds a name per document rather than its chunk spans. Progress and each
document's result go out as they happen through LangGraph's stream writer
(`stream_mode="custom"`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime, get_runtime
from langgraph.types import Send

import prompts
from graphs.context import Context
from graphs.documents import locations
from graphs.ray_map import map_ray
from graphs.resources import Resources, open_resources
from graphs.state import InputState, OutputState, RunState, ShardState, State, add_counts
from pipeline.answers.evidence import cite_lines, trace
from pipeline.errors import CollapseError, InputError, NothingSummarizedError
from pipeline.text.confine import found_inside, inside, refuse_paths
from pipeline.text.language import answer_language
from pipeline.answers.length import parse_length
from pipeline.grouping import Group, group_documents, in_group_order, is_grouped, overview, several
from pipeline.text.formats.entries import Fields
from pipeline.text.loading import DocRef, expand_inputs, list_inputs
from pipeline.text.selecting import select_inputs
from pipeline.preview import preview as preview_calls
from pipeline.legend import sources_legend
from pipeline.planning import PLAN_BATCH, plan_and_compare, plan_and_compare_all
from pipeline.result_store import removed_sources
from pipeline.summarize import (
    DocResult,
    collapse_level,
    final_summary,
    max_collapse_levels,
    own_words,
    pieces_in_groups,
    represent,
    summarize_shard,
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


def reduce_budget(context: Context, count: Any, templates: prompts.Templates) -> int:
    """Tokens of summaries one reduce call may take: token_max less the prompt's own."""
    template = max(templates.collapse, templates.final, key=len) + templates.reader + templates.summaries
    return context.token_max - count(template) - 64


# --- the map-reduce subgraph ---------------------------------------------------------


async def plan(state: RunState, runtime: Runtime[Resources]) -> dict[str, Any]:
    """List the inputs, numbering them; nothing is read yet (each shard plans its own)."""
    res = runtime.context
    paths, texts = state.get("paths") or [], state.get("texts") or []
    if not paths and not texts:
        raise InputError("nothing to summarize: give `paths`, `texts` or `documents`")
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
    where = locations(state["first_id"], state["paths"], state["texts"])

    async def planned() -> AsyncIterator[tuple[DocRef, str | None]]:
        nonlocal files
        entries = list_inputs(state["paths"], state["texts"], first_id=state["first_id"])
        for i in range(0, len(entries), PLAN_BATCH):
            texts: dict[int, str] = {}  # read once: planned here, summarized right after
            refs, batch_files = await plan_and_compare(entries[i:i + PLAN_BATCH], res.chunker, res.store,
                                                       guess_language=context.language == "auto",
                                                       retry_failed=context.retry_failed, keep=texts,
                                                       fields=Fields(context.text_field, context.id_field))
            files = add_counts(files, batch_files)
            runner.progress.add_total("map", sum(len(r["spans"]) for r in refs if "prior_error" not in r))
            for ref in refs:
                yield ref, texts.pop(ref["id"], None)

    def on_result(ref: DocRef, result: DocResult) -> None:
        if result["id"] in where:
            result["location"] = where[result["id"]]
        res.warm_tokenizer()  # once the first calls are answered, while the others are out
        res.commit(ref, result)

    async with res.shard_slots:
        results = await summarize_shard(
            runner, planned(), max_tokens=context.map_max_tokens, on_result=on_result, templates=res.templates,
            room=res.map_room, twins=res.twins,
            language_of=lambda ref: answer_language(context.language, [ref.get("language")]))
    return {"results": results, "files": files}


async def collect(state: RunState, runtime: Runtime[Resources]) -> dict[str, Any]:
    """Gather the documents' summaries as the first reduce level, related documents in a row, ordered by source.

    Documents that share distinctive terms form a group (pipeline/grouping.py); groups go
    by their first document, and a collapse call merges one group where it can. Ordered
    by source rather than by input position, so that listing the same files in another
    order makes the same reduce calls.
    """
    res, context = runtime.context, runtime.context.context
    results = state.get("results", [])
    cap = context.collapse_max_tokens
    groups = await asyncio.to_thread(group_documents, results)  # 60 us a document: off the loop at 20,000
    pieces = pieces_in_groups(results, groups, res.count, cap)
    documents = [d for g in groups for d in g["documents"]]
    if is_grouped(groups, documents):
        log.info("%d documents in %d groups of related ones", len(documents), len(groups))
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "failed", "skipped")}
    log.info("map done: %(ok)d summarized, %(failed)d failed, %(skipped)d skipped", counts)
    removed: dict[str, int] = {}  # added to the shards' counts
    if res.store is not None:
        gone = removed_sources(await res.store.aprior_documents(), _sources(state))
        res.store.forget_documents(gone)
        removed = {"removed": len(gone)}
        files = state.get("files") or {}
        log.info("files: %d new, %d changed, %d unchanged, %d removed", files.get("new", 0),
                 files.get("changed", 0), files.get("unchanged", 0), len(gone))
    kept = [Group(documents=sorted(g["documents"]), terms=g["terms"]) for g in several(groups)]  # ids in order
    return {"pieces": pieces, "groups": kept, "level": 0, "max_levels": max_collapse_levels(len(pieces)),
            "mapped_at": time.time(), "files": removed,
            "reduce_language": answer_language(context.language, (r.get("language") for r in results))}


def _sources(state: RunState) -> set[str]:
    """The names of the run's inputs: the files' paths and the texts' ids."""
    return {*(state.get("paths") or []), *(t["id"] for t in state.get("texts") or [])}


def should_collapse(state: RunState, runtime: Runtime[Resources]) -> Literal["collapse", "final"]:
    """Collapse again while the summaries together exceed the reduce budget."""
    total = sum(p["tokens"] for p in state["pieces"])
    res = runtime.context
    return "collapse" if total > reduce_budget(res.context, res.count, res.templates) else "final"


async def collapse(state: RunState, runtime: Runtime[Resources]) -> dict[str, Any]:
    """Merge groups of summaries that fit the budget, all groups concurrently."""
    res, context = runtime.context, runtime.context.context
    level = state["level"] + 1
    if level > state["max_levels"]:
        raise CollapseError(f"summaries still exceed --token-max after {state['max_levels']} collapse levels")
    calls_before = res.llm().stats.calls["collapse"]
    pieces = await collapse_level(
        res.llm(), state["pieces"], budget=reduce_budget(context, res.count, res.templates),
        max_tokens=context.collapse_max_tokens, language=state["reduce_language"], count=res.count,
        summary_of=_summaries(state), templates=res.templates)
    log.info("collapse level %d: %d summaries -> %d in %d calls", level, len(state["pieces"]), len(pieces),
             res.llm().stats.calls["collapse"] - calls_before)
    return {"pieces": pieces, "level": level}


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
            summary_of=_summaries(state), documents=len(ok), templates=res.templates,
            length=parse_length(context.length), groups=state.get("groups") or [],
            whole=len(ok) == 1 and ok[0]["chunks"] == 1)
        # Only a length asked for may leave documents out; by default each is represented.
        text = text if context.length != "auto" else represent(text, ok)
        documents = [r["id"] for r in ok]
        text = in_group_order(text, state.get("groups") or [], documents)  # each group's bullets together
        evidence = trace(text, {r["id"]: r for r in ok})
        shown = cite_lines(text, evidence) if context.cite == "lines" else text
        if opening := overview(state.get("groups") or [], documents):
            shown = opening + "\n\n" + shown
        # The legend reads what the bullets cite: the groups' line names every document of a group.
        summary = shown.rstrip() + "\n" + sources_legend(text, state["results"])
    stats = _stats(state, res)
    ok_ids = [r["id"] for r in state.get("results") or [] if r["status"] == "ok"]
    if is_grouped(groups := state.get("groups") or [], ok_ids):
        stats["groups"] = groups
        stats["documents_alone"] = len(ok_ids) - sum(len(g["documents"]) for g in groups)
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
    docs, files = await plan_and_compare_all(list_inputs(state.get("paths") or [], state.get("texts") or []),
                                             res.chunker, res.store, guess_language=context.language == "auto",
                                             retry_failed=context.retry_failed,
                                             fields=Fields(context.text_field, context.id_field))
    if res.store is not None:
        files["removed"] = len(removed_sources(await res.store.aprior_documents(), {d["source"] for d in docs}))
    reduce_language = answer_language(context.language, (d.get("language") for d in docs))
    estimate = await asyncio.to_thread(
        preview_calls, docs, count=res.count, map_max_tokens=context.map_max_tokens,
        collapse_max_tokens=context.collapse_max_tokens, final_max_tokens=context.final_max_tokens,
        budget=reduce_budget(context, res.count, res.templates), identity=context.identity, store=res.store,
        price=context.price, language_of=lambda ref: answer_language(context.language, [ref.get("language")]),
        reduce_language=reduce_language, templates=res.templates, length=parse_length(context.length),
        max_cost=context.max_cost)
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


def make_builder(environ: Mapping[str, str] | None = None,
                 root: str | os.PathLike[str] | Literal[False] | None = None) -> StateGraph:
    """The summarizer's graph builder; `environ`'s OpenAI variables serve runs that name no endpoint.

    The server entry point (graphs/server.py) passes its environment (see Context.from_env):
    all or nothing, so that a run naming its own endpoint never gets the server's key.
    A notebook or the CLI names its endpoint in the context, or names none for the
    embedded model. `root` confines the runs' `paths`: a folder, and only files inside it
    are read (relative paths are taken from it; a symbolic link leading out is refused);
    False, and no files at all, only `texts`; None (a notebook, the CLI), and any path.
    A run in which no input could be summarized raises NothingSummarizedError.
    Compile it with a checkpointer to keep threads: `builder.compile(checkpointer=...)`.
    """

    async def summarize(state: State, config: RunnableConfig) -> dict[str, Any]:
        """Open the run's resources, run the map-reduce inside them, and close them."""
        context = get_runtime(Context).context or Context()
        if environ is not None and not context.names_endpoint:
            context = Context.from_env(environ, **{f.name: getattr(context, f.name) for f in fields(Context)})
        context = context.resolved()
        context.validate()
        emit = get_stream_writer()
        texts = [*(state.get("texts") or []), *(state.get("documents") or [])]  # the documents, as texts
        # In a worker thread: a folder or a glob is listed from disk, off the event loop.
        paths = await asyncio.to_thread(_files, state.get("paths") or [], root, not texts)
        # Then narrowed by --include/--exclude, and each mailbox or records file listed as its parts.
        paths = await asyncio.to_thread(select_inputs, paths, context.include, context.exclude,
                                        Fields(context.text_field, context.id_field))
        run_input = RunState(paths=paths, texts=texts)
        async with open_resources(context, emit) as resources:
            out = await mapreduce.ainvoke(run_input, config={"recursion_limit": RECURSION_LIMIT},
                                          context=resources)
        results = sorted(out.get("results", []), key=lambda r: r["id"])
        if out.get("preview") is None and not any(r["status"] == "ok" for r in results):
            raise NothingSummarizedError(results)
        # Every key, every run: a reused thread must not show the last run's preview.
        return {"summary": out.get("summary", ""), "results": results, "stats": out.get("stats", {}),
                "preview": out.get("preview"), "evidence": out.get("evidence", [])}

    builder = StateGraph(State, context_schema=Context, input_schema=InputState, output_schema=OutputState)
    # LangGraph finds the subgraph a node runs through the names its function uses (the sync
    # variant says, by __wrapped__, that it is the async one), so Studio and
    # `get_graph(xray=True)` draw plan, map, collapse and final inside `summarize`.
    builder.add_node("summarize", RunnableLambda(_in_own_loop(summarize), afunc=summarize, name="summarize"))
    builder.add_edge(START, "summarize")
    builder.add_edge("summarize", END)
    return builder


def _files(paths: list[str], root: str | os.PathLike[str] | Literal[False] | None, must_find: bool) -> list[str]:
    """The files `paths` name, folders and globs expanded, all of them inside `root` (see make_builder).

    With `must_find`, a run given nothing else whose every name is missing stops at once (InputError).
    """
    if root is False:
        refuse_paths(paths)
    if root is None or root is False:
        return expand_inputs(paths, must_find=must_find)
    named = inside(root, paths)  # a name outside the root is refused, and the run with it
    kept, out = found_inside(root, expand_inputs(named, must_find=must_find))
    if out:  # a link found in a folder that leads out: that file is left out, the run goes on
        log.warning("left out %d file%s behind links that lead out of the folder this server reads (%s)", len(out),
                    "" if len(out) == 1 else "s", out[0])
        if not kept and must_find:
            raise InputError(f"refused: every file found leads out of the folder this server reads ({out[0]})")
    return kept


def _in_own_loop(node: Callable[[State, RunnableConfig], Awaitable[dict[str, Any]]]
                 ) -> Callable[[State, RunnableConfig], dict[str, Any]]:
    """Run the async `node` from `graph.invoke`, in an event loop of its own."""

    @functools.wraps(node)
    def run(state: State, config: RunnableConfig) -> dict[str, Any]:
        # The run is async (one HTTP session, many calls in flight), so it gets a loop of
        # its own in a worker thread, which also works where a loop already runs in this
        # one (a notebook). Ctrl-C here cancels the run there.
        loop = asyncio.new_event_loop()
        task = loop.create_task(node(state, config), context=contextvars.copy_context())
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

    return run


NAME = "map-reduce-summarizer"
builder = make_builder()
graph = builder.compile(name=NAME)
