"""Compare the libraries that could read PDF and HTML: text recovered, boilerplate left out, speed.

    python -m bench.format_libraries      # each candidate that is installed; the others are named

Figures, never asserted. PDF: a 300-page file of known text (fpdf2), words recovered and
pages read exactly, MB/s. HTML: a 300 KB article page with semantic navigation, and one
whose menus and sidebars are plain <div>s; article words recovered and boilerplate words
let through. The project uses pypdfium2 and trafilatura (README, "Formats").
"""

from __future__ import annotations

import io
import random
import re
import time
from collections.abc import Callable

from tests import format_files

_DROP = "script,style,nav,header,footer,aside,noscript,template,form"


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text))


def _paragraph(rng: random.Random, i: int) -> str:
    words = "council harbour budget ferry school winter bridge water housing rail market".split()
    return " ".join(f"{rng.choice(words)}{i}x{j}" for j in range(60))


def _pypdf(data: bytes) -> list[str]:
    from pypdf import PdfReader

    return [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]


def _pypdfium2(data: bytes) -> list[str]:
    import pypdfium2

    document, out = pypdfium2.PdfDocument(data), []
    for i in range(len(document)):
        textpage = document[i].get_textpage()
        out.append(textpage.get_text_range())
        textpage.close()
    document.close()
    return out


def _trafilatura(page: str) -> str:
    import trafilatura

    return trafilatura.extract(page, include_comments=False, favor_recall=True) or ""


def _readability(page: str) -> str:
    import lxml.html
    from readability import Document

    return lxml.html.fromstring(Document(page).summary()).text_content()


def _selectolax(page: str) -> str:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(page)
    for node in tree.css(_DROP):
        node.decompose()
    return tree.body.text(separator="\n") if tree.body else ""


def _beautifulsoup(page: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page, "html.parser")
    for node in soup.select(_DROP):
        node.decompose()
    return soup.get_text("\n")


def _timed(read: Callable[[object], object], data: object) -> tuple[object, float]:
    began = time.perf_counter()
    out = read(data)
    return out, time.perf_counter() - began


def pdf_rows() -> None:
    rng = random.Random(0)
    pages = tuple(_paragraph(rng, i) for i in range(300))
    data = format_files.pdf_bytes(pages)
    truth = _words(" ".join(pages))
    for name, read in (("pypdf", _pypdf), ("pypdfium2", _pypdfium2)):
        try:
            read(format_files.pdf_bytes(pages[:1]))
        except ImportError:
            print(f"{name:<14} not installed")
            continue
        out, seconds = _timed(read, data)
        got = _words(" ".join(out))  # type: ignore[arg-type]
        exact = sum(" ".join(a.split()) == b for a, b in zip(out, pages))  # type: ignore[call-overload]
        print(f"{name:<14} {len(data) / seconds / 1e6:6.2f} MB/s  {len(pages) / seconds:6.0f} pages/s  "
              f"words {len(truth & got) / len(truth):.3f}  exact pages {exact}/{len(pages)}")


def html_rows() -> None:
    rng = random.Random(1)
    article = [_paragraph(rng, i) for i in range(400)]
    nav = "".join(f'<li><a href="/n{i}">navword{i}</a></li>' for i in range(60))
    semantic = (f"<html><head><title>Page</title><style>.a{{}}</style><script>var s;</script></head><body>"
                f"<header><nav><ul>{nav}</ul></nav></header><main><article>"
                + "".join(f"<p>{p}</p>" for p in article) + "</article></main><footer>footerword</footer></body></html>")
    menu = "".join(f'<div class="menu-item"><a href="/n{i}">navword{i}</a></div>' for i in range(40))
    divs = (f'<html><body><div id="top"><div class="menu">{menu}</div></div><div class="content"><div class="post">'
            + "".join(f"<p>{p}</p>" for p in article[:50])
            + '</div><div class="sidebar"><a href="/r">relatedword1</a></div></div>'
            '<div class="footer">footerword</div></body></html>')
    for name, read in (("trafilatura", _trafilatura), ("readability", _readability),
                       ("selectolax", _selectolax), ("beautifulsoup", _beautifulsoup)):
        try:
            read(format_files.html_page())
        except ImportError:
            print(f"{name:<14} not installed")
            continue
        figures = []
        for page, truth in ((semantic, _words(" ".join(article))), (divs, _words(" ".join(article[:50])))):
            out, seconds = _timed(read, page)
            got = _words(out)  # type: ignore[arg-type]
            junk = {w for w in got if re.match(r"navword|relatedword|footerword", w)}
            figures.append(f"{len(page) / seconds / 1e6:7.2f} MB/s words {len(truth & got) / len(truth):.3f} "
                           f"boilerplate {len(junk):3d}")
        print(f"{name:<14} semantic: {figures[0]}   div layout: {figures[1]}")


def main() -> int:
    """Print one line per candidate library."""
    print("PDF (300 pages)")
    pdf_rows()
    print("HTML (300 KB article page; div-built page)")
    html_rows()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
