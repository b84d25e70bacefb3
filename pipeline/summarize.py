"""The map and reduce steps: summarize documents, pack summaries into groups, merge them."""

from __future__ import annotations

import asyncio
import logging
import math
import zlib
from collections import Counter
from collections.abc import AsyncIterable, Callable, Sequence
from typing import Any, Literal

from typing_extensions import NotRequired, TypedDict

from pipeline.answers import length as lengths
from pipeline.answers.attribution import check_bullets
from pipeline.answers.checks import BULLET, clean, drop_labels, in_language
from pipeline.answers.citations import cited, retag
from pipeline.answers.backfill import fill, header_point, whole_point
from pipeline.answers.grounding import Evidence, Source, first_point, ground, line_starts_of
from pipeline.answers.selection import is_concatenation, select
from pipeline.answers.shape import bullets
from pipeline.errors import CollapseError, FatalLLMError, InputError, LLMError
from pipeline.grouping import Group, prompt_note
from pipeline.text.language import language_instruction
from pipeline.llm.runner import Completion, LLMRunner
from pipeline.text.loading import DocRef, load_text
from pipeline.prompting import Piece, Prompt, chunk_prompt, escape_label, firmer, reduce_prompt, render_group
from pipeline.text.counting import TokenCounter
from prompts import Templates

log = logging.getLogger(__name__)

__all__ = ["DocResult", "Piece", "Twins", "ask", "ask_in_language", "collapse_level", "document_result", "final_summary",
           "max_collapse_levels", "pack", "pieces_in_groups", "settled_result", "summarize_document", "summarize_shard",
           "to_pieces"]

SummaryOf = Callable[[int], str]


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
    location: NotRequired[str]  # where in its source the document comes from ("page 3"), when given
    same_as: NotRequired[str]  # the document of the same content whose summary this one shares
    format: NotRequired[str]  # pdf, html, docx, email, record; left out for a text file
    locations: NotRequired[list[str]]  # where each chunk comes from: "page 3", "lines 1-40", "message 2"
    evidence: NotRequired[list[Evidence]]  # each point of the summary and the sentences behind it


_FROM_REF = ("language", "encoding", "repaired", "replaced", "format", "locations")


def _result(ref: DocRef, status: Literal["ok", "failed", "skipped"], **fields: Any) -> DocResult:
    result = DocResult(id=ref["id"], source=ref["source"], sha256=ref["sha256"], status=status,
                       chunks=len(ref["spans"]), tokens_in=0, tokens_out=0)
    for key in _FROM_REF:
        if key in ref:
            result[key] = ref[key]  # type: ignore[literal-required]
    result.update(fields)  # type: ignore[typeddict-item]
    return result


def settle(prompt: Prompt, language: str | None, first: str, firm: str | None, counts: Counter[str],
           reader: str = "") -> str:
    """Choose between an answer and, if there is one, its firmer retry; clean the one chosen.

    `firm` is the answer to `firmer(prompt)`, asked for because `first` was in the wrong
    language. `counts` gets what was retried, still wrong, and taken out. An answer may
    repeat the words of the reader's own instructions (`reader`, part of the system
    message): a point that restates the question asked is no copied instruction.
    """
    text, system = first, prompt.system
    if firm is not None and language:
        counts["language_retried"] += 1
        if in_language(firm, language):
            text, system = firm, firmer(prompt, language).system
        else:
            counts["wrong_language"] += 1
    cleaned, removed = clean(text, (system.replace(reader, "") if reader else system,))
    counts.update(removed)
    return cleaned


def needs_retry(text: str, language: str | None) -> bool:
    """Whether an answer must be asked for once more, more firmly: it is not in its language."""
    return bool(language) and not in_language(text, language)


