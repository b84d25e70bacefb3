"""Read a DOCX's paragraphs, headings and tables in document order, with python-docx.

A DOCX is a ZIP: its parts' sizes are checked before anything is unpacked, so a ZIP
bomb under a .docx name is refused rather than inflated.
"""

from __future__ import annotations

import io
import zipfile

from pipeline.text.formats import Extracted

MAX_UNPACKED = 256 * 2**20
MAX_XML = 32 * 2**20  # parsed into a tree ~10x its size; 32 MiB of XML is a few thousand pages
MAX_RATIO = 200  # deflate reaches ~1000:1 only on runs of one byte; real documents stay far below


def extract(data: bytes) -> Extracted:
    """The document's text: a heading as a Markdown heading, a table a row per line, cells split by " | "."""
    if reason := _bomb(data):
        return Extracted("", "docx", failure=reason)
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - python-docx raises many kinds for a bad package
        return Extracted("", "docx", failure=f"damaged DOCX: {type(exc).__name__}: {exc}")
    # Style names by id, read once: python-docx looks each paragraph's style up among all styles.
    names = {style.style_id: style.name or "" for style in document.styles}
    blocks: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            blocks.append(_table(block))
        elif text := block.text.strip():
            level = _heading_level(names.get(block._p.style or "", ""))
            blocks.append(f"{'#' * level} {text}" if level else text)
    text = "\n\n".join(b for b in blocks if b)
    if not text:
        return Extracted("", "docx", skip_reason="DOCX without text")
    return Extracted(text, "docx")


def _bomb(data: bytes) -> str | None:
    """Why the package must not be unpacked (too big once inflated), or None."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        return f"damaged DOCX: {exc}"
    unpacked = sum(i.file_size for i in infos)
    xml = sum(i.file_size for i in infos if i.filename.endswith((".xml", ".rels")))
    packed = max(sum(i.compress_size for i in infos), 1)
    # zipfile stops each part at its stated size, so the stated sizes bound what unpacking costs.
    if unpacked > MAX_UNPACKED or unpacked > MAX_RATIO * packed and unpacked > 16 * 2**20:
        return (f"refused: unpacks to {unpacked // 2**20} MiB from {len(data) // 1024} KiB "
                f"(over the {MAX_UNPACKED // 2**20} MiB limit or {MAX_RATIO}:1), a ZIP bomb?")
    if xml > MAX_XML:
        return f"too big: its text parts unpack to {xml // 2**20} MiB, over the {MAX_XML // 2**20} MiB limit"
    return None


def _heading_level(style: str) -> int:
    if style == "Title":
        return 1
    if style.startswith("Heading ") and style[8:].isdigit():
        return min(int(style[8:]), 6)
    return 0


def _table(table: object) -> str:
    rows = []
    for row in table.rows:  # type: ignore[attr-defined]
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            if not cells or text != cells[-1]:  # a merged cell is listed once per column it spans
                cells.append(text)
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)
