"""Preview a run without calling the LLM: calls, tokens and cost, from the planned documents."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.llm.budget import Price
from pipeline.answers import length as lengths
from pipeline.text.language import language_instruction
from pipeline.llm.runner import call_key
from pipeline.text.loading import DocRef, load_text
from pipeline.prompting import Piece, Prompt, firmer, map_prompt, reduce_prompt, render_group
from pipeline.grouping import Group, group_documents, several
from pipeline.result_store import ResultStore
from pipeline.llm.runner import Completion
from pipeline.summarize import (
    DocResult,
    document_result,
    final_prompt,
    max_collapse_levels,
    merged_piece,
    needs_retry,
    own_words,
    pack,
    pieces_in_groups,
    settle,
    to_pieces,
)
from pipeline.text.counting import TokenCounter
from prompts import Templates

# A map summary is assumed to be about a third of its chunk, within its token cap.
MAP_OUTPUT_RATIO = 0.3


def _map_output(chunk_tokens: int, cap: int) -> int:
    return min(cap, int(chunk_tokens * MAP_OUTPUT_RATIO) + 20)


def preview(docs: Sequence[DocRef], *, count: TokenCounter, map_max_tokens: int, collapse_max_tokens: int,
            final_max_tokens: int, budget: int, language_of: Callable[[DocRef], str | None],
            reduce_language: str | None, identity: str, store: ResultStore | None,
            price: Price | None, templates: Templates, length: lengths.Length | None = None) -> dict[str, Any]:
    """Estimate the calls, tokens and cost of summarizing `docs`; nothing is sent anywhere.

    Where the store holds a document's every map answer, its summary is known exactly, and
    so are the reduce prompts built only from known summaries: those found in the store
    are counted as stored, level by level, as the run would find them. The rest is
    estimated from sizes.
    """
    map_overhead = count(templates.map + templates.reader + templates.document) + 20
    reduce_overhead = count(templates.collapse + templates.reader + templates.summaries) + 20
    calls = {"map": 0, "collapse": 0, "final": 0}
    stored = {"map": 0, "collapse": 0, "final": 0}
    tokens_in = tokens_out = 0
    pieces: list[Piece] = []
    known: dict[int, str] = {}  # the map summaries known exactly, by document
    results: list[DocResult] = []  # and their results
    summarized = 0
    for ref in sorted(docs, key=lambda r: (r["source"], r["id"])):  # the order the reduce takes them in
        if "skip_reason" in ref or "plan_error" in ref or "prior_error" in ref:
            continue
        summarized += 1
        text = load_text(ref) if store is not None else ""
        language = language_of(ref)
        instruction = language_instruction(language)
        doc_out, spans, answers = 0, ref["spans"], []
        for part, (start, end) in enumerate(spans, start=1):
            chunk_tokens = count(text[start:end]) if text else ref["tokens"] // len(spans)
            out = _map_output(chunk_tokens, map_max_tokens)
            doc_out += out
            if text and store is not None:
                prompt = map_prompt(ref["source"], text[start:end], part, len(spans), instruction, templates)
                if (answer := stored_answer(store, "map", identity, map_max_tokens, prompt, language,
                                            templates.reader)) is not None:
                    stored["map"] += 1
                    answers.append(answer)
                    continue
            calls["map"] += 1
            tokens_in += chunk_tokens + map_overhead
            tokens_out += out
        if len(answers) == len(spans):  # known exactly: the pieces the run will make
            # held to the document as the run holds them, so the pieces are the run's own
            result = document_result(ref, [Completion(answer, 0, 0) for answer in answers], text=text)
            known[ref["id"]] = own_words(result)
            results.append(result)
            pieces += to_pieces(result, count, collapse_max_tokens)
            continue
        # A long document's summary goes to the reduce in parts, as summarize.to_pieces does;
        # the source stands in for the summary's text, which decides where groups end.
        parts = max(1, math.ceil((doc_out + 12) / collapse_max_tokens))
        pieces += [Piece(label="", text=f"{ref['source']}#{i}", tokens=math.ceil((doc_out + 12) / parts), docs=[])
                   for i in range(parts)]
    groups: list[Group] = []
    if results and len(results) == summarized:  # every summary known: grouped as the run will group them
        groups = group_documents(results)
        pieces = pieces_in_groups(results, groups, count, collapse_max_tokens)
        groups = several(groups)
    reduce = _Reduce(store, identity, reduce_language, count, known, templates, groups)
    levels = 0
    while sum(p["tokens"] for p in pieces) > budget and levels < max_collapse_levels(len(pieces)):
        levels += 1
        merged = []
        for group in pack(pieces, budget):
            if len(group) == 1:
                merged.append(group[0])
                continue
            size = sum(p["tokens"] for p in group)
            hit = reduce.collapse(group, collapse_max_tokens)
            if hit is not None:
                stored["collapse"] += 1
                merged.append(hit)
                continue
            calls["collapse"] += 1
            tokens_in += size + reduce_overhead
            out = min(collapse_max_tokens, math.ceil(size / 2))
            tokens_out += out
            merged.append(Piece(label="", text=group[0]["text"], tokens=out, docs=[]))
        pieces = merged
    whole = summarized == 1 and len(pieces) == 1 and bool(pieces[0]["label"]) and len(known) == 1 \
        and next(len(d["spans"]) for d in docs if d["id"] in known) == 1
    if pieces and not whole:  # one document summarized in one call needs no final call
        if reduce.final(pieces, final_max_tokens, lengths.target(length, summarized)):
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


def stored_answer(store: ResultStore, step: str, identity: str, max_tokens: int, prompt: Prompt,
                  language: str | None, reader: str = "") -> str | None:
    """The answer a run would take from the store for `prompt`, cleaned as it would be; None if it would call.

    As `summarize.ask` does, an answer in the wrong language sends for the firmer prompt's.
    """
    hit = store.get(call_key(step, identity, max_tokens, *prompt))
    if hit is None:
        return None
    firm = None
    if needs_retry(hit.text, language):
        again = store.get(call_key(step, identity, max_tokens, *firmer(prompt, language or "")))
        if again is None:
            return None
        firm = again.text
    return settle(prompt, language, hit.text, firm, Counter(), reader)


class _Reduce:
    """Look a reduce call up in the store, when every piece it would take is known exactly."""

    def __init__(self, store: ResultStore | None, identity: str, language: str | None, count: TokenCounter,
                 known: dict[int, str], templates: Templates, groups: Sequence[Group] = ()) -> None:
        self.store, self.identity, self.language, self.count, self.known = store, identity, language, count, known
        self.templates, self.groups = templates, groups
        self.instruction = language_instruction(language, "the summaries")

    def collapse(self, group: Sequence[Piece], max_tokens: int) -> Piece | None:
        """The piece a stored collapse answer makes of `group`, or None (not known exactly, or not stored)."""
        if self.store is None or not all(p["docs"] for p in group):  # an estimated piece has no documents
            return None
        joined, call_docs = render_group(group)
        prompt = reduce_prompt("collapse", joined, self.instruction, self.templates)
        answer = stored_answer(self.store, "collapse", self.identity, max_tokens, prompt, self.language,
                               self.templates.reader)
        if answer is None:
            return None
        return merged_piece(answer, group, call_docs, lambda doc: self.known.get(doc, ""), self.count)

    def final(self, pieces: Sequence[Piece], max_tokens: int, length: lengths.Length) -> bool:
        """Whether the final call's answer is stored."""
        if self.store is None or not all(p["docs"] for p in pieces):
            return False
        prompt, _ = final_prompt(pieces, self.language, length, self.templates, self.groups)
        return stored_answer(self.store, "final", self.identity, max_tokens, prompt, self.language,
                             self.templates.reader) is not None
