"""Tell a merged summary from the map summaries in a row, and build one from the best points when it is not.

A small model given four chapters may hand them back one after another under headers
of its own: no merge, and three times the length asked for. Such an answer is not taken
as the reduce; the documents' own grounded points, taken in turn from each document
(each document's first point first), make the summary instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.answers.attribution import terms
from pipeline.answers.checks import BULLET

COPY = 0.8  # a bullet whose terms are this alike to one point's (Jaccard) copies it
COPIED_SHARE = 0.6  # an answer is a concatenation when this share of its bullets copy points ...
OVER = 1.25  # ... and it has this many times the bullets asked for or more


def _alike(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def is_concatenation(answer: str, points: Sequence[str], most: int) -> bool:
    """Whether `answer` is mostly the `points` copied out, at more than `most` bullets."""
    bullets = [terms(line) for line in answer.splitlines() if BULLET.match(line)]
    if len(bullets) < max(2, OVER * most):
        return False
    known = [terms(p) for p in points if p.strip()]
    postings: dict[str, list[int]] = {}
    for i, point in enumerate(known):
        for term in point:
            postings.setdefault(term, []).append(i)
    copied = 0
    for bullet in bullets:
        near = {i for term in bullet for i in postings.get(term, ())}
        copied += any(_alike(bullet, known[i]) >= COPY for i in near)
    return copied >= COPIED_SHARE * len(bullets)


def select(points_of: Sequence[tuple[int, Sequence[str]]], most: int) -> str:
    """Up to `most` bullets: each document's points in turn, its first point first, tagged with its id."""
    queues = [(doc, [BULLET.sub("", p).strip() for p in points if p.strip()]) for doc, points in points_of]
    out: list[str] = []
    depth = 0
    while len(out) < most and any(depth < len(q) for _, q in queues):
        for doc, queue in queues:
            if depth < len(queue) and len(out) < most:
                out.append(f"- {queue[depth]} [D{doc}]")
        depth += 1
    return "\n".join(out)
