"""The map phase on Ray Data: one node of the graph, taken with `Context(engine="ray")`.

In this process the map fans out as one `Send` per shard, and LangGraph runs the
shards as tasks of this event loop. On Ray the fan-out is Ray Data's own: the shards
are its blocks, planned by Ray tasks and answered by async actors in other processes
(or on other machines), scheduled and backpressured by Ray. Splitting the work again
into `Send`s here would only put a second scheduler in front of the first, so one node
hands the whole input list to the Ray pipeline and takes the results back as they
stream in. It gives what the shards give: one result per document, each committed to
the store the moment it lands, and the counts of new, changed and unchanged files;
collapse and final then run in this process, exactly as with the local engine.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from langgraph.runtime import Runtime

from graphs.context import DEFAULT_MODEL, Context
from graphs.resources import Resources
from graphs.state import RunState
from pipeline.text.loading import DocRef, list_inputs
from pipeline.result_store import compare_with_prior
from pipeline.summarize import DocResult

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"  # where a key alone sends calls, as ChatOpenAI does


def _settings(context: Context, concurrency: int, actors: int, keyed: bool) -> tuple[Any, Any]:
    """What the planning tasks and the call actors need, each actor with its share of the limits."""
    from pydantic import SecretStr

    from pipeline.ray.calls import CallSettings
    from pipeline.ray.plan import PlanSettings

    model = context.model or DEFAULT_MODEL
    plan = PlanSettings(chunk_tokens=context.chunk_tokens, model=model, language=context.language,
                        map_max_tokens=context.map_max_tokens, identity=context.identity, keyed=keyed,
                        text_field=context.text_field, id_field=context.id_field)
    endpoints = [dataclasses.replace(s, concurrency=max(1, s.concurrency // actors) if s.concurrency else None)
                 for s in context.endpoints] if context.base_urls else []
    call = CallSettings(
        model=model, base_url=None if endpoints else context.base_url or OPENAI_BASE_URL, endpoints=endpoints,
        api_key=SecretStr(context.api_key) if context.api_key else None, concurrency=max(1, concurrency // actors),
        timeout=context.timeout, max_retries=context.max_retries, temperature=context.temperature,
        extra_body=context.extra_body, map_max_tokens=context.map_max_tokens, identity=context.identity,
        rpm=context.rpm / actors if context.rpm else None, tpm=context.tpm / actors if context.tpm else None)
    return plan, call


async def map_ray(state: RunState, runtime: Runtime[Resources]) -> dict[str, Any]:
    """Summarize every document on Ray workers; commit and report each result as it arrives."""
    from pipeline.ray.engine import actor_count, map_documents

    res, context = runtime.context, runtime.context.context
    runner, store = res.llm(), res.store
    entries = list_inputs(state.get("paths") or [], state.get("texts") or [])  # Ray holds them all anyway
    prior = store.prior_documents([e["source"] for e in entries]) if store is not None else {}
    actors = actor_count(context.ray_actors, runner.concurrency.maximum)
    plan, call = _settings(context, runner.concurrency.maximum, actors, keyed=store is not None)
    in_memory = {e["id"] for e in entries if "text" in e}
    files = {"new": 0, "changed": 0, "unchanged": 0}
    results: list[DocResult] = []
    log.info("map on Ray: %d documents, %d actors of up to %d calls each", len(entries), actors, call.concurrency)

    def on_document(ref: DocRef, result: DocResult) -> None:
        runner.memory.admit()  # the driver holds the results: its peak is measured, its limit kept
        calls = 0 if "prior_error" in ref else len(ref["spans"])
        runner.progress.add_total("map", calls)
        runner.progress.advance("map", calls)
        if store is not None:
            for name, n in compare_with_prior([ref], prior, context.retry_failed).items():
                files[name] += n
            if "prior_error" not in ref:  # a failure carried over is not recorded again
                store.record_document(result, kind="text" if result["id"] in in_memory else "file")
        runner.progress.advance("documents")
        res.emit({"event": "result", "result": result})
        results.append(result)

    await map_documents(entries, plan=plan, call=call, actors=actors, store=store, prior=prior,
                        retry_failed=context.retry_failed, stats=runner.stats, on_document=on_document)
    return {"results": results, "files": files if store is not None else {}}
