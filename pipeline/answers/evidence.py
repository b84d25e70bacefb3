"""Say where each bullet of a summary stands in its documents: the line ranges a reader can check.

Every map point carries the sentences of its chunk that support it (grounding.py). A
bullet of the final summary is traced, for each document it cites, to that document's
points that hold its names, numbers and words, and through them to their sentences.
Written to evidence.jsonl, and on request into the summary itself as [D3:12-14].
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from typing_extensions import TypedDict

from pipeline.answers.checks import BULLET
from pipeline.answers.citations import cited, retag
from pipeline.answers.grounding import Evidence, facts, quads, source_terms

_TAGS = re.compile(r"\[\s*D\d+(?:\s*[,;]?\s*D\d+)*\s*\]\s*$", re.IGNORECASE)
MOST_POINTS = 3  # points of one document quoted for one bullet


class Support(TypedDict):
    """One document behind a bullet: its id and source, and the sentences' spans and line ranges."""

    id: int
    source: str
    spans: list[list[int]]
    lines: list[list[int]]


class BulletEvidence(TypedDict):
    """A kept bullet and the documents behind it; one line of evidence.jsonl."""

    bullet: str
    documents: list[Support]


def _support(bullet: str, doc: int, source: str, summary: str, points: Sequence[Evidence]) -> Support:
    """The points of one document that together hold what the bullet says, as spans and line ranges.

    `points` holds the evidence of each line of the document's `summary`, in order.
    """
    claim = facts(bullet)
    missing, words = set(claim.required), set(claim.words)
    held = [source_terms(line) for line in summary.splitlines()[:len(points)]]
    points = points[:len(held)]
    chosen: list[int] = []
    while len(chosen) < MOST_POINTS and (missing or not chosen):
        best = max((i for i in range(len(points)) if i not in chosen),
                   key=lambda i: (3 * len(missing & held[i]) + len(words & held[i]), -i), default=None)
        if best is None or not (missing | words) & held[best]:
            break
        chosen.append(best)
        missing -= held[best]
        words -= held[best]
    found = sorted({q for i in chosen for q in quads(points[i])})
    spans = [(s, e) for s, e, _, _ in found]
    lines = [(a, b) for _, _, a, b in found]
    return Support(id=doc, source=source, spans=[[s, e] for s, e in spans],
                   lines=[[a, b] for a, b in _merge([(a, b) for a, b in lines])])


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def trace(summary: str, results: Mapping[int, Mapping[str, Any]]) -> list[BulletEvidence]:
    """Every tagged bullet of `summary` (tags are run ids) and, per document it cites, its supporting lines."""
    out: list[BulletEvidence] = []
    for line in summary.splitlines():
        if not BULLET.match(line) or not (docs := cited(line)):
            continue
        text = retag(BULLET.sub("", line), lambda k: None).strip()
        out.append(BulletEvidence(bullet=text, documents=[
            _support(text, d, str(results[d].get("source", "")), str(results[d].get("summary", "")),
                     results[d].get("evidence") or [])
            for d in docs if d in results]))
    return out


def _ranges(lines: Sequence[Sequence[int]]) -> str:
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in lines)


def cite_lines(summary: str, evidence: Sequence[BulletEvidence]) -> str:
    """The summary with each bullet's tags naming lines too: [D3] becomes [D3:12-14]."""
    by_bullet = {e["bullet"]: e for e in evidence}
    out = []
    for line in summary.splitlines():
        found = by_bullet.get(retag(BULLET.sub("", line), lambda k: None).strip()) if BULLET.match(line) else None
        if found and (tag := _TAGS.search(line)):
            cites = ", ".join(f"D{s['id']}:{_ranges(s['lines'])}" if s["lines"] else f"D{s['id']}"
                              for s in found["documents"])
            line = line[:tag.start()] + f"[{cites}]"
        out.append(line)
    return "\n".join(out)
