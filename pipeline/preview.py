"""Preview a run without calling the LLM: calls, tokens and cost, from the planned documents."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import prompts
from pipeline.budget import Price
from pipeline.language import language_instruction
from pipeline.llm import call_key
from pipeline.loading import DocRef, load_text
from pipeline.prompting import map_prompt
from pipeline.store import ResultStore
from pipeline.summarize import max_collapse_levels, pack
from pipeline.tokens import TokenCounter

# A map summary is assumed to be about a third of its chunk, within its token cap.
MAP_OUTPUT_RATIO = 0.3


def _map_output(chunk_tokens: int, cap: int) -> int:
    return min(cap, int(chunk_tokens * MAP_OUTPUT_RATIO) + 20)


def preview(docs: Sequence[DocRef], *, count: TokenCounter, map_max_tokens: int, collapse_max_tokens: int,
            final_max_tokens: int, budget: int, language_of: Callable[[DocRef], str | None], identity: str,
            store: ResultStore | None, price: Price | None) -> dict[str, Any]:
    """Estimate the calls, tokens and cost of summarizing `docs`; nothing is sent anywhere."""
    map_overhead = count(prompts.MAP) + 20
    reduce_overhead = count(prompts.COLLAPSE) + 20
    calls = {"map": 0, "collapse": 0, "final": 0}
    stored = {"map": 0}
    tokens_in = tokens_out = 0
    pieces: list[dict[str, Any]] = []
    for ref in docs:
        if "skip_reason" in ref or "plan_error" in ref or "prior_error" in ref:
            continue
        text = load_text(ref) if store is not None else ""
        instruction = language_instruction(language_of(ref))
        doc_out, spans = 0, ref["spans"]
        for part, (start, end) in enumerate(spans, start=1):
            chunk_tokens = count(text[start:end]) if text else ref["tokens"] // len(spans)
            out = _map_output(chunk_tokens, map_max_tokens)
            doc_out += out
            if text and store is not None:
                prompt = map_prompt(ref["source"], text[start:end], part, len(spans), instruction)
                if store.get(call_key("map", identity, map_max_tokens, prompt)):
                    stored["map"] += 1
                    continue
            calls["map"] += 1
            tokens_in += chunk_tokens + map_overhead
            tokens_out += out
        # A long document's summary goes to the reduce in parts, as summarize.to_pieces does;
        # the source stands in for the summary's text, which decides where groups end.
        parts = max(1, math.ceil((doc_out + 12) / collapse_max_tokens))
        pieces += [{"label": "", "text": f"{ref['source']}#{i}", "tokens": math.ceil((doc_out + 12) / parts), "docs": []}
                   for i in range(parts)]
    levels = 0
    while sum(p["tokens"] for p in pieces) > budget and levels < max_collapse_levels(len(pieces)):
        levels += 1
        merged = []
        for group in pack(pieces, budget):  # type: ignore[arg-type]
            size = sum(p["tokens"] for p in group)
            if len(group) > 1:
                calls["collapse"] += 1
                tokens_in += size + reduce_overhead
                out = min(collapse_max_tokens, math.ceil(size / 2))
                tokens_out += out
                size = out
            merged.append({"label": "", "text": str(group[0]["text"]), "tokens": size, "docs": []})
        pieces = merged
    if pieces:
        calls["final"] = 1
        tokens_in += sum(p["tokens"] for p in pieces) + reduce_overhead
        tokens_out += final_max_tokens // 2
    result: dict[str, Any] = {
        "documents": len(docs),
        "skipped": sum("skip_reason" in d for d in docs),
        "failed": sum("plan_error" in d for d in docs),
        "llm_calls": calls,
        "from_store": stored,
        "collapse_levels": levels,
        "estimated_prompt_tokens": tokens_in,
        "estimated_completion_tokens": tokens_out,
    }
    if price is not None:
        result["estimated_cost_usd"] = round(price.cost(tokens_in, tokens_out), 4)
    return result
