"""The prompt templates, one plain-text file each, loaded once at import.

A call has two messages. The system message holds the instructions (map.txt,
collapse.txt, final.txt); the user message holds only the material, fenced
(document.txt around one document's chunk, summaries.txt around a reduce call's
summaries). Small models follow instructions better from the system message and copy
less of them into their answers when the material stands alone. Each template is
filled with `str.format`; the placeholders each file takes are listed in
PLACEHOLDERS, and the tests check the files against it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_DIR = Path(__file__).parent

PLACEHOLDERS: dict[str, frozenset[str]] = {
    "map": frozenset({"language_instruction"}),
    "collapse": frozenset({"language_instruction"}),
    "final": frozenset({"language_instruction", "length_instruction"}),
    "document": frozenset({"source", "part", "document"}),
    "summaries": frozenset({"summaries"}),
}


def _load(name: str) -> str:
    return (_DIR / f"{name}.txt").read_text(encoding="utf-8")


MAP = _load("map")
COLLAPSE = _load("collapse")
FINAL = _load("final")
DOCUMENT = _load("document")
SUMMARIES = _load("summaries")
# Part of every stored result's key: editing a template invalidates what it produced.
PROMPT_VERSION = hashlib.sha256("\0".join((MAP, COLLAPSE, FINAL, DOCUMENT, SUMMARIES)).encode("utf-8")).hexdigest()[:16]
