"""The map and reduce steps: summarize documents, pack summaries into groups, merge them."""

from __future__ import annotations

import asyncio
import logging
import math
import zlib
from collections.abc import AsyncIterable, Callable, Sequence
from typing import Any, Literal

from typing_extensions import NotRequired, TypedDict

import prompts
from pipeline.citations import retag
from pipeline.errors import CollapseError, FatalLLMError, InputError, LLMError
from pipeline.language import language_instruction
from pipeline.llm import LLMRunner
from pipeline.loading import DocRef, load_text
from pipeline.prompting import Piece, escape_label, map_prompt, reduce_prompt, render_group
from pipeline.tokens import TokenCounter

log = logging.getLogger(__name__)

__all__ = ["DocResult", "Piece", "collapse_level", "final_summary", "max_collapse_levels", "pack",
           "summarize_document", "summarize_shard", "to_pieces"]


class DocResult(TypedDict):
    """What happened to one input document; one line of summaries.jsonl.

    Keys with nothing to say are left out (summaries.jsonl writes their defaults): a run
    holds one of these per document, and a dict of ten keys is half the size of one of
    thirteen.
    """

    id: int
    source: str
    sha256: str
    status: Literal["ok", "failed", "skipped"]
    chunks: int
    tokens_in: int
    tokens_out: int
    summary: NotRequired[str]  # when ok
    error: NotRequired[str]  # when failed or skipped
    language: NotRequired[str]
    encoding: NotRequired[str]
    repaired: NotRequired[bool]
    replaced: NotRequired[int]


_FROM_REF = ("language", "encoding", "repaired", "replaced")


def _result(ref: DocRef, status: Literal["ok", "failed", "skipped"], **fields: Any) -> DocResult:
    result = DocResult(id=ref["id"], source=ref["source"], sha256=ref["sha256"], status=status,
                       chunks=len(ref["spans"]), tokens_in=0, tokens_out=0)
    for key in _FROM_REF:
        if key in ref:
            result[key] = ref[key]  # type: ignore[literal-required]
    result.update(fields)  # type: ignore[typeddict-item]
    return result


async def summarize_document(runner: LLMRunner, ref: DocRef, *, language: str | None,
                             max_tokens: int, text: str | None = None) -> DocResult:
    """Summarize every chunk of one document concurrently; record a failure rather than raise.

    Only a FatalLLMError (bad key, unreachable endpoint) escapes, since it dooms every
    other document too.
    """
    if reason := ref.get("skip_reason"):
        return _result(ref, "skipped", error=reason)
    if error := ref.get("plan_error"):
        return _result(ref, "failed", error=error)
    if error := ref.get("prior_error"):
        return _result(ref, "failed", error=f"{error} (from an earlier run; --retry-failed retries it)")
    try:
        text = load_text(ref) if text is None else text  # planned just now, the text may be at hand
    except InputError as exc:
        runner.progress.advance("map", len(ref["spans"]))  # its calls will not be made: done, as progress goes
        return _result(ref, "failed", error=f"InputError: {exc}")
    instruction = language_instruction(language)
    source, spans = ref["source"], ref["spans"]
    parts = len(spans)

    async def summarize_chunk(part: int, start: int, end: int) -> object:
        # The prompt is made when the chunk's turn comes, so a document of thousands of
        # chunks holds its text once rather than every prompt at once.
        prompt = map_prompt(source, text[start:end], part, parts, instruction)
        return await runner.complete("map", prompt, max_tokens, phase="map",
                                     key=runner.key("map", max_tokens, prompt))

    calls = [summarize_chunk(i, start, end) for i, (start, end) in enumerate(spans, start=1)]
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


async def summarize_shard(runner: LLMRunner, planned: AsyncIterable[tuple[DocRef, str | None]], *,
                          max_tokens: int, language_of: Callable[[DocRef], str | None],
                          on_result: Callable[[DocResult], None] | None, room: asyncio.Semaphore) -> list[DocResult]:
    """Summarize documents as planning yields them, each with its text if at hand, reporting each as it completes.

    A document is begun only with a unit of `room` (shared by the shards of a run) and
    gives it back once summarized, so planning runs only that far ahead of the calls.
    The first error that is not a document's own (see summarize_document) stops the shard.
    """
    results: list[DocResult] = []
    running: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    async def summarize(ref: DocRef, text: str | None) -> None:
        try:
            result = await summarize_document(runner, ref, language=language_of(ref), max_tokens=max_tokens,
                                              text=text)
        finally:
            room.release()
        if on_result is not None:
            on_result(result)
        results.append(result)

    def finished(task: asyncio.Task[None]) -> None:
        running.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            failures.append(exc)

    try:
        async for ref, text in planned:
            await room.acquire()
            if failures:
                room.release()
                break
            task = asyncio.create_task(summarize(ref, text))
            running.add(task)
            task.add_done_callback(finished)
        while running and not failures:
            await asyncio.wait(running, return_when=asyncio.FIRST_EXCEPTION)
        if failures:
            raise failures[0]
    finally:
        for task in running:
            task.cancel()
    return results


