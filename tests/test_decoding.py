"""Decoding a file's bytes: Unicode without a BOM, legacy code pages, stray bytes, mixed lines, mojibake."""

from __future__ import annotations

import gzip
import io
import random
import unicodedata
import zipfile

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipeline.text.decoding import Decoded, decode_bytes

ENGLISH = ("The library opened a reading room for night-shift workers last spring. It stays open until "
           "four in the morning and lends laptops for the evening. Visits doubled by the autumn.\n")
KOREAN = ("올해 봄 동네 도서관이 야간 근무자를 위한 열람실을 열었다. 열람실은 새벽 네 시까지 문을 열고 "
          "저녁마다 노트북을 빌려준다. 가을이 되자 방문객이 두 배로 늘었고, 직원들은 시의회에 시간제 "
          "인력 두 명을 더 요청했다.\n")
JAPANESE = ("昨年の春、町の図書館は夜勤で働く人のための閲覧室を開いた。閲覧室は朝の四時まで開いていて、"
            "夕方にはノートパソコンを貸し出している。秋には利用者が二倍になり、職員は市議会に"
            "パートタイムの職員をもう二人求めた。\n")
CHINESE_TRADITIONAL = ("去年春天，鎮上的圖書館為夜班工作者開設了一間閱覽室。閱覽室一直開到清晨四點，"
                       "晚上還出借筆記型電腦。到了秋天，來訪人數增加了一倍，館員向市議會申請再增加兩個兼職職位。\n")
CHINESE_SIMPLIFIED = ("去年春天，镇上的图书馆为夜班工作者开设了一间阅览室。阅览室一直开到清晨四点，"
                      "晚上还出借笔记本电脑。到了秋天，来访人数增加了一倍，馆员向市议会申请再增加两个兼职岗位。\n")
RUSSIAN = ("Прошлой весной городская библиотека открыла читальный зал для тех, кто работает в ночную смену. "
           "Зал открыт до четырёх утра, а по вечерам там можно взять ноутбук. К осени посетителей стало "
           "вдвое больше, и сотрудники попросили у городского совета ещё две ставки.\n")
TEXTS = {"English": ENGLISH, "Korean": KOREAN, "Japanese": JAPANESE, "Chinese (traditional)": CHINESE_TRADITIONAL,
         "Chinese (simplified)": CHINESE_SIMPLIFIED, "Russian": RUSSIAN}


def decode_twice(data: bytes) -> Decoded:
    """Decode as planning does, then as the summarize step does with the encoding found."""
    first = decode_bytes(data)
    assert first.skip_reason is None, first.skip_reason
    assert first.encoding is not None
    again = decode_bytes(data, first.encoding)
    assert again == first
    return first


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("language", list(TEXTS))
def test_unicode_without_a_byte_order_mark_is_read(language: str, encoding: str) -> None:
    decoded = decode_twice(TEXTS[language].encode(encoding))

    assert decoded.text == TEXTS[language]
    assert decoded.encoding == encoding and decoded.replaced == 0 and not decoded.repaired


@pytest.mark.parametrize(("language", "encoding"), [
    ("Korean", "cp949"), ("Korean", "euc-kr"), ("Korean", "iso2022_kr"),
    ("Japanese", "shift_jis"), ("Japanese", "cp932"), ("Japanese", "euc-jp"), ("Japanese", "iso2022_jp"),
    ("Chinese (traditional)", "big5"), ("Chinese (simplified)", "gb2312"), ("Chinese (simplified)", "gbk"),
    ("Chinese (simplified)", "gb18030"), ("Russian", "koi8-r"), ("Russian", "cp1251"),
])
def test_legacy_encodings_are_recognised(language: str, encoding: str) -> None:
    text = TEXTS[language] * 2  # a few hundred bytes, like a short real document

    decoded = decode_twice(text.encode(encoding))

    assert decoded.text == text
    assert decoded.replaced == 0 and decoded.warning is None


