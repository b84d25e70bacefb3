"""The answer checks' quick paths say what their plain definitions say, on any text.

The checks run on every answer of every run, so each takes a shortcut where it can: a
regex per kind of token instead of a loop over tokens, a count of repeated words before
looking for a looping phrase, a look at a sentence's last character. Each shortcut must
keep or drop exactly what the plain definition would; these properties hold them to it
on texts of every script, mark and spacing.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.answers.checks import BULLET, _instruction_shingles, _is_filler, _loop_start, _shingles, _words, clean
from pipeline.answers.citations import retag
from pipeline.answers.grounding import Source, facts, letter_words, source_terms, token_facts, token_terms

_PIECES = (
    "The", "the", "Again", "Linden", "iPhone", "ferry", "Ab", "x", "However", "Also", "In", "Document", "summary",
    "1999", "1,450", "3.5", "12:30", "7", "2010.", "12Abc", "[D3]", "[D1, D2]", "-", "- ", "* ", "1. ", "**", "#",
    ".", ",", "!", "?", ":", ";", "(", ")", "_", " ", " ", " ", "  ", ". ", " .", ",.", "\n", "\n\n", " \n ", "\t",
    "\xa0", "\u2028", "\x1c", "\r\n", "한국어", "육아휴직", "한", "다.", "東京", "。", "Émile", "İstanbul", "ſ", "②대한", "²",
)
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)
_ASCII_TEXT = st.lists(st.sampled_from([p for p in _PIECES if p.isascii()]), max_size=40).map("".join)

# The plain definitions the shortcuts stand for.
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\s*\n\s*")  # a sentence ends after . ! ? and a space, or at a line break
_ENDS = (".", "!", "?", "。", "！", "？", "다", ":", ";", ",")
_FILLER = re.compile("|".join((
    r"(?:sure|certainly|okay|of course)\s*[,.!:].{0,60}",
    r"(?:here(?:'s| is| are)|below (?:is|are))\b.*[:：]",
    r"(?:the )?(?:key points|summary|bullet points|merged list)\b[^:]{0,40}[:：]",
    r"(?:다음은|아래는|요약하면)\b.*(?:[:：]|같습니다\.?)",
    r".*\b(?:is|are|was|were|written|answered|summari[sz]ed|provided) in (?:english|korean|japanese|chinese)\b.*",
    r".*(?:한국어|영어|일본어|중국어)로\s*(?:작성|답변|요약|쓰여|기술|되어)\S*.*",
)), re.IGNORECASE)


def _sentences(text: str) -> tuple[list[tuple[int, int]], list[set[str]], set[int]]:
    """A chunk's sentences, their terms and its headings, one cut at a time."""
    spans, terms, headings = [], [], set()
    at = 0
    for cut in [*_SENTENCE_END.finditer(text), None]:
        end = cut.start() if cut else len(text)
        if segment := text[at:end].strip():
            if (at == 0 or text[at - 1] == "\n") and (cut is None or "\n" in cut.group()) \
                    and not segment.endswith(_ENDS) and len(segment.split()) <= 5:
                headings.add(len(spans))
            spans.append((at, end))
            terms.append(token_terms(segment))
        at = cut.end() if cut else end
    return spans, terms, headings


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_a_chunk_is_cut_into_the_sentences_terms_and_headings_of_its_definition(text: str) -> None:
    source = Source(text)
    assert (source.sentences, source.terms, source.headings) == _sentences(text)
    assert source.every == set().union(*source.terms)


@settings(max_examples=300, deadline=None)
@given(_ASCII_TEXT)
def test_an_english_point_has_the_names_numbers_and_words_of_its_tokens(text: str) -> None:
    assert facts(text) == token_facts(BULLET.sub("", retag(text, lambda k: None)))
    assert source_terms(text) == token_terms(text)


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_words_holding_a_letter_are_counted_as_split_words(text: str) -> None:
    assert letter_words(text) == sum(1 for word in text.split() if re.search(r"[^\W\d_]", word))


_FILLER_PIECES = ("sure", "Sure", "of course", "here's", "Here are", "below is", "the ", "key points", "summary",
                  "merged list",
                  "다음은", "요약하면", "같습니다.", "is", "are", "written", "summarised", "in", "ın", "İn", "IN", "english",
                  "Korean", "\u212aorean", "chineſe", "한국어", "일본어", "로", "작성", "되었습니다", ",", ".", "!", ":", "：",
                  " ", " ", "  ", "x", "ferry", "1999", "-")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_FILLER_PIECES), min_size=1, max_size=20).map("".join))
def test_a_line_is_filler_exactly_when_the_filler_pattern_matches_all_of_it(line: str) -> None:
    bare = line.strip()
    assert _is_filler(bare) == bool(_FILLER.fullmatch(bare))


def _first_third(words: list[str]) -> int | None:
    seen: dict[tuple[str, ...], list[int]] = {}
    for i in range(len(words) - 3):
        at = seen.setdefault(tuple(words[i:i + 4]), [])
        at.append(i)
        if len(at) == 3:
            return at[1]
    return None


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from("a b c d the ferry".split()), max_size=30))
def test_a_loop_is_where_a_four_word_phrase_starts_its_second_of_three_times(words: list[str]) -> None:
    assert _loop_start(words) == _first_third(words)


_INSTRUCTIONS = "Write at most 5 bullet points, each one complete sentence stating one of the document's main facts."


_OTHER = st.lists(st.sampled_from(["ferry", "the", "one", "of", "facts", "harbor", "points"]), max_size=6)


@settings(max_examples=400, deadline=None)
@given(_OTHER, st.integers(0, 16), st.integers(3, 9), _OTHER)
def test_a_line_that_copies_six_words_of_the_instructions_is_never_let_through_by_the_first_look(
        before: list[str], start: int, length: int, after: list[str]) -> None:
    words = [*before, *_INSTRUCTIONS.split()[start:start + length], *after]
    line = "- " + " ".join(words)
    copied = bool(_shingles(_words(line), 6) & _instruction_shingles(_INSTRUCTIONS))
    cleaned, done = clean("The ferry carried 1,450 people in August.\n" + line, (_INSTRUCTIONS,))
    if copied and not _FILLER.fullmatch(line[2:]):
        assert done["echo"] == 1 and line not in cleaned.splitlines()
    if not copied:
        assert done["echo"] == 0
