"""Documents of the same content cost one summary per run; each keeps its own line."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ENGLISH, KOREAN
from tests.fake_openai import FakeOpenAI


def test_three_thousand_identical_files_are_one_paid_call(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3000):
        (docs / f"copy{i:04d}.txt").write_text(ENGLISH, encoding="utf-8")
    (docs / "other.txt").write_text(KOREAN, encoding="utf-8")

    result = cli(str(docs), "--concurrency", "16", base_url=fake.base_url)

    assert result.code == 0, result.err
    report = result.report()
    assert report["llm_calls"]["map"] == 2  # one for the 3,000 copies, one for the other document
    lines = result.lines()
    assert len(lines) == 3001 and all(line["status"] == "ok" for line in lines)
    copies = [line for line in lines if line["source"].endswith(".txt") and "copy" in line["source"]]
    first = [line for line in copies if line["same_as"] is None]
    assert len(first) == 1 and first[0]["tokens_out"] > 0
    assert all(line["summary"] == first[0]["summary"] and line["same_as"] == first[0]["source"]
               for line in copies if line is not first[0])
    assert report["llm_calls"]["final"] == 1 and report["llm_calls"]["collapse"] == 0  # the reduce sees it once


def test_a_rerun_with_a_store_pays_nothing_for_twins(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (docs / name).write_text(ENGLISH, encoding="utf-8")
    first = cli(str(docs), base_url=fake.base_url)
    fake.reset_stats()

    again = cli(str(docs), base_url=fake.base_url)

    assert first.code == again.code == 0
    assert again.report()["llm_calls"]["map"] == 0 and fake.chat_calls == 0
    assert sorted(line["same_as"] or "" for line in again.lines())[1:] == [str(docs / "a.txt")] * 2
