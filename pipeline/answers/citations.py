"""Document tags such as [D3] or [D3, D7]: find them, renumber them, drop the ones that name nothing.

A reduce call numbers the documents it sees from D1, in the order they first appear in
its prompt, so that its prompt (and hence its stored answer) depends on content alone,
never on where a document stood in the input list. Its answer's tags are mapped back
through that numbering; a tag the call was never shown is an invention and is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

# A bracketed group of one or more tags: [D3], [D3, D7], [D3; D7], [D3 D7], [d3], with the
# spaces before it, which go when the whole group does.
_GROUP = re.compile(r"([ \t]*)\[\s*D\d+(?:\s*[,;]?\s*D\d+)*\s*\]", re.IGNORECASE)
_GROUP_START = re.compile(r"\[\s*D\d", re.IGNORECASE)  # how every group begins: a cheap first look
_NUMBER = re.compile(r"\d+")

Renumber = Callable[[int], int | None]


def cited(text: str) -> list[int]:
    """Return the numbers of every tag in `text`, in order of first appearance."""
    seen: dict[int, None] = {}
    for group in _GROUP.finditer(text):
        for n in _NUMBER.findall(group.group()):
            seen.setdefault(int(n), None)
    return list(seen)


def retag(text: str, renumber: Renumber) -> str:
    """Rewrite every tag group through `renumber`; a number it maps to None is dropped.

    A group left empty disappears with the space before it, so "fact [D9]." becomes
    "fact." rather than "fact []."
    """
    if "[" not in text or not _GROUP_START.search(text):
        return text  # most summaries have no tag: no substitution to try at every position

    def rewrite(match: re.Match[str]) -> str:
        kept: dict[int, None] = {}
        for n in _NUMBER.findall(match.group()):
            if (new := renumber(int(n))) is not None:
                kept.setdefault(new, None)
        return match.group(1) + "[" + ", ".join(f"D{n}" for n in kept) + "]" if kept else ""

    return _GROUP.sub(rewrite, text)


def local_numbering(docs: Iterable[int]) -> dict[int, int]:
    """Number documents from 1 in the order given, each once."""
    numbering: dict[int, int] = {}
    for doc in docs:
        numbering.setdefault(doc, len(numbering) + 1)
    return numbering
