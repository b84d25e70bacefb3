"""Build small documents of every supported format, with the text a reader should get from each."""

from __future__ import annotations

import io
import json
import zipfile
from email.message import EmailMessage
from email.utils import format_datetime
from datetime import datetime, timezone
from pathlib import Path

PAGES = (
    "The harbour council met on Monday to review the electric ferry trial. Ridership reached "
    "1,450 trips a day, well above the 900 planned.",
    "Two battery faults stopped service for nine days in March. The review recommends a second "
    "boat and a covered shelter at the north pier.",
)
ARTICLE = ("Water rates will rise by four percent next spring, the utility board decided.",
           "The increase pays for new pipes under the old town, where leaks lose a fifth of the supply.")
NAV_WORDS = ("Home", "Subscribe", "Contact")
SCRIPT_WORD = "trackingPixelCounter"
STYLE_WORD = "fontfamilyserifmarker"
DOCX_HEADING = "Quarterly ferry report"
DOCX_PARAGRAPHS = ("Passenger numbers rose every month of the quarter.",
                   "The crew asked for a longer break at the south pier.")
DOCX_TABLE = (("Month", "Trips"), ("January", "1210"), ("February", "1380"))
KOREAN_BODY = "제주 감귤 수확이 11월 초에 시작되었다. 여름 강수량이 적어 열매는 작지만 당도는 높았다."
ENGLISH_BODY = "The library will open on Sundays from May, staffed by volunteers from the reading club."
ATTACHED_TEXT = "Minutes: the board approved the Sunday opening by five votes to two."
RECORDS = ({"id": "a1", "body": "The bridge on the river road closes for repairs in June."},
           {"id": "b2", "body": "School buses will take the harbour route while it is shut."},
           {"id": "c3", "body": "Repairs are expected to cost 2.4 million."})


