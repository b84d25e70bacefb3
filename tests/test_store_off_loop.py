"""The result store where the event loop refuses blocking calls (as `langgraph dev` does): same runs, same store.

The checker is blockbuster's, as the dev server uses it, watching SQLite only: any
sqlite3 call made on a running loop raises its BlockingError.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import StoreError
from pipeline.result_store import ResultStore
from pipeline.store_thread import loop_refuses_blocking
from tests.fake_openai import FakeOpenAI
from tests.test_batch import _write_docs
from tests.test_batch_mode import TEXTS, ThreadedBatchAPI

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = {"source": "a.txt", "sha256": "0" * 64, "status": "ok", "summary": "s", "chunks": 1,
            "tokens_in": 1, "tokens_out": 1}
# The CLI in a process of its own, under the same checker.
CHECKED_CLI = ("import sys\n"
               "import blockbuster\n"
               "checker = blockbuster.BlockBuster()\n"
               "for name, function in checker.functions.items():\n"
               "    if name.startswith('sqlite3.'):\n"
               "        function.activate()\n"
               "import run\n"
               "sys.exit(run.main(sys.argv[1:]))\n")


@contextlib.contextmanager
def sqlite_refused_on_loops() -> Iterator[None]:
    """Refuse every sqlite3 call made on a running event loop, as `langgraph dev` does."""
    blockbuster = pytest.importorskip("blockbuster")
    watched = [f for name, f in blockbuster.BlockBuster().functions.items() if name.startswith("sqlite3.")]
    for function in watched:
        function.activate()
    try:
        yield
    finally:
        for function in watched:
            function.deactivate()


@pytest.fixture
def checked() -> Iterator[None]:
    with sqlite_refused_on_loops():
        yield


def _rows(path: Path, sql: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        return list(db.execute(sql))


async def _probe() -> bool:
    return loop_refuses_blocking()


def test_a_loop_that_refuses_blocking_calls_is_told_from_one_that_does_not() -> None:
    assert asyncio.run(_probe()) is False
    with sqlite_refused_on_loops():
        assert asyncio.run(_probe()) is True


def test_an_unchanged_rerun_makes_no_calls(cli, fake: FakeOpenAI, tmp_path: Path, checked: None) -> None:
    docs = _write_docs(tmp_path / "in", 6)
    first = cli(str(docs), base_url=fake.base_url)
    calls_after_first = fake.chat_calls

    second = cli(str(docs), base_url=fake.base_url)

    assert first.code == second.code == 0, first.err + second.err
    assert calls_after_first == 7 and fake.chat_calls == 7
    report = second.report()
    assert report["llm_calls"] == {"map": 0, "collapse": 0, "final": 0}
    assert report["from_store"] == {"map": 6, "collapse": 0, "final": 1}
    assert report["files"] == {"new": 0, "changed": 0, "unchanged": 6, "removed": 0}
    assert second.out == first.out


def test_an_incremental_rerun_summarizes_only_new_and_changed_files(cli, fake: FakeOpenAI, tmp_path: Path,
                                                                     checked: None) -> None:
    docs = _write_docs(tmp_path / "in", 5)
    cli(str(docs), base_url=fake.base_url)
    (docs / "doc000.txt").write_text("A rewritten report about tides.", encoding="utf-8")
    (docs / "doc004.txt").unlink()
    (docs / "new.txt").write_text("A brand new report about ferries.", encoding="utf-8")
    fake.reset_stats()

    result = cli(str(docs), base_url=fake.base_url)

    report = result.report()
    assert report["files"] == {"new": 1, "changed": 1, "unchanged": 3, "removed": 1}
    assert report["llm_calls"]["map"] == 2 and report["from_store"]["map"] == 3
    sources = {Path(row[0]).name for row in _rows(tmp_path / "out" / "store.sqlite", "SELECT source FROM documents")}
    assert "doc004.txt" not in sources and "new.txt" in sources


def test_kill_9_mid_run_repays_no_finished_call(cli, fake: FakeOpenAI, tmp_path: Path, checked: None) -> None:
    docs = _write_docs(tmp_path / "in", 40)
    out = tmp_path / "out"
    fake.latency = 0.05
    proc = subprocess.Popen([sys.executable, "-c", CHECKED_CLI, str(docs), "--base-url", fake.base_url,
                             "--out", str(out), "--concurrency", "2", "-q"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")})
    store_file = out / "store.sqlite"
    stored = 0
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(sqlite3.OperationalError):  # not created yet
                with contextlib.closing(sqlite3.connect(f"file:{store_file}?mode=ro", uri=True, timeout=5)) as db:
                    stored = db.execute("SELECT COUNT(*) FROM results WHERE step='map'").fetchone()[0]
            if stored >= 10:
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
    assert 10 <= stored < 40, f"the run should have been killed part-way: {err[-500:]}"
    stored = _rows(store_file, "SELECT COUNT(*) FROM results WHERE step='map'")[0][0]
    fake.reset_stats()

    result = cli(str(docs), base_url=fake.base_url)

    assert result.code == 0
    report = result.report()
    assert report["from_store"]["map"] == stored
    assert report["llm_calls"]["map"] == 40 - stored


def test_a_batch_run_walks_through_map_and_final_without_submitting_twice(
        cli, fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checked: None) -> None:
    from pipeline.llm import batch

    monkeypatch.setattr(batch, "GATHER_S", 0.05)
    monkeypatch.setattr(batch, "POLL_FIRST_S", 0.01)
    monkeypatch.setattr(batch, "POLL_MAX_S", 0.02)
    docs = tmp_path / "in"
    docs.mkdir()
    for t in TEXTS:
        (docs / f"{t['id']}.txt").write_text(t["text"], encoding="utf-8")
    sync = cli(str(docs), "--model", "m", "--no-store", base_url=fake.base_url)
    threaded = ThreadedBatchAPI(polls_per_status=1)
    try:
        api, codes = threaded.api, []
        for _ in range(20):  # bounded: each run polls once and the fake moves a step per poll
            run = cli(str(docs), "--model", "m", "--batch", "--no-wait", "--store", str(tmp_path / "batch.sqlite"),
                      base_url=api.base_url)
            codes.append(run.code)
            if run.code != 75:
                break
    finally:
        threaded.close()

    assert codes[-1] == 0 and set(codes[:-1]) == {75}, codes
    assert run.out == sync.out
    assert sorted(api.answered.values()) == [1] * (len(TEXTS) + 1)
    assert len(api.batches) == 2  # the map's batch and the final's


# -- the store itself, with its own thread --


async def test_queued_writes_are_read_back_in_order_and_committed_when_the_queue_runs_dry(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = ResultStore(path, off_loop=True)

    for i in range(300):
        store.put(f"k{i}", "map", f"answer {i}", 1, 1)
    store.record_document(DOCUMENT)
    found = await store.aget("k299")  # queued behind every write before it
    prior = await store.aprior_documents(["a.txt"])

    assert found is not None and found.text == "answer 299" and prior["a.txt"].status == "ok"
    deadline = time.monotonic() + 30  # committed by the store's thread, not by a later turn of this loop
    while await asyncio.to_thread(_rows, path, "SELECT COUNT(*) FROM results") != [(300,)]:
        assert time.monotonic() < deadline, "the queued writes were never committed"
        await asyncio.sleep(0.01)
    await store.aclose()


async def test_closing_writes_everything_queued(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = ResultStore(path, off_loop=True)
    for i in range(100):
        store.put(f"k{i}", "map", "answer", 1, 1)
    store.forget_documents(["gone.txt"])

    await store.aclose()
    await store.aclose()  # twice is harmless

    assert _rows(path, "SELECT COUNT(*) FROM results") == [(100,)]
    with pytest.raises(StoreError, match="closed"):
        store.put("late", "map", "answer", 1, 1)
    with pytest.raises(StoreError, match="closed"):
        await store.aget("k1")


async def test_the_batch_journal_is_committed_before_the_caller_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = ResultStore(path, off_loop=True)

    await store.arecord_batch_file("file-1", ["a", "b"])
    await store.arecord_batch("file-1", "batch-1")

    assert await asyncio.to_thread(_rows, path, "SELECT file_id, batch_id FROM batch_files") == [("file-1", "batch-1")]
    assert await store.aopen_batch_requests(["a", "b", "c"]) == {"a": ("file-1", "batch-1"), "b": ("file-1", "batch-1")}
    await store.afinish_batch("batch-1", "expired", ["b"])
    assert await store.aopen_batch_requests(["a", "b"]) == {}
    await store.aclose()


async def test_a_queued_write_that_fails_is_raised_at_the_next_write_and_at_close(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "store.sqlite", off_loop=True)
    store._db.execute("CREATE TEMP TRIGGER full BEFORE INSERT ON results WHEN NEW.key = 'full' "
                      "BEGIN SELECT RAISE(ROLLBACK, 'database or disk is full'); END")  # as SQLITE_FULL does
    store.put("a", "map", "answer a", 1, 1)
    store.put("full", "map", "answer", 1, 1)
    await store.aget("a")  # the queue has run up to here

    with pytest.raises(StoreError, match="disk is full"):
        store.put("b", "map", "answer b", 1, 1)
    with pytest.raises(StoreError, match="disk is full"):
        await store.aclose()


def test_without_an_event_loop_a_store_with_its_own_thread_reads_and_writes_alike(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = ResultStore(path, off_loop=True)

    store.put("a", "map", "answer a", 1, 1)

    assert store.get("a") is not None and store.count() == 1 and store.keys("map") == ["a"]
    store.close()
    assert _rows(path, "SELECT key FROM results") == [("a",)]