async def ask_in_language(runner: LLMRunner, step: str, prompt: Prompt, max_tokens: int, *, phase: str,
                          language: str | None) -> tuple[Completion, Completion | None]:
    """Answer one prompt; if the answer is not in `language`, ask once more, more firmly.

    Returns the answer and the firmer one, if it was asked for (see `settle`). Both are
    stored under their own prompts, so a rerun makes the same choice for free.
    """
    done = await runner.complete(step, prompt, max_tokens, phase=phase, key=runner.key(step, max_tokens, *prompt))
    if not needs_retry(done.text, language):
        return done, None
    runner.progress.add_total(phase, 1)
    firm = firmer(prompt, language or "")
    return done, await runner.complete(step, firm, max_tokens, phase=phase, key=runner.key(step, max_tokens, *firm))


async def ask(runner: LLMRunner, step: str, prompt: Prompt, max_tokens: int, *, phase: str,
              language: str | None, reader: str = "") -> Completion:
    """Answer one prompt in `language` (see ask_in_language), cleaned; with the tokens of every call it took.

    What cleaning took out is counted in the runner's `answers` counters; `reader` holds the
    reader's own words (instructions, focus), which an answer may repeat without being an echo.
    """
    done, again = await ask_in_language(runner, step, prompt, max_tokens, phase=phase, language=language)
    text = settle(prompt, language, done.text, again.text if again else None, runner.stats.answers, reader)
    if again is None:
        return Completion(text, done.tokens_in, done.tokens_out)
    return Completion(text, done.tokens_in + again.tokens_in, done.tokens_out + again.tokens_out)


class Twins:
    """A run's documents by content: the first of identical ones is summarized, the others share its summary.

    Identical files under several names (copies, a folder mirrored) cost one summary
    per run. A twin waits for the first; if that one fails, each twin makes its own calls.
    """

    def __init__(self) -> None:
        self._first: dict[tuple[str, str | None, int], asyncio.Future[DocResult | None]] = {}

    def first(self, ref: DocRef, language: str | None) -> asyncio.Future[DocResult | None] | None:
        """The summary to come of the first document like `ref`; None when `ref` is the first (then `settle` it)."""
        key = (ref["sha256"], language, len(ref["spans"]))
        if key in self._first:
            return self._first[key]
        self._first[key] = asyncio.get_running_loop().create_future()
        return None

    def settle(self, ref: DocRef, language: str | None, result: DocResult | None) -> None:
        """Hand the first document's result (None: no summary to share) to its twins."""
        future = self._first.get((ref["sha256"], language, len(ref["spans"])))
        if future is not None and not future.done():
            future.set_result(result if result is not None and result["status"] == "ok" else None)
            if future.result() is None:
                del self._first[(ref["sha256"], language, len(ref["spans"]))]


async def summarize_document(runner: LLMRunner, ref: DocRef, *, language: str | None,
                             max_tokens: int, templates: Templates, text: str | None = None,
                             twins: Twins | None = None) -> DocResult:
    """Summarize every chunk of one document concurrently; record a failure rather than raise.

    Only a FatalLLMError (bad key, unreachable endpoint) escapes, since it dooms every
    other document too. With `twins`, a document whose content was already summarized
    in this run shares that summary and makes no call.
    """
    if (settled := settled_result(ref)) is not None:
        return settled
    if twins is None:
        return await _summarize_document(runner, ref, language=language, max_tokens=max_tokens, templates=templates,
                                         text=text)
    while (first := twins.first(ref, language)) is not None:
        if (shared := await first) is not None:
            runner.progress.advance("map", len(ref["spans"]))  # done, as progress goes, without a call
            return _result(ref, "ok", summary=shared["summary"], same_as=shared["source"])
    result = None
    try:
        result = await _summarize_document(runner, ref, language=language, max_tokens=max_tokens,
                                           templates=templates, text=text)
        return result
    finally:
        twins.settle(ref, language, result)


