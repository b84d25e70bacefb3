"""Guess a legacy code page by how well its decoding reads: models of a few scripts.

Short texts defeat statistical detection (charset-normalizer reads 50 bytes of CP949 as
Big5 or UTF-16); a decode into one coherent script is stronger evidence. Each script is
modelled by the characters its text is made of and the contexts real text seldom has
(a letter sandwiched in ASCII, capitals after lower case); a candidate code page scores
by the share of its non-ASCII characters that fit.
"""

from __future__ import annotations

import codecs
import functools
import re
from dataclasses import dataclass

from charset_normalizer.constant import FREQUENCIES

SCORE_BYTES = 4096  # decoded to rule code pages out
JUDGE_CHARS = 512  # of those, judged for how well they read
STRONG = 0.9  # a fit at least this good is not chance
HIGH_BYTES = bytes(range(0x80, 0x100))
CJK = frozenset({"ko", "ja", "zh-hans", "zh-hant"})


def best_fit(text: str) -> float:
    """Say how well the best of the modelled scripts explains `text`."""
    return max(script.judge(text[:JUDGE_CHARS])[0] for script in _scripts().values())


def script_of(text: str) -> str | None:
    """Name the modelled script that clearly explains `text`, None if none does (or it has no letters to judge)."""
    text = text[:JUDGE_CHARS]
    if not _JUDGED.search(text):
        return None
    fit, name = max((script.judge(text), name) for name, script in _scripts().items())
    return name if fit[0] >= STRONG else None


def reading_fit(text: str, script: str | None) -> tuple[float, float]:
    """Say how well `text` fits `script` (the best-fitting one if None), then how common its letters are there."""
    text = text[:JUDGE_CHARS]
    return _scripts()[script].judge(text) if script is not None else max(s.judge(text) for s in _scripts().values())


def east_asian_fit(text: str) -> tuple[float, float]:
    """Return the share of characters to judge and how well the best CJK script explains them."""
    text = text[:JUDGE_CHARS]
    judged = len(_JUDGED.findall(text))
    fit = max(_scripts()[script].judge(text)[0] for script in CJK) if judged else 1.0
    return judged / len(text), fit


def in_other_script(text: str) -> bool:
    """Say whether `text` reads as a script not modelled here (Hebrew, Arabic, Thai, ...)."""
    judged = len(_JUDGED.findall(text))
    return judged > 0 and len(_OTHER_SCRIPTS.findall(text)) >= STRONG * judged


@dataclass(frozen=True, slots=True)
class Guess:
    codec: str
    script: str
    fit: float  # share of the non-ASCII characters that belong in the script, 0..1
    errors: int  # sequences in the sample the codec could not decode


def best_guess(data: bytes, scripts: frozenset[str] | None = None) -> Guess | None:
    final = len(data) <= SCORE_BYTES
    sample = data[:SCORE_BYTES]
    high = len(sample) - len(sample.translate(None, HIGH_BYTES))
    # Among mostly-ASCII words a lone high byte is likelier an accent than a Cyrillic or CJK letter.
    latin_first = len(_ASCII_LETTERS.findall(sample)) > 8 * high
    guesses = []
    for rank, (codec, script) in enumerate(_CANDIDATES):
        if scripts is not None and script not in scripts:
            continue
        text = codecs.getincrementaldecoder(codec)(errors="replace").decode(sample, final=final)
        errors = text.count("\ufffd")
        # A stray byte or a cut-off last character costs little; a wrong code page fails every few characters.
        clean = 1 - 20 * errors / max(high, 1)
        if clean <= 0:
            continue
        fit, frequent = _scripts()[script].judge(text[:JUDGE_CHARS])
        fit *= clean
        rank = -1 if latin_first and script == "latin" else rank
        guesses.append((fit + frequent, -rank, Guess(codec, script, fit, errors)))
    return max(guesses)[2] if guesses else None


# Tried in this order of preference when two read equally well: short Korean texts are
# the ones most often misread, and a multi-byte decode is stronger evidence than a single-byte one.
_CANDIDATES = (
    ("cp949", "ko"), ("cp932", "ja"), ("euc_jp", "ja"), ("gb18030", "zh-hans"), ("cp950", "zh-hant"),
    ("koi8_r", "ru"), ("cp1251", "ru"), ("cp866", "ru"), ("iso8859_5", "ru"),
    ("cp1253", "el"), ("cp1252", "latin"),
)
_ASCII_LETTERS = re.compile(rb"[A-Za-z]")
# Letters of scripts not modelled here (Armenian, Hebrew, Arabic, Indic, Thai, ...): charset-normalizer knows them.
_OTHER_SCRIPTS = re.compile("[\u0530-\u10ff\u1200-\u1dff]")
_NEUTRAL = "\u00a0-\u00bf\u00d7\u00f7\u2010-\u205e\u20ac\u2122\u3000-\u303f\u30fb\uff01-\uff5e\ufffd"
_JUDGED = re.compile(f"[^\x00-\x7f{_NEUTRAL}]")
_SANDWICHED = re.compile("(?<=[A-Za-z])[^\x00-\x7f](?=[A-Za-z])")