def to_pieces(result: DocResult, count: TokenCounter, cap: int) -> list[Piece]:
    """Turn a document's summary into reduce inputs of at most `cap` tokens each.

    A long document's summary (one per chunk, joined) is split on line breaks into
    parts, so the reduce merges all of it rather than cutting it to fit one call.
    Tags the model wrote into a map summary name nothing yet, so they are dropped.
    """
    source, text = escape_label(result["source"]), retag(result.get("summary", ""), lambda k: None)
    doc = [result["id"]]
    tokens = count(source) + 8 + count(text)
    if tokens <= cap:
        return [Piece(label=source, text=text, tokens=tokens, docs=doc)]
    parts: list[list[str]] = [[]]
    size = 0
    for line in text.splitlines():
        line_tokens = count(line) + 1
        if parts[-1] and size + line_tokens > cap:
            parts.append([])
            size = 0
        parts[-1].append(line)
        size += line_tokens
    n = len(parts)
    return [Piece(label=f"{source} (part {i} of {n})", text=body, tokens=count(source) + 16 + count(body), docs=doc)
            for i, body in enumerate(("\n".join(lines) for lines in parts), start=1)]


# A group may end once it is three-quarters full, at a piece whose content hash says so
# (one in four). Boundaries chosen by content rather than position mean that adding or
# removing one document changes the group it falls in and seldom any other, so the
# reduce calls of an incremental rerun are found in the store.
_MIN_FILL = 0.75
_BOUNDARY_ONE_IN = 4


def pack(pieces: Sequence[Piece], budget: int) -> list[list[Piece]]:
    """Pack pieces, in order, into groups of at most `budget` tokens, cut at content-defined points."""
    groups: list[list[Piece]] = []
    current: list[Piece] = []
    size = 0
    for piece in pieces:
        if current and size + piece["tokens"] > budget:
            groups.append(current)
            current, size = [], 0
        current.append(piece)
        size += piece["tokens"]
        if (len(current) > 1 and size >= budget * _MIN_FILL
                and zlib.crc32(piece["text"].encode("utf-8", "surrogatepass")) % _BOUNDARY_ONE_IN == 0):
            groups.append(current)
            current, size = [], 0
    if current:
        groups.append(current)
    return groups


def max_collapse_levels(n_pieces: int) -> int:
    """Bound the collapse levels: once every piece fits in half the budget, each level halves the count."""
    return math.ceil(math.log2(max(n_pieces, 2))) + 2


def _truncate(piece: Piece, budget: int) -> Piece:
    log.warning("a summary of %d tokens exceeds the reduce budget of %d; truncating it", piece["tokens"], budget)
    keep = int(len(piece["text"]) * budget / piece["tokens"] * 0.95)
    return Piece(label=piece["label"], text=piece["text"][:keep], tokens=budget, docs=piece["docs"])


def _valid_tags(call_docs: Sequence[int]) -> Callable[[int], int | None]:
    """Keep the tags a call was shown; drop the ones it invented."""
    return lambda k: k if 0 < k <= len(call_docs) else None


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
        joined, call_docs = render_group(group)
        prompt = reduce_prompt(prompts.COLLAPSE, joined, instruction)
        done = await runner.complete("collapse", prompt, max_tokens, phase="reduce",
                                     key=runner.key("collapse", max_tokens, prompt))
        text = retag(done.text, _valid_tags(call_docs))
        return Piece(label="", text=text, tokens=count(text), docs=call_docs)

    merged = await asyncio.gather(*(merge(g) for g in groups))
    before, after = sum(p["tokens"] for p in pieces), sum(p["tokens"] for p in merged)
    if len(merged) >= len(pieces) and after >= before:
        raise CollapseError(f"collapsing {len(pieces)} summaries ({before} tokens) did not shorten them; "
                            "raise --token-max or lower --chunk-tokens")
    return list(merged)


async def final_summary(runner: LLMRunner, pieces: Sequence[Piece], *, language: str | None,
                        max_tokens: int) -> str:
    """Write the final summary from pieces that fit one call; its tags name the run's document ids."""
    runner.progress.add_total("reduce", 1)
    instruction = language_instruction(language, "the summaries")
    joined, call_docs = render_group(pieces)
    prompt = reduce_prompt(prompts.FINAL, joined, instruction)
    done = await runner.complete("final", prompt, max_tokens, phase="reduce",
                                 key=runner.key("final", max_tokens, prompt))
    return retag(done.text, lambda k: call_docs[k - 1] if 0 < k <= len(call_docs) else None)
