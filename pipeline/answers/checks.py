"""Check a model's answer before it is used: the language it is in, copied instructions, loops.

Small models fail in a few recognisable ways: they answer in English whatever they were
told, they copy the instructions into the answer ("Provides examples of key
information", "이는 한국어로 작성되었습니다"), they open with filler ("Here are the bullet
points:"), and they loop, repeating a line, a section or a phrase until the token cap.
`clean` takes out what can be taken out (whole lines, or a line's looping tail) and
says what it did; `in_language` tells whether an answer is in the script its language
is written in, so that the caller can ask once more, more firmly.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable
from typing import NamedTuple

from pipeline.answers.citations import retag
from pipeline.text.language import HAN, HANGUL, KANA, LETTER

# Scripts whose presence or absence is unmistakable; languages in Latin script are told
# apart only from languages in these.
_SCRIPTS = {"Korean": (HANGUL,), "Japanese": (KANA, HAN), "Chinese": (HAN,)}
_NON_LATIN = re.compile(r"[\u0370-\u03ff\u0400-\u04ff\u0590-\u06ff\u0900-\u0dff\u0e00-\u0eff"
                        r"\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u4e00-\u9fff\uac00-\ud7a3]")
_LATIN_LANGUAGES = frozenset({
    "English", "German", "French", "Spanish", "Portuguese", "Italian", "Dutch", "Swedish", "Danish",
    "Norwegian", "Finnish", "Polish", "Czech", "Slovak", "Hungarian", "Romanian", "Turkish", "Indonesian",
    "Malay", "Vietnamese", "Croatian", "Slovenian", "Estonian", "Latvian", "Lithuanian", "Catalan"})
_MIN_SHARE = 0.3

# Lines that talk about the answer instead of the documents: filler before a list, and
# remarks on the language or the format the model was asked for. Matched on short lines
# only, without their bullet mark.
_FILLER = re.compile("|".join((
    r"(?:sure|certainly|okay|of course)\s*[,.!:].{0,60}",
    r"(?:here(?:'s| is| are)|below (?:is|are))\b.*[:：]",
    r"(?:the )?(?:key points|summary|bullet points|merged list)\b[^:]{0,40}[:：]",
    r"(?:다음은|아래는|요약하면)\b.*(?:[:：]|같습니다\.?)",
)), re.IGNORECASE)
# Remarks on the language anywhere in a line: "... is written in English ...", "... 한국어로 작성 ...". The first
# opens on " in ", which the regex engine looks for as one string; the verb before it is looked behind for.
_VERBS = ("is", "are", "was", "were", "written", "answered", "summarized", "summarised", "provided")
_IN_LANGUAGE = re.compile(r" in (?:" + "|".join(rf"(?<=\b{verb} in )" for verb in _VERBS)
                          + r")(?:english|korean|japanese|chinese)\b", re.IGNORECASE)
_IN_KOREAN = re.compile(r"(?:한국어|영어|일본어|중국어)로\s*(?:작성|답변|요약|쓰여|기술|되어)", re.IGNORECASE)
# The remark as the whole text, where a line break may come only in the spaces after "로".
_IN_KOREAN_LINE = re.compile(r"[^\n]*" + _IN_KOREAN.pattern + r"\S*[^\n]*", re.IGNORECASE)
_FILLER_MAX_WORDS = 15
BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")  # a Markdown bullet's mark: "- ", "* ", "• ", "1. ", "2) "
WORD = re.compile(r"\w+", re.UNICODE)
_ECHO_WORDS = 6  # this many instruction words in a row, in an answer, is a copy
_LOOP_NGRAM = 4
_LOOP_REPEATS = 3


def in_language(text: str, language: str | None) -> bool:
    """Whether `text` is written in `language`'s script (True when that cannot be told)."""
    if not language:
        return True
    base = language.split(" (")[0]
    if text.isascii() and base not in _SCRIPTS:
        return True  # no letter outside Latin script: right for a Latin-script language, or unknowable
    plain = retag(text, lambda k: None)
    letters = len(LETTER.findall(plain))
    if letters < 20:  # too short to judge
        return True
    if scripts := _SCRIPTS.get(base):
        return sum(len(script.findall(plain)) for script in scripts) >= letters * _MIN_SHARE
    if base in _LATIN_LANGUAGES:
        return len(_NON_LATIN.findall(plain)) < letters * _MIN_SHARE
    return True


def _words(text: str) -> list[str]:
    if text.isascii():  # lower case changes no word's bounds in ASCII: one pass of the regex engine
        return WORD.findall(text.lower())
    return [w.lower() for w in WORD.findall(text)]