async def _summarize_document(runner: LLMRunner, ref: DocRef, *, language: str | None,
                              max_tokens: int, templates: Templates, text: str | None = None) -> DocResult:
    try:
        text = load_text(ref) if text is None else text  # planned just now, the text may be at hand
    except InputError as exc:
        runner.progress.advance("map", len(ref["spans"]))  # its calls will not be made: done, as progress goes
        return _result(ref, "failed", error=f"InputError: {exc}")
    instruction = language_instruction(language)

    async def summarize_chunk(part: int) -> object:
        # The prompt is made when the chunk's turn comes, so a document of thousands of
        # chunks holds its text once rather than every prompt at once.
        prompt = chunk_prompt(ref, text, part, instruction, templates)
        return await ask(runner, "map", prompt, max_tokens, phase="map", language=language, reader=templates.reader)

    if len(ref["spans"]) == 1:  # the common small document: no gather, no extra task, no frame between
        try:
            outcomes: list[object] = [await ask(runner, "map", chunk_prompt(ref, text, 1, instruction, templates),
                                                max_tokens, phase="map", language=language, reader=templates.reader)]
        except LLMError as exc:
            outcomes = [exc]
    else:
        outcomes = await asyncio.gather(*(summarize_chunk(part) for part in range(1, len(ref["spans"]) + 1)),
                                        return_exceptions=True)
    return document_result(ref, outcomes, text=text, counts=runner.stats.answers)


def settled_result(ref: DocRef) -> DocResult | None:
    """The result of a document that makes no call (skipped, failed to plan, failed before), else None."""
    if reason := ref.get("skip_reason"):
        return _result(ref, "skipped", error=reason)
    if error := ref.get("plan_error"):
        return _result(ref, "failed", error=error)
    if error := ref.get("prior_error"):
        return _result(ref, "failed", error=f"{error} (from an earlier run; --retry-failed retries it)")
    return None


def document_result(ref: DocRef, outcomes: Sequence[object], *, text: str | None = None,
                    counts: Counter[str] | None = None) -> DocResult:
    """Join a document's chunk summaries, in order, into its result; a failed chunk fails it.

    `outcomes` holds a Completion or an exception per chunk. A FatalLLMError, or any
    exception that is no LLMError (a bug), is raised: it dooms the other documents too.
    Given the document's `text`, each chunk's points are held to that chunk
    (pipeline/answers/grounding.py): what does not stand on it is dropped and counted in
    `counts`, and each kept point carries its evidence.
    """
    for outcome in outcomes:
        if isinstance(outcome, FatalLLMError):
            raise outcome
        if isinstance(outcome, BaseException) and not isinstance(outcome, LLMError):
            raise outcome
    errors = [o for o in outcomes if isinstance(o, LLMError)]
    done = [o for o in outcomes if isinstance(o, Completion)]
    tokens = {"tokens_in": sum(c.tokens_in for c in done), "tokens_out": sum(c.tokens_out for c in done)}
    if errors:
        first = errors[0]
        return _result(ref, "failed", error=f"{type(first).__name__}: {first}", **tokens)
    if text is None:
        return _result(ref, "ok", summary="\n".join(c.text for c in done), **tokens)
    counts = Counter() if counts is None else counts
    starts = line_starts_of(text)
    kept, evidence = [], []
    opening: Source | None = None  # the first chunk's, for first_point
    for completion, span in zip(done, ref["spans"]):
        source = Source(text[span[0]:span[1]], span[0], starts)
        opening = opening or source
        points, found = fill(text, source, *ground(completion.text, text, span, counts, starts, source), counts)
        kept += [points] if points else []
        evidence += found
    if len(kept) > 1:  # chunks overlap: a sentence in the overlap may be taken from both
        lines = "\n".join(kept).splitlines()
        if len(lines) == len(evidence):
            seen: set[str] = set()
            pairs = [(line, ev) for line, ev in zip(lines, evidence) if not (line in seen or seen.add(line))]
            counts["repeated_line"] += len(lines) - len(pairs)
            kept, evidence = ["\n".join(line for line, _ in pairs)], [ev for _, ev in pairs]
    if not kept and (first := first_point(text, ref["spans"][0], starts, opening)) is not None:
        counts["extracted"] += 1  # nothing the model wrote stands on the document: its own first sentence does
        kept, evidence = [first[0]], [first[1]]
    elif not kept and (whole := whole_point(text, starts)) is not None:
        counts["extracted"] += 1  # nor any sentence of it: a document of a few words says all there is
        return _result(ref, "ok", summary=whole[0], evidence=[whole[1]], **tokens)
    if not kept:  # ok with nothing to show would hide it: say why, and the rerun pays nothing (the store)
        return _result(ref, "failed", error="nothing the model wrote stands on the document, and no sentence of "
                       "its own can stand for it", **tokens)
    if kept and (header := header_point(text, starts)) is not None:
        counts["header_point"] += 1  # the document's own header fields: its title, number, date, sponsor
        kept, evidence = [header[0], *kept], [header[1], *evidence]
    return _result(ref, "ok", summary="\n".join(kept), evidence=evidence, **tokens)


