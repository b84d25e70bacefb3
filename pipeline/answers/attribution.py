"""Check every bullet's document tags against what the cited documents' own summaries say.

A reduce answer's tags are the model's claim of where each point came from, and small
models get it wrong: they copy the example tags, tag the neighbour, or tag nothing.
Each bullet is compared with the map summaries of the documents its call was shown
(content words, character pairs for Korean, Japanese and Chinese, and numbers): a tag
whose document shares too little with the bullet is removed; a bullet left with no
tag goes to the documents that do support it (moved, or added where it had none); a
bullet that no document supports, or that states a number none of them holds, is
dropped. The tags that remain are ones the code has checked.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from pipeline.answers.checks import BULLET
from pipeline.answers.citations import cited, retag
from pipeline.answers.joins import may_join, restore_joins
from pipeline.answers.grounding import CJK, TOKEN, facts, fold
from pipeline.answers.shape import sentences

# The same tokens in lower-case ASCII text, found sooner: words of three letters or more, and the runs of
# digits and . , : that hold the numbers (every other character made a space, the text split).
_ASCII_WORD = re.compile(r"[a-z]{3,}")
_NUMERALS = bytes.maketrans(bytes(range(128)), bytes(c if chr(c) in "0123456789.,:" else 32 for c in range(128)))
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_STOP = frozenset("""
the and for are was were has have had with from that this these those into over under about after before
its their his her our your they them than then also not but can will would could should may might more most
such other some any all each both one two per via out off new use used using which what when where who whom
document documents summary summaries point points key
""".split())
SUPPORT = 0.3  # share of a bullet's terms a document's summary must hold to support it
MIN_SHARED = 2  # and at least this many terms (fewer if the bullet has fewer)
RELATIVE = 0.6  # and at least this share of the best-supporting document's score
MOST_ADDED = 3  # tags given to a bullet that had none that held
INDEX_MOST = 256  # past this many documents in a call, only those its answer cites are compared


def terms(text: str) -> frozenset[str]:
    """The terms a bullet and a summary are compared by: words, numbers, CJK character pairs."""
    text = retag(text, _untagged)
    if text.isascii():  # the common case, with sets: numbers, and words past the stop list
        words = set(_ASCII_WORD.findall(text.lower()))
        words -= _STOP
        found = {word[:6] for word in words}
        for run in text.encode("ascii").translate(_NUMERALS).decode("ascii").split():
            if run.isdigit():
                found.add(run)
            elif (inner := run.strip(".,:")).isdigit():
                found.add(inner)
            elif inner:
                found.update(map(_number, _NUMBER.findall(inner)))
        return frozenset(found)
    tokens = TOKEN.findall(text.lower())
    found: set[str] = set()
    for token in tokens:
        if token[0].isdigit():
            found.add(_number(token))
        elif not token.isascii() and CJK.search(token):
            found.update(token[i:i + 2] for i in range(max(1, len(token) - 1)))
        elif len(token) >= 3 and token not in _STOP:
            found.add(token[:6])  # a crude stem: "loaves"/"loaf" differ, "ferries"/"ferry" meet
    return frozenset(found)


def _untagged(doc: int) -> None:
    return None


def _number(token: str) -> str:
    return token.replace(",", "").rstrip(".")


def _numbers(found: frozenset[str]) -> set[str]:
    """The numbers worth checking: two digits or more (a single digit is often a list's own)."""
    return {t for t in found if t[0].isdigit() and len(t.replace(".", "").replace(":", "")) >= 2}


class _Index:
    """The terms of a call's documents: which documents hold each, and what each weighs.

    A term weighs log(1 + n / the documents holding it): words they all share tell
    little. Scoring a bullet walks the postings of its terms only, so a call of many
    documents costs what the bullet's terms touch, not bullets times documents; terms
    every document holds add the same to each and are counted once. Only the terms in
    `wanted` (the answer's) get postings: no others are ever looked up.
    """

    def __init__(self, docs: dict[int, frozenset[str]], wanted: frozenset[str]) -> None:
        self.docs, n = docs, len(docs)
        self.postings: dict[str, list[int]] = {}
        for k, doc in docs.items():
            for term in doc & wanted:
                self.postings.setdefault(term, []).append(k)
        self.weight = {t: math.log(1 + n / len(ks)) for t, ks in self.postings.items()}
        self.unheld = math.log(1 + n)  # a term no document holds

    def scores(self, bullet: frozenset[str], numbers: set[str]) -> dict[int, float]:
        """How well each document supports a bullet, for those that do: the weighted share of its terms held.

        A document that holds too few of them (fewer than MIN_SHARED, or less than SUPPORT
        of their weight), none of the bullet's numbers if it has any, or much less than
        the best document, supports it not at all and is left out.
        """
        n = len(self.docs)
        ordered = sorted(bullet)  # sums in one order, whatever the set's: ties fall the same way in every process
        total = sum(self.weight.get(t, self.unheld) for t in ordered)
        base_w = base_n = 0.0
        weight: dict[int, float] = {}
        shared: dict[int, int] = {}
        for term in ordered:
            holders = self.postings.get(term)
            if not holders:
                continue
            if len(holders) == n:  # every document: the same for each
                base_w += self.weight[term]
                base_n += 1
                continue
            w = self.weight[term]
            for k in holders:
                weight[k] = weight.get(k, 0.0) + w
                shared[k] = shared.get(k, 0) + 1
        need = min(MIN_SHARED, len(bullet))
        # Only documents holding a rarer term can differ from the rest; if the common terms
        # alone support the bullet, every document is a candidate.
        candidates = self.docs if base_n >= need and base_w >= SUPPORT * total else weight
        found = {}
        for k in candidates:
            share = (base_w + weight.get(k, 0.0)) / total
            if base_n + shared.get(k, 0) >= need and share >= SUPPORT \
                    and (not numbers or numbers & self.docs[k]):
                found[k] = share
        best = max(found.values(), default=0.0)
        return {k: v for k, v in found.items() if v >= best * RELATIVE}


def _with_tags(line: str, tags: Sequence[int]) -> str:
    bare = retag(line, lambda k: None).rstrip()
    return f"{bare} [{', '.join(f'D{k}' for k in tags)}]" if tags else bare


def _document_terms(call_docs: Sequence[int], summary_of: Callable[[int], str],
                    answer: str) -> dict[int, frozenset[str]]:
    """The terms of what a call's documents say of themselves, by their tag number in the call.

    A call of many documents (a late collapse level, the final call of a big run) is
    checked against the documents its `answer` cites: their terms, not every document's,
    are held, so memory follows the answer's size, not the run's.
    """
    local: Sequence[int] = range(1, len(call_docs) + 1) if len(call_docs) <= INDEX_MOST else \
        sorted(k for k in set(cited(answer)) if 0 < k <= len(call_docs))
    return {k: terms(summary_of(call_docs[k - 1])) for k in local}


def check_bullets(text: str, call_docs: Sequence[int], summary_of: Callable[[int], str],
                  counts: Counter[str] | None = None) -> str:
    """Check the tags of every bullet in `text`, whose [Dk] names `call_docs[k-1]`; return the checked text.

    `summary_of(doc)` gives what a document says of itself: its map summary, whose
    points stand on its own text (pipeline/answers/grounding.py). Each sentence of a
    bullet is checked on its own, and sentences that end with the same tags are joined
    again. A sentence is dropped when it names a name or a number no document holds, or
    when it carries the distinctive facts of a document that does not support it (it
    mixes two documents' facts); it gains the tag of a document whose facts it carries
    and that supports it. `counts` gets `checked` (tags the model wrote), of those
    `kept` and `removed`; `moved` and `added`; `bullets_dropped` and, of those,
    `invented_numbers`, `invented_names` and `mixed`.
    """
    counts = Counter() if counts is None else counts
    docs = _document_terms(call_docs, summary_of, text)
    lines: list[tuple[list[_Sentence], list[int]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        tags = [k for k in cited(line) if 0 < k <= len(call_docs)]
        body = retag(BULLET.sub("", line.strip()), lambda k: None).strip()
        lines.append(([_Sentence(part) for part in sentences(body)], tags))
    wanted = frozenset().union(*(s.terms for parts, _ in lines for s in parts))
    index = _Index(docs, wanted)
    holders: dict[str, bool] = {}

    def held(term: str) -> bool:  # whether any document the call was shown states it
        if term not in holders:
            holders[term] = any(term in doc for doc in docs.values())
        return holders[term]

    out: list[str] = []
    for parts, tags in lines:
        counts["checked"] += len(tags)
        checked = [(part, _check(part, tags, index, held, counts)) for part in parts]
        kept_any = [tags_of for _, tags_of in checked if tags_of is not None]
        if not kept_any:
            counts["bullets_dropped"] += 1
            counts["removed"] += len(tags)
            continue
        counts["kept"] += len(set(tags) & set().union(*kept_any))
        counts["removed"] += len(set(tags) - set().union(*kept_any))
        run: list[str] = []
        run_tags: list[int] | None = None
        for part, tags_of in checked + [(None, None)]:
            if part is None or tags_of != run_tags:
                if run and run_tags:
                    out.append(_with_tags("- " + " ".join(run), run_tags))
                run, run_tags = [], tags_of
            if part is not None and tags_of is not None:
                text = part.text
                if may_join(text):  # the documents' summaries joined only for a sentence that may join two ends
                    text, restored = restore_joins(text, "\n".join(summary_of(call_docs[k - 1]) for k in tags_of))
                    counts["restored_joins"] += restored
                run.append(text)
    return "\n".join(out)


class _Sentence:
    """One sentence of a bullet and what it is checked by."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.terms = terms(text)
        self.numbers = _numbers(self.terms)
        point = facts(text)
        self.names = {n for n in point.names if n in self.terms}
        first = next((fold(t) for t in TOKEN.findall(text.lower()) if fold(t) in self.terms), None)
        self.first = first


FOREIGN = 2  # how much of a document's own facts a sentence must carry to be that document's


def _check(part: _Sentence, tags: Sequence[int], index: _Index, held: Callable[[str], bool],
           counts: Counter[str]) -> list[int] | None:
    """The checked tags of one sentence, or None if it must go (it states nothing, or nothing it can be given)."""
    if not part.terms:
        return None
    if not all(map(held, part.numbers)):
        counts["invented_numbers"] += 1
        return None
    if not all(map(held, part.names)):
        counts["invented_names"] += 1
        return None
    scores = index.scores(part.terms, part.numbers)
    kept = [k for k in tags if k in scores]
    if not kept:
        best = sorted(scores, key=lambda k: (-scores[k], k))[:MOST_ADDED]
        if not best:
            return None
        counts["moved" if tags else "added"] += len(best)
        kept = sorted(best)
    if len(index.docs) > 1:
        # Whose facts does it carry? A document's own name, number, or its distinctive words.
        own: Counter[int] = Counter()
        for term in part.terms:
            holders = index.postings.get(term, ())
            if len(holders) == 1:
                weight = 3 if term in part.names or term in part.numbers else 2 if term == part.first else 1
                own[holders[0]] += weight
        for k in sorted(own):
            if k in kept or own[k] < FOREIGN:
                continue
            if k in scores:
                kept.append(k)
                counts["added"] += 1
            else:
                counts["mixed"] += 1
                return None
    # Each tag says its document states the sentence: it must hold all of its names and numbers.
    required = part.names | part.numbers
    holding = [k for k in kept if required <= index.docs[k]]
    if not holding:
        holding = sorted((k for k in scores if required <= index.docs[k]), key=lambda k: (-scores[k], k))[:1]
        if not holding:
            counts["mixed"] += 1  # names or numbers of documents it cannot be given to together
            return None
    counts["removed_unheld"] += len(kept) - len(holding)
    return sorted(holding)


def citation_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """The report's view of the checks: every counter, zero where nothing happened."""
    keys = ("checked", "kept", "removed", "moved", "added", "bullets_dropped", "invented_numbers", "invented_names",
            "mixed", "restored_joins")
    return {key: int(counts.get(key, 0)) for key in keys}
