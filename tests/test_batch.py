"""Nightly batch runs: the result store, incremental reruns, failure isolation, limits, budgets, config."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.result_store import ResultStore
from tests.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]


def _write_docs(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"doc{i:03d}.txt").write_text(
            f"Report {i}. " + " ".join(f"measurement{i}x{j}" for j in range(40)), encoding="utf-8")
    return folder


def _start_cli(*args: str) -> subprocess.Popen[str]:
    """Start run.py as its own process (so that it can be killed), without OPENAI_* settings."""
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args, "-q"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")})


def test_unchanged_rerun_makes_no_calls(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "in", 6)
    first = cli(str(docs), base_url=fake.base_url)
    calls_after_first = fake.chat_calls

    second = cli(str(docs), base_url=fake.base_url)

    assert first.code == second.code == 0
    assert calls_after_first == 7 and fake.chat_calls == 7
    report = second.report()
    assert report["llm_calls"] == {"map": 0, "collapse": 0, "final": 0}
    assert report["from_store"] == {"map": 6, "collapse": 0, "final": 1}
    assert report["files"] == {"new": 0, "changed": 0, "unchanged": 6, "removed": 0}
    assert second.out == first.out


def test_incremental_rerun_summarizes_only_new_and_changed_files(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
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
    assert "doc004" not in result.out and "new.txt" in result.out


def test_failed_document_is_not_retried_unless_asked(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "in", 3)
    (docs / "bad.txt").write_text("POISON in this one.", encoding="utf-8")
    fake.fail_marker = "POISON"
    assert cli(str(docs), "--max-retries", "0", base_url=fake.base_url).code == 3
    fake.reset_stats()

    again = cli(str(docs), "--max-retries", "0", base_url=fake.base_url)
    assert again.code == 3 and fake.chat_calls == 0
    bad = next(r for r in again.lines() if r["source"].endswith("bad.txt"))
    assert bad["status"] == "failed" and "HTTP 500" in bad["error"] and "--retry-failed" in bad["error"]

    fake.fail_marker = None
    retried = cli(str(docs), "--retry-failed", base_url=fake.base_url)
    assert retried.code == 0
    assert retried.report()["llm_calls"]["map"] == 1  # only the failed document was sent again


def test_every_document_ends_summarized_or_failed_under_heavy_faults(cli, fake: FakeOpenAI,
                                                                      tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "in", 60)
    fake.faults = {"429": 0.20, "500": 0.05, "hang": 0.01, "malformed": 0.02}
    fake.hang_seconds = 5.0

    result = cli(str(docs), "--concurrency", "8", "--timeout", "1", "--max-retries", "8",
                 base_url=fake.base_url)

    lines = result.lines()
    assert len(lines) == 60
    assert all(r["status"] == "ok" or (r["status"] == "failed" and r["error"]) for r in lines)
    assert result.code in (0, 3) and result.out
    report = result.report()
    assert report["retries"] >= 10 and report["rate_limited"] >= 5
    assert report["peak_in_flight"] <= 8 and fake.peak_in_flight <= 8
    with sqlite3.connect(result.out_dir / "store.sqlite") as db:
        stored = db.execute("SELECT text FROM results").fetchall()
    assert all(text.startswith("SUMMARY[") for (text,) in stored)  # nothing malformed was stored


def test_rate_limits_lower_concurrency_and_it_recovers(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "in", 40)
    fake.latency = 0.01
    fake.script.extend(["429"] * 8)

    result = cli(str(docs), "--concurrency", "8", base_url=fake.base_url)

    report = result.report()
    assert result.code == 0
    assert report["concurrency_lowest"] < 8
    assert report["peak_in_flight"] <= 8


def test_kill_9_mid_run_repays_no_finished_call(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "in", 40)
    out = tmp_path / "out"
    fake.latency = 0.05
    proc = _start_cli(str(docs), "--base-url", fake.base_url, "--out", str(out), "--concurrency", "2")
    store_file = out / "store.sqlite"
    stored = 0
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with sqlite3.connect(f"file:{store_file}?mode=ro", uri=True, timeout=5) as db:
                    stored = db.execute("SELECT COUNT(*) FROM results WHERE step='map'").fetchone()[0]
            except sqlite3.OperationalError:
                pass  # not created yet
            if stored >= 10:
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    assert 10 <= stored < 40, "the run should have been killed part-way"
    with sqlite3.connect(store_file) as db:
        stored = db.execute("SELECT COUNT(*) FROM results WHERE step='map'").fetchone()[0]
    fake.reset_stats()

    result = cli(str(docs), base_url=fake.base_url)

    assert result.code == 0
    report = result.report()
    assert report["from_store"]["map"] == stored
    assert report["llm_calls"]["map"] == 40 - stored


async def test_store_survives_many_concurrent_writers(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "store.sqlite"
    writer = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from pipeline.result_store import ResultStore\n"
              f"s = ResultStore({str(path)!r})\n"
              "for i in range(300): s.put(f'{sys.argv[1]}-{i}', 'map', 'x' * 200, 1, 1)\n")
    store = ResultStore(path)
    procs = [subprocess.Popen([sys.executable, "-c", writer, f"p{n}"]) for n in range(3)]

    async def put(i: int) -> None:
        await asyncio.sleep(0)
        store.put(f"task-{i}", "map", "y" * 200, 1, 1)

    await asyncio.gather(*(put(i) for i in range(500)))
    assert all(p.wait(timeout=60) == 0 for p in procs)

    assert store.count() == 500 + 3 * 300
    assert store.integrity_ok()
    store.close()


async def test_the_writes_of_one_loop_turn_are_committed_together_before_the_next(tmp_path: Path) -> None:
    import asyncio
    import sqlite3

    path = tmp_path / "store.sqlite"
    store, reader = ResultStore(path), sqlite3.connect(path)
    document = {"source": "a.txt", "sha256": "0" * 64, "status": "ok", "summary": "s", "chunks": 1,
                "tokens_in": 1, "tokens_out": 1}

    store.put("a", "map", "answer a", 1, 1)
    store.record_document(document)
    store.put("b", "map", "answer b", 1, 1)
    assert reader.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0  # the turn is not over
    await asyncio.sleep(0)

    assert reader.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2
    assert reader.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 1
    reader.close()
    store.close()


def test_without_an_event_loop_each_write_is_committed_at_once(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "store.sqlite"
    store, reader = ResultStore(path), sqlite3.connect(path)

    store.put("a", "map", "answer a", 1, 1)

    assert reader.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
    reader.close()
    store.close()


async def test_two_stores_on_one_file_in_one_loop_do_not_lock_each_other_out(tmp_path: Path) -> None:
    # Two runs in one process (a LangGraph server, or gather over two graphs) may share a store.
    # The first one's uncommitted turn holds the write lock; the second's busy wait would block
    # the loop that is to commit it.
    import asyncio

    path = tmp_path / "store.sqlite"
    first, second = ResultStore(path), ResultStore(path)
    second._db.execute("PRAGMA busy_timeout = 200")  # a failure here is a quick StoreError, not a 30 s hang

    first.put("a", "map", "answer a", 1, 1)
    second.put("b", "map", "answer b", 1, 1)
    first.put("c", "map", "answer c", 1, 1)
    second.forget_documents(["gone.txt"])
    await asyncio.sleep(0)

    reader = sqlite3.connect(path)
    assert {row[0] for row in reader.execute("SELECT key FROM results")} == {"a", "b", "c"}
    reader.close()
    first.close()
    second.close()


async def test_closing_with_a_commit_pending_writes_it_and_leaves_nothing_behind(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    path = tmp_path / "store.sqlite"
    store = ResultStore(path)
    loop_errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: loop_errors.append(context))

    store.put("a", "map", "answer a", 1, 1)  # its commit is scheduled for the loop's next turn
    store.close()
    store.close()  # twice is harmless
    await asyncio.sleep(0)  # the scheduled commit would run now

    assert loop_errors == [] and "Traceback" not in caplog.text
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
    reader.close()


def test_forgetting_documents_is_committed_like_any_write(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = ResultStore(path)
    for name in ("a.txt", "b.txt"):
        store.record_document({"source": name, "sha256": "0" * 64, "status": "ok", "chunks": 1,
                               "tokens_in": 1, "tokens_out": 1})

    store.forget_documents(["a.txt"])

    reader = sqlite3.connect(path)
    assert [row[0] for row in reader.execute("SELECT source FROM documents")] == ["b.txt"]
    reader.close()
    store.close()


async def test_a_turn_rolled_back_by_sqlite_is_reported_not_forgotten(tmp_path: Path) -> None:
    # A full disk or an I/O error makes SQLite roll back the whole transaction, taking the turn's
    # earlier writes with it: the run is told at the next write, and again when the store closes.
    from pipeline.errors import StoreError

    store = ResultStore(tmp_path / "store.sqlite")
    store._db.execute("CREATE TEMP TRIGGER full BEFORE INSERT ON results WHEN NEW.key = 'full' "
                      "BEGIN SELECT RAISE(ROLLBACK, 'database or disk is full'); END")  # as SQLITE_FULL does
    store.put("a", "map", "answer a", 1, 1)
    with pytest.raises(StoreError, match="disk is full"):
        store.put("full", "map", "answer", 1, 1)

    with pytest.raises(StoreError, match="lost"):
        store.put("b", "map", "answer b", 1, 1)
    with pytest.raises(StoreError, match="lost"):
        store.close()
    store.close(raise_errors=False)  # already closed: nothing more to say


def test_a_store_error_does_not_hide_the_interrupt_on_its_way_out(tmp_path: Path) -> None:
    # Resources close the store with raise_errors=False while another exception unwinds.
    from pipeline.errors import StoreError

    store = ResultStore(tmp_path / "store.sqlite")
    store._failed = StoreError("cannot write to the result store: disk full")

    store.close(raise_errors=False)  # logs it; the KeyboardInterrupt stays the run's outcome


def test_dry_run_counts_calls_and_cost_without_calling(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "in", 4)
    (docs / "long.txt").write_text("\n\n".join("A paragraph about harbors and ferries. " * 20
                                               for _ in range(12)), encoding="utf-8")

    result = cli(str(docs), "--dry-run", "--chunk-tokens", "300", "--model", "gpt-4o-mini",
                 base_url=fake.base_url)

    assert result.code == 0 and fake.total_requests == 0
    preview = json.loads(result.out)
    assert preview["llm_calls"]["map"] > 5 and preview["llm_calls"]["final"] == 1
    assert preview["estimated_cost_usd"] > 0
    assert json.loads((result.out_dir / "preview.json").read_text(encoding="utf-8")) == preview


def test_dry_run_after_a_run_counts_stored_results(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "in", 4)
    cli(str(docs), base_url=fake.base_url, )

    calls = fake.chat_calls

    # No --model: like the run, the dry run takes the endpoint's model, so it finds the run's results.
    preview = json.loads(cli(str(docs), "--dry-run", base_url=fake.base_url).out)

    assert preview["model"] == "fake-model"
    assert preview["llm_calls"]["map"] == 0 and preview["from_store"]["map"] == 4
    assert fake.chat_calls == calls


def test_max_cost_stops_cleanly_before_the_cap(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "in", 30)

    result = cli(str(docs), "--concurrency", "2", "--price-in", "1000", "--price-out", "1000",
                 "--max-cost", "1.0", base_url=fake.base_url)

    assert result.code == 1
    assert "--max-cost" in result.err and "Traceback" not in result.err
    report = result.report()
    assert 0 < report["cost_usd"] <= 1.0
    assert 0 < fake.chat_calls < 30
    assert sum(r["status"] == "ok" for r in result.lines()) == fake.chat_calls  # nothing paid for is lost


def test_config_file_holds_options_and_the_command_line_wins(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    _write_docs(tmp_path / "in", 3)
    config = tmp_path / "nightly.toml"
    config.write_text(f'inputs = ["in"]\nbase-url = "{fake.base_url}"\nconcurrency = 1\nlanguage = "ko"\n',
                      encoding="utf-8")

    result = cli("--config", str(config), "--language", "en")

    assert result.code == 0
    assert result.report()["concurrency"] == 1
    assert all("in English" in b["messages"][0]["content"] for b in fake.bodies)


def test_unknown_config_setting_is_a_usage_error(cli, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('concurency = 3\n', encoding="utf-8")

    with pytest.raises(SystemExit) as exit_info:
        cli("x.txt", "--config", str(config))

    assert exit_info.value.code == 1


def test_log_json_writes_machine_readable_lines(tmp_path: Path, fake: FakeOpenAI) -> None:
    docs = _write_docs(tmp_path / "in", 2)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), str(docs), "--base-url", fake.base_url, "--log-json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")})

    assert proc.returncode == 0
    entries = [json.loads(line) for line in proc.stderr.splitlines()]
    assert entries and all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
    assert any("map:" in e["message"] for e in entries)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_stops_cleanly_and_keeps_what_was_done(fake: FakeOpenAI, tmp_path: Path,
                                                         sig: signal.Signals, code: int) -> None:
    docs = _write_docs(tmp_path / "in", 60)
    out = tmp_path / "out"
    fake.latency = 0.05
    proc = _start_cli(str(docs), "--base-url", fake.base_url, "--out", str(out), "--concurrency", "2")
    deadline = time.monotonic() + 30
    while fake.chat_calls < 6 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)

    assert proc.returncode == code
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error:")
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["exit_code"] == code and report["documents"]["ok"] >= 4
    lines = (out / "summaries.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == report["documents"]["ok"]


def test_an_unusable_store_is_a_one_line_error(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "in", 2)
    bad = tmp_path / "not-a-db.sqlite"
    bad.write_bytes(b"this is not a database" * 100)

    result = cli(str(docs), "--store", str(bad), base_url=fake.base_url)

    assert result.code == 1
    assert "cannot open the result store" in result.err and "Traceback" not in result.err


def test_a_store_that_cannot_be_written_raises_a_clear_error(tmp_path: Path) -> None:
    from pipeline.errors import StoreError

    store = ResultStore(tmp_path / "store.sqlite")
    store.close()  # as good as a store that vanished under the run

    with pytest.raises(StoreError, match="cannot write to the result store"):
        store.put("k", "map", "text", 1, 1)


def test_a_dry_run_creates_and_changes_nothing_in_the_store(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "in", 3)
    cli(str(docs), "--dry-run", base_url=fake.base_url)
    assert not (tmp_path / "out" / "store.sqlite").exists()

    cli(str(docs), base_url=fake.base_url)
    (docs / "doc002.txt").unlink()
    cli(str(docs), "--dry-run", base_url=fake.base_url)

    store = ResultStore(tmp_path / "out" / "store.sqlite")
    assert len(store.prior_documents()) == 3  # the dry run saw doc002 gone, and forgot nothing


def test_a_store_from_before_document_kinds_opens_and_gains_them(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE documents (source TEXT PRIMARY KEY, sha256 TEXT NOT NULL, status TEXT NOT NULL, "
                   "summary TEXT, error TEXT, chunks INTEGER, tokens_in INTEGER, tokens_out INTEGER, "
                   "updated REAL NOT NULL)")
        db.execute("INSERT INTO documents VALUES ('a.txt', 'x', 'ok', 's', NULL, 1, 1, 1, 0)")
    db.close()

    assert ResultStore(path, read_only=True).prior_documents()["a.txt"].kind == "file"
    store = ResultStore(path)
    store.record_document({"source": "memo", "sha256": "y", "status": "ok", "summary": "s", "error": None,
                           "chunks": 1, "tokens_in": 1, "tokens_out": 1}, kind="text")
    assert {s: d.kind for s, d in store.prior_documents().items()} == {"a.txt": "file", "memo": "text"}


def test_a_changed_instruction_focus_or_template_is_never_answered_from_the_store(cli, fake: FakeOpenAI,
                                                                                   tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "in", 3)
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "document.txt").write_text('The memo to summarize:\n<document source="{source}"{part}>\n{document}\n'
                                         '</document>\n', encoding="utf-8")
    runs = [("--instructions", "For the board."), ("--instructions", "For the board."),
            ("--instructions", "For new staff."), ("--instructions", "For new staff.", "--focus", "Costs?"),
            ("--prompts", str(folder)), ()]
    reports = []
    for options in runs:
        result = cli(str(docs), *options, base_url=fake.base_url)
        assert result.code == 0, result.err
        reports.append(result.report())

    first, same, *changed, plain = reports
    assert first["llm_calls"] == {"map": 3, "collapse": 0, "final": 1}
    assert same["llm_calls"] == {"map": 0, "collapse": 0, "final": 0}  # the same words: all stored
    for report in changed:
        assert report["llm_calls"] == {"map": 3, "collapse": 0, "final": 1}
        assert report["from_store"] == {"map": 0, "collapse": 0, "final": 0}
    # Without any, the map messages are new again; the final call's are the --prompts run's
    # (document.txt wraps only the map's material), and the store answers it.
    assert plain["llm_calls"] == {"map": 3, "collapse": 0, "final": 0} and plain["from_store"]["final"] == 1
    assert fake.chat_calls == 4 * 4 + 3
    with sqlite3.connect(tmp_path / "out" / "store.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 4 * 4 + 3


def test_a_dry_run_counts_as_stored_only_the_calls_made_with_the_same_instructions(cli, fake: FakeOpenAI,
                                                                                    tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "in", 3)
    assert cli(str(docs), "--instructions", "For the board.", base_url=fake.base_url).code == 0

    same = cli(str(docs), "--dry-run", "--instructions", "For the board.", base_url=fake.base_url)
    other = cli(str(docs), "--dry-run", "--instructions", "For new staff.", base_url=fake.base_url)

    assert json.loads(same.out)["from_store"] == {"map": 3, "collapse": 0, "final": 1}
    assert json.loads(other.out)["from_store"] == {"map": 0, "collapse": 0, "final": 0}
    assert json.loads(other.out)["llm_calls"] == {"map": 3, "collapse": 0, "final": 1}
