"""Read documents of every supported format into plain text, with where each part of it comes from.

    extract(data, name) ──sniff──▶ pdf | docx | html | email | text (decoding)
                                    └─▶ anything else: skipped, saying what it is

Every reader returns an Extracted; none raises for a bad file (it is that file's skip
or failure, with a reason a person understands). Readers are imported when a file
of theirs comes, so a run over text files never loads a PDF library.
"""

from __future__ import annotations

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


def extract(data: bytes, name: str, encoding: str | None = None, depth: int = 0) -> Extracted:
    """Read `data` (the bytes of the file `name`) as its format says; `encoding` replays a text file's first read."""
    kind = sniff(data, name) if encoding is None else "text"
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
    decoded = decode_bytes(data, encoding)
    return Extracted(decoded.text, "text", decoded.encoding, decoded.skip_reason, None, decoded.warning,
                     decoded.repaired, decoded.replaced)


__all__ = ["DOCUMENT_SUFFIXES", "READ", "RECORD_SUFFIXES", "Extracted", "extract", "sniff"]
