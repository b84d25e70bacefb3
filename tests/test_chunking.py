"""Chunk spans: every character reaches the model, within the token budget, on the best break in reach."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.text import counting as tokens
from pipeline.text.chunking import Chunker
from pipeline.text.counting import BpeCounter, token_counter

COUNT = token_counter("gpt-4o-mini")
WORDS = ("harbor ferry battery council budget the and of to in for with is was on by that "
         "ridership schedule review shelter trial service route engineer report season").split()
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_invariants(text: str, chunker: Chunker) -> list[tuple[int, int]]:
    """Check every invariant the Chunker docstring promises; return the spans."""
    spans, tokens = chunker.spans(text)
    count, budget = chunker.count, chunker.chunk_tokens
    assert tokens == count(text)
    if tokens <= budget:
        assert spans == [(0, len(text))]
        return spans
    solid = [i for i, ch in enumerate(text) if not ch.isspace()]
    if not solid:
        assert spans == []
        return spans
    assert spans[0][0] == solid[0] and spans[-1][1] == solid[-1] + 1
    for start, end in spans:
        assert 0 <= start < end <= len(text)
        assert not text[start].isspace() and not text[end - 1].isspace()
        assert count(text[start:end]) <= budget
    for (start, end), (next_start, next_end) in zip(spans, spans[1:]):
        assert start < next_start and end < next_end
        if next_start < end:
            assert count(text[next_start:end]) <= chunker.overlap
            assert end - next_start <= (end - start) // 2
        else:
            assert text[end:next_start].strip() == ""
    covered = bytearray(len(text))
    for start, end in spans:
        covered[start:end] = b"\x01" * (end - start)
    assert all(covered[i] for i in solid)
    return spans


@st.composite
def prose(draw: st.DrawFn) -> str:
    """English-like paragraphs: words, sentence ends, line and paragraph breaks."""
    tokens = draw(st.lists(st.sampled_from([*WORDS, "1,450", "Dr.", "well-known"]) |
                           st.sampled_from([".", "!", "?", ",", "\n", "\n\n", "  "]), min_size=50, max_size=900))
    return " ".join(tokens).replace(" .", ".")


def characters(first: int, last: int, extra: str = "") -> st.SearchStrategy[str]:
    chars = st.characters(min_codepoint=first, max_codepoint=last)
    return chars | st.sampled_from(list(extra)) if extra else chars


TEXTS = st.one_of(
    prose(),
    prose().map(lambda t: t.replace("\n", "\r\n")),
    st.text(characters(0xAC00, 0xD7A3, " .?!\n"), min_size=50, max_size=2000),  # Hangul
    st.text(characters(0x3041, 0x30FF, "。！？、漢字文章") | characters(0x4E00, 0x4FFF),
            min_size=50, max_size=2000),  # Japanese without spaces
    st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789"), min_size=200, max_size=4000),
    st.tuples(prose(), st.integers(2, 6)).map(lambda p: "\n\n".join([p[0]] * p[1])),  # repeated paragraphs
    st.text(min_size=20, max_size=1500),  # any unicode, combining marks and controls included
)


@PROPERTY
@given(text=TEXTS, budget=st.integers(16, 300), overlap=st.none() | st.integers(0, 60))
def test_spans_keep_their_invariants(text: str, budget: int, overlap: int | None) -> None:
    assert_invariants(text, Chunker(budget, COUNT, overlap))


@PROPERTY
@given(text=TEXTS, budget=st.integers(16, 120))
def test_spans_keep_their_invariants_with_a_counter_that_is_not_bpe(text: str, budget: int) -> None:
    assert_invariants(text, Chunker(budget, words))


def words(text: str) -> int:
    """Count words and punctuation marks: a counter that is not BPE."""
    return len(re.findall(r"\w+|[^\w\s]", text))


@PROPERTY
@given(text=prose(), budget=st.integers(16, 300))
def test_a_chunk_never_splits_a_crlf_pair(text: str, budget: int) -> None:
    text = text.replace("\n", "\r\n")
    for start, end in Chunker(budget, COUNT).spans(text)[0]:
        assert text[start] != "\n" and text[end - 1] != "\r"


@PROPERTY
@given(text=st.text(max_size=400), budget=st.integers(16, 2000))
def test_a_text_that_fits_is_one_chunk_covering_it(text: str, budget: int) -> None:
    spans, tokens = Chunker(budget, COUNT).spans(text)

    if tokens <= budget:
        assert spans == [(0, len(text))]


def speech(paragraphs: int = 240) -> tuple[str, list[str]]:
    """Return a long speech-like document and its sentences."""
    rng = random.Random(7)
    sentences: list[str] = []
    body: list[str] = []
    for p in range(paragraphs):
        para = []
        for s in range(rng.randint(4, 9)):
            words = rng.choices(WORDS, k=rng.randint(8, 24))
            sentence = f"{words[0].capitalize()} {' '.join(words[1:])} ({p}.{s})" + rng.choice(".!?")
            para.append(sentence)
        sentences += para
        body.append(" ".join(para))
    return "Fellow citizens,\n\n" + "\n\n".join(body) + "\n", sentences


def test_a_long_speech_reaches_the_model_whole() -> None:
    text, sentences = speech()
    assert len(text.encode()) > 150_000
    chunker = Chunker(2000, COUNT)

    spans = assert_invariants(text, chunker)

    assert len(spans) > 10 and all(start >= 0 for start, _ in spans)
    chunks = [text[start:end] for start, end in spans]
    assert all(any(sentence in chunk for chunk in chunks) for sentence in sentences)


def test_a_four_megabyte_line_without_spaces_is_chunked() -> None:
    text = "".join(random.Random(1).choices("abcdefghijklmnopqrstuvwxyz0123456789", k=4_000_000))
    chunker = Chunker(2000, COUNT)

    spans, tokens = chunker.spans(text)

    assert tokens > 1_000_000 and spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(b - a > 0 and a2 <= b for (a, b), (a2, _) in zip(spans, spans[1:]))
    assert max(COUNT(text[a:b]) for a, b in spans[::50]) <= 2000


def test_a_text_over_the_encoder_limits_is_counted() -> None:
    # The encoder alone refuses 200,000 tokens or 1,000,000 characters at once.
    sample = "".join(random.Random(2).choices("abcdefghij klmnop\n", k=40_000))
    text = sample * 40

    tokens = COUNT(text)

    assert tokens > 200_000 and len(text) > 1_000_000
    assert abs(tokens - 40 * COUNT(sample)) <= 40


def test_a_model_the_tokenizer_does_not_know_still_gets_a_counter() -> None:
    assert token_counter("gpt-4")("hello world") == token_counter("no-such-model")("hello world") == 2


@PROPERTY
@given(st.text(max_size=300) | st.text(alphabet=st.sampled_from("ab 안녕\n\ud800\udc00.<|>"), max_size=300))
def test_the_compiled_core_counts_as_the_package_does(text: str) -> None:
    # Counting loads bpe-openai's compiled core alone; the package's encode_ordinary is the reference.
    import bpe_openai

    assert tokens._compiled_core() is not None
    for model in ("gpt-4o-mini", "cl100k_base", "no-such-model"):
        core = BpeCounter(model)
        reference = core.encoding  # the package's encoding for the same model (o200k_base when unknown)
        assert core.encode(text) == reference.encode_ordinary(text)
        assert core(text) == len(reference.encode_ordinary(text))  # counted without the list of tokens
    assert BpeCounter("no-such-model").encoding.name == bpe_openai.get_encoding("o200k_base").name


def test_counting_and_splitting_do_not_import_the_bpe_package() -> None:
    # Importing bpe_openai parses three encodings' rank tables in Python (~0.36 s, ~70 MB); neither
    # counting nor cutting a long document into chunks needs them.
    code = ("import sys; from pipeline.text.chunking import Chunker; from pipeline.text.counting import token_counter; "
            "count = token_counter('gpt-4o-mini'); n = count('hello world'); "
            "spans, _ = Chunker(50, count).spans('Ferries cross the bay at dawn. ' * 100); "
            "print(n, len(spans) > 10, 'bpe_openai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent, check=True).stdout.split()
    assert out == ["2", "True", "False"]


@pytest.mark.parametrize(("model", "encoding"), [
    ("gpt-4o-mini", "o200k_base"), ("cl100k_base", "cl100k_base"), ("voyage-3", "voyage3_base"),
    ("no-such-model", "o200k_base"),
])
def test_token_byte_lengths_from_the_rank_file_are_the_packages(model: str, encoding: str) -> None:
    import bpe_openai

    lengths = BpeCounter(model).byte_lengths()

    reference = [len(token) for token in bpe_openai.get_encoding(encoding).token_byte_values()]
    assert lengths == reference[:len(lengths)]  # the package's list goes on with its special tokens
    assert len(lengths) > 100_000


def test_without_the_rank_file_the_package_gives_byte_lengths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_rank_file_lengths", lambda name: None)

    lengths = BpeCounter("gpt-4o-mini").byte_lengths()

    assert lengths[:3] == [1, 1, 1] and len(lengths) > 200_000


def test_without_the_compiled_core_the_package_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_compiled_core", lambda: None)
    counter = BpeCounter("gpt-4o-mini")

    assert counter("hello world") == COUNT("hello world") == 2
    assert counter.encode("a\ud800b") == COUNT.encode("a\ud800b")


def test_a_model_whose_tables_would_be_downloaded_is_estimated_offline() -> None:
    # The package fetches gpt2's tables from the network; a run offline estimates with o200k_base.
    counter = token_counter("gpt2")

    assert counter("hello world") == 2
    assert len(counter.byte_lengths()) == len(token_counter("no-such-model").byte_lengths())


def test_overlap_aligns_on_a_sentence_start() -> None:
    text, _ = speech(60)

    spans, _ = Chunker(400, COUNT, overlap=60).spans(text)

    overlapping = [(a2, b) for (_, b), (a2, _) in zip(spans, spans[1:]) if a2 < b]
    assert overlapping
    assert all(text[start].isupper() for start, _ in overlapping)


@pytest.mark.parametrize("budget", [16, 1000])
def test_whitespace_only_text_gives_no_chunk_when_over_budget(budget: int) -> None:
    text = " \n\t" * 20_000

    spans, tokens = Chunker(budget, COUNT).spans(text)

    assert spans == ([(0, len(text))] if tokens <= budget else [])