@dataclass(frozen=True, slots=True)
class _Script:
    """What text in one script looks like, to tell a right decode from a wrong one."""

    good: re.Pattern[str]
    frequent: re.Pattern[str]
    odd: tuple[re.Pattern[str], ...]  # contexts that real text in the script seldom has
    half: re.Pattern[str] | None = None  # characters that belong, but rarely dominate
    needs: re.Pattern[str] | None = None  # without any of these the fit is halved

    def judge(self, text: str) -> tuple[float, float]:
        """Return how well `text` fits the script (0..1) and the share of its most frequent characters."""
        judged = len(_JUDGED.findall(text))
        if not judged:
            return 0.0, 0.0
        good = len(self.good.findall(text)) + (len(self.half.findall(text)) / 2 if self.half else 0)
        good -= sum(len(odd.findall(text)) for odd in self.odd)
        fit = max(good, 0) / judged
        if self.needs is not None and not self.needs.search(text):
            fit /= 2
        return fit, len(self.frequent.findall(text)) / judged


def _class(chars: str) -> str:
    """Write a set of characters as a regex character class of ranges."""
    ranges: list[list[int]] = []
    for point in sorted({ord(c) for c in chars}):
        if ranges and point == ranges[-1][1] + 1:
            ranges[-1][1] = point
        else:
            ranges.append([point, point])
    return "[" + "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in ranges) + "]"


def _double_byte(codec: str, leads: range, trails: range, keep: str = "") -> str:
    """Decode every lead/trail pair of a double-byte code page, keeping characters in `keep`."""
    raw = bytes(b for lead in leads for trail in trails for b in (lead, trail))
    return "".join(c for c in raw.decode(codec, errors="ignore") if not keep or re.match(keep, c))


def _ideographic(chars: str, frequent: str, **options: re.Pattern[str]) -> _Script:
    """Model a CJK script by the characters of a code page's common rows."""
    return _Script(re.compile(_class(chars)), re.compile(_class(frequent)), (_SANDWICHED,), **options)


def _alphabet(lower: str, upper: str, frequent: str, *odd: re.Pattern[str]) -> _Script:
    """Model a cased alphabet: text is mostly lower case and does not mix letters with ASCII in a word."""
    letters = lower + upper
    mixed = re.compile(f"[A-Za-z][{letters}]|[{letters}][A-Za-z]")
    return _Script(re.compile(f"[{lower}]"), re.compile(_class(frequent)),
                   (mixed, re.compile(f"(?<=[{lower}])[{upper}]"), *odd), half=re.compile(f"[{upper}]"))


@functools.cache
def _scripts() -> dict[str, _Script]:
    """Build the script models on first use (~30 ms): most runs never meet a legacy encoding."""
    rows = range(0xA1, 0xFF)
    hiragana = _double_byte("euc_jp", range(0xA4, 0xA5), rows)
    katakana = _double_byte("euc_jp", range(0xA5, 0xA6), rows)
    return {
        # KS X 1001's 2,350 syllables are the ones Korean text is written in; hanja are rarer.
        "ko": _ideographic(_double_byte("euc_kr", range(0xB0, 0xC9), rows), "".join(FREQUENCIES["Korean"]),
                           half=re.compile("[\u4e00-\u9fff]")),
        # JIS X 0208's kanji and kana (rows 4 and 5); without kana it is likelier Chinese.
        "ja": _ideographic(_double_byte("euc_jp", range(0xB0, 0xF5), rows) + hiragana + katakana + "ー",
                           "".join(FREQUENCIES["Japanese"]) + hiragana, needs=re.compile(f"[{hiragana}{katakana}]")),
        "zh-hans": _ideographic(_double_byte("gb2312", range(0xB0, 0xF8), rows), "".join(FREQUENCIES["Chinese"])),
        "zh-hant": _ideographic(_double_byte("cp950", range(0xA4, 0xFA), range(0x40, 0xFF), "[\u4e00-\u9fff]"),
                                "".join(FREQUENCIES["Chinese"])),
        # Russian words never begin with a hard or soft sign.
        "ru": _alphabet("а-яёіїєґў", "А-ЯЁІЇЄҐЎ", "".join(FREQUENCIES["Russian"][:10]),
                        re.compile("(?<![^\\W\\d_])[ЬЪЫьъы]")),
        "el": _alphabet("ά-ώΐ", "ΆΈ-ΏΑ-Ϋ", "".join(FREQUENCIES["Greek"][:10])),
        # Accents sit one or two to a word; runs of them, or symbols inside words, are mojibake.
        "latin": _Script(re.compile("[À-ÖØ-öø-ÿŒœŠšŽžŸ]"), re.compile("[éèàçêôüöäßñáíóú]"),
                         (re.compile("(?<=[^\x00-\x7f])[^\x00-\x7f](?=[^\x00-\x7f])"),
                          re.compile("(?<=[A-Za-z])[\x80-\xbf](?=[A-Za-z])"))),
    }
