"""Inputs that are parts of a file: each message of an mbox, each record of a records file.

A file that holds many documents is listed as one input per document, named
"<path>#msg<n>" or "<path>#rec<n>" (from 1). Such a name is all a planner or a rerun
needs: the file is indexed again when its first part is read (then kept, for the next
parts), and each part has its own hash, so an unchanged message of a grown mailbox is
found in the store.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipeline.text.formats import RECORD_SUFFIXES, Extracted, mail, records

log = logging.getLogger(__name__)

_PART = re.compile(r"^(.+)#(msg|rec)([1-9][0-9]*)$")
_UNITS = {"msg": "message", "rec": "record"}


@dataclass(frozen=True, slots=True)
class Fields:
    """Which field of a record holds its text, and which its id (shown beside its location)."""

    text: str | None = None
    id: str | None = None


def split_name(name: str) -> tuple[str, str, int] | None:
    """(file, "message" or "record", number) for a part's name; None for a whole file (or a file named so)."""
    if "#" not in name or not (found := _PART.match(name)) or os.path.lexists(name):
        return None
    return found.group(1), _UNITS[found.group(2)], int(found.group(3))


def expand(names: Iterable[str], fields: Fields, max_bytes: int) -> list[str]:
    """List each mbox as its messages and, with a text field, each records file as its records."""
    out: list[str] = []
    for name in names:
        suffix = os.path.splitext(name)[1].lower()
        unit = "msg" if suffix == ".mbox" else "rec" if suffix in RECORD_SUFFIXES and fields.text else None
        count = _count(name, fields, max_bytes) if unit else 0
        out.extend([f"{name}#{unit}{n}" for n in range(1, count + 1)] if count else [name])
    return out


def _count(name: str, fields: Fields, max_bytes: int) -> int:
    try:
        return len(_index(name, fields, max_bytes))
    except (OSError, ValueError) as exc:  # read as a whole file instead, and its failure told there
        log.debug("cannot list the parts of %s: %s", name, exc)
        return 0


def read_part(name: str, file: str, unit: str, number: int, fields: Fields,
              max_bytes: int) -> tuple[str, Extracted, str]:
    """Read one message or record: its hash, its text, and its location ("message 3", "record 2, id a1")."""
    index = _index(file, fields, max_bytes)
    if number > len(index):
        raise ValueError(f"{file} has {len(index)} {unit}s now, not {number}")
    part = index[number - 1]
    if unit == "message":
        start, end = part
        with open(file, "rb") as fh:
            fh.seek(start)
            raw = fh.read(end - start)
        text, warning = mail.message_text(raw.split(b"\n", 1)[-1])
        return hashlib.sha256(raw).hexdigest(), Extracted(text, "email", warning=warning), f"message {number}"
    raw, text, ident = part
    where = f"record {number}" + (f", id {ident}" if ident else "")
    if text is None:
        found = Extracted("", "record", skip_reason=f"no {fields.text!r} field in {where} (or not JSON)")
    elif not text.strip():
        found = Extracted("", "record", skip_reason=f"empty {fields.text!r} field in {where}")
    else:
        found = Extracted(text, "record")
    return hashlib.sha256(raw).hexdigest(), found, where


def _index(file: str, fields: Fields, max_bytes: int) -> tuple[Any, ...]:
    """The parts of `file` as it is now; kept for the next part of the same file."""
    stat = os.stat(file)
    if stat.st_size > max_bytes:
        raise ValueError(f"file is {stat.st_size // 2**20} MiB, over the {max_bytes // 2**20} MiB limit")
    return _parts(file, stat.st_mtime_ns, stat.st_size, fields)


@functools.lru_cache(maxsize=4)
def _parts(file: str, mtime_ns: int, size: int, fields: Fields) -> tuple[Any, ...]:
    with open(file, "rb") as fh:
        data = fh.read()
    if file.lower().endswith(".mbox"):
        return tuple(mail.message_spans(data))
    if not fields.text:
        raise ValueError("records need a text field")
    suffix = os.path.splitext(file)[1].lower()
    if suffix in records.JSON_LINES:
        raws = [data[start:end].strip() for start, end in records.line_spans(data)]
        found = [_parsed(raw) for raw in raws]
    else:
        found = records.whole_file(data, suffix)
        raws = [json.dumps(r, ensure_ascii=False, sort_keys=True).encode() for r in found]
    return tuple((raw, records.field_text(r, fields.text), records.field_text(r, fields.id) if fields.id else None)
                 for raw, r in zip(raws, found))


def _parsed(line: bytes) -> Any:
    """A JSON Lines record, or None for a line that is not JSON (that record is skipped, saying so)."""
    try:
        return records.parse_line(line)
    except ValueError:
        return None


__all__ = ["Fields", "expand", "read_part", "split_name"]
