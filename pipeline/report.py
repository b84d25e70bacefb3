"""Write a run's outputs atomically (summary.md, summaries.jsonl, report.json), once sure they can be written."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.summarize import DocResult

# Each line's fields, in order, with what a result that leaves one out means by it.
JSONL_FIELDS = {"source": None, "sha256": None, "status": None, "summary": None, "error": None, "chunks": 0,
                "tokens_in": 0, "tokens_out": 0, "language": None, "encoding": None, "repaired": False, "replaced": 0,
                "same_as": None, "format": "text", "location": None, "locations": [], "evidence": []}


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


def check_writable(out: Path | None, store: Path | None) -> None:
    """Check every place a run will write (the output folder, the store), before anything is read or called.

    Raise InputError naming the place that cannot be written.
    """
    if out is not None:
        _writable(out, "--out")
    if store is not None:
        if store.is_dir():
            raise InputError(f"the store {store} is a folder; give a file such as {store / 'store.sqlite'}")
        _writable(store.parent, "the store's folder")
        if store.exists() and not os.access(store, os.R_OK | os.W_OK):
            raise InputError(f"cannot write to the store {store}: permission denied")


def _writable(folder: Path, what: str) -> None:
    """Make `folder` and prove that files can be created in it, or raise InputError."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} {folder} is a file, not a folder: name a folder for the outputs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"cannot write to {what} {folder}: {exc.strerror or exc}") from exc
