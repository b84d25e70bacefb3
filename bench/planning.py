"""Measure planning (read, decode, chunk) on big and many small files, each case in a fresh subprocess.

    python -m bench.planning                 # 50 MB English, 4 MB one-line, 2,000 x 2 KB; chunk 2000 and 800
    python -m bench.planning --mb 5 --small 200   # a quicker run
    python -m bench.planning --json out.jsonl     # also keep the raw measurements
    python -m bench.planning --formats            # PDF, HTML, DOCX, mbox, JSON Lines of ~2 MB each

Figures, never asserted: planning MB/s; the chunker alone; one tokenizer pass over the
same text (the floor: planning cannot count tokens faster than one encoding of the text)
and how many such passes planning costs; peak RSS growth over the state after imports
and a warm-up, and that growth per input byte; the chunker's own peak growth with the
decoded text already held.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.docs import make_text, write_docs
from bench.run import report_row

ROOT = Path(__file__).resolve().parent.parent
CASE_TIMEOUT_S = 900
MODEL = "gpt-4o-mini"


def write_english(path: Path, size: int) -> None:
    """Write about `size` bytes of English paragraphs (a blank line or a newline between them)."""
    with path.open("w", encoding="utf-8") as fh:
        written, i = 0, 0
        while written < size:
            para = make_text(i, 400) + ("\n\n" if i % 3 else "\n")
            written += fh.write(para)
            i += 1


def write_one_line(path: Path, size: int) -> None:
    """Write `size` bytes on one line with no spaces or punctuation."""
    path.write_text("".join(random.Random(1).choices("abcdefghijklmnopqrstuvwxyz0123456789", k=size)),
                    encoding="utf-8")


def write_formats(folder: Path, size: int) -> dict[str, list[str]]:
    """Write about `size` bytes of English in each format (fpdf2 and python-docx build the files)."""
    from tests import format_files

    paragraphs: list[str] = []
    while sum(map(len, paragraphs)) < size:
        paragraphs.append(make_text(len(paragraphs), 120))
    said = [s for p in paragraphs for s in p.split(". ")]
    cases: dict[str, list[str]] = {}
    for kind in ("txt", "pdf", "html", "docx", "jsonl"):
        name, data = format_files.long_document(kind, said)
        (folder / name).write_bytes(data)
        cases[kind] = [str(folder / name)]
    # A mailbox of 2 KB messages, one document each.
    messages = [b"From clerk@example.org Mon Nov  2 10:00:00 2026\nSubject: note %d\nFrom: clerk@example.org\n"
                b"Content-Type: text/plain; charset=utf-8\n\n%s\n\n" % (i, make_text(i, 330).encode())
                for i in range(max(1, size // 2200))]
    (folder / "box.mbox").write_bytes(b"".join(messages))
    cases["mbox"] = [str(folder / "box.mbox")]
    return cases


def _peak_rss() -> int:
    # VmHWM is the kernel's high-water mark, so a spike between two samples still counts.
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss() -> None:
    try:  # Linux: "5" resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        pass


def measure(paths: list[str], chunk_tokens: int) -> dict[str, Any]:
    """Plan `paths` in this process; return the figures as a dict (runs inside the child)."""
    import psutil

    from pipeline.text.chunking import Chunker
    from pipeline.text.counting import token_counter
    from pipeline.text.formats.entries import Fields
    from pipeline.text.loading import load_text, makes_calls, plan_document
    from pipeline.text.selecting import select_inputs

    count = token_counter(MODEL)
    chunker = Chunker(chunk_tokens, count)
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: lazy imports, tables, a multi-chunk split
        warm = Path(tmp) / "warm.txt"
        warm.write_text(make_text(0, 6000), encoding="utf-8")
        plan_document(0, "warm", chunker, path=str(warm))
    process = psutil.Process()
    before = process.memory_info().rss
    _reset_peak_rss()
    size = sum(os.path.getsize(p) for p in paths)

    began = time.perf_counter()
    fields = Fields("text")  # a records file: a document per record, its text in "text"
    parts = select_inputs(paths, fields=fields)  # a mailbox or records file: one document per part
    refs = [plan_document(i, p, chunker, path=p, fields=fields) for i, p in enumerate(parts, start=1)]
    plan_s = time.perf_counter() - began
    peak = _peak_rss()
    failed = [r.get("skip_reason") or r.get("plan_error") for r in refs if "skip_reason" in r or "plan_error" in r]

    texts = [load_text(r) for r in refs if makes_calls(r)]
    held = process.memory_info().rss
    _reset_peak_rss()
    began = time.perf_counter()
    for text in texts:
        chunker.spans(text)
    spans_s = time.perf_counter() - began
    spans_peak = _peak_rss()
    began = time.perf_counter()
    for text in texts:
        count(text)
    count_s = time.perf_counter() - began
    mb = size / 1e6
    return {
        "docs": len(refs), "mb": round(mb, 2), "chunk_tokens": chunk_tokens,
        "chunks": sum(len(r["spans"]) for r in refs), "tokens": sum(r.get("tokens", 0) for r in refs),
        "skipped": len(failed), "plan_s": round(plan_s, 3), "plan_mb_s": round(mb / plan_s, 2),
        "spans_mb_s": round(mb / spans_s, 2), "count_mb_s": round(mb / count_s, 2),
        "x_count": round(spans_s / count_s, 2),
        "rss_before_mb": round(before / 1e6, 1), "peak_growth_mb": round((peak - before) / 1e6, 1),
        "growth_per_byte": round((peak - before) / size, 2),
        "spans_peak_growth_mb": round((spans_peak - held) / 1e6, 1),
    }


def run_case(name: str, listing: Path, chunk_tokens: int, src: Path) -> dict[str, Any]:
    """Measure one case in a fresh interpreter importing the code under `src`; return its figures."""
    argv = [sys.executable, "-m", "bench.planning", "--child", str(listing), "--chunk-tokens", str(chunk_tokens)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    done = subprocess.run(argv, cwd=src, env=env, capture_output=True, text=True, timeout=CASE_TIMEOUT_S)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-3:]
        return {"case": name, "chunk_tokens": chunk_tokens, "error": " | ".join(tail) or f"exit {done.returncode}"}
    return {"case": name, **json.loads(lines[-1])}


COLUMNS = [
    ("case", 10, "case"), ("chunk", 5, "chunk_tokens"), ("docs", 5, "docs"), ("MB", 6, "mb"),
    ("chunks", 6, "chunks"), ("tokens", 9, "tokens"), ("plan s", 7, "plan_s"), ("plan MB/s", 9, "plan_mb_s"),
    ("spans MB/s", 10, "spans_mb_s"), ("1 pass MB/s", 11, "count_mb_s"), ("x pass", 6, "x_count"),
    ("peak +MB", 8, "peak_growth_mb"), ("B/B in", 6, "growth_per_byte"), ("spans +MB", 9, "spans_peak_growth_mb"),
]


def format_row(row: dict[str, Any]) -> str:
    """One table line; a failed case shows its error instead."""
    if "error" in row:
        return f"{row['case']:<10} {row['chunk_tokens']:>5} ERROR {row['error']}"
    return " ".join(f"{row[key]!s:<{w}}" if i == 0 else f"{row[key]!s:>{w}}" for i, (_, w, key) in enumerate(COLUMNS))


def main(argv: list[str] | None = None) -> int:
    """Write the inputs to a temp dir, run every case in a child, and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=50, help="size of the English text, MB")
    p.add_argument("--line-mb", type=float, default=4, help="size of the one-line file, MB")
    p.add_argument("--small", type=int, default=2000, help="number of 2 KB files")
    p.add_argument("--chunk", default="2000,800", help="comma-separated chunk sizes in tokens")
    p.add_argument("--json", type=Path, help="append every raw measurement to this JSONL file")
    p.add_argument("--formats", action="store_true",
                   help="measure each document format instead (PDF, HTML, DOCX, mbox, JSON Lines)")
    p.add_argument("--format-mb", type=float, default=2, help="with --formats: about this many MB of each")
    p.add_argument("--src", type=Path, default=ROOT, help="checkout whose pipeline to measure")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--chunk-tokens", type=int, default=2000, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child.read_text(encoding="utf-8").split("\n"), args.chunk_tokens)))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-planning-") as tmp:
        folder = Path(tmp)
        if args.formats:
            cases = write_formats(folder, int(args.format_mb * 1e6))
        else:
            small = write_docs(folder / "small", args.small, words=330) if args.small else []  # about 2 KB each
            write_english(folder / "english.txt", int(args.mb * 1e6))
            write_one_line(folder / "one-line.txt", int(args.line_mb * 1e6))
            cases = {"english": [str(folder / "english.txt")] if args.mb else [],
                     "one-line": [str(folder / "one-line.txt")] if args.line_mb else [], "small-2kb": small}
        print(f"code under test: {args.src.resolve()}", flush=True)
        print(" ".join(f"{n:<{w}}" if i == 0 else f"{n:>{w}}" for i, (n, w, _) in enumerate(COLUMNS)), flush=True)
        for name, paths in cases.items():
            if not paths:  # --small 0 (or --mb 0) leaves a case out
                continue
            listing = folder / f"{name}.list"
            listing.write_text("\n".join(paths), encoding="utf-8")
            for chunk_tokens in map(int, args.chunk.split(",")):
                row = run_case(name, listing, chunk_tokens, args.src.resolve())
                report_row(format_row(row), row, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
