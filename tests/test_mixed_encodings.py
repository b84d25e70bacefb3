"""Files whose lines are in two encodings: UTF-8 beside cp949 (Korean) or a Western code page."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipeline.text.decoding import Decoded, decode_bytes
from tests.fake_openai import FakeOpenAI
from tests.test_formats import received

# The 2,350 syllables of KS X 1001, which Korean text is written in (cp949 codes the rest as extensions).
SYLLABLES = bytes(b for lead in range(0xB0, 0xC9)
                  for trail in range(0xA1, 0xFF) for b in (lead, trail)).decode("euc_kr")


def decode_twice(data: bytes) -> Decoded:
    """Decode as planning does, then as the summarize step does with the encoding found."""
    first = decode_bytes(data)
    assert first.skip_reason is None, first.skip_reason
    again = decode_bytes(data, first.encoding)
    assert again == first
    return first


def test_a_cp949_line_in_a_utf8_file_with_a_few_accents_is_sent_as_written(cli, fake: FakeOpenAI,
                                                                              tmp_path: Path) -> None:
    lines = ["Café opened in Zürich.\n", "제주 감귤 수확.\n", "The ferry runs daily from the harbor.\n"]
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"".join(line.encode("cp949" if i == 1 else "utf-8") for i, line in enumerate(lines)))

    result = cli(str(path), base_url=fake.base_url)

    assert result.code == 0
    assert received(fake)[str(path)] == ["".join(lines)]
    assert result.lines()[0]["encoding"] == "utf-8+cp949" and result.lines()[0]["replaced"] == 0


def test_a_cp949_line_in_a_utf8_file_with_a_few_accents_is_read_line_by_line() -> None:
    lines = ["Café opened in Zürich.\n", "제주 감귤 수확.\n", "The ferry runs daily from the harbor.\n"]
    data = b"".join(line.encode("cp949" if i == 1 else "utf-8") for i, line in enumerate(lines))

    decoded = decode_twice(data)

    assert decoded.text == "".join(lines)
    assert decoded.encoding == "utf-8+cp949" and decoded.replaced == 0
    assert "two encodings" in (decoded.warning or "")


def test_one_latin1_word_in_utf8_prose_is_a_replaced_character_not_a_second_encoding() -> None:
    # One or two high bytes that cp1252 reads as a letter are as likely stray bytes: they are
    # replaced and counted, with a warning, never guessed.
    lines = ["Café opened in Zürich.\n", "Caf\xe9 owners.\n", "The ferry runs daily.\n"]
    data = b"".join(line.encode("latin-1" if i == 1 else "utf-8") for i, line in enumerate(lines))

    decoded = decode_twice(data)

    assert decoded.text == "Café opened in Zürich.\nCaf\ufffd owners.\nThe ferry runs daily.\n"
    assert decoded.encoding == "utf-8" and decoded.replaced == 1 and "1 undecodable" in (decoded.warning or "")


def test_a_latin1_line_with_more_accents_in_utf8_prose_is_read_as_written() -> None:
    lines = ["Naïve café résumé, über alles.\n", "Señor Núñez sent regrets from Zürich.\n"]
    data = b"".join(line.encode("cp1252" if i == 1 else "utf-8") for i, line in enumerate(lines))

    decoded = decode_twice(data)

    assert decoded.text == "".join(lines) and decoded.encoding == "utf-8+cp1252"


@pytest.mark.parametrize("lines", [
    # "café" in UTF-8 is "caf챕" in cp949, "é" is "챕": the UTF-8 lines are Western, the cp949 ones Korean.
    [("Café opened in Zürich.\n", "utf-8"), ("제주 감귤 수확.\n", "cp949"), ("Second café line.\n", "utf-8"),
     ("O museu é grande.\n", "utf-8")],
    # "채" in cp949 is "ä" in UTF-8: here the UTF-8 lines are Korean.
    [("제주 감귤 수확.\n", "utf-8"), ("열매는 작지만 당도는 높았다.\n", "cp949"), ("채.\n", "cp949")],
], ids=["western-utf8", "korean-utf8"])
def test_a_line_that_reads_as_well_in_both_goes_the_way_the_files_other_lines_read(
        lines: list[tuple[str, str]]) -> None:
    decoded = decode_twice(b"".join(text.encode(encoding) for text, encoding in lines))

    assert decoded.text == "".join(text for text, _ in lines) and decoded.encoding == "utf-8+cp949"


def test_a_long_utf8_text_with_one_korean_line_whose_only_accent_is_at_a_word_end() -> None:
    lines = ["The city council met on Monday to discuss the budget.\n"] * 10
    lines += ["제주 감귤 수확량이 올해 12퍼센트 늘었다.\n", "Café owners welcomed the plan.\n"]
    data = b"".join(line.encode("cp949" if "제주" in line else "utf-8") for line in lines)

    assert decode_twice(data).text == "".join(lines)


HANGUL_WORD = st.text(st.sampled_from(SYLLABLES), min_size=1, max_size=5)
ASCII_WORD = st.sampled_from(["2024", "PDF", "report", "OK", "12", "A", "budget", "Seoul", "v2.1"])
# Not "·": in UTF-8 it is C2 B7, the syllable 쨌 in cp949, so a line with no other non-ASCII reads both ways.
PUNCTUATION = st.sampled_from([".", ",", "!", "?", ":", " -", " (1)", "…", "“", "”", "「", "」"])


@st.composite
def korean_lines(draw: st.DrawFn) -> str:
    """A line of Korean text: Hangul words, a few ASCII words and numbers, punctuation."""
    glued = st.tuples(ASCII_WORD, HANGUL_WORD).map("".join)  # a particle after an English word: "PDF를"
    words = draw(st.lists(st.one_of(HANGUL_WORD, HANGUL_WORD, ASCII_WORD, glued), min_size=1, max_size=10))
    return " ".join(word + draw(st.one_of(st.just(""), PUNCTUATION)) for word in words) + "\n"


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.tuples(korean_lines(), st.sampled_from(["utf-8", "cp949"])), min_size=2, max_size=12))
def test_lines_in_utf8_and_cp949_each_come_out_as_written(lines: list[tuple[str, str]]) -> None:
    data = b"".join(text.encode(encoding) for text, encoding in lines)
    # The UTF-8 lines say the file is Korean: a few random syllables alone read as well as Chinese in GB2312.
    assume(any(encoding == "utf-8" and any(c in SYLLABLES for c in text) for text, encoding in lines))
    # Korean in cp949: two bytes that read as "…" and nothing else are as likely stray bytes in UTF-8.
    assume(any(encoding == "cp949" and any(c in SYLLABLES for c in text) for text, encoding in lines))
    try:
        data.decode("utf-8")
        assume(False)  # every cp949 line happens to be valid UTF-8 too: the file is UTF-8 by any reading
    except UnicodeDecodeError:
        pass

    decoded = decode_twice(data)

    assert decoded.text == "".join(text for text, _ in lines)
    assert decoded.encoding == "utf-8+cp949" and decoded.replaced == 0


WESTERN = ["The committee met at the café on Elm Street.", "Mrs. Müller chaired the meeting.",
           "The façade repairs cost 3,450 euros.", "A naïve estimate was rejected.",
           "Coffee was served, as always.", "Señor Núñez sent his regrets."]
KOREAN = ["제주 감귤 수확이 11월 초에 시작되었다.", "여름 강수량이 적어 열매는 작지만 당도는 높았다.",
          "농협은 PDF로 된 보고서를 냈다.", "가격은 작년보다 조금 올랐다."]


@settings(max_examples=150, deadline=None)
@given(western=st.lists(st.sampled_from(WESTERN), min_size=1, max_size=12),
       korean=st.lists(st.tuples(st.sampled_from(KOREAN), st.floats(0, 1)), min_size=1, max_size=3))
def test_korean_lines_in_cp949_among_western_utf8_prose_come_out_as_written(
        western: list[str], korean: list[tuple[str, float]]) -> None:
    # No UTF-8 line has accents enough to prove itself; the cp949 lines' errors outnumber them all.
    lines = [(line, "utf-8") for line in western]
    for line, where in korean:
        lines.insert(int(where * len(lines)), (line, "cp949"))
    assume(any(not text.isascii() for text, encoding in lines if encoding == "utf-8"))

    decoded = decode_twice(b"".join((text + "\n").encode(encoding) for text, encoding in lines))

    assert decoded.text == "".join(text + "\n" for text, _ in lines)
    assert decoded.encoding == "utf-8+cp949" and decoded.replaced == 0