def pdf_bytes(pages: tuple[str, ...] = PAGES, *, image_page: bool = False, password: str | None = None) -> bytes:
    """A PDF with one page of text per item; an image-only page after them, if asked; encrypted, if asked."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    if image_page:
        from PIL import Image

        pdf.add_page()
        picture = Image.new("L", (200, 100), 255)
        for x in range(20, 180):
            picture.putpixel((x, 50), 0)
        pdf.image(picture, x=20, y=20, w=120)
    if password is not None:
        pdf.set_encryption(owner_password=password + "-owner", user_password=password)
    return bytes(pdf.output())


def html_page() -> str:
    """A news page: navigation, a script, a style and a footer around a two-paragraph article."""
    nav = "".join(f'<li><a href="/{w.lower()}">{w}</a></li>' for w in NAV_WORDS)
    return ("<!DOCTYPE html><html><head><title>Water rates rise</title>"
            f"<style>body {{ font-family: serif; }} .{STYLE_WORD} {{ color: red; }}</style>"
            f"<script>var {SCRIPT_WORD} = 0; function track() {{ {SCRIPT_WORD}++; }}</script></head>"
            f"<body><header><nav><ul>{nav}</ul></nav></header>"
            "<main><article><h1>Water rates rise</h1>"
            + "".join(f"<p>{p}</p>" for p in ARTICLE)
            + "</article></main><footer><p>Copyright 2026 The Gazette. All rights reserved.</p></footer>"
            f"<script>track();</script></body></html>")


def docx_bytes() -> bytes:
    """A DOCX with a heading, a paragraph, a table and another paragraph, in that order."""
    import docx

    document = docx.Document()
    document.add_heading(DOCX_HEADING, level=1)
    document.add_paragraph(DOCX_PARAGRAPHS[0])
    table = document.add_table(rows=len(DOCX_TABLE), cols=2)
    for row, cells in zip(table.rows, DOCX_TABLE):
        for cell, value in zip(row.cells, cells):
            cell.text = value
    document.add_paragraph(DOCX_PARAGRAPHS[1])
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_bomb(size: int = 200 * 2**20) -> bytes:
    """A DOCX-named ZIP whose document part inflates to `size` bytes of zeros."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w") as part:
            block = b"\0" * 2**20
            for _ in range(size // len(block)):
                part.write(block)
    return out.getvalue()


def messages() -> list[EmailMessage]:
    """Two messages: a Korean one in cp949, base64; an English one with a text attachment."""
    korean = EmailMessage()
    korean["Subject"] = "감귤 수확"
    korean["From"] = "Farmer Kim <kim@example.org>"
    korean["Date"] = format_datetime(datetime(2026, 11, 3, 9, 30, tzinfo=timezone.utc))
    korean.set_content(KOREAN_BODY, charset="cp949", cte="base64")
    english = EmailMessage()
    english["Subject"] = "Sunday opening"
    english["From"] = "Library <desk@example.org>"
    english["Date"] = format_datetime(datetime(2026, 11, 4, 17, 0, tzinfo=timezone.utc))
    english.set_content(ENGLISH_BODY)
    english.add_attachment(ATTACHED_TEXT.encode(), maintype="text", subtype="plain", filename="minutes.txt")
    return [korean, english]


def mbox_bytes() -> bytes:
    """An mbox file holding `messages()`."""
    parts = []
    for message in messages():
        body = message.as_bytes().replace(b"\nFrom ", b"\n>From ")
        parts.append(b"From sender@example.org Tue Nov  3 09:30:00 2026\n" + body.rstrip(b"\n") + b"\n\n")
    return b"".join(parts)


def jsonl_text() -> str:
    """JSON Lines of `RECORDS`."""
    return "".join(json.dumps(r) + "\n" for r in RECORDS)


def write_all(folder: Path) -> dict[str, Path]:
    """Write one file of each format into `folder`; return them by format."""
    files = {"pdf": folder / "report.pdf", "html": folder / "rates.html", "docx": folder / "ferry.docx",
             "eml": folder / "library.eml", "mbox": folder / "inbox.mbox", "jsonl": folder / "notes.jsonl"}
    files["pdf"].write_bytes(pdf_bytes())
    files["html"].write_text(html_page(), encoding="utf-8")
    files["docx"].write_bytes(docx_bytes())
    files["eml"].write_bytes(messages()[1].as_bytes())
    files["mbox"].write_bytes(mbox_bytes())
    files["jsonl"].write_text(jsonl_text(), encoding="utf-8")
    return files


def sentences(count: int, seed: str = "") -> list[str]:
    """Numbered sentences, each unique, to find again in what the model received."""
    words = ("council", "harbour", "budget", "ferry", "school", "winter", "bridge", "water", "market", "library")
    return [f"Item {seed}{i:03d} says the {words[i % 10]} plan needs {words[(i * 7) % 10]} money by {2000 + i}."
            for i in range(count)]


def long_document(kind: str, said: list[str]) -> tuple[str, bytes]:
    """A file of format `kind` whose text is `said`, a few sentences a paragraph (or page, or record)."""
    paragraphs = [" ".join(said[i:i + 4]) for i in range(0, len(said), 4)]
    if kind == "pdf":
        return "long.pdf", pdf_bytes(tuple(" ".join(paragraphs[i:i + 3]) for i in range(0, len(paragraphs), 3)))
    if kind == "html":
        body = "".join(f"<p>{p}</p>" for p in paragraphs)
        return "long.html", (f"<html><head><title>Plans</title><script>var {SCRIPT_WORD};</script></head><body>"
                             f"<nav><a href='/'>Home</a></nav><article>{body}</article></body></html>").encode()
    if kind == "docx":
        import docx

        document = docx.Document()
        for p in paragraphs:
            document.add_paragraph(p)
        out = io.BytesIO()
        document.save(out)
        return "long.docx", out.getvalue()
    if kind in ("eml", "mbox"):
        message = EmailMessage()
        message["Subject"] = "Plans"
        message["From"] = "clerk@example.org"
        message.set_content("\n\n".join(paragraphs), charset="utf-8", cte="quoted-printable")
        if kind == "eml":
            return "long.eml", message.as_bytes()
        return "long.mbox", b"From clerk@example.org Mon Nov  2 10:00:00 2026\n" + message.as_bytes() + b"\n"
    if kind == "jsonl":
        return "long.jsonl", "".join(json.dumps({"text": p}) + "\n" for p in paragraphs).encode()
    return "long.txt", "\n\n".join(paragraphs).encode()