@pytest.mark.parametrize("text", ["안녕", "회의는 3시입니다.", "Re: 견적서", "감사합니다", "첨부 파일 확인 부탁드립니다"])
def test_short_korean_in_cp949_comes_out_korean(text: str) -> None:
    assert decode_twice(text.encode("cp949")).text == text


@pytest.mark.parametrize("text", [
    "Café crème, à bientôt. Größe: 3 €.\n",
    "Ça coûte cher, mais l'été fut très réussi à Genève.\n",
])
def test_western_text_stays_western(text: str) -> None:
    assert decode_twice(text.encode("cp1252")).text == text
    assert decode_twice(text.encode("utf-8")).text == text


def test_clean_utf8_reports_nothing_to_worry_about() -> None:
    for text in (ENGLISH, KOREAN):
        decoded = decode_twice(text.encode("utf-8"))

        assert decoded.text == text and decoded.encoding == "utf-8"
        assert (decoded.repaired, decoded.replaced, decoded.warning) == (False, 0, None)


@pytest.mark.parametrize("shape", ["CRLF", "CR", "NFD"])
def test_line_breaks_and_decomposed_letters_are_not_reported_as_repairs(shape: str) -> None:
    text = "Café crème at the Genève office.\n" + KOREAN
    data = {"CRLF": text.replace("\n", "\r\n"), "CR": text.replace("\n", "\r"),
            "NFD": unicodedata.normalize("NFD", text)}[shape].encode("utf-8")

    decoded = decode_twice(data)

    assert decoded.text == text  # line breaks and composed letters as the rest of the pipeline expects
    assert (decoded.repaired, decoded.warning) == (False, None)


def test_mojibake_in_a_crlf_file_is_still_reported() -> None:
    decoded = decode_twice("café – naïve\r\n".encode("utf-8").decode("cp1252").encode("utf-8"))

    assert decoded.text == "café – naïve\n" and decoded.repaired and decoded.warning


def test_a_few_stray_bytes_in_utf8_are_replaced_not_skipped() -> None:
    lines = [KOREAN] * 150  # about 36 KB
    pieces = [line.encode("utf-8") for line in lines]
    for i, stray in ((10, b"\xff"), (70, b"\x80"), (140, b"\xc0")):
        pieces[i] = pieces[i][:30] + stray + pieces[i][30:]  # between two characters

    decoded = decode_twice(b"".join(pieces))

    assert decoded.encoding == "utf-8"
    assert decoded.replaced == 3 and "3 undecodable" in (decoded.warning or "")
    assert decoded.text.replace("\ufffd", "") == "".join(lines)


def test_a_character_written_as_u_fffd_is_not_counted_as_replaced() -> None:
    decoded = decode_twice("표 \ufffd 칸\n".encode("utf-8") + b"\xff" + "끝\n".encode("utf-8") * 20)

    assert decoded.replaced == 1 and decoded.text.count("\ufffd") == 2


def test_a_legacy_file_cut_off_mid_character_keeps_all_but_that_character() -> None:
    data = KOREAN.encode("cp949") + "끝".encode("cp949")[:1]

    decoded = decode_twice(data)

    assert decoded.text == KOREAN + "\ufffd" and decoded.replaced == 1


def test_short_lines_that_happen_to_be_valid_utf8_stay_in_the_legacy_encoding() -> None:
    # 책 and 창 are C3 A5 and C3 A2 in cp949: "å" and "â" in UTF-8.
    text = "1. 책\n" + KOREAN + "2. 창 찾기\n" + KOREAN

    decoded = decode_twice(text.encode("cp949"))

    assert decoded.text == text and decoded.encoding == "cp949"


@pytest.mark.parametrize(("language", "legacy"), [("Japanese", "shift_jis"), ("Russian", "cp1251")])
def test_sentences_alternating_utf8_and_a_legacy_encoding_are_read(language: str, legacy: str) -> None:
    sentences = [s + "\n" for s in TEXTS[language].replace("。", "。\n").replace(". ", ".\n").split("\n") if s]
    data = b"".join(s.encode("utf-8" if i % 2 else legacy) for i, s in enumerate(sentences))

    decoded = decode_twice(data)

    assert decoded.text == "".join(sentences) and decoded.encoding.startswith("utf-8+")


