"""Split JSON Lines, JSON and CSV files into records, and read one record's text field."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from pipeline.text.decoding import decode_bytes

JSON_LINES = (".jsonl", ".ndjson")


def line_spans(data: bytes) -> list[tuple[int, int]]:
    """Where each non-blank line of a JSON Lines file lies."""
    spans, start = [], 0
    for line in data.splitlines(keepends=True):
        end = start + len(line)
        if line.strip():
            spans.append((start, end))
        start = end
    return spans


def parse_line(line: bytes) -> Any:
    """One JSON Lines record; a line not in UTF-8 is decoded as any text is."""
    try:
        return json.loads(line)
    except UnicodeDecodeError:
        return json.loads(decode_bytes(line).text)


def whole_file(data: bytes, suffix: str) -> list[dict[str, Any]]:
    """Every record of a JSON (a list of objects, or one object) or CSV (a row each, under its header) file."""
    if suffix == ".csv":
        decoded = decode_bytes(data)
        if decoded.skip_reason:
            raise ValueError(decoded.skip_reason)
        return list(csv.DictReader(io.StringIO(decoded.text, newline="")))
    found = json.loads(data)
    if isinstance(found, dict):
        lists = [v for v in found.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        found = lists[0] if len(lists) == 1 else [found]
    if not isinstance(found, list):
        raise ValueError("the JSON holds no list of records")
    return found


def field_text(record: Any, field: str) -> str | None:
    """The text under `field` ("a.b" reaches into nested objects); None if the record has none."""
    value = record
    for key in [field] if isinstance(record, dict) and field in record else field.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
