"""Score a summary against its item: ROUGE, chrF, key facts, coverage, attribution, language.

Everything here is plain text in, numbers out; nothing calls a model.

- Tokens (ROUGE): NFKC, lower case; runs of Latin letters and of digits are words, and a
  run of Hangul is split into syllables, since Korean words carry particles ("법안은",
  "법안을") that would make whole eojeol rarely match.
- chrF: character n-grams (1-6) with whitespace removed, precision and recall averaged
  over the orders, F-score with beta = 2 (recall weighs more), as 0-100.
- Key facts: a fact matches when one of its '|'-separated forms is a substring of the
  summary once both are normalized (NFKC, lower case, only letters, digits, '%' and
  currency signs kept), so Korean spacing, digit grouping and '·' do not matter.
- Tags: [D3] or [D1, D3] at the end of a line; the Sources list under the summary maps
  each to its file.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

_TOKEN = re.compile(r"[\uac00-\ud7a3]|[0-9]+|[^\W\d_\uac00-\ud7a3]+", re.UNICODE)
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
# [D3], [D1, D3], and with --cite lines [D3:12-14] or [D1:4, D3:2-3,9]
_TAG_GROUP = re.compile(r"\[\s*D\d+(?::[\d,\-]+)?(?:\s*[,;]?\s*D\d+(?::[\d,\-]+)?)*\s*\]", re.IGNORECASE)
_TAG_NUMBER = re.compile(r"(?<=[Dd])\d+")
_LEGEND = re.compile(r"^\s*(\*\*Sources\*\*|\*\*Summarized but not cited above:\*\*)", re.MULTILINE)
_LEGEND_LINE = re.compile(r"^\s*-\s*\[D(\d+)\]\s*(.+?)\s*$", re.MULTILINE)
_UNCITED = re.compile(r"\[D(\d+)\]\s*([^,\n]+)")
_PATH = re.compile(r"\S*[/\\]\S*|\S+\.(?:txt|md)\b")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
# The line the pipeline opens a grouped summary with, made by code from the documents' own terms and tags.
OVERVIEW = re.compile(r"^\*\*[\d,]+ documents, [\d,]+ groups?:\*\* ")
STOPWORDS = frozenset(
    "a an and are as at be been but by can do does for from has have he her his how i if in into is it its "
    "may more most not of on one or our she so such than that the their them then there these they this "
    "to was we were what when which who will with would you your also other only some about after all any "
    "each document documents summary text".split())


def tokens(text: str) -> list[str]:
    """ROUGE tokens: Latin words, digit runs and Hangul syllables, lower-cased."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


def normalize(text: str) -> str:
    """Fold text for fact matching: NFKC, lower case, only letters, digits, '%' and currency signs."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if ch == "%" or unicodedata.category(ch)[0] in "LN" or unicodedata.category(ch) == "Sc")


# --- ROUGE and chrF -----------------------------------------------------------------------


def _f1(overlap: float, hyp: int, ref: int) -> float:
    if overlap == 0 or hyp == 0 or ref == 0:
        return 0.0
    p, r = overlap / hyp, overlap / ref
    return 2 * p * r / (p + r)


def rouge_n(hyp: Sequence[str], ref: Sequence[str], n: int) -> float:
    """ROUGE-N F1 over token n-grams (clipped counts)."""
    h = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
    r = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
    return _f1(sum((h & r).values()), sum(h.values()), sum(r.values()))


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(hyp: Sequence[str], ref: Sequence[str]) -> float:
    """ROUGE-L F1: longest common subsequence of the two token sequences."""
    return _f1(_lcs(hyp, ref), len(hyp), len(ref))


def rouge(hyp: str, ref: str) -> dict[str, float]:
    """ROUGE-1, -2 and -L F1 as 0-100."""
    h, r = tokens(hyp), tokens(ref)
    return {"rouge1": 100 * rouge_n(h, r, 1), "rouge2": 100 * rouge_n(h, r, 2), "rougeL": 100 * rouge_l(h, r)}


def chrf(hyp: str, ref: str, max_order: int = 6, beta: float = 2.0) -> float:
    """chrF: character n-gram F-beta (orders 1..max_order averaged), whitespace ignored, 0-100."""
    h = "".join(unicodedata.normalize("NFKC", hyp).split())
    r = "".join(unicodedata.normalize("NFKC", ref).split())
    precisions, recalls = [], []
    for n in range(1, max_order + 1):
        hc = Counter(h[i:i + n] for i in range(len(h) - n + 1))
        rc = Counter(r[i:i + n] for i in range(len(r) - n + 1))
        if not hc or not rc:
            continue
        match = sum((hc & rc).values())
        precisions.append(match / sum(hc.values()))
        recalls.append(match / sum(rc.values()))
    if not precisions:
        return 0.0
    p, rec = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if p == 0 and rec == 0:
        return 0.0
    return 100 * (1 + beta**2) * p * rec / (beta**2 * p + rec)


# --- facts, coverage, language -----------------------------------------------------------


def fact_found(fact: str, text: str, folded: str | None = None) -> bool:
    """Does one of the fact's '|'-separated forms occur in the text, once both are normalized?"""
    folded = normalize(text) if folded is None else folded
    return any((form := normalize(alt)) and form in folded for alt in fact.split("|"))


