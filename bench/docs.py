"""Deterministic small documents for the benchmark, in memory or as files in a folder."""

from __future__ import annotations

import random
from pathlib import Path

_WORDS = ("harbor ferry battery council budget ridership schedule review shelter trial service "
          "route engineer report season weather citrus harvest village market price school "
          "library bridge river station permit survey energy transit the and of to in for "
          "with is was on by that this more than less after before daily weekly").split()


def make_text(i: int, words: int = 60) -> str:
    """Return document `i`: a few English sentences with numbers, about `words` words long."""
    rng = random.Random(i)
    out: list[str] = []
    while len(out) < words:
        sentence = rng.sample(_WORDS, 9) + [str(rng.randint(1, 9999))]
        sentence[0] = sentence[0].capitalize()
        out += sentence
        out[-1] += "."
    return f"Document {i}. " + " ".join(out)


def make_texts(n: int, words: int = 60) -> list[dict[str, str]]:
    """Return `n` documents as the graph's `texts` input."""
    return [{"id": f"doc-{i:05d}", "text": make_text(i, words)} for i in range(1, n + 1)]


def write_docs(folder: Path, n: int, words: int = 60) -> list[str]:
    """Write `n` documents as UTF-8 .txt files under `folder`; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    for i in range(1, n + 1):
        path = folder / f"doc-{i:05d}.txt"
        path.write_text(make_text(i, words), encoding="utf-8")
        paths.append(str(path))
    return paths
