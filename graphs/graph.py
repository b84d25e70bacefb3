"""The map-reduce summarization graph.

    plan ──Send(shard)──▶ map_shard ──▶ collect ──▶ collapse ⟲ ──▶ final
                 (one Send per shard of documents)   (while over token_max)
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

import prompts
from graphs.context import Context
from graphs.runs import close_run, closes_run_on_failure, get_run, open_run
from graphs.state import InputState, OutputState, ShardState, State
from pipeline.citations import cited
from pipeline.errors import CollapseError, InputError
from pipeline.language import dominant_language, language_name
from pipeline.loading import DocRef, plan_inputs
from pipeline.store import compare_with_prior
from pipeline.tokens import token_counter
from pipeline.summarize import (
    DocResult,
    collapse_level,
    final_summary,
    max_collapse_levels,
    summarize_shard,
    to_pieces,
)

log = logging.getLogger(__name__)

MIN_SHARD = 64


def shard_size(concurrency: int) -> int:
    """Documents per Send: large enough that a few shards keep every call slot busy."""
    return max(MIN_SHARD, 2 * concurrency)


# The graph's step budget: plan, map, collect, every collapse level, final. The collapse
# bounds its own levels by the pieces it finds (a single document may give thousands),
# so this only stops a runaway graph, and it is bound to the graph so that a notebook
# calling `graph.ainvoke` needs no config of its own.
RECURSION_LIMIT = 4 + max_collapse_levels(2**62) + 2


def _language(context: Context, docs: list[DocRef] | list[Any]) -> str | None:
    if context.language != "auto":
        return language_name(context.language)
    return dominant_language(d.language for d in docs)


async def plan(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Open the run, then hash, decode and chunk every document (keeping references only)."""
    paths, texts = state.get("paths") or [], state.get("texts") or []
    if not paths and not texts:
        raise InputError("nothing to summarize: give `paths` or `texts`")
    run_id = open_run(runtime.context)
    try:
        run = get_run(run_id)
        docs = plan_inputs([str(p) for p in paths], texts, run.chunker,
                           guess_language=runtime.context.language == "auto")
        if run.store is not None:
            run.files, removed = compare_with_prior(docs, run.store.prior_documents(), runtime.context.retry_failed)
            run.store.forget_documents(removed)
            log.info("files: %(new)d new, %(changed)d changed, %(unchanged)d unchanged, %(removed)d removed",
                     run.files)
    except BaseException:
        await close_run(run_id)
        raise
    run.runner.progress.add_total("map", sum(len(d.spans) for d in docs))
    run.marks["map_start"] = time.monotonic()
    log.info("planned %d documents, %d chunks, %d tokens", len(docs),
             sum(len(d.spans) for d in docs), sum(d.tokens for d in docs))
    return {"run_id": run_id, "docs": docs}


def fan_out(state: State) -> list[Send]:
    """Send each shard of document references to a summarizer."""
    run = get_run(state["run_id"])
    docs = state["docs"]
    size = shard_size(run.context.concurrency)
    return [Send("map_shard", ShardState(run_id=state["run_id"], docs=docs[i:i + size]))
            for i in range(0, len(docs), size)]


@closes_run_on_failure
async def map_shard(state: ShardState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Summarize one shard's documents, at most the run's concurrency at a time."""
    run = get_run(state["run_id"])
    context = runtime.context
    language = None if context.language == "auto" else language_name(context.language)
    not_retried = {d.id for d in state["docs"] if d.prior_error}

    def on_result(result: DocResult) -> None:
        if run.store is not None and result["id"] not in not_retried:
            run.store.record_document(result)
        if context.on_result is not None:
            context.on_result(result)

    async with run.shard_slots:
        results = await summarize_shard(run.runner, state["docs"], language=language,
                                        max_tokens=context.map_max_tokens, on_result=on_result)
    return {"results": results}


@closes_run_on_failure
async def collect(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Gather the documents' summaries as the first reduce level, ordered by source.

    Ordered by source rather than by input position, so that listing the same files in
    another order makes the same reduce calls.
    """
    run = get_run(state["run_id"])
    run.marks["map_end"] = time.monotonic()
    results = state.get("results", [])
    cap = runtime.context.collapse_max_tokens
    pieces = [piece for r in sorted(results, key=lambda r: (r["source"], r["id"])) if r["status"] == "ok"
              for piece in to_pieces(r, run.count, cap)]
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "failed", "skipped")}
    log.info("map done: %(ok)d summarized, %(failed)d failed, %(skipped)d skipped", counts)
    return {"pieces": pieces, "level": 0, "max_levels": max_collapse_levels(len(pieces))}


def reduce_budget(context: Context) -> int:
    """Tokens of summaries one reduce call may take: --token-max less the prompt's own."""
    template = max(prompts.COLLAPSE, prompts.FINAL, key=len)
    return context.token_max - token_counter(context.model)(template) - 64


def should_collapse(state: State, runtime: Runtime[Context]) -> Literal["collapse", "final"]:
    """Collapse again while the summaries together exceed the reduce budget."""
    total = sum(p["tokens"] for p in state["pieces"])
    return "collapse" if total > reduce_budget(runtime.context) else "final"


@closes_run_on_failure
async def collapse(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Merge groups of summaries that fit the budget, all groups concurrently."""
    run, context = get_run(state["run_id"]), runtime.context
    level = state["level"] + 1
    if level > state["max_levels"]:
        raise CollapseError(f"summaries still exceed --token-max after {state['max_levels']} collapse levels")
    pieces = await collapse_level(run.runner, state["pieces"], budget=reduce_budget(context),
                                  language=_language(context, state["docs"]),
                                  max_tokens=context.collapse_max_tokens, count=run.count)
    run.collapse_levels = level
    log.info("collapse level %d: %d summaries -> %d", level, len(state["pieces"]), len(pieces))
    return {"pieces": pieces, "level": level}


def _sources_legend(summary: str, state: State) -> str:
    """List the documents the summary cites by tag, in input order."""
    ids = set(cited(summary))
    named = [d for d in state["docs"] if d.id in ids]
    if not named:
        return ""
    lines = [f"- [D{d.id}] {d.source}" for d in named]
    return "\n\n**Sources**\n\n" + "\n".join(lines) + "\n"


@closes_run_on_failure
async def final(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Write the final summary, name its sources, and close the run."""
    run, context = get_run(state["run_id"]), runtime.context
    pieces = state["pieces"]
    summary = ""
    if pieces:
        text = await final_summary(run.runner, pieces, language=_language(context, state["docs"]),
                                   max_tokens=context.final_max_tokens)
        summary = text.rstrip() + "\n" + _sources_legend(text, state)
    stats = run.stats()
    await close_run(state["run_id"])
    return {"summary": summary, "stats": stats}


builder = StateGraph(State, context_schema=Context, input_schema=InputState, output_schema=OutputState)
builder.add_node("plan", plan)
builder.add_node("map_shard", map_shard)
builder.add_node("collect", collect)
builder.add_node("collapse", collapse)
builder.add_node("final", final)
builder.add_edge(START, "plan")
builder.add_conditional_edges("plan", fan_out, ["map_shard"])
builder.add_edge("map_shard", "collect")
builder.add_conditional_edges("collect", should_collapse, ["collapse", "final"])
builder.add_conditional_edges("collapse", should_collapse, ["collapse", "final"])
builder.add_edge("final", END)

graph = builder.compile(name="map-reduce-summarizer").with_config(recursion_limit=RECURSION_LIMIT)
