"""Guess a document's language from its script, and phrase the answer-language instruction."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from pipeline.errors import InputError

# ISO 639-1, each code with one English name.
_ISO_639_1 = """
aa Afar|ab Abkhazian|ae Avestan|af Afrikaans|ak Akan|am Amharic|an Aragonese|ar Arabic|as Assamese
av Avaric|ay Aymara|az Azerbaijani|ba Bashkir|be Belarusian|bg Bulgarian|bi Bislama|bm Bambara
bn Bengali|bo Tibetan|br Breton|bs Bosnian|ca Catalan|ce Chechen|ch Chamorro|co Corsican|cr Cree
cs Czech|cu Church Slavic|cv Chuvash|cy Welsh|da Danish|de German|dv Divehi|dz Dzongkha|ee Ewe
el Greek|en English|eo Esperanto|es Spanish|et Estonian|eu Basque|fa Persian|ff Fulah|fi Finnish
fj Fijian|fo Faroese|fr French|fy Western Frisian|ga Irish|gd Scottish Gaelic|gl Galician|gn Guarani
gu Gujarati|gv Manx|ha Hausa|he Hebrew|hi Hindi|ho Hiri Motu|hr Croatian|ht Haitian Creole
hu Hungarian|hy Armenian|hz Herero|ia Interlingua|id Indonesian|ie Interlingue|ig Igbo|ii Sichuan Yi
ik Inupiaq|io Ido|is Icelandic|it Italian|iu Inuktitut|ja Japanese|jv Javanese|ka Georgian|kg Kongo
ki Kikuyu|kj Kuanyama|kk Kazakh|kl Kalaallisut|km Khmer|kn Kannada|ko Korean|kr Kanuri|ks Kashmiri
ku Kurdish|kv Komi|kw Cornish|ky Kyrgyz|la Latin|lb Luxembourgish|lg Ganda|li Limburgish|ln Lingala
lo Lao|lt Lithuanian|lu Luba-Katanga|lv Latvian|mg Malagasy|mh Marshallese|mi Maori|mk Macedonian
ml Malayalam|mn Mongolian|mr Marathi|ms Malay|mt Maltese|my Burmese|na Nauru|nb Norwegian Bokmål
nd North Ndebele|ne Nepali|ng Ndonga|nl Dutch|nn Norwegian Nynorsk|no Norwegian|nr South Ndebele
nv Navajo|ny Chichewa|oc Occitan|oj Ojibwa|om Oromo|or Oriya|os Ossetian|pa Punjabi|pi Pali|pl Polish
ps Pashto|pt Portuguese|qu Quechua|rm Romansh|rn Rundi|ro Romanian|ru Russian|rw Kinyarwanda
sa Sanskrit|sc Sardinian|sd Sindhi|se Northern Sami|sg Sango|si Sinhala|sk Slovak|sl Slovenian
sm Samoan|sn Shona|so Somali|sq Albanian|sr Serbian|ss Swati|st Southern Sotho|su Sundanese|sv Swedish
sw Swahili|ta Tamil|te Telugu|tg Tajik|th Thai|ti Tigrinya|tk Turkmen|tl Tagalog|tn Tswana|to Tonga
tr Turkish|ts Tsonga|tt Tatar|tw Twi|ty Tahitian|ug Uyghur|uk Ukrainian|ur Urdu|uz Uzbek|ve Venda
vi Vietnamese|vo Volapük|wa Walloon|wo Wolof|xh Xhosa|yi Yiddish|yo Yoruba|za Zhuang|zh Chinese|zu Zulu
"""
_NAMES = dict(entry.split(" ", 1) for entry in _ISO_639_1.replace("\n", "|").split("|") if entry)
_BY_NAME = {name.lower(): name for name in _NAMES.values()}
# A code with a region or script after it, e.g. pt-BR, zh_TW, zh-Hant.
_TAGGED = re.compile(r"([a-z]{2})[-_]([a-z]{2}|[a-z]{4}|[0-9]{3})", re.IGNORECASE)
_NAMED = re.compile(r"(.+) \(([a-z]{2}|[a-z]{4}|[0-9]{3})\)", re.IGNORECASE)
HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
KANA = re.compile(r"[\u3040-\u30ff]")
HAN = re.compile(r"[\u4e00-\u9fff]")
LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_ENGLISH_WORDS = frozenset("the and of to is in that it for with are as on be this".split())
_WORD = re.compile(r"[a-z]+")
_SAMPLE_CHARS = 4000
_ENGLISH_SAMPLE_CHARS = 1500  # plenty of words to see whether the commonest English ones are there


def language_name(code_or_name: str) -> str:
    """Return the English name for an ISO 639-1 code or name ("ko", "korean" -> "Korean").

    A region or script after the code is kept beside the name ("pt-BR" -> "Portuguese
    (BR)"). Raises InputError for anything else, 'auto' included.
    """
    value = code_or_name.strip()
    if name := _NAMES.get(value.lower()) or _BY_NAME.get(value.lower()):
        return name
    if (tagged := _TAGGED.fullmatch(value)) and (name := _NAMES.get(tagged[1].lower())):
        return _with_sub(name, tagged[2])
    if (named := _NAMED.fullmatch(value)) and (name := _BY_NAME.get(named[1].lower())):  # its own answer again
        return _with_sub(name, named[2])
    raise InputError(f"unknown language {code_or_name!r}: give an ISO 639-1 code or an English name, "
                     "e.g. en, ko, ja, zh, de, fr, es, pt-BR, or 'auto' for the documents' own")


def _with_sub(name: str, sub: str) -> str:
    return f"{name} ({sub.upper() if len(sub) == 2 else sub.title()})"


def check_language(value: str) -> str:
    """Return 'auto' or the language's English name; raise InputError for an unknown language."""
    return "auto" if value.strip().lower() == "auto" else language_name(value)


def detect_language(text: str) -> str | None:
    """Return the language's English name when the script makes it clear, else None."""
    sample = text[:_SAMPLE_CHARS]
    if sample.isascii():  # no Hangul, Kana or Han possible: only the English test applies
        return _english(sample)
    letters = len(LETTER.findall(sample))
    if not letters:
        return None
    if len(HANGUL.findall(sample)) > letters * 0.3:
        return "Korean"
    if len(KANA.findall(sample)) > letters * 0.1:
        return "Japanese"
    if len(HAN.findall(sample)) > letters * 0.3:
        return "Chinese"
    return _english(sample)


def _english(sample: str) -> str | None:
    words = _WORD.findall(sample[:_ENGLISH_SAMPLE_CHARS].lower())
    if words and sum(map(_ENGLISH_WORDS.__contains__, words)) > len(words) * 0.08:
        return "English"
    return None


def dominant_language(languages: Iterable[str | None]) -> str | None:
    """Return the most common known language, or None when none is known.

    A tie goes to the name that sorts first, not to the one met first: the answer must
    not depend on the order the documents were given in.
    """
    counts = Counter(lang for lang in languages if lang)
    return min(counts, key=lambda lang: (-counts[lang], lang)) if counts else None


def answer_language(setting: str, detected: Iterable[str | None]) -> str | None:
    """The language answers are written in: the one asked for, else the documents' dominant one."""
    return language_name(setting) if setting != "auto" else dominant_language(detected)


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


def firm_language_instruction(language: str) -> str:
    """Insist on the answer's language, for the one retry after an answer came back in another."""
    native = _NATIVE.get(language)
    return (f"Your answer must be entirely in {language}: translate every fact into {language}, "
            "keeping names and numbers as they are." + (f" {native}" if native else ""))
