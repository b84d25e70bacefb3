"""The map and reduce steps: summarize documents, pack summaries into groups, merge them."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from typing import Literal, TypedDict

import prompts
from pipeline.errors import CollapseError, FatalLLMError, InputError, LLMError
from pipeline.language import language_instruction
from pipeline.llm import LLMRunner
from pipeline.loading import DocRef, load_text
from pipeline.tokens import TokenCounter

log = logging.getLogger(__name__)


class DocResult(TypedDict):
    """What happened to one input document; one line of summaries.jsonl."""

    id: int
    source: str
    sha256: str
    status: Literal["ok", "failed", "skipped"]
    summary: str | None
    error: str | None
    chunks: int
    tokens_in: int
    tokens_out: int
    language: str | None


class Piece(TypedDict):
    """A summary on its way through the reduce: its text, size and the documents behind it.

    A document's own summary keeps its "[Dn] source" label apart, so that the text
    is the very string in the document's result rather than a copy of it.
    """

    label: str
    text: str
    tokens: int
    docs: list[int]


def _fence(text: str) -> str:
    # A document must not be able to close the fence it sits in.
    return text.replace("</document", "</ document").replace("</summaries", "</ summaries")


def _result(ref: DocRef, status: Literal["ok", "failed", "skipped"], **fields: object) -> DocResult:
    result = DocResult(id=ref.id, source=ref.source, sha256=ref.sha256, status=status,
                       summary=None, error=None, chunks=len(ref.spans), tokens_in=0,
                       tokens_out=0, language=ref.language)
    result.update(fields)  # type: ignore[typeddict-item]
    return result


async def summarize_document(runner: LLMRunner, ref: DocRef, *, language: str | None,
                             max_tokens: int) -> DocResult:
    """Summarize every chunk of one document concurrently; record a failure rather than raise.

    Only a FatalLLMError (bad key, unreachable endpoint) escapes, since it dooms every
    other document too.
    """
    if ref.skip_reason:
        return _result(ref, "skipped", error=ref.skip_reason)
    if ref.prior_error:
        return _result(ref, "failed", error=f"{ref.prior_error} (from an earlier run; --retry-failed retries it)")
    try:
        text = load_text(ref)
    except InputError as exc:
        return _result(ref, "failed", error=f"InputError: {exc}")
    instruction = language_instruction(language or ref.language)
    spans = ref.spans
    calls = [
        runner.complete("map", prompts.MAP.format(
            language_instruction=instruction, source=ref.source.replace('"', "'"),
            part=f' part="{i + 1} of {len(spans)}"' if len(spans) > 1 else "",
            document=_fence(text[start:end])), max_tokens, phase="map",
            key=runner.key("map", max_tokens, instruction, text[start:end]))
        for i, (start, end) in enumerate(spans)
    ]
    del text
    if len(calls) == 1:  # the common small document: no gather, no extra task
        try:
            outcomes: list[object] = [await calls[0]]
        except LLMError as exc:
            outcomes = [exc]
    else:
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, FatalLLMError):
            raise outcome
        if isinstance(outcome, BaseException) and not isinstance(outcome, LLMError):
            raise outcome
    errors = [o for o in outcomes if isinstance(o, LLMError)]
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    tokens = {"tokens_in": sum(c.tokens_in for c in done), "tokens_out": sum(c.tokens_out for c in done)}
    if errors:
        first = errors[0]
        return _result(ref, "failed", error=f"{type(first).__name__}: {first}", **tokens)
    return _result(ref, "ok", summary="\n".join(c.text for c in done), **tokens)


async def summarize_shard(runner: LLMRunner, refs: Sequence[DocRef], *, language: str | None,
                          max_tokens: int, on_result: Callable[[DocResult], None] | None) -> list[DocResult]:
    """Summarize a shard's documents concurrently, reporting each as it completes."""
    tasks = [asyncio.create_task(summarize_document(runner, ref, language=language, max_tokens=max_tokens))
             for ref in refs]
    results: list[DocResult] = []
    try:
        for next_done in asyncio.as_completed(tasks):
            result = await next_done
            if on_result is not None:
                on_result(result)
            results.append(result)
    finally:
        for task in tasks:
            task.cancel()
    return results


