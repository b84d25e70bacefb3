"""The Sources legend under a final summary: the documents it cites by tag, and those it leaves out."""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.answers.citations import cited
from pipeline.prompting import escape_label
from pipeline.summarize import DocResult

UNCITED_NAMED = 50  # past this many, the documents a summary leaves out are counted, not named


def sources_legend(summary: str, results: Iterable[DocResult]) -> str:
    """List the documents the summary cites by tag, in input order, and say which it leaves out."""
    ids = set(cited(summary))
    summarized = sorted((r for r in results if r["status"] == "ok"), key=lambda r: r["id"])
    lines = [f"- [D{d['id']}] {_label(d)}" for d in summarized if d["id"] in ids]
    legend = "\n\n**Sources**\n\n" + "\n".join(lines) + "\n" if lines else ""
    left_out = [d for d in summarized if d["id"] not in ids]
    if left_out:
        named = ", ".join(f"[D{d['id']}] {_label(d)}" for d in left_out[:UNCITED_NAMED])
        more = f", and {len(left_out) - UNCITED_NAMED} more (see summaries.jsonl)" if len(left_out) > UNCITED_NAMED else ""
        legend += f"\n**Summarized but not cited above:** {named}{more}\n"
    return legend


def _label(result: DocResult) -> str:
    """A document as the sources list names it: its source, and where in it when known ("page 3")."""
    where = result.get("location")
    return escape_label(result["source"]) + (f" ({escape_label(where)})" if where else "")
