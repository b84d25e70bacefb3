"""Hold every point of a map answer to the chunk it summarizes, and find the sentences behind it.

A small model adds what it "knows" ("Esther 3 is a book of the Bible", "written in
Hebrew"), moves a number, or answers with the document's title. A point is kept only if
its names and numbers occur in its chunk and enough of its other words do (case and
endings folded; Korean, Japanese and Chinese by character pairs). For each kept point
the chunk's sentences that hold its names, numbers and most of its words are found: their
character spans and line ranges in the file, so a reader can check the point.

Everything here is one pass over the chunk and one over each point: the checks run on
every answer of every run.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Sequence
from itertools import accumulate
from typing import NamedTuple

from pipeline.answers.checks import BULLET
from pipeline.answers.citations import retag
from pipeline.answers.joins import restore_joins
from pipeline.answers.shape import bullets, sentences

TOKEN = re.compile(r"\d+(?:[.,:]\d+)*|[^\W\d_]+")  # a number, or a run of letters
# A lower-cased ASCII word's first six letters (the rest skipped), or a number: fold() and number() in one pass.
_ASCII_TERM = re.compile(r"(?<![a-z])[a-z]{1,6}|\d+(?:[.,:]\d+)*")
_NON_SPACE = re.compile(r"\S")
_GROUPED = re.compile(r"\d,\d")  # a number's comma, the only one a term can hold ("1,450"; "ferry, bus" holds none)
# A word's first letter with what comes before it in the word: one a word that holds a letter. Tried only where a
# word starts, and the lazy run stops at the first letter, so linear.
_LETTER_WORD = re.compile(r"(?<!\S)\S*?[^\W\d_]")
# In ASCII text: TOKEN's numbers, and its runs of three letters or more by their first letter's case.
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_LOWER_RUN = re.compile(r"[a-z](?<![A-Za-z][a-z])[A-Za-z]{2,}")  # opening on a class, so that the engine skips to one
_CAPITALS = re.compile(r"(?<![\W_])([\W_]*+)(?<![A-Za-z])([A-Z][A-Za-z]{2,})(?=(,?))")
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7a3]")  # kana, Han, Hangul: matched by character pairs
# Where a sentence ends: a whole run of spaces after . ! ? (or their full-width forms), or one that holds a line
# break. Opening on a space lets the regex engine skip to the next one; captured, so that a split keeps the cuts.
_CUT = re.compile(r"(\s(?:(?<=[.!?。！？]\s)|(?<=\n)|(?=\s*\n))\s*)")
STOP = frozenset("""
the and for are was were has have had with from that this these those into over under about after before
its their his her our your they them than then also not but can will would could should may might more most
such other some any all each both one two per via out off new use used using which what when where who whom
how why there here been being very just only many much own same so too while during through between
document documents summary summaries point points key text
""".split())
# Capitalised words that open a sentence without being names.
_STARTERS = frozenset("""
a an in on at by as it he she we you if of to or no yes after before however overall additionally also finally
first second third then thus therefore meanwhile furthermore moreover while although because since when where
this that these those there here its their his her our they both each all some many most several another
again still yet instead later earlier today now next last
""".split())
WORD_SHARE = 0.5  # share of a point's other words its chunk must hold
TITLE_WORDS = 15
HEADING_WORDS = 5
MIN_WORDS = 3  # a point of fewer words holding letters is a fragment ("2010. 11. 12.", a by-line)
_ENDS = (".", "!", "?", "。", "！", "？", "다", ":", ";", ",")
_STOPS = (".", "!", "?")  # after a token, what makes the next one open a sentence
TITLE_SHARE = 0.75  # a point that is this much its document's title only repeats it
MOST_SENTENCES = 3  # sentences quoted as one point's evidence


class Facts(NamedTuple):
    """What a point claims, folded for comparison: names, numbers, and its other content words."""

    names: frozenset[str]
    numbers: frozenset[str]
    words: frozenset[str]

    @property
    def required(self) -> frozenset[str]:
        """What must occur in a source for it to support the point: its names and numbers."""
        return self.names | self.numbers


def fold(token: str) -> str:
    """A word's comparable form: lower case, its first six letters ("ferries" and "ferry" meet)."""
    return token.lower()[:6]


def number(token: str) -> str:
    return token.replace(",", "").rstrip(".")


