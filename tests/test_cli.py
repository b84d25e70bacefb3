"""The command line as a user runs it: summary on stdout, files written, exit codes, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI


def test_summarizes_documents_and_writes_outputs(cli, fake: FakeOpenAI, docs: Path) -> None:
    result = cli(str(docs / "*.txt"), base_url=fake.base_url)

    assert result.code == 0, result.err
    assert result.out.startswith("- ")  # bullets, each checked against the documents
    assert "**Sources**" in result.out and "ferry.txt" in result.out and "citrus.txt" in result.out
    assert (result.out_dir / "summary.md").read_text(encoding="utf-8") == result.out
    lines = result.lines()
    assert [Path(r["source"]).name for r in lines] == ["citrus.txt", "ferry.txt"]
    assert all(r["status"] == "ok" and r["summary"] and r["chunks"] == 1 for r in lines)
    assert set(lines[0]) == {"source", "sha256", "status", "summary", "error", "chunks", "tokens_in", "tokens_out",
                             "language", "encoding", "repaired", "replaced", "evidence"}
    assert lines[0]["language"] == "Korean" and lines[1]["language"] == "English"
    assert lines[0]["encoding"] == "utf-8" and lines[0]["repaired"] is False and lines[0]["replaced"] == 0
    report = result.report()
    assert report["documents"] == {"total": 2, "ok": 2, "failed": 0, "skipped": 0, "not_done": 0}
    assert report["llm_calls"] == {"map": 2, "collapse": 0, "final": 1}
    assert report["exit_code"] == 0 and report["model"] == "fake-model"
    assert report["prompt_tokens"] > 0 and report["peak_rss_mb"] > 0


def test_directory_input_recurses_into_txt_and_md(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one.md").write_text("First note about apples and pears.", encoding="utf-8")
    (tmp_path / "a" / "b" / "two.txt").write_text("Second note about plums.", encoding="utf-8")
    (tmp_path / "a" / "b" / "skip.csv").write_text("x,y", encoding="utf-8")

    result = cli(str(tmp_path / "a"), base_url=fake.base_url)

    assert result.code == 0
    assert sorted(Path(r["source"]).name for r in result.lines()) == ["one.md", "two.txt"]


def test_one_failing_document_gives_exit_3_and_a_recorded_reason(cli, fake: FakeOpenAI, docs: Path) -> None:
    (docs / "poison.txt").write_text("This document contains POISON and always fails.", encoding="utf-8")
    fake.fail_marker = "POISON"

    result = cli(str(docs), "--max-retries", "1", base_url=fake.base_url)

    assert result.code == 3
    by_name = {Path(r["source"]).name: r for r in result.lines()}
    assert by_name["poison.txt"]["status"] == "failed"
    assert "HTTP 500" in by_name["poison.txt"]["error"]
    assert by_name["ferry.txt"]["status"] == "ok"
    assert result.report()["documents"]["failed"] == 1
    assert (result.report()["status"], result.report()["exit_code"]) == ("partial", 3)
    assert "poison.txt" not in result.out  # the reduce ran on the rest only
    assert "Traceback" not in result.err


def test_binary_and_empty_files_are_skipped_with_a_reason(cli, fake: FakeOpenAI, docs: Path) -> None:
    (docs / "blob.txt").write_bytes(bytes(range(256)) * 8)
    (docs / "empty.txt").write_bytes(b"")

    result = cli(str(docs), base_url=fake.base_url)

    assert result.code == 3
    by_name = {Path(r["source"]).name: r for r in result.lines()}
    assert by_name["blob.txt"]["status"] == "skipped" and "binary" in by_name["blob.txt"]["error"]
    assert by_name["empty.txt"]["status"] == "skipped" and "empty" in by_name["empty.txt"]["error"]
    assert fake.chat_calls == 3  # two maps and the final: nothing was sent for the skipped files


@pytest.mark.parametrize(("argv", "message"), [
    (["no/such/file.txt"], "no such file or directory"),
    (["nothing-here-*.txt"], "no files match"),
])
def test_bad_inputs_give_one_line_and_exit_1(cli, fake: FakeOpenAI, argv: list[str], message: str) -> None:
    result = cli(*argv, base_url=fake.base_url)

    assert result.code == 1
    assert result.err.strip().startswith("error:") and message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert fake.chat_calls == 0


def test_unreachable_endpoint_gives_one_line_and_exit_1(cli, docs: Path) -> None:
    result = cli(str(docs), base_url="http://127.0.0.1:9/v1")

    assert result.code == 1
    assert "cannot reach the LLM endpoint" in result.err and "Traceback" not in result.err


def test_wrong_key_gives_one_line_exit_1_and_never_shows_the_key(cli, fake: FakeOpenAI, docs: Path) -> None:
    fake.api_key = "sk-right"

    result = cli(str(docs), "--api-key", "sk-wrong-secret-123", base_url=fake.base_url)

    assert result.code == 1
    assert "rejected the API key" in result.err
    assert "sk-wrong-secret-123" not in result.err + result.out
    assert "sk-wrong-secret-123" not in (result.out_dir / "report.json").read_text(encoding="utf-8")


def test_key_from_environment_is_sent_and_not_reported(cli, fake: FakeOpenAI, docs: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fake.api_key = "sk-env-secret"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret")

    result = cli(str(docs), base_url=fake.base_url)

    assert result.code == 0
    assert "sk-env-secret" not in (result.out_dir / "report.json").read_text(encoding="utf-8")


@pytest.fixture
def fake_embedded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the embedded model a stand-in server; collect the pids it ran under."""
    import sys

    import psutil

    from pipeline.llm import embedded

    pids: list[int] = []
    script = Path(__file__).with_name("embedded_fake_server.py")
    monkeypatch.setattr(embedded, "ensure_model", lambda cache_dir=None: Path("model.gguf"))
    monkeypatch.setattr(embedded, "server_command",
                        lambda path, settings, alias="": [sys.executable, str(script), "--mode", "ok"])
    started = embedded.EmbeddedServer._start

    async def record(self, command):  # type: ignore[no-untyped-def]
        await started(self, command)
        pids.append(self.pid)

    monkeypatch.setattr(embedded.EmbeddedServer, "_start", record)
    yield pids
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_no_endpoint_configured_runs_the_embedded_model_and_stops_it(cli, docs: Path,
                                                                     fake_embedded: list[int]) -> None:
    result = cli(str(docs))

    assert result.code == 0, result.err
    # "FAKE SUMMARY" is in no document: the documents' own first sentences stand in for it
    assert "FAKE" not in result.out and result.report()["answers"]["extracted"] == 2
    assert len(fake_embedded) == 1  # started once, and (checked by the fixture) stopped
    report = result.report()
    assert report["base_url"].startswith("http://127.0.0.1:")
    assert report["embedded_server_peak_rss_mb"] > 1


