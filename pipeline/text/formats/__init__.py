"""Read documents of every supported format into plain text, with where each part of it comes from.

    extract(data, name) ──sniff──▶ pdf | docx | html | email | text (decoding)
                                    └─▶ anything else: skipped, saying what it is

Every reader returns an Extracted; none raises for a bad file (it is that file's skip
or failure, with a reason a person understands). Readers are imported when a file
of theirs comes, so a run over text files never loads a PDF library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pipeline.text.decoding import decode_bytes
from pipeline.text.formats.sniff import READ, sniff

# What a folder is searched for; records files are read one document per record with --text-field.
DOCUMENT_SUFFIXES = (".txt", ".text", ".md", ".markdown", ".rst", ".pdf", ".html", ".htm", ".xhtml",
                     ".docx", ".eml", ".mbox")
RECORD_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv")


@dataclass(slots=True)
class Extracted:
    """A document's text, or why there is none.

    `marks` are (offset in text, number) where each page (or other `unit`) begins,
    in order; a format without pages leaves them empty.
    """

    text: str
    format: str
    encoding: str | None = None
    skip_reason: str | None = None
    failure: str | None = None  # a file that should have been readable and was not (damaged, encrypted)
    warning: str | None = None
    repaired: bool = False
    replaced: int = 0
    unit: str = ""
    marks: list[tuple[int, int]] = field(default_factory=list)


# Charsets that mail and web pages declare for text written in a larger one (Outlook's Korean is
# cp949; browsers read ISO-8859-1 as windows-1252; "ASCII" is often UTF-8 mislabelled, and reads the same).
_WIDER = {"ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "euc-kr": "cp949", "euc_kr": "cp949",
          "gb2312": "gb18030", "gbk": "gb18030", "iso-8859-1": "cp1252", "latin-1": "cp1252", "latin1": "cp1252",
          "us-ascii": "utf-8", "ascii": "utf-8", "shift_jis": "cp932", "x-sjis": "cp932", "sjis": "cp932"}


def wider(charset: str) -> str:
    """The codec to read text declared in `charset` with: the superset that writers of it really use."""
    name = charset.strip().lower()
    return _WIDER.get(name, name)


# Names that promise a format; a file that is something else is read as what it is, and the log says so.
_PROMISED = {".pdf": "pdf", ".docx": "docx", ".eml": "email"}
_DAMAGED_ZIP = "a damaged ZIP archive"  # what sniff() says of one


def extract(data: bytes, name: str, encoding: str | None = None, depth: int = 0) -> Extracted:
    """Read `data` (the bytes of the file `name`) as its format says; `encoding` replays a text file's first read."""
    kind = sniff(data, name) if encoding is None else "text"
    promised = _PROMISED.get(os.path.splitext(name)[1].lower())
    if promised is None or kind == promised or encoding is not None or not data:
        return _read(data, name, kind, encoding, depth)
    if promised == "docx" and kind == _DAMAGED_ZIP:  # a Word file torn in a copy: damaged, as a torn PDF is
        return Extracted("", "docx", failure="damaged DOCX: its ZIP archive cannot be opened")
    found = _read(data, name, kind, encoding, depth)
    lie = f"named {os.path.splitext(name)[1]} but is {'text' if kind == 'text' else kind}"
    if found.skip_reason:
        found.skip_reason = f"{found.skip_reason} ({lie})"
    elif found.failure:
        found.failure = f"{found.failure} ({lie})"
    else:
        found.warning = "; ".join(filter(None, [f"{lie}: read as such", found.warning]))
    return found


def _read(data: bytes, name: str, kind: str, encoding: str | None, depth: int) -> Extracted:
    if kind == "pdf":
        from pipeline.text.formats import pdf

        return pdf.extract(data)
    if kind == "docx":
        from pipeline.text.formats import word

        return word.extract(data)
    if kind == "html":
        from pipeline.text.formats import webpage

        return webpage.extract(data)
    if kind in ("email", "mbox"):
        from pipeline.text.formats import mail

        return mail.extract(data, depth)
    if kind != "text":
        return Extracted("", "binary", skip_reason=f"not a document: {kind}")
    decoded = decode_bytes(data, encoding, sniffed=True)
    return Extracted(decoded.text, "text", decoded.encoding, decoded.skip_reason, None, decoded.warning,
                     decoded.repaired, decoded.replaced)


__all__ = ["DOCUMENT_SUFFIXES", "READ", "RECORD_SUFFIXES", "Extracted", "extract", "sniff", "wider"]
