"""Turn a file's bytes into text, or into a reason why it cannot be summarized.

The encoding found on the first read is a string that a second read replays exactly:

- a Python codec name ("utf-8", "cp949", "utf-16-le", "iso2022_jp", ...): the whole file;
- "utf-8+<codec>": lines in two encodings (a file edited with two tools); each line is read
  as UTF-8 when it is UTF-8 (a few stray bytes allowed), else as <codec>; a short line valid
  both ways goes to the reading that makes sense, and where both make as much, to the way
  the file's other lines in each encoding read;
- "utf-8><codec>": <codec> text that was once read as cp1252/Latin-1 and saved as UTF-8;
  the UTF-8 text is turned back into those bytes and read as <codec>;
- "nul:<any of these>": text with a few stray NUL bytes, which are dropped first.

A reading that could turn text into noise (a legacy code page, UTF-16/32 without a BOM,
undecodable bytes) is checked on its result; text that reads as noise is not summarized.
"""

from __future__ import annotations

import codecs
import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from charset_normalizer import from_bytes

from pipeline.text.codepages import (
    CJK,
    HIGH_BYTES,
    JUDGE_CHARS,
    SCORE_BYTES,
    STRONG,
    best_fit,
    best_guess,
    east_asian_fit,
    in_other_script,
    reading_fit,
    script_of,
)

# Checked longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SNIFF_BYTES = 8192
# In ASCII text ftfy only acts on HTML entities (&), CR line breaks and control characters.
_FTFY_IDLE_ASCII = bytes([9, 10, *range(0x20, 0x26), *range(0x27, 0x7F)])
_UTF8_FFFD = "\ufffd".encode()
_BLOCK = 1 << 20  # a big text is checked a block at a time, so no full-size copy is made
_BEYOND_TWO_BYTES = re.compile("[\u0800-\ufffc\U00010000-\U0010ffff]")
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27))  # not tab, line breaks, ESC
# Fewer undecodable bytes than this beside UTF-8 text are stray bytes, not a second encoding.
_MIN_FOREIGN_BYTES = 4


# Not frozen: a frozen dataclass's __init__ costs ~0.4 us more at six fields, on every file planned.
@dataclass(slots=True)
class Decoded:
    """Text decoded from bytes, or the reason it was not."""

    text: str
    encoding: str | None
    skip_reason: str | None = None
    repaired: bool = False  # mis-decoded text was put right (mojibake)
    replaced: int = 0  # characters that could not be decoded and became U+FFFD
    warning: str | None = None


def decode_bytes(data: bytes, encoding: str | None = None, *, sniffed: bool = False) -> Decoded:
    """Decode a document, detecting its encoding unless one is given.

    Passing the encoding found on a first read makes a second read cheap and
    guaranteed to give the same text. `sniffed`: the caller has found the bytes to be
    text already (pipeline/text/formats), so they are not looked at for a format again.
    """
    if not data:
        return Decoded("", None, "empty file")
    text, nuls = None, 0
    if encoding is None:
        from pipeline.text.formats.sniff import sniff  # here: the formats package reads text through this module

        if not sniffed and (kind := sniff(data, "")) not in ("text", "html", "email", "mbox"):
            return Decoded("", None, f"binary file ({kind}), not text")
        encoding, text = _detect(data)
        # NULs that are not UTF-16/32's are strays in text (or the file is binary).
        if not (encoding or "").startswith(("utf-16", "utf-32")) and (stray := _stray_nuls(data)):
            data = data.replace(b"\x00", b"")
            encoding, text = _detect(data)
            nuls = stray
    elif encoding.startswith(_NUL_PREFIX):
        nuls = data.count(b"\x00")
        data, encoding = data.replace(b"\x00", b""), encoding[len(_NUL_PREFIX):]
    if encoding is None:
        return Decoded("", None, "binary or undecodable file")
    replaced = 0
    if text is None:
        text, replaced = _decode_as(data, encoding)
    fixed = _repair(text)
    named = f"{_NUL_PREFIX}{encoding}" if nuls else encoding
    if not fixed or fixed.isspace():  # no strip(): it would copy a 50 MB text to learn this
        return Decoded("", named, "empty file (whitespace only)")
    if _at_risk(encoding, replaced) and reads_as_noise(fixed):
        return Decoded("", named, f"reads as noise in {encoding}: binary?")
    repaired = ">" in encoding or (fixed != text and fixed != _tidied(text))
    if not (repaired or replaced or nuls or "+" in encoding):
        return Decoded(fixed, encoding)
    return Decoded(fixed, named, None, repaired, replaced, _warning(encoding, repaired, replaced, nuls))