def test_a_configured_endpoint_wins_over_the_embedded_model(cli, fake: FakeOpenAI, docs: Path,
                                                             fake_embedded: list[int]) -> None:
    result = cli(str(docs), base_url=fake.base_url)

    assert result.code == 0 and fake.chat_calls == 3 and fake_embedded == []


def test_missing_embedded_model_is_a_one_line_error(cli, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.llm import embedded

    original = embedded.locate_model_parts
    monkeypatch.setattr(embedded, "locate_model_parts", lambda: original(["no_such_model_package_xyz"]))

    result = cli(str(docs), "--model", "local")

    assert result.code == 1
    assert "embedded model is not installed" in result.err and "pip install" in result.err
    assert "Traceback" not in result.err


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    import run

    with pytest.raises(SystemExit) as exit_info:
        run.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--base-url", "--api-key", "--concurrency", "--chunk-tokens", "--token-max",
                   "--language", "--out", "--memory-limit-mb", "--timeout", "--quiet"):
        assert option in text


def test_credentials_in_the_base_url_never_reach_logs_or_reports(cli, fake: FakeOpenAI, docs: Path) -> None:
    secret_url = fake.base_url.replace("http://", "http://user:url-secret-42@")

    result = cli(str(docs), base_url=secret_url, quiet=False)

    assert result.code == 0
    assert "summarizing 2 inputs" in result.err  # the info logs were on
    assert "url-secret-42" not in result.err + result.out
    assert "url-secret-42" not in (result.out_dir / "report.json").read_text(encoding="utf-8")


def test_a_key_without_a_base_url_goes_to_openai_through_langchain_openai(
        cli, fake: FakeOpenAI, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import langchain_openai

    made: list[dict[str, object]] = []
    original = langchain_openai.ChatOpenAI

    def pointed_at_the_fake(**kwargs: object) -> object:  # OpenAI itself is never contacted
        made.append(kwargs)
        return original(base_url=fake.base_url, **kwargs)

    monkeypatch.setattr(langchain_openai, "ChatOpenAI", pointed_at_the_fake)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    result = cli(str(docs))

    assert result.code == 0 and fake.chat_calls == 3
    assert made[0]["model"] == "gpt-4o-mini" and made[0]["max_retries"] == 0 and "base_url" not in made[0]


def test_standard_input_is_one_document_decoded_like_a_file(cli, fake: FakeOpenAI, docs: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys
    from types import SimpleNamespace

    from tests.conftest import KOREAN

    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(KOREAN.encode("cp949"))))

    result = cli("-", str(docs / "ferry.txt"), base_url=fake.base_url)

    assert result.code == 0, result.err
    assert {r["source"] for r in result.lines()} == {"<stdin>", str(docs / "ferry.txt")}
    assert any(KOREAN[:20] in body["messages"][-1]["content"] for body in fake.bodies)
