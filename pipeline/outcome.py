"""What a run gave back, as a batch job reports it: report.json's fields and the exit code.

    0   every input summarized (or a dry run planned within any --max-cost)
    3   some inputs failed or were skipped, the rest summarized
    1   bad usage, an error, nothing could be summarized, or a dry run over --max-cost
    75  batches submitted or still running, not waited for (--batch --no-wait): run again later
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM)
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pipeline.summarize import DocResult

EXIT_OK, EXIT_ERROR, EXIT_PARTIAL, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 3, 130, 143
EXIT_PENDING = 75  # sysexits' EX_TEMPFAIL: the work is under way elsewhere; the same command later goes on
NOTHING_SUMMARIZED = "nothing could be summarized: every input failed or was skipped"

Stop = Literal["interrupted", "terminated", "error", "pending"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Outcome:
    """What a run gave back, kept as it streams in, so that a run stopped half-way still reports it."""

    total: int  # the inputs named
    skipped_ok: bool = False  # inputs only skipped (empty, binary) do not make the run partial
    base_url: str | None = None  # where the calls go, until the run's own counters say
    results: list[DocResult] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    preview: dict[str, Any] | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)  # each bullet's documents and lines
    stopped: Stop | None = None
    error: str | None = None
    started: datetime = field(default_factory=_now)
    _clock: float = field(default_factory=time.monotonic, repr=False)

    def on_event(self, event: dict[str, Any]) -> None:
        """Keep the run's latest counters (a stream event of graphs.run_with_progress)."""
        if event.get("event") == "stats":
            self.stats = event["stats"]

    def finish(self, output: dict[str, Any]) -> None:
        """Take the graph's output: the summary, the final counters, or a dry run's estimate."""
        self.summary = output.get("summary") or ""
        self.stats = output.get("stats") or self.stats
        self.preview = output.get("preview")
        self.evidence = output.get("evidence") or []

    def stop(self, how: Stop, error: str) -> None:
        """Record that the run ended early, and why (one line for the user)."""
        self.stopped, self.error = how, error

    @property
    def seconds(self) -> float:
        """How long the run has taken so far."""
        return time.monotonic() - self._clock

    @property
    def batches_running(self) -> int:
        """The Batch API jobs of the run that had not ended when it stopped (a later run collects them)."""
        return sum(b.get("status") not in ("completed", "failed", "expired", "cancelled")
                   for b in self.stats.get("batches") or ())

    @property
    def summarized(self) -> int:
        return sum(r["status"] == "ok" for r in self.results)

    @property
    def return_code(self) -> int:
        """The process's exit code for this outcome."""
        if self.stopped == "interrupted":
            return EXIT_INTERRUPTED
        if self.stopped == "terminated":
            return EXIT_TERMINATED
        if self.stopped == "error":
            return EXIT_ERROR
        if self.stopped == "pending":
            return EXIT_PENDING
        if self.preview is not None:
            return EXIT_OK
        if not self.summary or self.summarized == 0:
            return EXIT_ERROR
        if self.skipped_ok and len(self.results) == self.total and all(r["status"] != "failed" for r in self.results):
            return EXIT_OK
        return EXIT_PARTIAL if self.summarized < self.total else EXIT_OK

    @property
    def status(self) -> str:
        """ok, partial (as exit code 3 says), error, pending, interrupted or terminated."""
        code = self.return_code
        return self.stopped or ("error" if code == EXIT_ERROR else "partial" if code == EXIT_PARTIAL else "ok")

    @property
    def message(self) -> str | None:
        """The run's closing error, if it has one: why it stopped, or that nothing was summarized."""
        return self.error or (NOTHING_SUMMARIZED if self.return_code == EXIT_ERROR else None)

    def report(self) -> dict[str, Any]:
        """report.json's fields: the outcome, the documents by status, and the run's counters."""
        # Imported here: the command line loads this module before its usage checks, and this loads LangChain.
        from pipeline.llm.client import redact_url

        return {
            "status": self.status,
            "exit_code": self.return_code,
            "error": self.message,
            "started_at": self.started.isoformat(timespec="seconds"),
            "finished_at": _now().isoformat(timespec="seconds"),
            "documents": document_counts(self.results, self.total),
            "base_url": redact_url(self.base_url),
            **self.stats,
            "wall_seconds": round(time.monotonic() - self._clock, 3),
        }


def document_counts(results: Iterable[DocResult], total: int) -> dict[str, int]:
    """Count documents by status; those never reached count as not done."""
    counts = {"total": total, "ok": 0, "failed": 0, "skipped": 0}
    for r in results:
        counts[r["status"]] += 1
    counts["not_done"] = total - counts["ok"] - counts["failed"] - counts["skipped"]
    return counts


# The settings that shape what a run writes (not how fast it runs): report.json names them.
SHAPING = ("model", "temperature", "seed", "extra_body", "chunk_tokens", "token_max", "map_max_tokens",
           "final_max_tokens", "language", "length", "instructions", "focus", "prompts_dir", "text_field",
           "id_field", "batch")


def provenance(settings: Any, templates: Any) -> dict[str, Any]:
    """What produced a run, for report.json: the tool's version, the settings that shape results, each template's hash.

    `settings` is the run's resolved Context, `templates` its prompts.Templates.
    """
    import dataclasses
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool = version("mapreduce-summarizer")
    except PackageNotFoundError:
        tool = "unknown (not installed)"
    shaping = {name: getattr(settings, name) for name in SHAPING if hasattr(settings, name)}
    prompts = {f.name: hashlib.sha256(getattr(templates, f.name).encode("utf-8")).hexdigest()[:16]
               for f in dataclasses.fields(templates) if getattr(templates, f.name)}
    return {"version": tool, "settings": shaping, "prompts": prompts}