def to_piece(result: DocResult, count: TokenCounter) -> Piece:
    """Turn a document's summary into a reduce input tagged with its document."""
    label, text = f"[D{result['id']}] {result['source']}", result["summary"] or ""
    return Piece(label=label, text=text, tokens=count(label) + 1 + count(text), docs=[result["id"]])


def pack(pieces: Sequence[Piece], budget: int) -> list[list[Piece]]:
    """Pack pieces, in order, into groups of at most `budget` tokens."""
    groups: list[list[Piece]] = []
    current: list[Piece] = []
    size = 0
    for piece in pieces:
        if current and size + piece["tokens"] > budget:
            groups.append(current)
            current, size = [], 0
        current.append(piece)
        size += piece["tokens"]
    if current:
        groups.append(current)
    return groups


def max_collapse_levels(n_pieces: int) -> int:
    """Bound the collapse levels: once every piece fits in half the budget, each level halves the count."""
    return math.ceil(math.log2(max(n_pieces, 2))) + 2


def _joined(group: Sequence[Piece]) -> str:
    return _fence("\n\n".join(f"{p['label']}\n{p['text']}" if p["label"] else p["text"] for p in group))


def _truncate(piece: Piece, budget: int) -> Piece:
    log.warning("a summary of %d tokens exceeds the reduce budget of %d; truncating it", piece["tokens"], budget)
    keep = int(len(piece["text"]) * budget / piece["tokens"] * 0.95)
    return Piece(label=piece["label"], text=piece["text"][:keep], tokens=budget, docs=piece["docs"])


async def collapse_level(runner: LLMRunner, pieces: Sequence[Piece], *, budget: int, language: str | None,
                         max_tokens: int, count: TokenCounter) -> list[Piece]:
    """Merge each group of pieces that fits the budget into one piece, all groups concurrently."""
    groups = pack(pieces, budget)
    merging = [g for g in groups if len(g) > 1]
    runner.progress.add_total("reduce", len(merging))
    instruction = language_instruction(language, "the summaries")

    async def merge(group: list[Piece]) -> Piece:
        if len(group) == 1:
            return _truncate(group[0], budget) if group[0]["tokens"] > budget else group[0]
        joined = _joined(group)
        prompt = prompts.COLLAPSE.format(language_instruction=instruction, summaries=joined)
        done = await runner.complete("collapse", prompt, max_tokens, phase="reduce",
                                     key=runner.key("collapse", max_tokens, instruction, joined))
        docs = sorted({d for p in group for d in p["docs"]})
        return Piece(label="", text=done.text, tokens=count(done.text), docs=docs)

    merged = await asyncio.gather(*(merge(g) for g in groups))
    before, after = sum(p["tokens"] for p in pieces), sum(p["tokens"] for p in merged)
    if len(merged) >= len(pieces) and after >= before:
        raise CollapseError(f"collapsing {len(pieces)} summaries ({before} tokens) did not shorten them; "
                            "raise --token-max or lower --chunk-tokens")
    return list(merged)


async def final_summary(runner: LLMRunner, pieces: Sequence[Piece], *, language: str | None,
                        max_tokens: int) -> str:
    """Write the final summary from pieces that fit one call."""
    runner.progress.add_total("reduce", 1)
    instruction, joined = language_instruction(language, "the summaries"), _joined(pieces)
    prompt = prompts.FINAL.format(language_instruction=instruction, summaries=joined)
    key = runner.key("final", max_tokens, instruction, joined)
    return (await runner.complete("final", prompt, max_tokens, phase="reduce", key=key)).text