_NUL_PREFIX = "nul:"
# NUL bytes beyond this share of a file are not strays in text: UTF-16/32, or a binary file.
_STRAY_NUL_SHARE = 0.1  # the rest must still read as text: random bytes are refused there


def _stray_nuls(data: bytes) -> int:
    """Count the NUL bytes of a file that is not UTF-16/32, when they are few enough to be strays in text."""
    if b"\x00" not in data:
        return 0
    count = data.count(b"\x00")
    return 0 if count > max(len(data) * _STRAY_NUL_SHARE, 1) else count


def _regular_nuls(head: bytes) -> bool:
    """Whether NUL bytes fill one byte position of most 2-byte units, as UTF-16/32 of mostly-ASCII text does.

    Text with fewer ASCII characters (CJK, Cyrillic) has fewer NULs, still all in one
    position; _wide_unicode accepts that reading only when it makes sense in one script.
    """
    odd, even = head[1::2].count(0), head[0::2].count(0)
    many, few = max(odd, even), min(odd, even)
    if many >= 2 and few * 2 < many:  # CJK characters such as U+4F00 put a few NULs on the other side
        return True
    # UTF-32: the top byte of every unit is NUL, the bottom one seldom.
    by_place = sorted(head[i::4].count(0) for i in range(4))
    return len(head) >= 8 and by_place[-1] >= 0.95 * (len(head) // 4) and by_place[0] <= by_place[-1] * 0.05


def _at_risk(encoding: str, replaced: int) -> bool:
    """Whether a reading may have made noise of the bytes: anything but clean UTF-8."""
    return bool(replaced) or encoding not in ("utf-8", "utf-8-sig") or "+" in encoding


# What a right reading is made of: letters, marks and digits of any script, spaces, and
# the punctuation of text. Noise (a binary read as a code page or as UTF-16) is mostly
# controls, symbols, private use, U+FFFD, or letters in short runs from many scripts.
_NOISE_SAMPLE = 4096
_NOISE_MIN_CHARS = 24
_ASCII_NOT_GOOD = bytes(b for b in range(128) if not (chr(b).isalnum() or unicodedata.category(chr(b))[0] == "P"))
_UNSPACED = frozenset({"CJK", "HANGUL", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN"})


def reads_as_noise(text: str) -> bool:
    """Say whether decoded text reads as noise rather than as something a person wrote."""
    sample = text[:_NOISE_SAMPLE]
    if len(text) > 3 * _NOISE_SAMPLE:  # and from the middle, past a header that may read well
        middle = len(text) // 2
        sample += text[middle:middle + _NOISE_SAMPLE]
    if sample.isascii():  # the common case, counted in C: ASCII's only noise is controls and symbols
        raw = sample.encode("ascii")
        visible = len(raw.translate(None, b" \t\n\r\x0b\x0c"))
        good = len(raw.translate(None, _ASCII_NOT_GOOD))
        controls = len(raw) - len(raw.translate(None, _CONTROL_BYTES))
        return visible >= _NOISE_MIN_CHARS and (controls > 0.1 * visible or good < 0.6 * visible)
    kinds: dict[str, int] = {}
    scripts: dict[str, int] = {}
    for char in sample:
        kind = unicodedata.category(char)[0] if char != "\ufffd" else "X"
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "L" and not char.isascii():
            script = _script_of(char)
            scripts[script] = scripts.get(script, 0) + 1
    visible = len(sample) - kinds.get("Z", 0) - sample.count("\n") - sample.count("\t") - sample.count("\r")
    if visible < _NOISE_MIN_CHARS:
        return False  # too short to tell
    bad = kinds.get("C", 0) - (len(sample) - visible - kinds.get("Z", 0)) + kinds.get("X", 0)
    good = kinds.get("L", 0) + kinds.get("M", 0) + kinds.get("N", 0) + kinds.get("P", 0)
    if bad > 0.1 * visible or good < 0.6 * visible:
        return True
    letters = sum(scripts.values())
    # Letters from many scripts at once, none holding most of them, are bytes read in the wrong code page.
    if letters >= 32 and sum(sorted(scripts.values())[-2:]) < 0.8 * letters:
        return True
    # Scripts written with spaces between words: a long run of them without one is not words.
    spaced = letters - sum(n for script, n in scripts.items() if script in _UNSPACED)
    gaps = len(sample) - visible
    return spaced >= 200 and spaced > letters / 2 and gaps < 0.02 * len(sample)


@functools.lru_cache(maxsize=8192)
def _script_of(char: str) -> str:
    """A letter's script, as the first word of its Unicode name (LATIN, CYRILLIC, CJK, HANGUL, ...)."""
    name = unicodedata.name(char, "")
    first = name.split(" ", 1)[0]
    return "CJK" if first in ("CJK", "HIRAGANA", "KATAKANA", "HALFWIDTH", "FULLWIDTH") else first


def _warning(encoding: str, repaired: bool, replaced: int, nuls: int = 0) -> str | None:
    notes = []
    if nuls:
        notes.append(f"{nuls} stray NUL byte(s) dropped")
    if replaced:
        notes.append(f"{replaced} undecodable character(s) replaced with U+FFFD")
    if "+" in encoding:
        notes.append(f"lines in two encodings ({encoding.replace('+', ' and ')})")
    if ">" in encoding:
        notes.append(f"{encoding.split('>')[1]} text that had been saved as mojibake was restored")
    elif repaired:
        notes.append("mis-decoded characters were repaired")
    return "; ".join(notes) or None


def _repair(text: str) -> str:
    if text.isascii() and not any(_ftfy_work(text[i:i + _BLOCK]) for i in range(0, len(text), _BLOCK)):
        return text  # nothing ftfy would change (no mojibake, entities, CR or controls): skip its ~40 us scan
    import ftfy  # here, not at start-up: ASCII text, the common case, never needs it

    # Only undo mis-decoding (UTF-8 read as cp1252 and the like); leave quotes,
    # widths and ligatures as the author wrote them.
    return ftfy.fix_text(
        text,
        uncurl_quotes=False,
        fix_character_width=False,
        fix_latin_ligatures=False,
        normalization="NFC",
    )


def _tidied(text: str) -> str:
    """`text` with only the changes ftfy makes to well-decoded text: line breaks and NFC.

    A CRLF file or one in decomposed Unicode (as macOS saves names) is not mis-decoded;
    comparing against this keeps such files from being reported as repaired.
    """
    from ftfy.fixes import fix_line_breaks

    return unicodedata.normalize("NFC", fix_line_breaks(text))


# --- reading with a known encoding ---------------------------------------------------


def _ftfy_work(ascii_text: str) -> bytes:
    """The characters of ASCII text that ftfy would act on."""
    return ascii_text.encode("ascii").translate(None, _FTFY_IDLE_ASCII)


def _decode_as(data: bytes, encoding: str) -> tuple[str, int]:
    """Decode with an encoding string from `_detect`; return the text and the replacements."""
    if ">" in encoding:
        outer, inner = encoding.split(">", 1)
        text, replaced = _decode_as(data, outer)
        text, more = _decode_as(_misread_bytes(text), inner)
        return text, replaced + more
    if encoding.startswith("utf-8+"):
        lines = data.splitlines(keepends=True)
        parts = [_decode_as(line, codec) for line, codec in zip(lines, _line_codecs(lines, encoding[6:]))]
        return "".join(text for text, _ in parts), sum(n for _, n in parts)
    text = data.decode(encoding, errors="replace")
    if "\ufffd" not in text:
        return text, 0
    # U+FFFD that the file itself spells out survives an "ignore" decode; replacements do not.
    return text, text.count("\ufffd") - data.decode(encoding, errors="ignore").count("\ufffd")


def _utf8_reading(line: bytes) -> tuple[str, int, int]:
    """Read a line as UTF-8: the text, its good non-ASCII characters and its undecodable sequences."""
    try:
        text, bad = line.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = line.decode("utf-8", errors="replace")
        bad = text.count("\ufffd") - line.count(_UTF8_FFFD)
    return text, len(text) - len(line.translate(None, HIGH_BYTES)) - bad, bad


def _utf8_proof(text: str, good: int, bad: int) -> int:
    """Count the characters that show a line is UTF-8, stray bytes allowed."""
    if good < bad:
        return 0  # legacy multi-byte text fails on nearly every character; UTF-8 with stray bytes on few
    # One cp949 syllable in eleven is also a two-byte UTF-8 character: a few of those prove nothing.
    return good if good >= 4 or _BEYOND_TWO_BYTES.search(text) else 0


def _line_codec(line: bytes, fallback: str) -> str:
    """Choose UTF-8 or the fallback for one line of a file that mixes them; a tie goes to the fallback."""
    return _line_choice(line, fallback) or fallback


def _line_choice(line: bytes, fallback: str) -> str | None:
    """Choose UTF-8 or the fallback for one line, or None when both readings make as much sense."""
    if line.isascii():
        return fallback  # the same text either way
    try:
        legacy = line.decode(fallback)
    except UnicodeDecodeError:
        return "utf-8"
    text, good, bad = _utf8_reading(line)
    if good < bad:
        return fallback
    # Valid both ways (short lines can be): take the reading that makes more sense. With UTF-8's
    # marks on it the line stays UTF-8 unless the other reading is clearly right.
    utf8_fit, legacy_fit = best_fit(text) * good / (good + bad), best_fit(legacy)
    if _utf8_proof(text, good, bad):
        return fallback if legacy_fit >= STRONG > utf8_fit else "utf-8"
    if utf8_fit == legacy_fit:
        # Accented letters sit inside words of ASCII letters ("café", "Zürich"); a syllable of an
        # East Asian script seldom does ("caf챕"), though both readings put it in the same place.
        return "utf-8" if len(_IN_ASCII_WORD.findall(text)) >= good > 0 else None
    return "utf-8" if utf8_fit > legacy_fit else fallback


_IN_ASCII_WORD = re.compile("(?<=[A-Za-z])[^\x00-\x7f]|[^\x00-\x7f](?=[A-Za-z])")


def _line_codecs(lines: list[bytes], fallback: str) -> list[str]:
    """Choose UTF-8 or the fallback for each line of a file that mixes them.

    A line that reads as well both ways ("café" or "caf챕") is read the way the file's
    other lines of each encoding read: each reading is judged in the script of the lines
    that are surely in its encoding, by its fit and then by how common its letters are there.
    """
    choices = [_line_choice(line, fallback) for line in lines]
    if None not in choices:
        return [choice or fallback for choice in choices]
    utf8 = script_of(_start_of(line.decode("utf-8", "replace") for line, choice in zip(lines, choices)
                               if choice == "utf-8" and not line.isascii()))
    legacy = script_of(_start_of(line.decode(fallback, "replace") for line, choice in zip(lines, choices)
                                 if choice == fallback and not line.isascii()))
    return [choice or _tie_codec(line, fallback, utf8, legacy) for line, choice in zip(lines, choices)]


def _tie_codec(line: bytes, fallback: str, utf8: str | None, legacy: str | None) -> str:
    """Settle a line that reads as well both ways by its readings' fit in the scripts of each encoding's lines."""
    as_utf8, as_legacy = reading_fit(line.decode("utf-8", "replace"), utf8), reading_fit(line.decode(fallback), legacy)
    return "utf-8" if as_utf8 > as_legacy else fallback


def _start_of(texts: Iterable[str]) -> str:
    """Join texts up to the length that a script is judged on."""
    sample, size = [], 0
    for text in texts:
        sample.append(text)
        size += len(text)
        if size >= JUDGE_CHARS:
            break
    return "".join(sample)


# --- detection -------------------------------------------------------------------------


def _detect(data: bytes) -> tuple[str | None, str | None]:
    """Find the encoding string for `data`, with the text when finding it decoded it anyway."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name, None
    if data.find(b"\x00", 0, _SNIFF_BYTES) >= 0:
        # No text encoding but UTF-16/32 puts NUL bytes in text, and then in one byte position of each unit.
        return _wide_unicode(data, has_nul=_regular_nuls(data[:_SNIFF_BYTES])), None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if text.isascii():
            if b"\x1b" in data:
                return _iso2022(data) or "utf-8", None
        elif (b"\xc2" in data or b"\xc3" in data) and (legacy := _mojibake_codec(text)):
            return f"utf-8>{legacy}", None  # U+0080..U+00FF, which a cp1252 misreading is made of
        return "utf-8", text
    if len(data) % 2 == 0 and (wide := _wide_unicode(data, has_nul=False)):
        guess = best_guess(data, CJK)
        if guess is None or guess.fit < STRONG:  # CJK code pages read as UTF-16 too, as nonsense
            return wide, None
    if _looks_binary(data):
        return None, None
    return _utf8_with_others(data), None


def _looks_binary(data: bytes) -> bool:
    head = data[:_SNIFF_BYTES]
    return len(head) - len(head.translate(None, _CONTROL_BYTES)) > len(head) * 0.05


def _utf8_with_others(data: bytes) -> str | None:
    """Choose between UTF-8 with replacements, UTF-8 mixed with a legacy encoding, and legacy."""
    lines = data.splitlines(keepends=True)
    readings = [_utf8_reading(line) for line in lines]
    proofs = [_utf8_proof(*reading) for reading in readings]
    # The lines that may be UTF-8: proven so, or more valid characters than undecodable ones.
    utf8ish = [bool(proof) or good > bad for proof, (_, good, bad) in zip(proofs, readings)]
    if not any(proofs) and (legacy := _legacy_over_utf8(data, readings)):
        # The file as a whole reads better in a legacy encoding, but a UTF-8 line with a few accents
        # ("Café in Zürich") beside a line in another encoding is outweighed by that line's errors,
        # not disproved: a line that reads better as UTF-8 than in the legacy encoding is two encodings.
        if not any(_line_codec(line, legacy) == "utf-8" for line, maybe in zip(lines, utf8ish) if maybe):
            return legacy
        mixed = _second_encoding(lines, readings, utf8ish, settle_ties=True)
        return mixed if "+" in mixed else legacy
    return _second_encoding(lines, readings, utf8ish, settle_ties=False)


def _second_encoding(lines: list[bytes], readings: list[tuple[str, int, int]], utf8ish: list[bool], *,
                     settle_ties: bool) -> str:
    """Name UTF-8 (with stray bytes), the legacy encoding its failing lines are in, or the two mixed.

    `settle_ties`: a line has been seen to read better as UTF-8 than the whole file's legacy
    reading, so lines that read as well in both encodings count as UTF-8 when reading them would
    make them so; otherwise only lines that read better as UTF-8 show a second encoding.
    """
    foreign = b"".join(line for line, (_, good, bad) in zip(lines, readings) if good < bad)
    # A few words of CJK read as well in several code pages (각 in cp949 is 阿 in GB2312): the
    # file's UTF-8 lines say which language its author writes.
    written = _written_in(readings, utf8ish)
    if len(foreign) - len(foreign.translate(None, HIGH_BYTES)) < _MIN_FOREIGN_BYTES:
        # Too few for more than stray bytes, unless the lines that fail UTF-8 anywhere are words of
        # the CJK script the UTF-8 lines are written in (a syllable or two of Korean, some of whose
        # byte pairs are valid UTF-8 too: 걔가 has C2 B0, "°", in between).
        fallback = _codec_for(b"".join(line for line, (_, _, bad) in zip(lines, readings) if bad), written)
        if fallback is None:
            return "utf-8"
    else:
        fallback = _legacy(foreign)
        if fallback is None or "\n A".encode(fallback, errors="replace") != b"\n A":
            return "utf-8"  # lines are split on ASCII line breaks, so only ASCII-based encodings mix
        fallback = _codec_for(foreign, written) or fallback
    choices = [_line_choice(line, fallback) if maybe else fallback for line, maybe in zip(lines, utf8ish)]
    if settle_ties and None in choices and "utf-8" not in choices:  # only ties: settle them as reading the lines will
        choices = [choice if maybe else fallback for choice, maybe in zip(_line_codecs(lines, fallback), utf8ish)]
    if "utf-8" not in choices:
        return fallback  # the lines that looked like UTF-8 read better in the fallback: not mixed after all
    return f"utf-8+{fallback}"


def _written_in(readings: list[tuple[str, int, int]], utf8ish: list[bool]) -> str | None:
    """Name the script of the file's clean UTF-8 lines that have non-ASCII text, judged on their start."""
    clean = (text for (text, good, bad), maybe in zip(readings, utf8ish) if maybe and good and not bad)
    return script_of(_start_of(clean))


def _codec_for(foreign: bytes, script: str | None) -> str | None:
    """The code page that reads `foreign` clearly and without errors in `script`, if that is a CJK script.

    Stray bytes seldom pair up into common characters of the file's own language; a single high
    byte, Latin-1's "é" as much as a stray, is some letter of a Western code page: it proves nothing.
    """
    if script not in CJK:
        return None
    guess = best_guess(foreign, frozenset({script}))
    return guess.codec if guess is not None and guess.fit >= STRONG and not guess.errors else None


def _legacy_over_utf8(data: bytes, readings: list[tuple[str, int, int]]) -> str | None:
    """The legacy encoding `data` is in, when no line proves UTF-8; None if it is UTF-8 with stray bytes after all.

    Prose in Latin script has a few accented letters a line ("café", "Müller"), too few for
    one line to prove anything, so the file as a whole is weighed: valid multi-byte
    characters far outnumbering undecodable bytes are UTF-8 (legacy text is the other way
    round: a Latin-1 accent before ASCII is never valid UTF-8, and only about one CJK
    character in eleven is). With too few of either to count, the reading that makes more
    sense wins.
    """
    good, bad = sum(r[1] for r in readings), sum(r[2] for r in readings)
    if good < max(bad, 1):
        return _legacy(data)
    if good >= _MIN_FOREIGN_BYTES and good >= 4 * bad:
        return None
    legacy = _legacy(data)
    head = data[:_SNIFF_BYTES]
    # A tie goes to UTF-8: its valid characters are at least as many as its errors, and a
    # legacy reading of them is mojibake ("cafÃ©") that a script's letters explain as well.
    if legacy is None or best_fit(head.decode("utf-8", "replace")) >= best_fit(head.decode(legacy, "replace")):
        return None
    return legacy


# ISO-2022 text is 7-bit, so it passes as UTF-8; its escapes into double-byte sets give it away.
_ISO2022_JP = re.compile(rb"\x1b\$(?:[@AB]|\([CDOPQ])")


def _iso2022(data: bytes) -> str | None:
    if b"\x1b$)C" in data:
        names: tuple[str, ...] = ("iso2022_kr",)
    elif _ISO2022_JP.search(data):
        names = ("iso2022_jp", "iso2022_jp_2", "iso2022_jp_ext", "iso2022_jp_2004")
    else:
        return None
    for name in names:
        try:
            data.decode(name)
            return name
        except UnicodeDecodeError:
            pass
    return names[0]


# Not in real text: controls, private use, noncharacters, and planes 4-13 where nothing is assigned.
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ue000-\uf8ff\ufdd0-\ufdef\ufffe\uffff"
                       "\U00040000-\U000dffff\U000f0000-\U0010ffff]")


def _wide_unicode(data: bytes, *, has_nul: bool) -> str | None:
    """Name the BOM-less UTF-16/32 that `data` is written in, if it is."""
    head = data[:_SNIFF_BYTES]
    # ASCII characters put their NUL byte second in little-endian text, first in big-endian.
    odd, even = head[1::2].count(0), head[0::2].count(0)
    little = odd >= even
    names = ["utf-16-le", "utf-16-be"] if little else ["utf-16-be", "utf-16-le"]
    if has_nul and len(data) % 4 == 0:
        names[:0] = ["utf-32-le", "utf-32-be"] if little else ["utf-32-be", "utf-32-le"]
    if not has_nul and len(head.translate(None, HIGH_BYTES)) > 0.85 * len(head):
        return None  # CJK in UTF-16 sets the high bit in a fifth of its bytes or more; ASCII text does not
    readings = []
    for rank, name in enumerate(names):
        if len(data) % (4 if "32" in name else 2):
            continue
        try:
            text = codecs.getincrementaldecoder(name)().decode(head, final=False)
        except UnicodeDecodeError:
            continue
        if not text.strip() or len(_NOT_TEXT.findall(text)) * 50 > len(text):
            continue
        share, fit = east_asian_fit(text)
        # NULs in most units are ASCII characters in UTF-16/32. With fewer (or none), the text
        # has little ASCII; only text that reads as one clear script is likely then.
        mostly_ascii = has_nul and sum(c.isascii() for c in text) >= 0.25 * len(text)
        if mostly_ascii or (len(text) >= 8 and (fit >= STRONG or best_fit(text) >= STRONG)):
            # Where the NUL bytes do not say the byte order, the right one has fewer characters out of place.
            readings.append((-rank if odd != even else 0, 1 - share * (1 - fit), -rank, name))
    return max(readings)[-1] if readings else None


# --- legacy encodings ------------------------------------------------------------------


def _legacy(data: bytes) -> str | None:
    """Name the legacy (non-Unicode) encoding of `data`: ours when clear, else charset-normalizer's."""
    guess = best_guess(data)
    if guess is not None and guess.fit >= STRONG and guess.script in CJK:
        return guess.codec  # a multi-byte decode into one coherent script is not chance
    best = from_bytes(data).best()
    if best is None or best.encoding.startswith(("utf_16", "utf_32")):  # we have ruled those out
        return guess.codec if guess is not None else None
    if guess is not None and guess.fit >= STRONG and not in_other_script(str(best)[:SCORE_BYTES]):
        return guess.codec  # it reads short texts as Big5, cp1250 or cp1006 (Urdu) that we read better
    return best.encoding


# --- mojibake: legacy text once read as cp1252 and saved as UTF-8 ---------------------------

_CP1252_BACK = {ord(bytes([b]).decode("cp1252")): b
                for b in range(0x80, 0xA0) if bytes([b]).decode("cp1252", errors="ignore")}
_MISREAD_RUN = re.compile("[\x80-\xff" + "".join(map(chr, _CP1252_BACK)) + "]{3}")


def _misread_bytes(text: str) -> bytes:
    """Give back the bytes a cp1252 (or Latin-1) reading turned into `text`."""
    return text.translate(_CP1252_BACK).encode("latin-1", errors="replace")


def _mojibake_codec(text: str) -> str | None:
    """Name the legacy encoding whose bytes `text` misreads, if it clearly is one."""
    if not _MISREAD_RUN.search(text):
        return None
    try:
        raw = text.translate(_CP1252_BACK).encode("latin-1")
    except UnicodeEncodeError:
        return None  # characters no cp1252 reading makes: this is not such a misreading
    try:
        raw.decode("utf-8")
        return None  # UTF-8 read as cp1252: ftfy repairs that
    except UnicodeDecodeError:
        pass
    guess = best_guess(raw, CJK | {"ru"})
    return guess.codec if guess is not None and guess.fit >= STRONG and not guess.errors else None
