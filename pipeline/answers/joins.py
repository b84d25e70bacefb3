"""Keep a span of time or numbers joined as its source joins it: "July to September" is no "July and September".

A small model rewrites a range as a pair ("Sales for July and September were 14% higher",
of a quarter) or a pair as a range, and every term of the point is still in its source, so
the term checks let it through. Where both ends are numbers, months or days and the
source joins the same two ends only one way, the point is given the source's word.
"""

from __future__ import annotations

import re

_MONTHS = ("January February March April May June July August September October November December "
           "Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec").split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_END = rf"(?:\d(?:[\d,.]*\d)?%?|{'|'.join(_MONTHS + _DAYS)})"
# What joins two ends: a word, or a dash with or without spaces.
_JOINER = r"(\s+(?:and|to|through|until|till)\s+|\s*[-–—]\s*)"
_JOINED = re.compile(rf"(?<![\w,.])({_END}){_JOINER}({_END})(?![\w%])")
_RANGE = frozenset(("to", "through", "until", "till", "-", "–", "—"))
_HINTS = (" and ", " to ", " through ", " until ", " till ", "-", "–", "—")


def _kind(joiner: str, before: str) -> str:
    """A range or a pair; "between 2019 and 2021" (`before` is what precedes its first end) is a range."""
    return "range" if joiner.strip() in _RANGE or before[-8:].lower() == "between " else "pair"


def may_join(point: str) -> bool:
    """Whether `point` holds a word or dash that could join two ends: where restore_joins has work to do."""
    return any(hint in point for hint in _HINTS)


def restore_joins(point: str, source: str, start: int = 0, end: int | None = None) -> tuple[str, int]:
    """`point` with each two ends its source joins only the other way joined as the source joins them; how many.

    The source is `source[start:end]`, read in place.
    """
    if not may_join(point):  # the common case: nothing joined, one scan
        return point, 0
    restored = 0

    def join(match: re.Match[str]) -> str:
        nonlocal restored
        first, joiner, last = match.groups()
        ways = {(found.group(1), _kind(found.group(1), source[max(0, found.start() - 8):found.start()]))
                for found in re.compile(rf"(?<![\w,.]){re.escape(first)}{_JOINER}{re.escape(last)}(?![\w%])")
                .finditer(source, start, len(source) if end is None else end)}
        kinds = {kind for _, kind in ways}
        if len(kinds) != 1 or _kind(joiner, point[max(0, match.start() - 8):match.start()]) in kinds:
            return match.group()  # the source does not join them, joins them both ways, or as the point does
        way = min(way for way, _ in ways)
        from_ = point[max(0, match.start() - 5):match.start()].lower() == "from "
        # "between 1990 and 1995" says its range by more than its joiner; "from 2010 and 2012" is no pair.
        if way == joiner or (way.strip() == "and" and from_):
            return match.group()
        restored += 1
        return first + way + last

    return _JOINED.sub(join, point), restored
