"""Read an e-mail message: subject, sender, date, its text parts decoded by their charsets, its attachments.

An attachment is listed in the header block, and read (one level deep) when it is a
format of its own that is read. A whole mbox read as one file gives every message in
turn, each a "message" mark; listing one as its messages (see records) is the usual way.
"""

from __future__ import annotations

import re
from email import policy
from email.message import Message
from email.parser import BytesParser

from pipeline.text.decoding import decode_bytes, reads_as_noise
from pipeline.text.formats import Extracted, wider

_FROM_LINE = re.compile(rb"^From [^\n]*\n", re.MULTILINE)
MAX_DEPTH = 1


def extract(data: bytes, depth: int = 0) -> Extracted:
    """One message as text, or each message of an mbox in turn."""
    if data.startswith(b"From ") and len(found := message_spans(data)) > 1:
        return _mbox(data, found, depth)
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[-1]
    text, warning = message_text(data, depth)
    if not text.strip():
        return Extracted("", "email", skip_reason="e-mail without text")
    return Extracted(text, "email", warning=warning)


def message_spans(data: bytes) -> list[tuple[int, int]]:
    """Where each message of an mbox lies: every line that begins with "From " begins one."""
    starts = [m.start() for m in _FROM_LINE.finditer(data)]
    return [(start, end) for start, end in zip(starts, [*starts[1:], len(data)])]


def _mbox(data: bytes, spans: list[tuple[int, int]], depth: int) -> Extracted:
    parts, marks, size, notes = [], [], 0, []
    for number, (start, end) in enumerate(spans, start=1):
        text, warning = message_text(data[start:end].split(b"\n", 1)[-1], depth)
        if warning:
            notes.append(f"message {number}: {warning}")
        if text.strip():
            marks.append((size, number))
            parts.append(text)
            size += len(text) + 2
    if not parts:
        return Extracted("", "email", skip_reason="mailbox without text")
    return Extracted("\n\n".join(parts), "email", warning="; ".join(notes) or None, unit="message", marks=marks)


def message_text(data: bytes, depth: int = 0) -> tuple[str, str | None]:
    """A message's headers that matter, its text and its readable attachments; and a warning, if any."""
    message = BytesParser(policy=policy.default).parsebytes(data)
    header = [f"{name}: {_clean(value)}" for name in ("Subject", "From", "Date")
              if (value := _header(message, name))]
    plain: list[str] = []
    html: list[str] = []
    attached: list[str] = []
    names: list[str] = []
    notes: list[str] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        name = part.get_filename()
        if name or part.get_content_disposition() == "attachment":
            name = _clean(name or f"unnamed {part.get_content_type()}")
            names.append(name)
            if section := _attachment(part, name, depth, notes):
                attached.append(section)
            continue
        kind = part.get_content_type()
        if kind == "text/plain":
            if body := _body(part, notes):
                plain.append(body)
        elif kind == "text/html":
            if body := _body(part, notes, html=True):
                html.append(body)
    if names:
        header.append("Attachments: " + ", ".join(names))
    text = "\n".join(header) + "\n\n" + "\n\n".join(plain or html) + "".join(attached)
    return text.strip() + "\n", "; ".join(notes) or None


def _header(message: Message, name: str) -> str:
    try:
        return str(message.get(name, "") or "")
    except Exception:  # noqa: BLE001 - a malformed header is left out, not the message
        return ""


def _clean(text: str) -> str:
    """One line, without lone surrogates (undecodable header bytes)."""
    return " ".join(text.encode("utf-8", "replace").decode("utf-8").split())


def _body(part: Message, notes: list[str], html: bool = False) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload:
        return ""
    if html:
        from pipeline.text.formats import webpage

        page = webpage.extract(payload)
        return page.text
    declared = (part.get_content_charset() or "").lower()
    codec = wider(declared) if declared else ""
    if codec:
        try:
            text = payload.decode(codec)
            if codec == "utf-8" or not reads_as_noise(text):  # valid UTF-8 is no accident
                return text.replace("\r\n", "\n").strip()
        except (LookupError, UnicodeDecodeError):
            pass
    decoded = decode_bytes(payload)
    if decoded.skip_reason:
        notes.append(f"a text part left out ({decoded.skip_reason})")
        return ""
    if declared:
        notes.append(f"a text part declared {declared} read as {decoded.encoding}")
    return decoded.text.replace("\r\n", "\n").strip()


def _attachment(part: Message, name: str, depth: int, notes: list[str]) -> str:
    """The attachment's text under a line naming it, when it is a format that is read."""
    payload = part.get_payload(decode=True)
    if depth >= MAX_DEPTH or not isinstance(payload, bytes) or not payload:
        return ""
    from pipeline.text.formats import extract

    try:
        found = extract(payload, name, depth=depth + 1)
    except Exception as exc:  # noqa: BLE001 - one attachment's failure is noted, the message still read
        notes.append(f"attachment {name} not read: {type(exc).__name__}")
        return ""
    if found.text:
        return f"\n\n[Attachment: {name}]\n{found.text}"
    if found.format != "binary":
        notes.append(f"attachment {name} not read: {found.failure or found.skip_reason}")
    return ""


__all__ = ["extract", "message_spans", "message_text"]
