"""Score a summary against the documents themselves: invented names and numbers, mixed facts, shape, length.

Independent of the pipeline's own checks (pipeline/answers/), so that they can be
measured rather than trusted:

- invented: a content line (not a Markdown heading) naming a name (a capitalised Latin
  word that does not open a sentence) or a number (two digits or more) found in no
  document of the item. Words are
  compared by their first five letters, lower-cased ("Jonah's" and "Jonah" meet).
- mixed: a tagged line carrying another document's distinctive facts: a name or number,
  or three content words, that only one document of the item holds, and not one the
  line cites.
- not bullets: content lines that are headings, labels or prose rather than "- " points.
- length: bullets and words, and whether the bullets are within what `auto` asks for
  (two per document, 6 to 12, at most).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from eval.scores import OVERVIEW, STOPWORDS, _BULLET, split_summary, strip_tags, tag_numbers

_WORD = re.compile(r"[^\W\d_]+|\d+(?:,\d{3})*(?:\.\d+)?")
LEAST, MOST = 6, 12
FOREIGN = 3  # a name or number (3) or three words (1 each) owned by a document the line does not cite


def _fold(token: str) -> str:
    return token.lower()[:5]


def _number(token: str) -> str | None:
    plain = token.replace(",", "")
    return plain if len(re.sub(r"\D", "", plain)) >= 2 else None


def line_facts(line: str) -> tuple[set[str], set[str], set[str]]:
    """The names, numbers and content words of one summary line (tags and bullet mark left out)."""
    text = unicodedata.normalize("NFKC", _BULLET.sub("", strip_tags(line)).strip().strip("*#"))
    names: set[str] = set()
    numbers: set[str] = set()
    words: set[str] = set()
    for match in _WORD.finditer(text):
        token = match.group()
        if token[0].isdigit():
            if (num := _number(token)) is not None:
                numbers.add(num)
        elif token.isascii() and len(token) >= 3 and token.lower() not in STOPWORDS:
            opens = text[:match.start()].rstrip()[-1:] in ("", ".", "!", "?", ":", "(", '"')
            if token[0].isupper() and not opens:
                names.add(_fold(token))
            else:
                words.add(_fold(token))
    return names, numbers, words


def _source_terms(text: str) -> set[str]:
    terms = set()
    for token in _WORD.findall(unicodedata.normalize("NFKC", text)):
        if token[0].isdigit():
            if (num := _number(token)) is not None:
                terms.add(num)
        else:
            terms.add(_fold(token))
    return terms


def content_lines(summary: str) -> list[str]:
    """The lines of a summary's body that say something (not blank, not the Sources list, not the groups' line)."""
    return [line for line in split_summary(summary)[0].splitlines()
            if strip_tags(line).strip(" -*#_") and not OVERVIEW.match(line)]


def overview_lines(summary: str) -> int:
    """How many lines name the groups of related documents ("**7 documents, 2 groups:** ..."), written by code."""
    return sum(1 for line in split_summary(summary)[0].splitlines() if OVERVIEW.match(line))


def asked_bullets(documents: int) -> int:
    """The most bullets `--length auto` asks for: two per document, 6 to 12."""
    return min(MOST, max(LEAST, 2 * documents))


def grounding(summary: str, doc_texts: Mapping[str, str], tag_to_doc: Mapping[int, str | None] | None,
              documents: Sequence[str]) -> dict[str, Any]:
    """Source-grounding counts of one summary; `tag_to_doc` maps its tags to item documents (None: untagged)."""
    terms = {d: _source_terms(doc_texts[d]) for d in documents}
    everywhere = set().union(*terms.values()) if terms else set()
    holders: Counter[str] = Counter(t for d in documents for t in terms[d])
    owner = {t: d for d in documents for t in terms[d] if holders[t] == 1}
    lines = content_lines(summary)
    invented: list[str] = []
    mixed: list[str] = []
    tagged = 0
    for line in lines:
        names, numbers, words = line_facts(line)
        heading = line.lstrip().startswith("#")  # Title Case is no name; counted under not_bullets
        if not heading and any(n not in everywhere for n in names | numbers):
            invented.append(line.strip())
        cites = {tag_to_doc.get(k) for k in tag_numbers(line)} - {None} if tag_to_doc else set()
        if not cites or len(documents) < 2:
            continue
        tagged += 1
        foreign: Counter[str] = Counter()
        for term in names | numbers:
            if (d := owner.get(term)) is not None and d not in cites:
                foreign[d] += 3
        for term in words:
            if (d := owner.get(term)) is not None and d not in cites:
                foreign[d] += 1
        if foreign and max(foreign.values()) >= FOREIGN:
            mixed.append(line.strip())
    bullets = sum(1 for line in lines if _BULLET.match(line))
    most = asked_bullets(len(documents))
    return {"content_lines": len(lines), "invented_lines": len(invented), "invented_examples": invented[:5],
            "tagged_lines": tagged, "mixed_lines": len(mixed), "mixed_examples": mixed[:5],
            "not_bullets": len(lines) - bullets, "bullets": bullets, "asked_bullets": most,
            "within_length": bullets <= most, "overview_lines": overview_lines(summary)}


def aggregate(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Sums over items, and how many finals were within their asked length."""
    total = {k: sum(r[k] for r in rows) for k in ("content_lines", "invented_lines", "mixed_lines", "tagged_lines",
                                                   "not_bullets", "bullets")}
    total["within_length"] = f"{sum(bool(r['within_length']) for r in rows)}/{len(rows)}"
    return total


def table(results: Mapping[str, Any]) -> str:
    """A Markdown table of the grounding measures, per system."""
    lines = ["| system | content lines | with a name or number in no document | tagged lines carrying another "
             "document's facts | not bullets | bullets (asked: at most 2 per document, 6-12) | within length |",
             "|---|---|---|---|---|---|---|"]
    for name, res in results["systems"].items():
        if (g := res.get("grounding")) is None:
            continue
        lines.append(f"| {name} | {g['content_lines']} | {g['invented_lines']} | {g['mixed_lines']} of "
                     f"{g['tagged_lines']} | {g['not_bullets']} | {g['bullets']} | {g['within_length']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the grounding counts of one summary.md against the documents it summarized."""
    import argparse
    import json
    from pathlib import Path

    from eval.scores import sources_map

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("summary", type=Path, help="a summary.md (its Sources list maps the tags to files)")
    parser.add_argument("documents", nargs="+", type=Path)
    args = parser.parse_args(argv)
    summary = args.summary.read_text(encoding="utf-8")
    docs = [str(p) for p in args.documents]
    by_name = {Path(d).name: d for d in docs}
    tags = {k: by_name.get(Path(v).name) for k, v in sources_map(split_summary(summary)[1]).items()}
    texts = {d: Path(d).read_text(encoding="utf-8") for d in docs}
    print(json.dumps(grounding(summary, texts, tags, docs), indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