def test_paragraphs_in_utf8_and_cp949_are_each_read_in_their_own_encoding() -> None:
    paragraphs = [KOREAN, "두 번째 문단은 예전 편집기로 저장되어 인코딩이 다르다.\n\n",
                  "세 번째 문단은 다시 UTF-8로 저장되었다.\n", "마지막 문단도 예전 도구로 고쳤다. 끝.\n"]
    data = b"".join(p.encode("utf-8" if i % 2 == 0 else "cp949") for i, p in enumerate(paragraphs))

    decoded = decode_twice(data)

    assert decoded.text == "".join(paragraphs)
    assert decoded.encoding == "utf-8+cp949" and decoded.replaced == 0
    assert "two encodings" in (decoded.warning or "")


@pytest.mark.parametrize("misread_as", ["cp1252", "latin-1"])
def test_korean_saved_as_mojibake_is_restored(misread_as: str) -> None:
    mojibake = KOREAN.encode("cp949").decode(misread_as)

    decoded = decode_twice(mojibake.encode("utf-8"))

    assert decoded.text == KOREAN
    assert decoded.repaired and decoded.encoding == "utf-8>cp949"


def test_utf8_read_as_cp1252_is_still_repaired() -> None:
    mojibake = "café – naïve ‘quotes’".encode("utf-8").decode("cp1252")

    decoded = decode_twice(mojibake.encode("utf-8"))

    assert decoded.text == "café – naïve ‘quotes’" and decoded.repaired


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("notes.txt", KOREAN * 20)
    return buffer.getvalue()


ELF_HEADER = (b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x02\x00\x3e\x00\x01\x00\x00\x00"
              + b"\x40\x10\x40\x00\x00\x00\x00\x00" + b"\x40\x00\x00\x00\x00\x00\x00\x00" + bytes(40))


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200),
    _zip(),
    random.Random(7).randbytes(4096),
    random.Random(8).randbytes(4096).replace(b"\x00", b"\x01"),
    ELF_HEADER,
    gzip.compress(ENGLISH.encode() * 30),
    bytes(1000),
], ids=["png", "zip", "random", "random-without-nul", "elf", "gzip", "zeros"])
def test_binaries_are_still_skipped(data: bytes) -> None:
    assert "binary" in (decode_bytes(data).skip_reason or "")


# Letters, digits and punctuation of the scripts the pipeline meets, with spaces and line breaks.
# Left out on purpose: "&" and "\r" (ftfy may rewrite HTML entities and line breaks), controls,
# and Latin-1 letters (a string of them can be genuine mojibake, which is repaired by design).
ALPHABET = st.one_of(
    st.sampled_from([c for c in map(chr, range(0x20, 0x7F)) if c != "&"] + ["\n"]),
    st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3),  # Hangul syllables
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # CJK ideographs
    st.characters(min_codepoint=0x3041, max_codepoint=0x3096),  # hiragana, without the combining
    st.characters(min_codepoint=0x30A1, max_codepoint=0x30FA),  # sound marks that NFC would fold in
    st.characters(min_codepoint=0x0410, max_codepoint=0x044F),  # Russian
)


@settings(max_examples=300, deadline=None)
@given(text=st.text(ALPHABET, min_size=1, max_size=200),
       encoding=st.sampled_from(["utf-8", "utf-16-le", "utf-16-be"]))