def _significant(num: str) -> bool:
    """Numbers of two digits or more: a single digit is often a list's or a chapter's own."""
    return len(num.replace(".", "").replace(":", "")) >= 2


def facts(text: str) -> Facts:
    """The names, numbers and content words of one point (its tags and bullet mark left out)."""
    text = BULLET.sub("", retag(text, lambda k: None))
    return _ascii_facts(text) if text.isascii() else token_facts(text)


def token_facts(text: str) -> Facts:
    """facts() of a text whose tags and mark are out, token by token: the definition, and the way for any script.

    A number of two digits or more is a number; a run of CJK letters gives its pairs of
    letters; a word of three letters or more that is no stop word is a name when
    capitalised, unless it opens a sentence and is a starter or has a comma after it.
    """
    names: set[str] = set()
    numbers: set[str] = set()
    words: set[str] = set()
    cjk = CJK.search
    before = -1  # where the token before ends (-1: there is none, the text's first sentence starts)
    for match in TOKEN.finditer(text):
        token = match.group()
        if token[0].isdigit():
            if _significant(num := number(token)):
                numbers.add(num)
        elif cjk(token):
            words.update([token[i:i + 2] for i in range(max(1, len(token) - 1))])
        elif len(token) >= 3 and (low := token.lower()) not in STOP:
            # At a sentence's start when what follows the token before, after one space at most, ends a sentence.
            after = text[before:before + 1]
            start = before < 0 or (text[before + 1:before + 2] if after == " " else after) in _STOPS
            end = match.end()
            opener = start and (low in _STARTERS or text[end:end + 1] == ",")  # "Again, ..."
            (names if token[0].isupper() and not opener else words).add(low[:6])
        before = match.end()
    return Facts(frozenset(names), frozenset(numbers), frozenset(words - names))


def _ascii_facts(text: str) -> Facts:
    """token_facts() of ASCII text, each kind of token found by a regex of its own rather than by a loop over tokens."""
    found = _NUMBER.findall(text)
    numbers = {n for n in (t.replace(",", "") for t in found) if _significant(n)} if found else set()
    words = {low[:6] for low in map(str.lower, _LOWER_RUN.findall(text)) if low not in STOP}
    names: set[str] = set()
    # Each capitalised run with the characters between it and the token before it (a "." stands for the text's
    # start, which opens a sentence): a name, unless it opens a sentence and is a starter or has a comma after it.
    for gap, run, comma in _CAPITALS.findall("." + text):
        if (low := run.lower()) not in STOP:
            opener = (gap[1:2] if gap[:1] == " " else gap[:1]) in _STOPS and (low in _STARTERS or comma)
            (words if opener else names).add(low[:6])
    return Facts(frozenset(names), frozenset(numbers), frozenset(words - names))


def source_terms(text: str) -> set[str]:
    """Every term of a source text, as a point's terms are folded: words, numbers, CJK character pairs."""
    if text.isascii():  # the common case, in one pass of the regex engine
        return _ascii_terms(text.lower())
    return token_terms(text)


def token_terms(text: str) -> set[str]:
    """source_terms() token by token: the definition, and the way for any script."""
    found: set[str] = set()
    pairs = CJK.search
    for token in TOKEN.findall(text):
        if token[0].isdigit():
            found.add(token.replace(",", "").rstrip("."))  # number()
        elif pairs(token):
            if len(token) < 4:
                found.add(token[:2])
                if len(token) == 3:
                    found.add(token[1:])
            else:
                found.update([token[i:i + 2] for i in range(len(token) - 1)])
        else:
            found.add(token.lower()[:6])  # fold()
    return found


def _ascii_terms(low: str) -> set[str]:
    """The terms of lower-cased ASCII text: each word's first six letters, each number without its commas."""
    found = _ASCII_TERM.findall(low)
    return {t.replace(",", "") for t in found} if _GROUPED.search(low) else set(found)


# The sentences of a document that support one point, as one flat list of numbers: for
# each sentence its character span and its 1-based first and last line, [start, end,
# first, last, start, end, first, last, ...]. Flat, because a run holds one per point of
# every document until its final summary is written. A document's lists are in the order
# of its summary's points, one per point.
Evidence = list[int]


def quads(evidence: Evidence) -> list[tuple[int, int, int, int]]:
    """A point's evidence as (start, end, first line, last line) per sentence."""
    return [(evidence[i], evidence[i + 1], evidence[i + 2], evidence[i + 3]) for i in range(0, len(evidence), 4)]


