"""Guess a document's language from its script, and phrase the answer-language instruction."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

_NAMES = {
    "en": "English", "ko": "Korean", "ja": "Japanese", "zh": "Chinese", "de": "German",
    "fr": "French", "es": "Spanish", "pt": "Portuguese", "it": "Italian", "ru": "Russian",
    "nl": "Dutch", "pl": "Polish", "tr": "Turkish", "vi": "Vietnamese", "uk": "Ukrainian",
}
_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_HAN = re.compile(r"[\u4e00-\u9fff]")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_ENGLISH_WORDS = frozenset("the and of to is in that it for with are as on be this".split())
_WORD = re.compile(r"[a-z]+")
_SAMPLE_CHARS = 4000
_ENGLISH_SAMPLE_CHARS = 1500  # plenty of words to see whether the commonest English ones are there


def language_name(code_or_name: str) -> str:
    """Return the English name for an ISO code ("ko" -> "Korean"); pass names through."""
    return _NAMES.get(code_or_name.lower(), code_or_name)


def detect_language(text: str) -> str | None:
    """Return the language's English name when the script makes it clear, else None."""
    sample = text[:_SAMPLE_CHARS]
    if sample.isascii():  # no Hangul, Kana or Han possible: only the English test applies
        return _english(sample)
    letters = len(_LETTER.findall(sample))
    if not letters:
        return None
    if len(_HANGUL.findall(sample)) > letters * 0.3:
        return "Korean"
    if len(_KANA.findall(sample)) > letters * 0.1:
        return "Japanese"
    if len(_HAN.findall(sample)) > letters * 0.3:
        return "Chinese"
    return _english(sample)


def _english(sample: str) -> str | None:
    words = _WORD.findall(sample[:_ENGLISH_SAMPLE_CHARS].lower())
    if words and sum(map(_ENGLISH_WORDS.__contains__, words)) > len(words) * 0.08:
        return "English"
    return None


def dominant_language(languages: Iterable[str | None]) -> str | None:
    """Return the most common known language, or None when none is known."""
    counts = Counter(lang for lang in languages if lang)
    return counts.most_common(1)[0][0] if counts else None


# Small models follow an instruction in the answer's own language far more reliably.
_NATIVE = {
    "Korean": "반드시 한국어로 답하세요.",
    "Japanese": "必ず日本語で答えてください。",
    "Chinese": "请务必用中文回答。",
}


def language_instruction(language: str | None, scope: str = "the document") -> str:
    """Phrase which language the answer must be written in."""
    if language:
        native = _NATIVE.get(language)
        return f"Write your answer in {language}." + (f" {native}" if native else "")
    return f"Write your answer in the same language as {scope}."
