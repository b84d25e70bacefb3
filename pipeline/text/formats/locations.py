"""Say where each chunk of a document comes from: its pages (or messages), else its lines."""

from __future__ import annotations

import bisect
from collections.abc import Sequence


def locate(text: str, spans: Sequence[tuple[int, int]], marks: Sequence[tuple[int, int]], unit: str) -> list[str]:
    """Where each chunk comes from: the pages (or other marked units) it spans, else its lines."""
    if marks:
        starts = [offset for offset, _ in marks]
        out = []
        for start, end in spans:
            first = marks[max(bisect.bisect_right(starts, start) - 1, 0)][1]
            last = marks[max(bisect.bisect_right(starts, max(end - 1, start)) - 1, 0)][1]
            out.append(f"{unit} {first}" if first == last else f"{unit}s {first}-{last}")
        return out
    out, line, at = [], 1, 0
    for start, end in spans:
        # Chunks may overlap: the next one can begin before the last one ended.
        line += text.count("\n", at, start) if start >= at else -text.count("\n", start, at)
        last = line + text.count("\n", start, max(end - 1, start))
        out.append(f"line {line}" if last == line else f"lines {line}-{last}")
        line, at = last, max(end - 1, start)
    return out
