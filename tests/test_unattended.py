"""What a scheduler reads: progress lines with an honest ETA, and JSON log lines with structured fields."""

from __future__ import annotations

import json
import logging

import pytest

from pipeline import progress
from pipeline.logs import JsonFormatter
from pipeline.progress import LogView


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    return clock


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == progress.log.name]


def test_no_estimate_before_anything_is_done_and_a_phase_rates_from_its_own_start(
        clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    view = LogView(every=5.0)
    view.show("documents", 0, 5)
    clock.now += 30  # a slow model: nothing done yet
    view.tick()
    first = lines(caplog)[-1]
    assert first.getMessage() == "documents: 0/5 documents, 0.0/s, eta unknown" and first.eta_seconds is None
    clock.now += 20
    view.show("documents", 5, 5)
    clock.now += 60  # the reduce begins a minute later: its rate is not the run's
    view.show("reduce", 0, 1)
    clock.now += 30
    view.tick()
    assert [r.getMessage() for r in lines(caplog)] == [
        "documents: 0/5 documents, 0.0/s, eta unknown",
        "documents: 5/5 documents, 0.1/s, done",  # 5 in 50 s, its own time; said once
        "reduce: 0/1 call, 0.0/s, eta unknown",
        "reduce: 0/1 call, 0.0/s, eta unknown"]
    clock.now += 10
    view.show("reduce", 1, 2)
    clock.now += 5
    view.tick()
    reduce = lines(caplog)[-1]
    assert reduce.getMessage() == "reduce: 1/2 calls, 0.0/s, eta 45s" and reduce.seconds == 45.0


def test_json_lines_carry_the_structured_fields(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    view = LogView(every=1.0)
    view.show("map", 3, 12)
    clock.now += 2
    view.tick()
    entry = json.loads(JsonFormatter().format(lines(caplog)[-1]))
    assert {k: entry[k] for k in ("event", "phase", "done", "total", "seconds")} == {
        "event": "progress", "phase": "map", "done": 3, "total": 12, "seconds": 2.0}
    assert entry["eta_seconds"] == 6.0 and entry["message"].startswith("map: 3/12 calls")


def test_tracing_without_a_key_is_turned_off_with_one_warning() -> None:
    from pipeline.tracing import settle_tracing

    env = {"LANGSMITH_TRACING": "true"}
    assert settle_tracing(env) == "LangSmith tracing is on but no LANGSMITH_API_KEY is set: tracing is off for this run"
    assert env == {"LANGSMITH_TRACING": "false"}
    assert settle_tracing(env) is None  # said once: now it is off


def test_tracing_to_an_endpoint_that_refuses_is_turned_off(unused_tcp_port: int) -> None:
    from pipeline.tracing import settle_tracing

    env = {"LANGCHAIN_TRACING_V2": "true", "LANGSMITH_API_KEY": "lsv2-x",
           "LANGSMITH_ENDPOINT": f"http://127.0.0.1:{unused_tcp_port}"}
    warning = settle_tracing(env)
    assert warning is not None and "cannot be reached" in warning and "lsv2-x" not in warning
    assert env["LANGCHAIN_TRACING_V2"] == "false"


def test_a_traced_cli_run_with_no_key_costs_nothing_and_warns_once(cli, fake, docs,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGSMITH_TRACING", "true")
    for key in ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    result = cli(str(docs), base_url=fake.base_url)
    assert result.code == 0
    assert result.err.count("LangSmith tracing is on but no LANGSMITH_API_KEY") == 1
    assert "langsmith.client" not in result.err


def test_the_report_says_what_produced_the_run(cli, fake, docs) -> None:
    import hashlib

    import prompts

    report = cli(str(docs), "--focus", "Who paid?", base_url=fake.base_url).report()

    assert report["version"] and report["settings"]["model"] == "fake-model"
    assert report["settings"]["focus"] == "Who paid?" and report["settings"]["chunk_tokens"] == 2000
    assert report["prompts"]["map"] == hashlib.sha256(prompts.MAP.encode()).hexdigest()[:16]
    assert "api_key" not in json.dumps(report["settings"])


def test_json_log_lines_say_which_document_failed_and_how_the_run_ended(tmp_path, fake) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    (tmp_path / "a.txt").write_text("The ferry carried 120 riders.", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    proc = subprocess.run([sys.executable, str(root / "run.py"), str(tmp_path / "a.txt"), str(tmp_path / "empty.txt"),
                           "--base-url", fake.base_url, "--log-json", "--no-store"], cwd=root, capture_output=True,
                          text=True, timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")})
    entries = [json.loads(line) for line in proc.stderr.splitlines()]
    document = next(e for e in entries if e.get("event") == "document")
    finished = next(e for e in entries if e.get("event") == "finished")
    assert document["document"].endswith("empty.txt") and document["status"] == "skipped"
    assert finished["status"] == "partial" and finished["exit_code"] == 3 and finished["calls"] >= 1
    assert finished["tokens"] > 0 and finished["seconds"] > 0
