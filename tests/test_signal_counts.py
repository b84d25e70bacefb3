"""A run stopped by a signal at any point reports every call it made and every token it was answered."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI
from tests.test_batch import _start_cli, _write_docs

CONCURRENCY = 4


def _stopped_run(fake: FakeOpenAI, tmp_path: Path, documents: int, after: int, sig: signal.Signals,
                 *options: str) -> Path:
    """Run the CLI over `documents` files and send it `sig` once the server has seen `after` calls; its --out."""
    docs = _write_docs(tmp_path / "in", documents)
    out = tmp_path / "out"
    proc = _start_cli(str(docs), "--base-url", fake.base_url, "--out", str(out), "--no-store",
                      "--concurrency", str(CONCURRENCY), *options)
    deadline = time.monotonic() + 30
    while fake.chat_calls < after and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    return out


@pytest.mark.parametrize(("sig", "after"), [(signal.SIGTERM, 1), (signal.SIGINT, 3), (signal.SIGTERM, 9),
                                            (signal.SIGINT, 17), (signal.SIGTERM, 30)])
def test_the_report_counts_every_call_however_the_run_is_stopped(fake: FakeOpenAI, tmp_path: Path,
                                                                   sig: signal.Signals, after: int) -> None:
    fake.latency = 0.03
    out = _stopped_run(fake, tmp_path, 80, after, sig)
    received = fake.chat_calls

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    lines = [json.loads(line) for line in (out / "summaries.jsonl").read_text(encoding="utf-8").splitlines()]
    ok = [line for line in lines if line["status"] == "ok"]
    assert report["status"] in ("interrupted", "terminated")
    calls = report.get("llm_calls", {}).get("map", 0)
    # Every request the server saw was counted; at most the calls in flight were counted and never sent.
    assert received <= calls <= received + CONCURRENCY, (received, calls)
    assert calls - report["unanswered_calls"] >= len(ok)  # what was never read is said apart
    assert 0 <= report["unanswered_calls"] <= CONCURRENCY
    # Every answer a document kept was counted in the tokens.
    assert report.get("completion_tokens", 0) >= sum(line["tokens_out"] for line in ok)
    assert report.get("prompt_tokens", 0) >= sum(line["tokens_in"] for line in ok)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_calls_in_flight_when_the_run_stops_are_counted_as_unanswered(fake: FakeOpenAI, tmp_path: Path,
                                                                       sig: signal.Signals) -> None:
    fake.latency = 30.0  # no answer comes back before the signal
    out = _stopped_run(fake, tmp_path, 12, CONCURRENCY, sig, "--no-adapt")

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["llm_calls"]["map"] == report["unanswered_calls"] == fake.chat_calls == CONCURRENCY
    assert report["documents"]["ok"] == 0 and report["completion_tokens"] == 0
