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

from pipeline.citations import cited, retag

_TOKEN = re.compile(r"\d+(?:[.,:]\d+)*|[^\W\d_]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7a3]")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
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


def terms(text: str) -> frozenset[str]:
    """The terms a bullet and a summary are compared by: words, numbers, CJK character pairs."""
    found: set[str] = set()
    for token in _TOKEN.findall(retag(text, lambda k: None).lower()):
        if token[0].isdigit():
            found.add(_number(token))
        elif _CJK.search(token):
            found.update(token[i:i + 2] for i in range(max(1, len(token) - 1)))
        elif len(token) >= 3 and token not in _STOP:
            found.add(token[:6])  # a crude stem: "loaves"/"loaf" differ, "ferries"/"ferry" meet
    return frozenset(found)


def _number(token: str) -> str:
    return token.replace(",", "").rstrip(".")


def _numbers(found: frozenset[str]) -> set[str]:
    """The numbers worth checking: two digits or more (a single digit is often a list's own)."""
    return {t for t in found if t[0].isdigit() and len(t.replace(".", "").replace(":", "")) >= 2}


def _weights(docs: Sequence[frozenset[str]]) -> Callable[[str], float]:
    """Weigh a term by how few of the call's documents hold it: words they all share tell little."""
    df: Counter[str] = Counter(t for doc in docs for t in doc)
    n = len(docs)
    return lambda t: math.log(1 + n / max(1, df[t]))


def _scores(bullet: frozenset[str], docs: Sequence[frozenset[str]], weight: Callable[[str], float]) -> list[float]:
    """How well each document supports a bullet: the weighted share of its terms the document holds.

    A document that holds too few of them, less than SUPPORT of their weight, or much
    less than the best document does, supports it not at all (0).
    """
    numbers = _numbers(bullet)
    total = sum(map(weight, bullet))
    scores = []
    for doc in docs:
        shared = bullet & doc
        if len(shared) < min(MIN_SHARED, len(bullet)) or (numbers and not numbers & doc):
            scores.append(0.0)  # too little in common, or none of the bullet's numbers
            continue
        share = sum(map(weight, shared)) / total
        scores.append(share if share >= SUPPORT else 0.0)
    best = max(scores, default=0.0)
    return [score if score >= best * RELATIVE else 0.0 for score in scores]


def _with_tags(line: str, tags: Sequence[int]) -> str:
    bare = retag(line, lambda k: None).rstrip()
    return f"{bare} [{', '.join(f'D{k}' for k in tags)}]" if tags else bare


def check_bullets(text: str, call_docs: Sequence[int], summary_of: Callable[[int], str],
                  counts: Counter[str] | None = None) -> str:
    """Check the tags of every bullet in `text`, whose [Dk] names `call_docs[k-1]`; return the checked text.

    `summary_of(doc)` gives a document's own map summary. `counts` gets `checked`
    (tags the model wrote), of those `kept` and `removed`; `moved` and `added` (tags
    given to bullets left with none, or written with none); `bullets_dropped` and, of
    those, `invented_numbers`.
    """
    counts = Counter() if counts is None else counts
    docs = [terms(summary_of(doc)) for doc in call_docs]
    weight = _weights(docs)
    held = set().union(*map(_numbers, docs))
    out: list[str] = []
    for line in text.splitlines():
        tags = [k for k in cited(line) if 0 < k <= len(call_docs)]
        if not tags and not _BULLET.match(line):
            out.append(line)  # prose (the overview) and headings carry no claim of origin
            continue
        bullet = terms(line)
        if not bullet:
            out.append(line)
            continue
        counts["checked"] += len(tags)
        if _numbers(bullet) - held:
            counts["bullets_dropped"] += 1  # it states a number that no document it was made from holds
            counts["invented_numbers"] += 1
            counts["removed"] += len(tags)
            continue
        scores = dict(enumerate(_scores(bullet, docs, weight), start=1))
        kept = [k for k in tags if scores[k] > 0]
        counts["kept"] += len(kept)
        counts["removed"] += len(tags) - len(kept)
        if not kept:
            best = sorted((k for k in scores if scores[k] > 0), key=lambda k: (-scores[k], k))[:MOST_ADDED]
            if not best:
                counts["bullets_dropped"] += 1
                continue
            counts["moved" if tags else "added"] += len(best)
            kept = sorted(best)
        out.append(line if kept == tags else _with_tags(line, kept))
    return "\n".join(out)


def citation_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """The report's view of the checks: every counter, zero where nothing happened."""
    keys = ("checked", "kept", "removed", "moved", "added", "bullets_dropped", "invented_numbers")
    return {key: int(counts.get(key, 0)) for key in keys}