def fact_recall(facts: Sequence[str], text: str) -> tuple[float, list[str]]:
    """Share of facts found, and the ones missed."""
    folded = normalize(text)
    missed = [f for f in facts if not fact_found(f, text, folded)]
    return (1 - len(missed) / len(facts) if facts else 1.0), missed


def language_of(text: str) -> str:
    """'ko' when at least 30% of the letters are Hangul, else 'en' (the two languages of the set)."""
    letters = _LETTER.findall(text)
    if not letters:
        return "none"
    return "ko" if len(_HANGUL.findall(text)) / len(letters) >= 0.3 else "en"


# --- tags and the Sources list -----------------------------------------------------------


def split_summary(summary: str) -> tuple[str, str]:
    """Split a summary into its body and the Sources list under it (empty if none)."""
    found = _LEGEND.search(summary)
    return (summary[:found.start()], summary[found.start():]) if found else (summary, "")


def strip_tags(text: str) -> str:
    """The text without its [Dk] tags."""
    return _TAG_GROUP.sub("", text)


def tag_numbers(text: str) -> list[int]:
    """Every tag number in the text, in order, repeats included."""
    return [int(n) for group in _TAG_GROUP.findall(text) for n in _TAG_NUMBER.findall(group)]


def sources_map(legend: str) -> dict[int, str]:
    """Tag number -> source, from the Sources list and the 'not cited' line."""
    found = {int(k): v.strip() for k, v in _LEGEND_LINE.findall(legend)}
    for line in legend.splitlines():
        if "not cited" in line:
            for k, v in _UNCITED.findall(line):
                found.setdefault(int(k), v.strip())
    return found


def content_text(summary: str) -> str:
    """What a summary says: its body without tags and without the Sources list."""
    return strip_tags(split_summary(summary)[0])


def _units(text: str) -> set[str]:
    """Content units for support: Latin words of 3+ letters not in STOPWORDS, numbers, Hangul syllable pairs."""
    units: set[str] = set()
    text = re.sub(r"(?<=\d),(?=\d{3})", "", unicodedata.normalize("NFKC", text).lower())
    for tok in re.findall(r"[\uac00-\ud7a3]+|[0-9]+|[^\W\d_\uac00-\ud7a3]+", text):
        if _HANGUL.match(tok):
            units.update(tok[i:i + 2] for i in range(len(tok) - 1))
        elif tok.isdigit() or (len(tok) >= 3 and tok not in STOPWORDS):
            units.add(tok)
    return units


@dataclass
class Attribution:
    """Tagged lines of one summary checked against the documents their tags name."""

    pairs: int = 0  # (tagged line, tag) pairs
    supported: int = 0
    invented: int = 0  # tags naming no input document
    headings: int = 0  # tagged lines that only name a file, whose tags go to the lines under them
    failures: list[dict[str, object]] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        return self.supported / self.pairs if self.pairs else None


