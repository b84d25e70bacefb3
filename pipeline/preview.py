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
from pipeline.citations import retag
from pipeline.prompting import Piece, map_prompt, reduce_prompt, render_group
from pipeline.store import ResultStore
from pipeline.summarize import DocResult, max_collapse_levels, pack, to_pieces
from pipeline.tokens import TokenCounter

# A map summary is assumed to be about a third of its chunk, within its token cap.
MAP_OUTPUT_RATIO = 0.3


def _map_output(chunk_tokens: int, cap: int) -> int:
    return min(cap, int(chunk_tokens * MAP_OUTPUT_RATIO) + 20)


def preview(docs: Sequence[DocRef], *, count: TokenCounter, map_max_tokens: int, collapse_max_tokens: int,
            final_max_tokens: int, budget: int, language_of: Callable[[DocRef], str | None],
            reduce_language: str | None, identity: str, store: ResultStore | None,
            price: Price | None) -> dict[str, Any]:
    """Estimate the calls, tokens and cost of summarizing `docs`; nothing is sent anywhere.

    Where the store holds a document's every map answer, its summary is known exactly, and
    so are the reduce prompts built only from known summaries: those found in the store
    are counted as stored, level by level, as the run would find them. The rest is
    estimated from sizes.
    """
    map_overhead = count(prompts.MAP) + 20
    reduce_overhead = count(prompts.COLLAPSE) + 20
    calls = {"map": 0, "collapse": 0, "final": 0}
    stored = {"map": 0, "collapse": 0, "final": 0}
    tokens_in = tokens_out = 0
    pieces: list[Piece] = []
    for ref in sorted(docs, key=lambda r: (r["source"], r["id"])):  # the order the reduce takes them in
        if "skip_reason" in ref or "plan_error" in ref or "prior_error" in ref:
            continue
        text = load_text(ref) if store is not None else ""
        instruction = language_instruction(language_of(ref))
        doc_out, spans, answers = 0, ref["spans"], []
        for part, (start, end) in enumerate(spans, start=1):
            chunk_tokens = count(text[start:end]) if text else ref["tokens"] // len(spans)
            out = _map_output(chunk_tokens, map_max_tokens)
            doc_out += out
            if text and store is not None:
                prompt = map_prompt(ref["source"], text[start:end], part, len(spans), instruction)
                if hit := store.get(call_key("map", identity, map_max_tokens, prompt)):
                    stored["map"] += 1
                    answers.append(hit.text)
                    continue
            calls["map"] += 1
            tokens_in += chunk_tokens + map_overhead
            tokens_out += out
        if len(answers) == len(spans):  # known exactly: the pieces the run will make
            result = DocResult(id=ref["id"], source=ref["source"], sha256=ref["sha256"], status="ok",
                               chunks=len(spans), tokens_in=0, tokens_out=0, summary="\n".join(answers))
            pieces += to_pieces(result, count, collapse_max_tokens)
            continue
        # A long document's summary goes to the reduce in parts, as summarize.to_pieces does;
        # the source stands in for the summary's text, which decides where groups end.
        parts = max(1, math.ceil((doc_out + 12) / collapse_max_tokens))
        pieces += [Piece(label="", text=f"{ref['source']}#{i}", tokens=math.ceil((doc_out + 12) / parts), docs=[])
                   for i in range(parts)]
    reduce = _Reduce(store, identity, language_instruction(reduce_language, "the summaries"), count)
    levels = 0
    while sum(p["tokens"] for p in pieces) > budget and levels < max_collapse_levels(len(pieces)):
        levels += 1
        merged = []
        for group in pack(pieces, budget):
            if len(group) == 1:
                merged.append(group[0])
                continue
            size = sum(p["tokens"] for p in group)
            known = reduce.stored("collapse", prompts.COLLAPSE, group, collapse_max_tokens)
            if known is not None:
                stored["collapse"] += 1
                merged.append(known)
                continue
            calls["collapse"] += 1
            tokens_in += size + reduce_overhead
            out = min(collapse_max_tokens, math.ceil(size / 2))
            tokens_out += out
            merged.append(Piece(label="", text=group[0]["text"], tokens=out, docs=[]))
        pieces = merged
    if pieces:
        if reduce.stored("final", prompts.FINAL, pieces, final_max_tokens) is not None:
            stored["final"] = 1
        else:
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


class _Reduce:
    """Look a reduce call up in the store, when every piece it would take is known exactly."""

    def __init__(self, store: ResultStore | None, identity: str, instruction: str, count: TokenCounter) -> None:
        self.store, self.identity, self.instruction, self.count = store, identity, instruction, count

    def stored(self, step: str, template: str, group: Sequence[Piece], max_tokens: int) -> Piece | None:
        """The piece a stored answer makes of `group`, or None (not known exactly, or not stored)."""
        if self.store is None or not all(p["docs"] for p in group):  # an estimated piece has no documents
            return None
        joined, call_docs = render_group(group)
        prompt = reduce_prompt(template, joined, self.instruction)
        hit = self.store.get(call_key(step, self.identity, max_tokens, prompt))
        if hit is None:
            return None
        text = retag(hit.text, lambda k: k if 0 < k <= len(call_docs) else None)
        return Piece(label="", text=text, tokens=self.count(text), docs=call_docs)
