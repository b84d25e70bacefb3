"""Give an answer the summary's shape: bullets only, each a claim that can be checked.

Small models write what they have seen in other summaries: `### Key Points`, bold labels
(`**Bakery Operations**`), numbered headers of their own (`[1] Jonah 1: The first book in
the Bible`), and prose paragraphs. Headings and headers name nothing a document says and
go; a label in front of a point goes and the point stays; a prose paragraph is cut into
its sentences, each a bullet that is checked like any other. What was done is counted.
"""

from __future__ import annotations

import re
from collections import Counter

from pipeline.answers.checks import BULLET

_HEADING = re.compile(r"^\s*(?:#{1,6}\s|={3,}|-{3,}\s*$|_{3,}\s*$)")
_BOLD_ALONE = re.compile(r"^\s*(?:[-*•]\s+)?(\*\*|__)[^*_]+\1\s*:?\s*$")
_BOLD_LABEL = re.compile(r"^(\*\*|__)([^*_\n]{1,60})\1\s*[:：\-–—]?\s*")
# "[1] Jonah 1: The first book in the Bible", "1) Chapter 3:" or "Part 2 -" alone: a header of the model's own.
_NUMBERED_HEADER = re.compile(r"^\s*\[\d+\]\s|^\s*(?:part|chapter|section)\s+\d+\s*[:.\-–—]?\s*$", re.IGNORECASE)
# The three above in one pass of the regex engine (only _BOLD_ALONE has a group, so its backreference holds).
_HEADER_LINE = re.compile(f"(?:{_HEADING.pattern})|(?:{_BOLD_ALONE.pattern})|(?i:{_NUMBERED_HEADER.pattern})")
# A short label before a colon: "Summary:", "SUMMARY[17 words]:", "요약:"; at most three words.
_PLAIN_LABEL = re.compile(r"^([^\s:：][^:：\n]{0,38}?)[:：]\s+(?=\S)")
_SENTENCE = re.compile(r"\s(?<=[.!?。！？]\s)\s*(?=[^\s\[])")  # spaces after . ! ?; opening on a space, to skip to one
_LABEL_WORDS = 3
_DASH = re.compile(r"^[-*•]\s+")  # a mark copied twice; a number ("2010. 11.") is never taken for one
_MARKS = ("-", "*", "•")  # what _DASH opens with


def sentences(text: str) -> list[str]:
    """Cut text into sentences at . ! ? followed by a space (a tag group stays with its sentence)."""
    parts = [s.strip() for s in _SENTENCE.split(text)]
    parts = [_DASH.sub("", part).strip() if part.startswith(_MARKS) else part for part in parts]  # "... - next point"
    return [part for part in parts if part]


def strip_label(body: str, counts: Counter[str]) -> str:
    """Take a bold or short label ("**Costs**:", "Summary:") off the front of a point."""
    if match := _BOLD_LABEL.match(body):
        rest = body[match.end():]
        if rest.strip():
            counts["label"] += 1
            return rest
    if (match := _PLAIN_LABEL.match(body)) and len(match.group(1).split()) <= _LABEL_WORDS \
            and not match.group(1).rstrip().endswith((".", "!", "?")):
        counts["label"] += 1
        return body[match.end():]
    return body.replace("**", "")


def bullets(answer: str, counts: Counter[str]) -> list[str]:
    """The claims of an answer, one bullet ("- ...") each; headings, headers and labels taken out.

    A bullet keeps its sentences together (the checks cut it where they must); a
    prose line gives a bullet per sentence.
    """
    out: list[str] = []
    for line in answer.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if _HEADER_LINE.match(stripped):
            counts["heading"] += 1
            continue
        if match := BULLET.match(stripped):
            body = stripped[match.end():].strip()
            while mark := _DASH.match(body):  # "- - point": a mark copied twice
                body = body[mark.end():]
            body = strip_label(body, counts).strip()
            if body:
                out.append("- " + body)
            continue
        body = strip_label(stripped, counts).strip()
        parts = sentences(body)
        counts["prose_sentence"] += len(parts)
        out.extend("- " + part for part in parts)
    return out
