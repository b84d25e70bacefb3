"""The final summary's length: what the prompt asks for, and what the answer is held to."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, NamedTuple

from pipeline.answers.checks import BULLET, WORD
from pipeline.answers.citations import cited
from pipeline.errors import InputError

_SPEC = re.compile(r"\s*(\d+)\s*(b|bullets?|w|words?)\s*", re.IGNORECASE)
LEAST_BULLETS, MOST_BULLETS = 6, 12  # the default's range
WORDS_SLACK = 1.25  # an answer may run this far past a word target before bullets are cut


class Length(NamedTuple):
    """A target for the final summary: so many bullets, or about so many words."""

    count: int
    unit: str  # "bullets" or "words"

    def __str__(self) -> str:
        return f"{self.count} {self.unit}"


def parse_length(value: str) -> Length | None:
    """Read 'auto', '6 bullets' (or '6b') or '150 words' (or '150w'); None means auto."""
    if value.strip().lower() == "auto":
        return None
    if (match := _SPEC.fullmatch(value)) and int(match[1]) > 0:
        return Length(int(match[1]), "bullets" if match[2][0].lower() == "b" else "words")
    raise InputError(f"--length {value!r}: give 'auto', a number of bullets (6 bullets, 6b) "
                     "or of words (150 words, 150w)")


def target(length: Length | None, documents: int) -> Length:
    """The length asked for, or by default two bullets per document, from 6 to 12."""
    return length or Length(min(MOST_BULLETS, max(LEAST_BULLETS, 2 * documents)), "bullets")


def instruction(length: Length) -> str:
    """Say the target in the final prompt."""
    if length.unit == "bullets":
        return f"Give at most {length.count} bullet points."
    return f"Keep the whole summary to about {length.count} words."


def words(text: str) -> int:
    return len(WORD.findall(text))


def fit(text: str, length: Length, cut: bool = True) -> tuple[str, dict[str, Any]]:
    """Cut whole bullets from an answer that runs past its target (if `cut`); say how it measures up.

    Bullets are written most important first, so they go from the end, but a bullet
    that is the only one citing some document goes last: a shorter summary should
    still name every document it can. A heading left with nothing under it goes too.
    The overview and at least one bullet always stay.
    """
    lines = text.splitlines()
    removed = 0

    def bullets() -> list[int]:
        return [i for i, line in enumerate(lines) if BULLET.match(line)]

    def over() -> bool:
        if length.unit == "bullets":
            return len(bullets()) > length.count
        return words("\n".join(lines)) > length.count * WORDS_SLACK

    while cut and len(bullets()) > 1 and over():
        at = bullets()
        cites = Counter(n for i in at for n in set(cited(lines[i])))
        spare = [i for i in at if all(cites[n] > 1 for n in cited(lines[i]))]
        del lines[(spare or at)[-1]]
        removed += 1
    if removed:
        lines = _drop_empty_headings(lines)
    fitted = "\n".join(lines).strip("\n").rstrip()
    return fitted, {"target": str(length), "bullets": len(bullets()), "words": words(fitted), "bullets_cut": removed,
                    "within": not over()}


def _drop_empty_headings(lines: list[str]) -> list[str]:
    """Drop headings followed by nothing but blank lines before the next heading or the end."""
    kept: list[str] = []
    for i, line in enumerate(lines):
        if line.lstrip().startswith("#"):
            rest = next((later for later in lines[i + 1:] if later.strip()), "")
            if not rest or rest.lstrip().startswith("#"):
                continue
        kept.append(line)
    return kept
