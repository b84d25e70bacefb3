"""The prompt templates, one plain-text file each, loaded once at import; a run may bring its own.

A call has two messages. The system message holds the instructions (map.txt,
collapse.txt, final.txt); the user message holds only the material, fenced
(document.txt around one document's chunk, summaries.txt around a reduce call's
summaries). Small models follow instructions better from the system message and copy
less of them into their answers when the material stands alone. Each template is
filled with `str.format`; the placeholders each file takes are listed in
PLACEHOLDERS, and the tests check the files against it.

A reader's own instructions and focus (instructions.txt, focus.txt) go into every
step's system message, after its fixed text and before its language instruction, the
one part that varies between the calls of a step: the message's start stays the same
for every call, as servers' prompt caches need.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError

_DIR = Path(__file__).parent

PLACEHOLDERS: dict[str, frozenset[str]] = {
    "map": frozenset({"language_instruction"}),
    "collapse": frozenset({"language_instruction"}),
    "final": frozenset({"language_instruction", "length_instruction"}),
    "document": frozenset({"source", "part", "document"}),
    "summaries": frozenset({"summaries"}),
    "instructions": frozenset({"instructions"}),
    "focus": frozenset({"focus"}),
}


def _load(name: str) -> str:
    return (_DIR / f"{name}.txt").read_text(encoding="utf-8")


MAP = _load("map")
COLLAPSE = _load("collapse")
FINAL = _load("final")
DOCUMENT = _load("document")
SUMMARIES = _load("summaries")
INSTRUCTIONS = _load("instructions")
FOCUS = _load("focus")
# Part of every stored result's key: editing a template invalidates what it produced.
# (instructions.txt and focus.txt reach a key through the messages they are part of.)
PROMPT_VERSION = hashlib.sha256("\0".join((MAP, COLLAPSE, FINAL, DOCUMENT, SUMMARIES)).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Templates:
    """One run's templates, and the reader's instructions and focus phrased once for every step.

    `reader` is empty when the run gives neither, so the messages are then exactly those
    of the package's own templates.
    """

    map: str = MAP
    collapse: str = COLLAPSE
    final: str = FINAL
    document: str = DOCUMENT
    summaries: str = SUMMARIES
    reader: str = ""


DEFAULT = Templates()


def placeholders(template: str) -> set[str]:
    """The names of the fields `template` has for `str.format` (ValueError if it cannot be parsed)."""
    return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}


def check(name: str, template: str, where: str) -> None:
    """Raise InputError unless `template` has exactly the placeholders the code fills for `name`."""
    try:
        fields = placeholders(template)
    except ValueError as exc:
        raise InputError(f"{where}: {exc}; write a literal brace as {{{{ or }}}}") from None
    expected = PLACEHOLDERS[name]
    missing, unknown = expected - fields, fields - expected
    problems = ([f"missing placeholder {_names(missing)}"] if missing else []) + \
        ([f"unknown placeholder {_names(unknown)}"] if unknown else [])
    if problems:
        raise InputError(f"{where}: {' and '.join(problems)}; {name}.txt takes {_names(expected)}"
                         + (" (write a literal brace as {{ or }})" if unknown else ""))


def _names(fields: set[str] | frozenset[str]) -> str:
    return ", ".join("{" + f + "}" for f in sorted(fields))


def load(directory: str | Path | None = None, *, instructions: str | None = None,
         focus: str | None = None) -> Templates:
    """The run's templates: those found in `directory` replace the package's own, each checked.

    Raise InputError, in one line, for a folder or file that cannot be read and for a
    template whose placeholders are not the ones the code fills.
    """
    found: dict[str, str] = {}
    if directory:
        folder = Path(directory).expanduser()
        if not folder.is_dir():
            raise InputError(f"prompts folder {folder}: not a folder" if folder.exists()
                             else f"prompts folder {folder}: no such folder")
        for name in PLACEHOLDERS:
            path = folder / f"{name}.txt"
            if not path.exists():
                continue
            try:
                found[name] = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
            except UnicodeDecodeError:
                raise InputError(f"cannot read {path}: not UTF-8 text") from None
            check(name, found[name], str(path))
        if not found:
            raise InputError(f"prompts folder {folder} holds none of {', '.join(f'{n}.txt' for n in PLACEHOLDERS)}")
    reader = ""
    if instructions and instructions.strip():
        reader += found.get("instructions", INSTRUCTIONS).format(instructions=instructions.strip())
    if focus and focus.strip():
        reader += found.get("focus", FOCUS).format(focus=focus.strip())
    if reader and not reader.endswith("\n"):
        reader += "\n"
    return Templates(**{k: v for k, v in found.items() if k not in ("instructions", "focus")}, reader=reader)
