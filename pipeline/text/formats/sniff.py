"""Tell a file's format from its first bytes, its name only breaking ties."""

from __future__ import annotations

import os
import re
import zipfile
from io import BytesIO

# Formats that are read; the rest of the magic numbers name what a skipped file is.
READ = frozenset({"pdf", "docx", "html", "email", "text"})
_MAGIC = (
    (b"%PDF-", "pdf"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office (OLE2) file"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x7fELF", "an executable (ELF)"),
    (b"MZ", "an executable (Windows)"),
    (b"{\\rtf", "an RTF document"),
    (b"\x00\x00\x00\x18ftyp", "a video (MP4)"),
    (b"\x00\x00\x00\x20ftyp", "a video (MP4)"),
    (b"ID3", "an MP3 audio file"),
    (b"OggS", "an Ogg media file"),
    (b"SQLite format 3\x00", "an SQLite database"),
)
# A PDF may have a few bytes of junk before its header; readers look in the first 1 KiB.
_PDF_WINDOW = 1024
_HTML_START = re.compile(rb"\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)[\s>]",
                         re.IGNORECASE | re.DOTALL)
_HTML_NAMES = (".html", ".htm", ".xhtml")
_CONTROLS = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")
_HEADER = re.compile(rb"[A-Za-z][A-Za-z0-9-]*:[ \t]")
_MAIL_HEADERS = frozenset({b"from", b"to", b"subject", b"date", b"received", b"message-id", b"mime-version",
                           b"return-path", b"delivered-to", b"content-type", b"x-mailer", b"reply-to", b"cc"})


def sniff(data: bytes, name: str) -> str:
    """Name the format of `data`: one of READ, "mbox", or a phrase naming what is not read ("a PNG image").

    Content decides, so a file whose name lies is read as what it is; the name only
    decides between text and HTML or e-mail when the content could be either.
    """
    head = data[:_PDF_WINDOW]
    if b"%PDF-" in head:
        return "pdf"
    for magic, kind in _MAGIC:
        # A short magic number may begin a text ("MZ Smith's notes"): binary ones have NULs or controls soon.
        if data.startswith(magic) and (len(magic) > 3 or _CONTROLS.search(head[:256])):
            return _zip_kind(data) if kind == "zip" else kind
    suffix = os.path.splitext(name)[1].lower()
    if _HTML_START.match(head.lstrip(b"\xef\xbb\xbf")) or (suffix in _HTML_NAMES and b"<" in head):
        return "html"
    if head.startswith(b"From ") and suffix != ".txt" and _looks_like_mail(head.split(b"\n", 1)[-1]):
        return "mbox"
    if suffix == ".eml" or _looks_like_mail(head):
        return "email"
    return "text"


def _zip_kind(data: bytes) -> str:
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, ValueError, OSError):
        return "a damaged ZIP archive"
    if "word/document.xml" in names:
        return "docx"
    if "xl/workbook.xml" in names:
        return "a spreadsheet (XLSX), not read"
    if "ppt/presentation.xml" in names:
        return "a presentation (PPTX), not read"
    if "content.xml" in names:
        return "an OpenDocument file, not read"
    return "a ZIP archive"


def _looks_like_mail(head: bytes) -> bool:
    """Whether `head` opens with a block of mail headers, a few of them the ones every message has."""
    known = 0
    for line in head.split(b"\n", 24)[:24]:
        line = line.rstrip(b"\r")
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            continue  # a folded header goes on
        if not _HEADER.match(line):
            return False
        known += line.split(b":", 1)[0].lower() in _MAIL_HEADERS
    return known >= 2
