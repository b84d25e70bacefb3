"""Read a web page's main text, without its scripts, styles, navigation and boilerplate, title first.

trafilatura finds the main text; of the libraries measured (README) it alone left out
menus and sidebars built of plain <div>s, at 3 MB/s. A page it finds no main text in
is read whole, less scripts, styles and navigation.
"""

from __future__ import annotations

import logging
import re

from pipeline.text.decoding import decode_bytes, reads_as_noise
from pipeline.text.formats import Extracted, wider

log = logging.getLogger(__name__)

MAX_BYTES = 16 * 2**20  # a page's tree takes ~20x its size; real pages are far smaller
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_NOT_TEXT = ("script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "svg")
_BLANK_LINES = re.compile(r"\n{3,}")


def extract(data: bytes) -> Extracted:
    """The page's title and main text; a page without text is skipped."""
    if len(data) > MAX_BYTES:
        return Extracted("", "html", skip_reason=f"web page of {len(data) // 2**20} MiB, "
                                                 f"over the {MAX_BYTES // 2**20} MiB limit for pages")
    markup, encoding = _decode(data)
    if markup is None:
        return Extracted("", "html", skip_reason="undecodable web page")
    import lxml.html
    from lxml.etree import ParserError

    try:
        tree = lxml.html.document_fromstring(markup)
    except (ParserError, ValueError) as exc:
        return Extracted("", "html", encoding, failure=f"damaged web page: {exc}")
    title = " ".join((tree.findtext(".//title") or "").split())
    body = _main_text(tree) or _all_text(tree)
    body = _BLANK_LINES.sub("\n\n", body).strip()
    if title and not body.startswith(title):
        body = f"{title}\n\n{body}" if body else title
    if not body:
        return Extracted("", "html", encoding, skip_reason="web page without text")
    if reads_as_noise(body):
        return Extracted("", "html", encoding, skip_reason="web page reads as noise: wrong character set?")
    return Extracted(body, "html", encoding)


def _decode(data: bytes) -> tuple[str | None, str | None]:
    """The page as text: in the character set it declares if that reads, else as any text file is decoded."""
    if found := _CHARSET.search(data[:4096]):
        name = wider(found.group(1).decode("ascii", "replace"))
        try:
            return data.decode(name), name
        except (LookupError, UnicodeDecodeError):
            log.debug("declared charset %s does not read; detecting", name)
    decoded = decode_bytes(data)
    return (None, None) if decoded.skip_reason else (decoded.text, decoded.encoding)


def _main_text(tree: object) -> str:
    import trafilatura

    try:
        found = trafilatura.extract(tree, include_comments=False, include_tables=True, favor_recall=True,
                                    deduplicate=False, output_format="txt")
    except Exception:  # noqa: BLE001 - a page it cannot handle is read whole instead
        log.debug("trafilatura failed on a page; reading it whole", exc_info=True)
        return ""
    return found or ""


def _all_text(tree: object) -> str:
    for element in tree.xpath("//" + " | //".join(_NOT_TEXT)):  # type: ignore[attr-defined]
        element.drop_tree()
    body = tree.find("body")  # type: ignore[attr-defined]
    pieces = (piece.strip() for piece in (tree if body is None else body).itertext())
    return "\n".join(piece for piece in pieces if piece)
