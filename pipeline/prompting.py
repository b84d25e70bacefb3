"""Fill the prompt templates: fence documents in, escape their labels, number their tags per call.

Everything a prompt contains comes from content (text, source label, settings), never
from a document's position in the run, so a prompt's hash is a key that an unchanged
or reordered rerun finds again.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from typing import Literal, NamedTuple

from typing_extensions import NotRequired, TypedDict

from prompts import Templates
from pipeline.answers.citations import local_numbering, retag
from pipeline.text.language import firm_language_instruction
from pipeline.text.loading import DocRef

# Any tag that opens or closes a fence, in any letter case, with any spacing: a
# document must not be able to end the block it sits in, or open a new one.
_FENCE_TAG = re.compile(r"<(\s*/?\s*(?:document|summaries)\b)", re.IGNORECASE)
# Characters a label must not carry into a prompt: line breaks, controls, bidi overrides,
# and the lone surrogates that undecodable bytes in a file name become.
_UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


class Prompt(NamedTuple):
    """One call's two messages: the instructions (system) and the material (user)."""

    system: str
    user: str


class Piece(TypedDict):
    """A summary on its way through the reduce.

    `docs` lists the run's document ids behind it; tags in `text` number those
    documents from 1 in that order ([D2] is docs[1]). A document's own summary has a
    `label` (its source, and which part) and no tags of its own.
    """

    label: str
    text: str
    tokens: int
    docs: list[int]
    topic: NotRequired[int]  # the group of related documents it comes from (pipeline/grouping.py), when known


def fence(text: str) -> str:
    """Neutralise every fence tag inside `text`."""
    return _FENCE_TAG.sub(r"&lt;\1", text)


def escape_label(source: str) -> str:
    """Make a source name safe inside an attribute or on a label line."""
    out = source.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    if out.isprintable():
        return out
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in _UNSAFE else c for c in out)


def firmer(prompt: Prompt, language: str) -> Prompt:
    """The same prompt, insisting on the answer's language: sent once when an answer comes back in another."""
    return Prompt(prompt.system + "\n" + firm_language_instruction(language), prompt.user)


@functools.lru_cache(maxsize=64)
def map_instructions(instruction: str, templates: Templates) -> str:
    """The system message of every map call with this language instruction (one string, kept, for all of them)."""
    return templates.map.format(language_instruction=templates.reader + instruction)


def map_prompt(source: str, chunk: str, part: int, parts: int, instruction: str, templates: Templates) -> Prompt:
    """The prompt that summarizes one chunk of one document."""
    return Prompt(map_instructions(instruction, templates),
                  templates.document.format(source=escape_label(source),
                                            part=f' part="{part} of {parts}"' if parts > 1 else "",
                                            document=fence(chunk)))


def chunk_prompt(ref: DocRef, text: str, part: int, instruction: str, templates: Templates) -> Prompt:
    """The map prompt of chunk `part` (from 1) of a planned document whose text is `text`."""
    start, end = ref["spans"][part - 1]
    return map_prompt(ref["source"], text[start:end], part, len(ref["spans"]), instruction, templates)


def render_group(group: Sequence[Piece]) -> tuple[str, list[int]]:
    """Join pieces for one reduce call, numbering their documents D1, D2… for this call only.

    Returns the joined text and the documents in call order ([Dk] is the k-th).
    """
    numbering = local_numbering(d for piece in group for d in piece["docs"])
    blocks = []
    for piece in group:
        docs = piece["docs"]
        if piece["label"]:
            blocks.append(f"[D{numbering[docs[0]]}] {piece['label']}\n{piece['text']}")
        else:
            blocks.append(retag(piece["text"], lambda k, docs=docs: numbering[docs[k - 1]]
                                if 0 < k <= len(docs) else None))
    return fence("\n\n".join(blocks)), list(numbering)


def reduce_prompt(step: Literal["collapse", "final"], joined: str, instruction: str, templates: Templates,
                  length: str = "") -> Prompt:
    """A collapse or final prompt around summaries joined by `render_group`."""
    template = templates.collapse if step == "collapse" else templates.final
    return Prompt(template.format(language_instruction=templates.reader + instruction, length_instruction=length),
                  templates.summaries.format(summaries=joined))
