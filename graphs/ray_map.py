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
from graphs.documents import locations
from graphs.resources import Resources, chat_settings
from graphs.state import RunState
from pipeline.llm.factory import OPENAI_BASE_URL
from pipeline.text.loading import DocRef, list_inputs
from pipeline.result_store import count_against_prior
from pipeline.summarize import DocResult
from prompts import Templates

log = logging.getLogger(__name__)


def ray_settings(context: Context, concurrency: int, actors: int, keyed: bool,
                 templates: Templates) -> tuple[Any, Any]:
    """What the planning tasks and the call actors need, from `context`: each actor with its share of the limits."""
    from pipeline.ray.calls import CallSettings
    from pipeline.ray.plan import PlanSettings

    chat = chat_settings(context)
    plan = PlanSettings(chunk_tokens=context.chunk_tokens, model=context.model or DEFAULT_MODEL,
                        language=context.language, map_max_tokens=context.map_max_tokens, identity=context.identity,
                        keyed=keyed, templates=templates, text_field=context.text_field, id_field=context.id_field)
    share = dataclasses.replace(
        chat, concurrency=max(1, concurrency // actors),
        endpoints=[dataclasses.replace(s, concurrency=max(1, s.concurrency // actors) if s.concurrency else None)
                   for s in chat.endpoints],
        base_url=None if chat.endpoints else chat.base_url or OPENAI_BASE_URL,
        rpm=chat.rpm / actors if chat.rpm else None, tpm=chat.tpm / actors if chat.tpm else None,
        price=None, max_cost=None)  # spending is not capped on Ray (Context refuses max_cost there)
    return plan, CallSettings(chat=share, map_max_tokens=context.map_max_tokens)


async def map_ray(state: RunState, runtime: Runtime[Resources]) -> dict[str, Any]:
    """Summarize every document on Ray workers; commit and report each result as it arrives."""
    from pipeline.ray.engine import actor_count, map_documents

    res, context = runtime.context, runtime.context.context
    runner, store = res.llm(), res.store
    entries = list_inputs(state.get("paths") or [], state.get("texts") or [])  # Ray holds them all anyway
    prior = await store.aprior_documents([e["source"] for e in entries]) if store is not None else {}
    actors = actor_count(context.ray_actors, runner.concurrency.maximum)
    plan, call = ray_settings(context, runner.concurrency.maximum, actors, keyed=store is not None,
                              templates=res.templates)
    where = locations(1, state.get("paths") or [], state.get("texts") or [])
    files = {"new": 0, "changed": 0, "unchanged": 0}
    results: list[DocResult] = []
    log.info("map on Ray: %d documents, %d actors of up to %d calls each", len(entries), actors, call.chat.concurrency)

    def on_document(ref: DocRef, result: DocResult) -> None:
        if result["id"] in where:
            result["location"] = where[result["id"]]
        runner.memory.admit()  # the driver holds the results: its peak is measured, its limit kept
        calls = 0 if "prior_error" in ref else len(ref["spans"])
        runner.progress.add_total("map", calls)
        runner.progress.advance("map", calls)
        if store is not None:  # (planning marked the failures carried over, from the store's snapshot)
            for name, n in count_against_prior([ref], prior).items():
                files[name] += n
        res.commit(ref, result)
        results.append(result)

    await map_documents(entries, plan=plan, call=call, actors=actors, store=store, prior=prior,
                        retry_failed=context.retry_failed, stats=runner.stats, on_document=on_document)
    return {"results": results, "files": files if store is not None else {}}
