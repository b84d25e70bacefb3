"""The exit code and report.json's status, from what a run gave back."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.outcome import NOTHING_SUMMARIZED, Outcome


def _results(*statuses: str) -> list[dict[str, Any]]:
    return [{"id": i, "source": f"d{i}", "status": s} for i, s in enumerate(statuses, start=1)]


@pytest.mark.parametrize(("statuses", "summary", "code", "status"), [
    (("ok", "ok"), "S", 0, "ok"),
    (("ok", "failed"), "S", 3, "partial"),
    (("ok",), "S", 3, "partial"),  # one of two inputs never reached
    (("failed", "skipped"), "", 1, "error"),
])
def test_the_exit_code_says_how_many_inputs_were_summarized(statuses: tuple[str, ...], summary: str, code: int,
                                                            status: str) -> None:
    outcome = Outcome(total=2, results=_results(*statuses))
    outcome.finish({"summary": summary, "stats": {"model": "m"}})

    report = outcome.report()

    assert (outcome.return_code, report["exit_code"], report["status"]) == (code, code, status)
    assert report["error"] == (NOTHING_SUMMARIZED if code == 1 else None)
    assert report["documents"]["not_done"] == 2 - len(statuses) and report["model"] == "m"


@pytest.mark.parametrize(("how", "code"), [("interrupted", 130), ("terminated", 143), ("error", 1)])
def test_a_run_stopped_early_keeps_what_it_had(how: Any, code: int) -> None:
    outcome = Outcome(total=3, results=_results("ok"), base_url="http://user:pw@127.0.0.1:8000/v1")
    outcome.on_event({"event": "stats", "stats": {"llm_calls": {"map": 1}}})

    outcome.stop(how, "why")
    report = outcome.report()

    assert (outcome.return_code, report["status"], report["error"]) == (code, how, "why")
    assert report["llm_calls"] == {"map": 1} and report["base_url"] == "http://127.0.0.1:8000/v1"


def test_a_dry_run_exits_0() -> None:
    outcome = Outcome(total=2)
    outcome.finish({"preview": {"llm_calls": {"map": 2}}})

    assert outcome.return_code == 0
