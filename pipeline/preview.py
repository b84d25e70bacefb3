"""Preview a run without calling the LLM: calls, tokens and cost, from the planned documents."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.llm.budget import Price
from pipeline.answers import length as lengths
from pipeline.answers.backfill import MOST_POINTS, SENTENCES_A_POINT
from pipeline.errors import InputError
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

# What a call is billed for and what of its answer reaches the next step are apart: a map
# answer is held to its chunk and topped up with the chunk's own sentences
# (answers/grounding.py, answers/backfill.py), so what feeds the reduce is a few of the
# chunk's sentences whatever the model wrote. Measured against the embedded model's
# answers (eval set, data/) and the fake server's (bench documents, a 1 MB text):
# - a prompt is counted with OpenAI's tokenizer; other models' count up to this much more
#   (the embedded model's: 3-10% on English and Korean);
OTHER_TOKENIZERS = 1.05
# - a map answer (at most 5 one-sentence bullets) is about 150 tokens where the chunk has
#   that much to say, the embedded model's reaching its cap of 150 on chunks of 180 tokens;
MAP_ANSWER_TOKENS = 200
# - a chunk's kept summary is the points the backfill tops it up to (a point for every 3
#   sentences, at most 4) and one more of the model's own (the embedded model's keep 4.7-4.9
#   a chunk; the fake server's one-line answers seldom stand, and keep a point fewer), each
#   a sentence of the chunk of 18-52 tokens (the denser, longer ones are chosen); a chunk
#   with no sentence end keeps about one;
MODEL_POINTS = 1
POINT_TOKENS = 45
LONGER_SENTENCES = 1.3  # the sentences chosen are this much longer than the chunk's average
# - a collapse answer is about this share of what it merges, within its cap (the embedded
#   model's: 0.35-0.45, at its cap);
COLLAPSE_ANSWER_RATIO = 0.5
# - a final answer is held to its length, and small models write to their cap: the cap.
# The documents whose sentences are counted (the rest take their median), so that a
# preview of 20,000 files reads a few of them twice, not all.
SAMPLE_DOCUMENTS = 64
SAMPLE_CHUNKS = 8  # of a long document
_SENTENCE_END = re.compile(r"[.!?。！？][\"'’”)\]]*(?=\s|$)")
_LINES_A_SENTENCE = 8  # lines without a full stop (a list, a table) that make one sentence, as backfill counts


def _sentences(text: str) -> int:
    """About how many sentences `text` has, as the backfill counts them: full stops, else runs of lines."""
    return max(1, len(_SENTENCE_END.findall(text)), text.count("\n") // _LINES_A_SENTENCE)


def _chunk_tokens(ref: DocRef) -> list[int]:
    """Each chunk's tokens, shared out by its characters (overlaps counted in both chunks)."""
    spans = ref["spans"]
    chars = max(1, spans[-1][1] - spans[0][0])
    tokens = ref.get("tokens") or chars // 4
    return [max(1, round(tokens * (end - start) / chars)) for start, end in spans]