def test_unicode_text_round_trips(text: str, encoding: str) -> None:
    # Whitespace-only text is skipped by design. Without a BOM, UTF-16's byte order shows in where
    # ASCII characters put their NUL byte; characters such as U+4E00 put theirs on the other side.
    # Where those are as many as the ASCII ones the order is a coin toss (is it "0儀" or "\u3000Q"?),
    # and with no NUL byte at all a few random ideographs are as likely a legacy code page. Without
    # a BOM, UTF-16 is taken only when its NULs say so beyond doubt: ASCII in half the characters.
    assume(text.strip())
    if encoding != "utf-8":
        ascii_chars = sum(c.isascii() for c in text)
        assume(ascii_chars > 2 * sum(ord(c) % 256 == 0 for c in text if not c.isascii()))
        assume(ascii_chars >= max(2, len(text) / 2))

    decoded = decode_twice(text.encode(encoding))

    assert decoded.text == text


# Sentences of Western prose with a few accented letters each, as minutes, mail and reports have.
WESTERN = ["The committee met at the café on Elm Street.", "Mrs. Müller chaired the meeting.",
           "The façade repairs cost 3,450 euros.", "A naïve estimate was rejected.",
           "Coffee was served, as always.", "The next meeting is on 9 April.",
           "Señor Núñez sent his regrets.", "Attendance: seventeen households."]


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.lists(st.sampled_from(WESTERN), min_size=1, max_size=3).map(" ".join),
                      min_size=1, max_size=30),
       stray=st.sampled_from([0x80, 0x92, 0x9D, 0xC0, 0xFF]), where=st.floats(0, 1))
def test_utf8_prose_with_one_stray_byte_stays_utf8(lines: list[str], stray: int, where: float) -> None:
    # No line has enough accented letters to prove UTF-8 by itself; the file as a whole does.
    text = "\n".join(lines) + "\n"
    assume(any(not c.isascii() for c in text))
    cut = text.find(" ", int(len(text) * where))  # between two characters, never inside one's bytes
    cut = cut if cut >= 0 else text.rfind(" ")
    data = text[:cut].encode() + bytes([stray]) + text[cut:].encode()

    decoded = decode_twice(data)

    assert decoded.encoding == "utf-8"
    assert decoded.text == text[:cut] + "\ufffd" + text[cut:]
    assert decoded.replaced == 1 and "1 undecodable" in (decoded.warning or "")


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(st.sampled_from(WESTERN), min_size=1, max_size=30), encoding=st.sampled_from(["cp1252", "latin-1"]))
def test_the_same_prose_in_a_western_code_page_is_still_read_as_such(lines: list[str], encoding: str) -> None:
    text = "\n".join(lines) + "\n"
    assume(any(not c.isascii() for c in text))

    assert decode_twice(text.encode(encoding)).text == text


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(st.sampled_from(WESTERN), min_size=1, max_size=12).map(lambda l: ("\n".join(l) + "\n").encode()),
       places=st.lists(st.floats(0, 1), min_size=1, max_size=3))
def test_stray_nul_bytes_in_text_are_dropped_and_counted_never_utf16(lines: bytes, places: list[float]) -> None:
    data = lines
    for where in places:
        cut = int(len(data) * where)
        while cut < len(data) and 0x80 <= data[cut] < 0xC0:  # between characters, never inside one
            cut += 1
        data = data[:cut] + b"\x00" + data[cut:]

    decoded = decode_twice(data)

    assert decoded.text == lines.decode()
    assert f"{len(places)} stray NUL byte(s) dropped" in (decoded.warning or "")


def test_a_short_ascii_note_with_three_nuls_is_not_utf16() -> None:
    decoded = decode_twice(b"Meeting moved\x00 to Tuesday at 10.\x00 Bring the budget.\x00\n")

    assert decoded.text == "Meeting moved to Tuesday at 10. Bring the budget.\n"


@pytest.mark.parametrize("data", [
    bytes(range(0x80, 0x100)) * 40,
    "\ue000\ue001\ue002\ue003 \ue004\ue005\ue006".encode("utf-16") * 200,
], ids=["high-bytes", "private-use-utf16"])
def test_bytes_that_read_as_noise_are_skipped_saying_so(data: bytes) -> None:
    decoded = decode_bytes(data)

    assert decoded.text == "" and "binary" in (decoded.skip_reason or "")