async def summarize_shard(runner: LLMRunner, planned: AsyncIterable[tuple[DocRef, str | None]], *,
                          max_tokens: int, language_of: Callable[[DocRef], str | None], templates: Templates,
                          on_result: Callable[[DocRef, DocResult], None] | None, room: asyncio.Semaphore,
                          twins: Twins | None = None) -> list[DocResult]:
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
                                              templates=templates, text=text, twins=twins)
        finally:
            room.release()
        if on_result is not None:
            on_result(ref, result)
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
    Tags the model wrote into a map summary name nothing yet, so they are dropped. A
    document that shares the summary of another of the same content adds no piece.
    """
    if "same_as" in result:
        return []
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


def pieces_in_groups(results: Sequence[DocResult], groups: Sequence[Group], count: TokenCounter,
                     cap: int) -> list[Piece]:
    """The reduce inputs of summarized documents, group after group, each piece marked with its group's number."""
    by_id = {r["id"]: r for r in results}
    return [Piece(**piece, topic=k) for k, group in enumerate(groups) for doc in group["documents"]
            for piece in to_pieces(by_id[doc], count, cap)]


# A group may end once it is three-quarters full, at a piece whose content hash says so
# (one in four). Boundaries chosen by content rather than position mean that adding or
# removing one document changes the group it falls in and seldom any other, so the
# reduce calls of an incremental rerun are found in the store.
_MIN_FILL = 0.75
_BOUNDARY_ONE_IN = 4
# Pieces of related documents (the same `topic`, pipeline/grouping.py) come in a row. A
# topic that fits a call whole is not split, nor joined by another that does not fit
# beside it; one of at least half a call gets calls of its own. Small topics share one.
_BIG_TOPIC = 0.5


def _topic_sizes(pieces: Sequence[Piece]) -> list[int]:
    """For each piece, the tokens of the run of pieces of its topic it belongs to."""
    sizes: list[int] = []
    start = 0
    for i in range(1, len(pieces) + 1):
        if i == len(pieces) or pieces[i].get("topic") != pieces[start].get("topic"):
            sizes += [sum(p["tokens"] for p in pieces[start:i])] * (i - start)
            start = i
    return sizes