class Source:
    """A stretch of a document (a chunk, or all of it), split into sentences with their terms.

    `offset` is where the stretch starts in the file and `line_starts` the file's line
    starts, so spans and line ranges are the file's own. Each sentence keeps its terms
    as one set, built by the regex engine: checking a point and finding its sentences are
    then set operations, with no Python loop over the chunk's words.
    """

    __slots__ = ("offset", "line_starts", "sentences", "terms", "every", "headings")

    def __init__(self, text: str, offset: int = 0, line_starts: Sequence[int] | None = None) -> None:
        self.offset = offset
        self.line_starts = line_starts if line_starts is not None else line_starts_of(text)
        plain = text.isascii()
        # sentence, cut, sentence, ...: lower case moves no cut in ASCII
        parts = _CUT.split(text.lower() if plain else text)
        segments = parts[::2]
        bounds = list(accumulate(map(len, parts), initial=offset))
        if plain:
            found = map(_ASCII_TERM.findall, segments)
            terms = [{t.replace(",", "") for t in f} if _GROUPED.search(segment) else set(f)
                     for segment, f in zip(segments, found)] if _GROUPED.search(text) else list(map(set, found))
        else:
            terms = [source_terms(segment.strip()) for segment in segments]
        # Only the first and the last segment can be blank: each other one follows a cut, a whole run of spaces.
        last = len(segments) - 1
        lo = 0 if segments[0].strip() else 1
        hi = last if last and not segments[last].strip() else last + 1
        self.sentences: list[tuple[int, int]] = list(zip(bounds[2 * lo:2 * hi:2], bounds[2 * lo + 1:2 * hi + 1:2]))
        self.terms: list[set[str]] = terms[lo:hi]  # each sentence's terms
        self.headings: set[int] = set()  # short lines that end no sentence: a title, a heading, a by-line
        if "\n" in text or not last:  # a heading is a line of its own
            for j in range(lo, hi):
                if (j == 0 or parts[2 * j - 1][-1] == "\n") and (j == last or "\n" in parts[2 * j + 1]):
                    segment = segments[j].strip()
                    if not segment.endswith(_ENDS) and len(segment.split()) <= HEADING_WORDS:
                        self.headings.add(j - lo)
        self.every: set[str] = set().union(*self.terms)

    def holds(self, term: str) -> bool:
        return term in self.every

    def locate(self, point: Facts) -> list[int] | None:
        """The sentences that together hold the point's names and numbers and most of its words; None if none can.

        Greedy: the sentence holding most of what is still missing (names and numbers
        count three times a word) is taken first, up to MOST_SENTENCES.
        """
        missing = set(point.names)
        missing.update(point.numbers)
        words = set(point.words)
        said = missing | words
        # Only a sentence that holds some of the point can score; what is missing only shrinks.
        held = [(k, terms) for k, terms in enumerate(self.terms) if not said.isdisjoint(terms)]
        chosen: list[int] = []
        while len(chosen) < MOST_SENTENCES and (missing or not chosen):
            best, top = -1, 0
            for k, terms in held:
                score = 3 * len(missing & terms) + len(words & terms)
                if score > top and k not in chosen:
                    best, top = k, score
            if best < 0:
                break
            chosen.append(best)
            missing -= self.terms[best]
            words -= self.terms[best]
        return sorted(chosen) if chosen and not missing else None

    def evidence(self, chosen: Sequence[int]) -> Evidence:
        return [n for k in chosen for s, e in (self.sentences[k],)
                for n in (s, e, self.line_of(s), self.line_of(max(s, e - 1)))]

    def line_of(self, at: int) -> int:
        return bisect.bisect_right(self.line_starts, at)


def line_starts_of(text: str) -> list[int]:
    """Where each line of a text starts (the first at 0)."""
    if "\n" not in text:
        return [0]
    return [0, *(m.end() for m in re.finditer("\n", text))]


def _title_terms(text: str) -> set[str] | None:
    """The terms of a document's first line when it is a title: short, no sentence, more after it; else None."""
    # As text.lstrip().partition("\n") would cut it, with no copy of the rest of a long document.
    if (first := _NON_SPACE.search(text)) is None:
        return None
    cut = text.find("\n", first.start())
    if cut < 0 or not _NON_SPACE.search(text, cut + 1):
        return None  # nothing after the first line
    head = text[first.start():cut].strip()
    if head.endswith((".", "!", "?", "。", "다")) or len(head.split()) > TITLE_WORDS:
        return None
    return source_terms(head)


