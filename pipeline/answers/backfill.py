"""Give a chunk the points it deserves from its own text when the model's points fall short.

A small model often writes fewer points than a chunk holds, or points that cannot stand on
it (pipeline/answers/grounding.py drops them); a bill's map answer is often only its header
lines, which are dropped as headings. The chunk's own sentences are then taken, word for
word, the most informative first (numbers, names, and terms the chunk repeats), and a
document that opens with header fields (a bill's sponsor; an e-mail's subject and
sender) gets one point made of its title and those fields' own lines. Each such point
carries its evidence like a grounded one.

Scoring runs on the sentences' term sets and two regex counts a sentence, and only for a
chunk that came up short or has 2 * SENTENCES_A_POINT sentences or more.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from collections.abc import Sequence

from pipeline.answers.grounding import MIN_WORDS, STOP, Evidence, Source, letter_words, line_starts_of, source_terms

MOST_POINTS = 4  # points a chunk deserves at most (the map prompt asks for at most 5)
SENTENCES_A_POINT = 3  # a chunk deserves a point for every this many of its sentences
SAID_SHARE = 0.6  # a sentence this much said by the kept points is not taken again
LONGEST = 60  # words: a longer sentence is no bullet (a preamble, a table run together)
_LONGEST_RUN = 8  # segments past a sentence's first that end it all the same (a list with no full stop)
_END = re.compile(r"[.!?。！？]\W{0,2}$")
_STOPS = ".!?。！？"
_ABBREVIATION = re.compile(r"(?:\b(?:i\.e|e\.g|etc|cf|vs|viz|Mr|Mrs|Dr|St|No)|\b[A-Z])\.$")  # "(i.e. IPv4)"
# A number, or a capitalised word inside a sentence: what a fact is made of.
# (The pattern opens with one character class, the look behind coming after it: the regex engine
# then skips the positions that open neither, which it does not do for a choice of two classes.)
_FACT = re.compile(r"[\dA-Z](?:(?<=\d)\d*|(?<=[\w,;)] [A-Z])[a-z]{2,})")
_COMMON = frozenset(w[:6] for w in STOP)
# Header fields: "발의연월일 : 2010. 11. 12.", "Subject: Budget", "(정의화의원 대표발의 )".
_FIELD = re.compile(r"^[^\W\d_][^:：\n]{0,28}[:：]\s*\S|^\(.+\)$")
_FIELD_LINE = re.compile(r"^[ \t]*(?:[^\W\d_][^:：\n]{0,28}[:：]|\()", re.MULTILINE)
_DOTTED = re.compile(r"\d\.\s+\d")
HEADER_LINES = 12  # how far into a document its header fields are looked for
TITLE_WORDS = 15  # a title is a line of at most this many words
FIELDS = 2  # header fields a document must open with to get a header point
MOST_FIELDS = 4


def _units(source: Source, text: str) -> list[tuple[int, int]]:
    """The chunk's whole sentences as runs of its segments (a wrapped line is one segment), headings left out.

    A heading here is a short line standing alone between blank lines (a wrapped line of
    a paragraph is short too), or a line with no letters ("=======").
    """
    units: list[tuple[int, int]] = []
    spans, terms, headings = source.sentences, source.terms, source.headings
    first = -1
    for k, (s, e) in enumerate(spans):
        alone = k in headings and (k == 0 or text.count("\n", spans[k - 1][1], s) >= 2) \
            and (k + 1 == len(spans) or text.count("\n", e, spans[k + 1][0]) >= 2)
        if alone or not terms[k]:  # a sentence's terms are its letters and digits: none, no letter ("=======")
            if first >= 0:
                units.append((first, k - 1))
            first = -1
            continue
        if first < 0:
            first = k
        # Both patterns end at the sentence's end and are a few characters long: only its tail is looked at,
        # and most sentences end in a full stop (an abbreviation's, maybe) or a word (no end).
        last = text[e - 1]
        if last in _STOPS:
            ends = last != "." or not _ABBREVIATION.search(text, max(s, e - 5), e)
        elif last.isalnum() or last == "_":
            ends = False
        else:
            ends = bool(_END.search(text, max(s, e - 4), e)) and not _ABBREVIATION.search(text, max(s, e - 5), e)
        if ends or k - first >= _LONGEST_RUN:
            units.append((first, k))
            first = -1
    return units  # a sentence the chunk cuts off at its end is no point


def _span(source: Source, unit: tuple[int, int]) -> tuple[int, int]:
    return source.sentences[unit[0]][0], source.sentences[unit[1]][1]


def fill(text: str, source: Source, points: str, found: list[Evidence],
         counts: Counter[str]) -> tuple[str, list[Evidence]]:
    """A chunk's grounded `points` (and their evidence `found`), topped up with its own most informative sentences.

    `source` is the chunk's Source. A chunk deserves a point for every SENTENCES_A_POINT
    of its sentences, at least one and at most MOST_POINTS, and one of its own sentences
    when it has 2 * SENTENCES_A_POINT of them or more: what a small model picks is often
    not what carries the facts. A sentence whose terms the kept points mostly say already
    is not taken. Added points come first, counted as `backfilled`.
    """
    kept = points.splitlines() if points else []
    units = _units(source, text)
    want = min(MOST_POINTS, max(1, math.ceil(len(units) / SENTENCES_A_POINT)))
    need = max(want - len(kept), 1 if len(units) >= 2 * SENTENCES_A_POINT else 0)
    if not need:
        return points, found
    said = source_terms(points) - _COMMON  # what the kept points already say
    twice: set[str] = set()
    seen: set[str] = set()
    for terms in source.terms:  # a loop over sentences, each a set operation
        twice |= seen & terms
        seen |= terms
    twice -= _COMMON
    ranked: list[tuple[float, int]] = []
    spans, terms_of, sqrt = source.sentences, source.terms, math.sqrt
    for i, (a, b) in enumerate(units):
        s, e = spans[a][0], spans[b][1]
        if text[s].islower():  # lower case: the rest of a cut sentence
            continue
        words = len(text[s:e].split())
        if words < MIN_WORDS or words > LONGEST:
            continue
        terms = (terms_of[a] if a == b else set().union(*terms_of[a:b + 1])) - _COMMON
        if len(terms & said) >= SAID_SHARE * len(terms):
            continue  # a kept point says it already
        score = 3 * len(_FACT.findall(text, s, e)) + len(terms & twice)
        ranked.append((score / sqrt(words) + (1 if words >= 2 * MIN_WORDS else 0), -i))
    added: list[tuple[str, Evidence]] = []
    for _, back in sorted(ranked, reverse=True):
        if len(added) == need:
            break
        s, e = _span(source, units[-back])
        if letter_words(text[s:e]) < MIN_WORDS:  # words of letters: "2010. 11. 12." is no point
            continue
        added.append(("- " + " ".join(text[s:e].split()), [s, e, source.line_of(s), source.line_of(max(s, e - 1))]))
    counts["backfilled"] += len(added)
    # The densest sentences first (in the document's order), then the model's points: a
    # final summary that keeps each document's first points keeps its facts.
    added.sort(key=lambda pair: pair[1][0])
    return "\n".join([p for p, _ in added] + kept), [ev for _, ev in added] + found


def header_point(text: str, line_starts: Sequence[int] | None = None) -> tuple[str, Evidence] | None:
    """A point made of the document's title and its opening header fields, each in its own words; None if it has none.

    A document opens with header fields when at least FIELDS of its first HEADER_LINES
    lines are "label : value" or a line in parentheses, before any line longer than a
    field.
    """
    starts = line_starts if line_starts is not None else line_starts_of(text)
    if len(starts) < FIELDS:
        return None  # a field opens a line: a text of one line holds one at most
    head = starts[HEADER_LINES * 3] if len(starts) > HEADER_LINES * 3 else len(text)
    if len(_FIELD_LINE.findall(text, 0, head)) < FIELDS:  # the common case: no header, one regex pass
        return None
    lines: list[tuple[int, int]] = []  # (start, end) of each non-blank line, stripped
    for n, at in enumerate(starts[:HEADER_LINES * 3]):
        end = starts[n + 1] - 1 if n + 1 < len(starts) else len(text)
        line = text[at:end]
        if stripped := line.strip():
            s = at + len(line) - len(line.lstrip())
            lines.append((s, s + len(stripped)))
        if len(lines) >= HEADER_LINES:
            break
    if not lines or len(text[lines[0][0]:lines[0][1]].split()) > TITLE_WORDS:
        return None  # no title opens it: a transcript's first speaker, a paragraph
    fields: list[tuple[int, int]] = []
    for s, e in lines[1:]:
        if len(text[s:e].split()) > 12:
            break
        if _FIELD.search(text[s:e]) and letter_words(text[s:e]):
            fields.append((s, e))
    if len(fields) < FIELDS:
        return None
    title = [lines[0]]
    if len(lines) > 1 and lines[1] not in fields and text.count("\n", lines[0][1], lines[1][0]) == 1 \
            and len(text[lines[0][0]:lines[1][1]].split()) <= 15:
        title.append(lines[1])  # a title wrapped onto a second line
    # "2010. 11. 12." would be cut into sentences by every later check: such a field is counted, not quoted.
    parts = [*title, *[f for f in fields if not _DOTTED.search(text, *f)][:MOST_FIELDS]]
    body = " ".join(" ".join(text[s:e].split()) for s, e in parts)
    evidence = [n for s, e in parts for n in (s, e, _line(starts, s), _line(starts, e - 1))]
    return "- " + body, evidence


def _line(starts: Sequence[int], at: int) -> int:
    return bisect.bisect_right(starts, at)


SHORT_WORDS, SHORT_CHARS = 12, 180  # a document this short (words and characters) can be its own summary


def whole_point(text: str, line_starts: Sequence[int] | None = None) -> tuple[str, Evidence] | None:
    """A short document's whole text as its one point ("Closed today.", a date, a name); None for a longer one.

    For a document too short for a sentence of MIN_WORDS words, when nothing the model
    wrote stands on it: its summary is what it says, word for word.
    """
    if len(text) > 4 * SHORT_CHARS:  # no split of a long text (spaces and line breaks aside, it is no short one)
        return None
    words = text.split()
    if not words or len(words) > SHORT_WORDS or len(" ".join(words)) > SHORT_CHARS or not any(map(str.isalnum, text)):
        return None
    starts = line_starts if line_starts is not None else line_starts_of(text)
    s = len(text) - len(text.lstrip())
    e = len(text.rstrip())
    return "- " + " ".join(words), [s, e, _line(starts, s), _line(starts, e - 1)]
