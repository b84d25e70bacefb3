"""Write a run's outputs atomically: summary.md, summaries.jsonl and report.json."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.summarize import DocResult

# Each line's fields, in order, with what a result that leaves one out means by it.
JSONL_FIELDS = {"source": None, "sha256": None, "status": None, "summary": None, "error": None, "chunks": 0,
                "tokens_in": 0, "tokens_out": 0, "language": None, "encoding": None, "repaired": False, "replaced": 0,
                "evidence": []}


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it 0600; the outputs are for others to read too
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _umask()


def document_counts(results: Iterable[DocResult], total: int) -> dict[str, int]:
    """Count documents by status; those never reached count as not done."""
    counts = {"total": total, "ok": 0, "failed": 0, "skipped": 0}
    for r in results:
        counts[r["status"]] += 1
    counts["not_done"] = total - counts["ok"] - counts["failed"] - counts["skipped"]
    return counts


def write_outputs(out_dir: Path, summary: str, results: Iterable[DocResult], report: Mapping[str, Any],
                  evidence: Iterable[Mapping[str, Any]] = ()) -> None:
    """Write the output files into `out_dir`; evidence.jsonl holds each bullet's documents and lines."""
    lines = [json.dumps({k: r.get(k, default) for k, default in JSONL_FIELDS.items()}, ensure_ascii=False)
             for r in sorted(results, key=lambda r: r["id"])]
    atomic_write(out_dir / "summaries.jsonl", "".join(line + "\n" for line in lines))
    atomic_write(out_dir / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if summary:
        atomic_write(out_dir / "summary.md", summary)
        atomic_write(out_dir / "evidence.jsonl", "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in evidence))
