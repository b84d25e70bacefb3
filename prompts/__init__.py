"""The prompt templates, one plain-text file per step, loaded once at import.

Each template is filled with `str.format`; the placeholders each step fills are
listed in PLACEHOLDERS, and the tests check the files against it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_DIR = Path(__file__).parent

PLACEHOLDERS: dict[str, frozenset[str]] = {
    "map": frozenset({"language_instruction", "source", "part", "document"}),
    "collapse": frozenset({"language_instruction", "summaries"}),
    "final": frozenset({"language_instruction", "summaries"}),
}


def _load(name: str) -> str:
    return (_DIR / f"{name}.txt").read_text(encoding="utf-8")


MAP = _load("map")
COLLAPSE = _load("collapse")
FINAL = _load("final")
# Part of every stored result's key: editing a template invalidates what it produced.
PROMPT_VERSION = hashlib.sha256("\0".join((MAP, COLLAPSE, FINAL)).encode("utf-8")).hexdigest()[:16]