def _numbers(text: str) -> set[str]:
    """Digit runs of two or more digits, with thousands separators removed."""
    return set(re.findall(r"\d{2,}", re.sub(r"(?<=\d),(?=\d{3})", "", unicodedata.normalize("NFKC", text))))


def supports(line: str, doc_text: str, doc_facts: Iterable[str], item_facts: Iterable[str],
             threshold: float = 0.5) -> bool:
    """Is a summary line backed by a document: a shared fact, or most of its content units found there?

    A line with a number of two or more digits that the document does not contain is not
    backed by it, whatever else it shares.
    """
    if not _numbers(line) <= _numbers(doc_text):
        return False
    folded_line, folded_doc = normalize(line), normalize(doc_text)
    for fact in [*doc_facts, *item_facts]:
        for alt in fact.split("|"):
            form = normalize(alt)
            if form and form in folded_line and form in folded_doc:
                return True
    units = _units(line)
    if not units:
        return False
    return len(units & _units(doc_text)) / len(units) >= threshold


def attribution(summary: str, tag_to_doc: Mapping[int, str | None], doc_texts: Mapping[str, str],
                doc_facts: Mapping[str, Sequence[str]], item_facts: Sequence[str]) -> Attribution:
    """Check every (tagged line, tag) of the summary body against the document the tag names.

    `tag_to_doc` maps a tag number to the eval document it stands for (from the run's
    Sources list and summaries.jsonl); a number missing from it is an invented tag. A
    tagged line that says nothing but a file name ("[D2] docs/b.txt") is a heading: its
    tags count for the untagged lines under it, up to the next heading (an untagged file
    name or a Markdown heading ends it).
    """
    body, _ = split_summary(summary)
    result = Attribution()
    heading: list[int] = []
    for line in body.splitlines():
        if OVERVIEW.match(line):
            continue  # the groups named by code: no claim of any document's
        own = list(dict.fromkeys(tag_numbers(line)))
        text = strip_tags(_BULLET.sub("", line)).strip()
        if text.startswith("#") and not own:
            heading = []  # a Markdown heading starts a new section
            continue
        if own and not _units(_PATH.sub("", text)):
            heading = own
            result.headings += 1
            for k in own:
                if tag_to_doc.get(k) is None:
                    result.invented += 1
                    result.failures.append({"tag": f"D{k}", "line": line.strip(), "why": "names no input document"})
            continue
        if text and not _units(_PATH.sub("", text)):
            heading = []  # an untagged file name starts a section no tag names
            continue
        numbers = own or (heading if text else [])
        for k in numbers:
            result.pairs += 1
            doc = tag_to_doc.get(k)
            if doc is None:
                if own:
                    result.invented += 1
                result.failures.append({"tag": f"D{k}", "line": line.strip(), "why": "names no input document"})
            elif supports(text, doc_texts[doc], doc_facts.get(doc, ()), item_facts):
                result.supported += 1
            else:
                result.failures.append({"tag": f"D{k}", "doc": doc, "line": line.strip(), "why": "not supported"})
    return result


def coverage(summary: str, doc_ids: Sequence[str], doc_facts: Mapping[str, Sequence[str]],
             tag_to_doc: Mapping[int, str | None] | None = None) -> tuple[float, list[str]]:
    """Share of the item's documents whose facts or tag appear in the summary body; and the ones missed."""
    body, _ = split_summary(summary)
    text = strip_tags(body)
    folded = normalize(text)
    tagged = {tag_to_doc.get(k) for k in tag_numbers(body)} if tag_to_doc else set()
    missed = [d for d in doc_ids
              if d not in tagged and not any(fact_found(f, text, folded) for f in doc_facts.get(d, ()))]
    return (1 - len(missed) / len(doc_ids) if doc_ids else 1.0), missed


def words(text: str) -> int:
    """Whitespace-separated words (eojeol for Korean)."""
    return len(text.split())


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None (None if there are none)."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None
