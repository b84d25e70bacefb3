"""Batch runs end to end: the same summary as a synchronous run, every call answered once, a lock on the store."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.llm import batch
from tests.fake_batch_api import FakeBatchAPI
from tests.fake_openai import FakeOpenAI, FakeOpenAIProcess

ROOT = Path(__file__).resolve().parent.parent
TEXTS = [{"id": f"note-{i}", "text": f"Harbor note {i}: the ferry carried {100 + i} riders on day {i}. "
                                      f"Crew {i} asked for a covered shelter."} for i in range(5)]


@pytest.fixture(autouse=True)
def _fast_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch, "GATHER_S", 0.05)
    monkeypatch.setattr(batch, "POLL_FIRST_S", 0.01)
    monkeypatch.setattr(batch, "POLL_MAX_S", 0.02)


class ThreadedBatchAPI:
    """A FakeBatchAPI on its own loop in a thread, for the synchronous CLI."""

    def __init__(self, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.api = FakeBatchAPI(**options)
        asyncio.run_coroutine_threadsafe(self.api.__aenter__(), self._loop).result(timeout=10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.api.__aexit__(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


class ThreadedFakeBatch:
    """ThreadedBatchAPI as a context manager."""

    def __init__(self, **options: Any) -> None:
        self._threaded = ThreadedBatchAPI(**options)

    def __enter__(self) -> FakeBatchAPI:
        return self._threaded.api

    def __exit__(self, *exc: object) -> None:
        self._threaded.close()


@pytest.fixture
def batch_api() -> Iterator[FakeBatchAPI]:
    threaded = ThreadedBatchAPI(polls_per_status=1)
    try:
        yield threaded.api
    finally:
        threaded.close()


async def test_a_batch_run_gives_the_synchronous_runs_summary(fake_in_loop: FakeOpenAI, tmp_path: Path) -> None:
    from graphs import Context, graph

    sync = await graph.ainvoke({"texts": TEXTS}, context=Context(base_url=fake_in_loop.base_url, model="m"))
    async with FakeBatchAPI() as api:
        out = await graph.ainvoke({"texts": TEXTS}, context=Context(
            base_url=api.base_url, model="m", batch=True, store_path=str(tmp_path / "store.sqlite")))

    assert out["summary"] == sync["summary"] and out["summary"]
    assert sorted(api.answered.values()) == [1] * (len(TEXTS) + 1)  # five maps and the final, once each
    assert [b["status"] for b in out["stats"]["batches"]] == ["completed", "completed"]
    assert out["stats"]["llm_calls"] == {"map": 5, "collapse": 0, "final": 1}


def test_no_wait_walks_a_job_through_map_and_final_one_run_at_a_time(cli, fake: FakeOpenAI,
                                                                     batch_api: FakeBatchAPI,
                                                                     tmp_path: Path) -> None:
    docs = tmp_path / "in"
    docs.mkdir()
    for t in TEXTS:
        (docs / f"{t['id']}.txt").write_text(t["text"], encoding="utf-8")
    sync = cli(str(docs), "--model", "m", base_url=fake.base_url)
    codes = []
    for _ in range(20):  # bounded: each run polls once and the fake moves a step per poll
        run = cli(str(docs), "--model", "m", "--batch", "--no-wait", "--store", str(tmp_path / "batch.sqlite"),
                  base_url=batch_api.base_url)
        codes.append(run.code)
        if run.code != 75:
            break
        assert run.report()["status"] == "pending" and "run the same command again" in run.err
    assert codes[-1] == 0 and set(codes[:-1]) == {75}, codes
    assert run.out == sync.out
    assert sorted(batch_api.answered.values()) == [1] * (len(TEXTS) + 1)
    assert len(batch_api.batches) == 2  # the map's batch and the final's: nothing submitted twice
    report = run.report()
    assert report["llm_calls"]["final"] == 1 and report["from_store"]["map"] == len(TEXTS)


def test_skipped_inputs_can_count_as_success(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    docs = tmp_path / "in"
    docs.mkdir()
    (docs / "a.txt").write_text("The ferry carried 120 riders.", encoding="utf-8")
    (docs / "empty.txt").write_text("", encoding="utf-8")

    assert cli(str(docs), base_url=fake.base_url).code == 3
    assert cli(str(docs), "--skipped-ok", base_url=fake.base_url).code == 0


def _run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args, "-q"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")})


def test_two_runs_started_together_on_one_store_make_each_call_once(tmp_path: Path) -> None:
    docs = tmp_path / "in"
    docs.mkdir()
    for i in range(6):
        (docs / f"r{i}.txt").write_text(f"Report {i} counts {i * 11} boats.", encoding="utf-8")
    with FakeOpenAIProcess(latency=0.3) as server:
        args = [str(docs), "--base-url", server.base_url, "--out", str(tmp_path / "out"), "--wait-lock"]
        first, second = _run(*args), _run(*args)
        codes = [p.wait(timeout=120) for p in (first, second)]
        stats = server.stats()
    assert codes == [0, 0], [p.stderr.read() for p in (first, second)]  # type: ignore[union-attr]
    assert stats["chat_calls"] == 7  # six maps and a final, once: the second run found them stored


def test_a_second_run_on_a_busy_store_stops_with_one_line_naming_the_first(tmp_path: Path) -> None:
    from pipeline.run_lock import RunLock

    store = tmp_path / "out" / "store.sqlite"
    with RunLock(store):
        second = _run(str(ROOT / "data" / "team-retro.txt"), "--base-url", "http://127.0.0.1:9/v1",
                      "--out", str(tmp_path / "out"))
        code = second.wait(timeout=60)
        err = second.stderr.read()  # type: ignore[union-attr]
    assert code == 1
    assert err.startswith("error: another run is using") and f"pid {os.getpid()}" in err
    assert len(err.strip().splitlines()) == 1


def test_a_dry_run_prices_batch_calls_at_half(cli, fake: FakeOpenAI, docs: Path) -> None:
    import json

    prices = ["--price-in", "1.0", "--price-out", "4.0", "--model", "m"]
    plain = json.loads(cli(str(docs), "--dry-run", *prices, base_url=fake.base_url).out)
    batched = json.loads(cli(str(docs), "--dry-run", "--batch", *prices, base_url=fake.base_url).out)

    assert batched["estimated_cost_usd"] == pytest.approx(plain["estimated_cost_usd"] / 2, rel=0.01)


def test_ctrl_c_leaves_the_batch_running_and_says_how_to_collect_it(tmp_path: Path) -> None:
    import signal
    import time

    docs = tmp_path / "in"
    docs.mkdir()
    (docs / "a.txt").write_text("The ferry carried 120 riders on Monday.", encoding="utf-8")
    with ThreadedFakeBatch(polls_per_status=10_000) as api:  # never ends while the run waits
        proc = _run(str(docs), "--base-url", api.base_url, "--model", "m", "--batch", "--out", str(tmp_path / "o"))
        for _ in range(600):  # bounded: until the batch is submitted
            if api.batches:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        err = proc.stderr.read()  # type: ignore[union-attr]
    assert code == 130 and len(api.batches) == 1
    assert "1 batch still running at the server, recorded in the store: run the same command again" in err