class _Sentences:
    """Tokens a sentence of each document, counted in a sample of the documents; the sample's median for the rest."""

    def __init__(self, docs: Sequence[DocRef]) -> None:
        self.per_doc: dict[int, float] = {}
        step = max(1, math.ceil(len(docs) / SAMPLE_DOCUMENTS))
        for ref in docs[::step]:
            try:
                text = load_text(ref)
            except (InputError, OSError):
                continue
            spans, tokens = ref["spans"], _chunk_tokens(ref)
            picked = range(0, len(spans), max(1, math.ceil(len(spans) / SAMPLE_CHUNKS)))
            sentences = sum(_sentences(text[spans[i][0]:spans[i][1]]) for i in picked)
            self.per_doc[ref["id"]] = sum(tokens[i] for i in picked) / sentences
        sizes = sorted(self.per_doc.values())
        self.typical = sizes[len(sizes) // 2] if sizes else 25.0

    def kept(self, ref: DocRef, chunk_tokens: int) -> int:
        """The tokens of a chunk's kept summary: a few of its sentences, the longer ones."""
        size = self.per_doc.get(ref["id"], self.typical)
        sentences = chunk_tokens / size
        points = 1 if sentences < 2 else min(MOST_POINTS, math.ceil(sentences / SENTENCES_A_POINT)) + MODEL_POINTS
        return points * min(POINT_TOKENS, math.ceil(size * LONGER_SENTENCES) + 2)


def _map_answer(chunk_tokens: int, cap: int) -> int:
    """The completion tokens a map call is billed for: a few bullets, no longer than the chunk and its cap."""
    return min(cap, MAP_ANSWER_TOKENS, chunk_tokens + 20)


def preview(docs: Sequence[DocRef], *, count: TokenCounter, map_max_tokens: int, collapse_max_tokens: int,
            final_max_tokens: int, budget: int, language_of: Callable[[DocRef], str | None],
            reduce_language: str | None, identity: str, store: ResultStore | None,
            price: Price | None, templates: Templates, length: lengths.Length | None = None,
            max_cost: float | None = None) -> dict[str, Any]:
    """Estimate the calls, tokens and cost of summarizing `docs`; nothing is sent anywhere.

    Where the store holds a document's every map answer, its summary is known exactly, and
    so are the reduce prompts built only from known summaries: those found in the store
    are counted as stored, level by level, as the run would find them. The rest is
    estimated from sizes: the tokens billed from the answers' measured sizes, the reduce's
    input from what the checks of the answers keep (see the constants above).
    """
    reduce_overhead = count(templates.collapse + templates.reader + templates.summaries) + 20
    calls = {"map": 0, "collapse": 0, "final": 0}
    stored = {"map": 0, "collapse": 0, "final": 0}
    tokens = {step: {"prompt": 0, "completion": 0} for step in calls}
    pieces: list[Piece] = []
    known: dict[int, str] = {}  # the map summaries known exactly, by document
    results: list[DocResult] = []  # and their results
    planned = sorted((r for r in docs if not ("skip_reason" in r or "plan_error" in r or "prior_error" in r)),
                     key=lambda r: (r["source"], r["id"]))  # the order the reduce takes them in
    sentences = _Sentences(planned)
    system_tokens: dict[str, int] = {}  # the map instructions' tokens, by their text
    for ref in planned:
        text = load_text(ref) if store is not None else ""
        language = language_of(ref)
        instruction = language_instruction(language)
        spans, answers = ref["spans"], []
        sizes = [count(text[start:end]) for start, end in spans] if text else _chunk_tokens(ref)
        empty = map_prompt(ref["source"], "", len(spans), len(spans), instruction, templates)
        if (system := system_tokens.get(empty.system)) is None:  # one per language: counted once
            system = system_tokens[empty.system] = count(empty.system)
        map_overhead = system + count(empty.user) + 8  # the chat format's own tokens
        kept = count(ref["source"]) + 8  # the label of its summary in the reduce
        for part, ((start, end), chunk_tokens) in enumerate(zip(spans, sizes), start=1):
            kept += sentences.kept(ref, chunk_tokens)
            if text and store is not None:
                prompt = map_prompt(ref["source"], text[start:end], part, len(spans), instruction, templates)
                if (answer := stored_answer(store, "map", identity, map_max_tokens, prompt, language,
                                            templates.reader)) is not None:
                    stored["map"] += 1
                    answers.append(answer)
                    continue
            calls["map"] += 1
            tokens["map"]["prompt"] += math.ceil((chunk_tokens + map_overhead) * OTHER_TOKENIZERS)
            tokens["map"]["completion"] += _map_answer(chunk_tokens, map_max_tokens)
        if len(answers) == len(spans):  # known exactly: the pieces the run will make
            # held to the document as the run holds them, so the pieces are the run's own
            result = document_result(ref, [Completion(answer, 0, 0) for answer in answers], text=text)
            known[ref["id"]] = own_words(result)
            results.append(result)
            pieces += to_pieces(result, count, collapse_max_tokens)
            continue
        # A long document's summary goes to the reduce in parts, as summarize.to_pieces does;
        # the source stands in for the summary's text, which decides where groups end.
        parts = max(1, math.ceil(kept / collapse_max_tokens))
        pieces += [Piece(label="", text=f"{ref['source']}#{i}", tokens=math.ceil(kept / parts), docs=[])
                   for i in range(parts)]
    groups: list[Group] = []
    if results and len(results) == len(planned):  # every summary known: grouped as the run will group them
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
            out = min(collapse_max_tokens, math.ceil(size * COLLAPSE_ANSWER_RATIO))
            tokens["collapse"]["prompt"] += size + reduce_overhead
            tokens["collapse"]["completion"] += out
            merged.append(Piece(label="", text=group[0]["text"], tokens=out, docs=[]))
        pieces = merged
    # One document summarized in one call is its own summary: no final call.
    whole = len(planned) == 1 and len(planned[0]["spans"]) == 1 and len(pieces) == 1
    if pieces and not whole:
        if reduce.final(pieces, final_max_tokens, lengths.target(length, len(planned))):
            stored["final"] = 1
        else:
            calls["final"] = 1
            tokens["final"]["prompt"] += sum(p["tokens"] for p in pieces) + reduce_overhead
            tokens["final"]["completion"] += final_max_tokens
    tokens_in = sum(step["prompt"] for step in tokens.values())
    tokens_out = sum(step["completion"] for step in tokens.values())
    result: dict[str, Any] = {
        "documents": len(docs),
        "skipped": sum("skip_reason" in d for d in docs),
        "failed": sum("plan_error" in d for d in docs),
        "llm_calls": calls,
        "from_store": stored,
        "collapse_levels": levels,
        "estimated_prompt_tokens": tokens_in,
        "estimated_completion_tokens": tokens_out,
        "estimated_tokens": tokens,
    }
    if price is not None:
        cost = price.cost(tokens_in, tokens_out)
        result["estimated_cost_usd"] = round(cost, 4) if cost >= 0.01 else round(cost, 6)
        if max_cost is not None:  # the run would stop before the call that could pass it
            result["max_cost_usd"] = max_cost
            result["over_max_cost"] = cost > max_cost
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