def _shingles(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


class _Echo(NamedTuple):
    """A call's instructions as shingles, with what a line must hold to share one: cheap tests before the shingles."""

    shingles: frozenset[tuple[str, ...]]
    vocabulary: frozenset[str]  # every word of every shingle
    fewest: int  # the fewest distinct words a shingle holds


@functools.lru_cache(maxsize=64)
def _echo_shingles(instructions: tuple[str, ...]) -> _Echo:
    """The shingles of all of a call's instructions together (a handful of distinct sets per run)."""
    shingles = frozenset().union(*map(_instruction_shingles, instructions))
    return _Echo(shingles, frozenset(w for shingle in shingles for w in shingle),
                 min((len(set(shingle)) for shingle in shingles), default=0))


def _is_filler(bare: str) -> bool:
    """Whether a line, without its bullet mark, is filler or a remark on the answer's language."""
    if _FILLER.fullmatch(bare):
        return True
    if "\n" in bare:  # never in a line; "." matches no line break, only the spaces after "로" may span one
        return bool(_IN_KOREAN_LINE.fullmatch(bare))
    return bool(_IN_LANGUAGE.search(bare) or ("로" in bare and _IN_KOREAN.search(bare)))


def _may_be_filler(bare: str) -> bool:
    """A cheap first look: every kind of filler line has one of these (the full pattern decides)."""
    low = bare.lower()
    return ":" in low or "：" in low or " in " in low or "로" in low or "같습니다" in low \
        or low.startswith(("sure", "certainly", "okay", "of course"))


@functools.lru_cache(maxsize=64)
def _instruction_shingles(text: str) -> frozenset[tuple[str, ...]]:
    """Every run of _ECHO_WORDS words in an instruction; a run handful of distinct ones per run."""
    return frozenset(_shingles(_words(text), _ECHO_WORDS))


def _loop_start(words: list[str]) -> int | None:
    """The index of the word where a phrase starts repeating, when it comes a third time; None if none does."""
    if len(words) - len(set(words)) < _LOOP_REPEATS - 1:
        return None  # a phrase that comes a third time brings its first word a third time
    counts = Counter(words)
    if max(counts.values()) < _LOOP_REPEATS:
        return None
    seen: dict[tuple[str, ...], list[int]] = {}
    for i in range(len(words) - _LOOP_NGRAM + 1):
        if counts[words[i]] < _LOOP_REPEATS:
            continue
        at = seen.setdefault(tuple(words[i:i + _LOOP_NGRAM]), [])
        at.append(i)
        if len(at) == _LOOP_REPEATS:
            return at[1]
    return None


def _cut_at_word(line: str, index: int) -> str:
    start = next((m.start() for i, m in enumerate(WORD.finditer(line)) if i == index), len(line))
    return line[:start].rstrip(" ,;:-") + " …"


def clean(answer: str, instructions: Iterable[str] = ()) -> tuple[str, Counter[str]]:
    """Drop filler, copied instructions and repeated lines from an answer; cut looping lines short.

    Returns the cleaned answer and counts of what was done (`echo`, `filler`,
    `repeated_line`, `loop`). A repeated heading ends the answer there: what follows
    is the model starting over. An answer that would be left empty is kept as it was.
    """
    done: Counter[str] = Counter()
    echo = _echo_shingles(tuple(instructions))
    kept: list[str] = []
    seen: set[str] = set()
    headings: set[str] = set()
    for line in answer.splitlines():
        stripped = line.strip()
        if not stripped:
            kept.append(line)
            continue
        untagged = retag(stripped, lambda k: None) if "[" in stripped else stripped
        words = _words(untagged)
        norm = " ".join(words)
        if stripped.startswith("#") or (stripped.startswith("**") and stripped.endswith("**")):
            if norm in headings:
                done["repeated_heading"] += 1
                break
            headings.add(norm)
        bare = BULLET.sub("", stripped)
        if len(words) <= _FILLER_MAX_WORDS + 2 and _may_be_filler(bare) and _is_filler(bare):
            done["filler"] += 1
            continue
        if echo.shingles and len(words) >= _ECHO_WORDS and len(echo.vocabulary.intersection(words)) >= echo.fewest \
                and _shingles(words, _ECHO_WORDS) & echo.shingles:
            done["echo"] += 1
            continue
        if norm and norm in seen:
            done["repeated_line"] += 1
            continue
        seen.add(norm)
        if len(words) >= _LOOP_NGRAM * _LOOP_REPEATS \
                and (loop := _loop_start(_words(line) if untagged != stripped else words)) is not None:
            done["loop"] += 1
            line = _cut_at_word(line, loop)
        kept.append(line)
    text = "\n".join(kept).strip()
    if not text:
        return answer.strip(), Counter()
    return text, done


_LABEL_FIRST = re.compile(r"\s*(?:\[[^\]]*\])?\s*[-:–—]\s+")


def drop_labels(answer: str, labels: Iterable[str]) -> tuple[str, int]:
    """Drop the lines of a reduce answer that only repeat a summary's label line ("[D1] data/a.txt").

    Small models copy the layout of what they merge: a heading per document naming its
    file, sometimes with a phrase in place of the tag. The Sources list names the files;
    such a line says nothing. A line that names a file among other words is kept.
    """
    names = {label.split(" (part ")[0] for label in labels if label}
    kept, dropped = [], 0
    for line in answer.splitlines():
        bare = BULLET.sub("", line.strip().lstrip("#").strip()).strip("*_`: ")
        name = next((n for n in names if n in bare), None)
        if name is not None:
            rest = re.sub(r"[`*_]+", "", bare.replace(name, " ", 1))  # the name set off in code or bold marks
            if re.fullmatch(r"\s*\[[^\]]*\][\s:*_`-]*", rest) or len(_words(retag(rest, lambda k: None))) <= 3:
                dropped += 1
                continue
            if (copied := _LABEL_FIRST.match(rest)) and bare.startswith(("[", name)):
                dropped += 1  # the label, then a point on the same line: keep the point, as a bullet
                line = "- " + rest[copied.end():].strip()
        kept.append(line)
    return ("\n".join(kept), dropped) if any(line.strip() for line in kept) else (answer, 0)


# Everything `clean` and the language retry count, in the order the report lists them.
ANSWER_CHECKS = ("language_retried", "wrong_language", "echo", "filler", "repeated_line", "loop",
                 "repeated_heading", "label_line", "heading", "label", "prose_sentence", "invented_name",
                 "invented_number", "unsupported_point", "title_point", "fragment", "padding_point", "extracted", "backfilled", "header_point", "concatenation", "nothing_held",
                 "restored_join")