def pack(pieces: Sequence[Piece], budget: int) -> list[list[Piece]]:
    """Pack pieces, in order, into groups of at most `budget` tokens, cut at topic ends and content-defined points."""
    groups: list[list[Piece]] = []
    current: list[Piece] = []
    size = 0
    topic_size = _topic_sizes(pieces)
    big = budget * _BIG_TOPIC
    for i, piece in enumerate(pieces):
        starts = i > 0 and piece.get("topic") != pieces[i - 1].get("topic")
        if current and (size + piece["tokens"] > budget or starts and (
                size + topic_size[i] > budget or topic_size[i] >= big or topic_size[i - 1] >= big)):
            groups.append(current)
            current, size = [], 0
        current.append(piece)
        size += piece["tokens"]
        ends = i + 1 == len(pieces) or pieces[i + 1].get("topic") != piece.get("topic")
        if (len(current) > 1 and size >= budget * _MIN_FILL and (ends or topic_size[i] > budget)
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
    return Piece(label=piece["label"], text=piece["text"][:keep], tokens=budget, docs=piece["docs"],
                 **({"topic": piece["topic"]} if "topic" in piece else {}))


def _valid_tags(call_docs: Sequence[int]) -> Callable[[int], int | None]:
    """Keep the tags a call was shown; drop the ones it invented."""
    return lambda k: k if 0 < k <= len(call_docs) else None


SPELLED_OUT = 12  # past this many documents left out of a final summary, they are only named under it


def represent(summary: str, results: Sequence[DocResult]) -> str:
    """Add the first point of each document's own summary that `summary` does not cite, tagged with it.

    A small model's final summary often leaves documents out; their own summaries say
    what they are about, and their tags are right by construction. With more than
    SPELLED_OUT left out, the summary stays as it is (the documents are named under it).
    """
    cited_ids = set(cited(summary))
    left_out = [r for r in sorted(results, key=lambda r: r["id"]) if r["id"] not in cited_ids and "same_as" not in r]
    if not left_out or len(left_out) > SPELLED_OUT:
        return summary
    points = []
    for result in left_out:
        lines = [BULLET.sub("", line).strip() for line in result.get("summary", "").splitlines()]
        if first := next((line for line in lines if line and not line.startswith("#")), ""):
            points.append(f"- {retag(first, lambda k: None)} [D{result['id']}]")
    if not points:
        return summary
    added = summary.rstrip() + "\n\n" + "\n".join(points)
    return lengths.fit(added, lengths.target(None, len(results)))[0]  # auto's length holds; each cited point stays


def own_words(result: DocResult) -> str:
    """What a document says of itself, for checking the tags that name it: its source and its summary."""
    return result["source"] + "\n" + result.get("summary", "")


def _without_labels(answer: str, pieces: Sequence[Piece], counts: Counter[str]) -> str:
    """Drop the lines of a reduce answer that copy its pieces' labels; drop any repeat that leaves."""
    answer, dropped = drop_labels(answer, (p["label"] for p in pieces))
    if dropped:
        counts["label_line"] += dropped
        answer, again = clean(answer)  # a point freed from its label line may repeat a bullet
        counts.update(again)
    return answer


def merged_piece(answer: str, group: Sequence[Piece], call_docs: list[int], summary_of: SummaryOf,
                 count: TokenCounter, citations: Counter[str] | None = None,
                 answers: Counter[str] | None = None) -> Piece:
    """The piece a collapse answer makes: copied label lines and invented tags dropped, every bullet's tags checked."""
    answers = Counter() if answers is None else answers
    answer = _without_labels("\n".join(bullets(answer, answers)), group, answers)
    text = check_bullets(retag(answer, _valid_tags(call_docs)), call_docs, summary_of, citations)
    merged = Piece(label="", text=text, tokens=count(text), docs=call_docs)
    if "topic" in group[0]:
        merged["topic"] = group[0]["topic"]  # small topics merged together go on under the first one's
    return merged


async def collapse_level(runner: LLMRunner, pieces: Sequence[Piece], *, budget: int, language: str | None,
                         max_tokens: int, count: TokenCounter, summary_of: SummaryOf,
                         templates: Templates) -> list[Piece]:
    """Merge each group of pieces that fits the budget into one piece, all groups concurrently.

    `summary_of(doc)` is a document's own map summary, which each merged bullet's tags
    are checked against.
    """
    groups = pack(pieces, budget)
    merging = [g for g in groups if len(g) > 1]
    runner.progress.add_total("reduce", len(merging))
    instruction = language_instruction(language, "the summaries")

    async def merge(group: list[Piece]) -> Piece:
        if len(group) == 1:
            return _truncate(group[0], budget) if group[0]["tokens"] > budget else group[0]
        joined, call_docs = render_group(group)
        prompt = reduce_prompt("collapse", joined, instruction, templates)
        del joined  # the prompt holds its own copy; all of a level's calls are out at once
        done = await ask(runner, "collapse", prompt, max_tokens, phase="reduce", language=language,
                         reader=templates.reader)
        return merged_piece(done.text, group, call_docs, summary_of, count, runner.stats.citations,
                            runner.stats.answers)

    merged = await asyncio.gather(*(merge(g) for g in groups))
    before, after = sum(p["tokens"] for p in pieces), sum(p["tokens"] for p in merged)
    if len(merged) >= len(pieces) and after >= before:
        raise CollapseError(f"collapsing {len(pieces)} summaries ({before} tokens) did not shorten them; "
                            "raise --token-max or lower --chunk-tokens")
    return list(merged)


def final_prompt(pieces: Sequence[Piece], language: str | None, length: lengths.Length,
                 templates: Templates, groups: Sequence[Group] = ()) -> tuple[Prompt, list[int]]:
    """The final call's prompt, and the documents its tags number.

    When the documents form groups, the prompt names them (after the length asked for)
    and asks for each group's bullets together.
    """
    joined, call_docs = render_group(pieces)
    asked = " ".join(filter(None, (lengths.instruction(length), prompt_note(groups, call_docs))))
    return reduce_prompt("final", joined, language_instruction(language, "the summaries"), templates,
                         asked), call_docs


async def final_summary(runner: LLMRunner, pieces: Sequence[Piece], *, language: str | None,
                        max_tokens: int, summary_of: SummaryOf, documents: int, templates: Templates,
                        length: lengths.Length | None = None, whole: bool = False,
                        groups: Sequence[Group] = ()) -> tuple[str, dict[str, Any]]:
    """Write the final summary from pieces that fit one call; its tags name the run's document ids.

    When the run summarized one document in one call (`whole`), that summary is already
    the answer: it is tagged and returned with no further call. The answer is given the
    summary's shape and checked against the documents' grounded points; an answer that
    only copies the map summaries out is replaced by a selection of them. The length,
    asked for or the default, is held to by cutting bullets. Returns the summary and how
    its length measures up to the target.
    """
    goal = lengths.target(length, documents)
    if whole and len(pieces) == 1 and pieces[0]["label"]:
        tag = f"[D{pieces[0]['docs'][0]}]"  # the piece's text carries no tags of its own (to_pieces)
        text = "\n".join(f"{line.rstrip()} {tag}" if line.strip() else line for line in pieces[0]["text"].splitlines())
        return lengths.fit(text, goal)
    runner.progress.add_total("reduce", 1)
    prompt, call_docs = final_prompt(pieces, language, goal, templates, groups)
    done = await ask(runner, "final", prompt, max_tokens, phase="reduce", language=language,
                     reader=templates.reader)
    answer = _without_labels("\n".join(bullets(done.text, runner.stats.answers)), pieces, runner.stats.answers)
    checked = check_bullets(answer, call_docs, summary_of, runner.stats.citations)
    text = retag(checked, lambda k: call_docs[k - 1] if 0 < k <= len(call_docs) else None)
    most = goal.count if goal.unit == "bullets" else lengths.MOST_BULLETS
    copied = is_concatenation(text, [line for p in pieces for line in p["text"].splitlines()], most)
    if copied or not any(BULLET.match(line) for line in text.splitlines()):
        # The map summaries in a row, not a merge, or nothing that held: the documents' own
        # points, in turn, within the length.
        runner.stats.answers["concatenation" if copied else "nothing_held"] += 1
        text = select([(p["docs"][0], p["text"].splitlines()) for p in pieces if p["label"]], most) or text
    return lengths.fit(text, goal)
