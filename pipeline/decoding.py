"""Turn a file's bytes into text, or into a reason why it cannot be summarized."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

import ftfy
from charset_normalizer import from_bytes

# Checked longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SNIFF_BYTES = 8192
# In ASCII text ftfy only acts on HTML entities, CR line breaks and control characters.
_FTFY_ASCII_WORK = re.compile(r"[^\t\n\x20-\x25\x27-\x7e]")


@dataclass(frozen=True, slots=True)
class Decoded:
    """Text decoded from bytes, or the reason it was not."""

    text: str
    encoding: str | None
    skip_reason: str | None = None


def _looks_binary(data: bytes) -> bool:
    head = data[:_SNIFF_BYTES]
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls > len(head) * 0.05


def _repair(text: str) -> str:
    if text.isascii() and not _FTFY_ASCII_WORK.search(text):
        return text  # nothing ftfy would change (no mojibake, entities, CR or controls): skip its ~40 us scan
    # Only undo mis-decoding (UTF-8 read as cp1252 and the like); leave quotes,
    # widths and ligatures as the author wrote them.
    return ftfy.fix_text(
        text,
        uncurl_quotes=False,
        fix_character_width=False,
        fix_latin_ligatures=False,
        normalization="NFC",
    )


def decode_bytes(data: bytes, encoding: str | None = None) -> Decoded:
    """Decode a document, detecting its encoding unless one is given.

    Passing the encoding found on a first read makes a second read cheap and
    guaranteed to give the same text.
    """
    if not data:
        return Decoded("", None, "empty file")
    if encoding is None:
        encoding = _detect(data)
        if encoding is None:
            return Decoded("", None, "binary or undecodable file")
    text = _repair(data.decode(encoding, errors="replace"))
    if not text.strip():
        return Decoded("", encoding, "empty file (whitespace only)")
    return Decoded(text, encoding)


def _detect(data: bytes) -> str | None:
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8"
    if _looks_binary(data):
        return None
    best = from_bytes(data).best()
    return best.encoding if best is not None else None