def verdict(point: Facts, source: Source, title: set[str] | None) -> str | None:
    """Why a point cannot stand on its source (a counter's name), or None if it can."""
    every = source.every
    if not point.names <= every:
        return "invented_name"
    if not point.numbers <= every:
        return "invented_number"
    if len(point.words) > 1 and len(point.words & every) < WORD_SHARE * len(point.words):
        return "unsupported_point"
    said = point.words | point.names | point.numbers
    if title is not None and point.words | point.names and len(said & title) >= TITLE_SHARE * len(said):
        return "title_point"
    return None


def ground(answer: str, text: str, span: tuple[int, int], counts: Counter[str],
           line_starts: Sequence[int] | None = None, source: Source | None = None) -> tuple[str, list[Evidence]]:
    """Keep the points of a map answer that stand on their chunk `text[span[0]:span[1]]`; find each one's evidence.

    The answer is first given the summary's shape (pipeline/answers/shape.py); each
    sentence of each bullet is then checked on its own. Returns the kept bullets and
    each one's evidence; every sentence dropped is counted in `counts` under its reason.
    `source` is the chunk's Source when the caller has built it already.
    """
    start, end = span
    if source is None:
        source = Source(text[start:end], start, line_starts if line_starts is not None else line_starts_of(text))
    title = _title_terms(text) if start == 0 else None
    kept: list[str] = []
    found: list[Evidence] = []
    for line in bullets(answer, counts):
        parts, said = [], []
        for part in sentences(line[2:]):
            point = facts(part)
            if not (point.words or point.names or point.numbers):
                continue
            if (reason := verdict(point, source, title)) is not None:
                counts[reason] += 1
                continue
            part, restored = restore_joins(part, text, start, end)
            counts["restored_join"] += restored
            parts.append(part)
            said.append(point)
        if not parts:
            continue
        body = " ".join(parts)
        if letter_words(body) < MIN_WORDS:
            counts["fragment"] += 1
            continue
        whole = said[0] if len(said) == 1 else \
            Facts(*(frozenset().union(*(getattr(p, f) for p in said)) for f in Facts._fields))
        if (chosen := source.locate(whole)) is None:
            counts["unsupported_point"] += 1
            continue
        if all(k in source.headings for k in chosen):
            counts["title_point"] += 1  # it only repeats a heading or a by-line of the document
            continue
        kept.append("- " + body)
        found.append(source.evidence(chosen))
    most = max(1, (len(source.sentences) + 1) // 2)  # a document of a few lines is not padded
    if len(kept) > most:
        counts["padding_point"] += len(kept) - most
        kept, found = kept[:most], found[:most]
    return "\n".join(kept), found


def first_point(text: str, span: tuple[int, int], line_starts: Sequence[int] | None = None,
                source: Source | None = None) -> tuple[str, Evidence] | None:
    """The chunk's first sentence past the document's title, word for word: a point that stands by construction.

    `source` is the chunk's Source when the caller has built it already.
    """
    start, end = span
    if source is None:
        source = Source(text[start:end], start, line_starts if line_starts is not None else line_starts_of(text))
    skip = 1 if start == 0 and len(source.sentences) > 1 and _title_terms(text) is not None else 0
    # A full sentence if there is one, else what there is: the first of 2 * MIN_WORDS words, else of MIN_WORDS.
    short: int | None = None
    for k in range(skip, len(source.sentences)):
        if k in source.headings:
            continue
        s, e = source.sentences[k]
        body = " ".join(text[s:e].split())
        if (held := letter_words(body)) < MIN_WORDS or not facts(body).words:
            continue
        if held >= 2 * MIN_WORDS:
            return "- " + body, source.evidence([k])
        if short is None:
            short = k
    if short is None:
        return None
    s, e = source.sentences[short]
    return "- " + " ".join(text[s:e].split()), source.evidence([short])


def letter_words(text: str) -> int:
    """How many of a text's words hold a letter ("2010. 11. 12." holds none): linear in the text, however long a word."""
    return len(_LETTER_WORD.findall(text))
