"""A damaged result store: recognised on open with one line saying what to do, and recovered when asked."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from pipeline.result_store import ResultStore, StoreDamagedError
from tests.fake_openai import FakeOpenAI


def _filled_store(path: Path, n: int = 400) -> None:
    store = ResultStore(path)
    for i in range(n):
        store.put(f"key-{i}", "map", f"answer {i} " + "x" * 1000, 10, 20)
    store.close()
    with sqlite3.connect(path) as db:  # fold the WAL into the file, as a finished run leaves it
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _damage(path: Path, offset: int = 128 * 1024, size: int = 64 * 1024) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(os.urandom(size))


@pytest.mark.parametrize("damage", ["pages", "header"])
def test_a_damaged_store_is_one_line_that_says_what_to_do(cli, fake: FakeOpenAI, docs: Path, tmp_path: Path,
                                                          damage: str) -> None:
    store = tmp_path / "out" / "store.sqlite"
    store.parent.mkdir()
    _filled_store(store)
    _damage(store, *((128 * 1024,) if damage == "pages" else (0, 100)))

    result = cli(str(docs), base_url=fake.base_url)

    assert result.code == 1
    line = result.err.strip()
    assert len(line.splitlines()) == 1 and "unexpected" not in line
    assert "is damaged" in line and "--no-store" in line and "--store-recover" in line
    assert fake.chat_calls == 0


def test_store_recover_moves_the_damaged_file_aside_and_reports_the_answers_lost(
        cli, fake: FakeOpenAI, docs: Path, tmp_path: Path) -> None:
    store = tmp_path / "out" / "store.sqlite"
    store.parent.mkdir()
    _filled_store(store)
    _damage(store)

    result = cli(str(docs), "--store-recover", base_url=fake.base_url)

    assert result.code == 0, result.err
    recovered = result.report()["store_recovered"]
    aside = Path(recovered["moved_to"])
    assert aside.exists() and aside.name.startswith("store.sqlite.damaged-")
    assert recovered["answers_lost"] in (400, None)  # as many as the damaged file can still tell
    assert ResultStore(store).count() == fake.chat_calls  # the new store holds this run's answers
    again = cli(str(docs), base_url=fake.base_url)
    assert again.code == 0 and again.report()["llm_calls"]["map"] == 0  # and serves them to the next run


def test_damage_is_told_apart_from_a_store_that_is_only_busy_or_unwritable(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    _filled_store(path, 50)
    _damage(path, 0, 100)

    with pytest.raises(StoreDamagedError):
        ResultStore(path)
    with pytest.raises(StoreDamagedError):
        ResultStore(path, read_only=True)  # a dry run looks and moves nothing
    assert path.exists()
    fresh = ResultStore(path, recover=True)
    assert fresh.count() == 0 and fresh.recovered is not None and fresh.recovered["answers_lost"] is None
    fresh.close()
