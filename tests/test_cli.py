"""The command line as a user runs it: summary on stdout, files written, exit codes, one-line errors."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EmbeddedStandIn
from tests.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]


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
                             "language", "encoding", "repaired", "replaced", "same_as", "format", "location",
                             "locations", "evidence"}
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


def test_nothing_summarized_exits_1_with_one_line_and_still_writes_each_reason(cli, fake: FakeOpenAI,
                                                                              tmp_path: Path) -> None:
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "empty.txt").write_bytes(b"")

    result = cli(str(tmp_path / "blob.txt"), str(tmp_path / "empty.txt"), base_url=fake.base_url)

    assert result.code == 1 and result.out == ""
    assert result.err.strip().splitlines()[-1] == "error: nothing could be summarized: every input failed or was skipped"
    assert "Traceback" not in result.err and "blob.txt: binary" in result.err  # each reason, then one error line
    assert [(Path(r["source"]).name, r["status"]) for r in result.lines()] == [
        ("blob.txt", "skipped"), ("empty.txt", "skipped")]
    report = result.report()
    assert (report["status"], report["exit_code"], report["documents"]["skipped"]) == ("error", 1, 2)
    assert fake.chat_calls == 0


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
def fake_embedded(embedded_stand_in: EmbeddedStandIn) -> list[int]:
    """Make the embedded model a stand-in server; collect the pids it ran under."""
    return embedded_stand_in.pids


def test_no_endpoint_configured_runs_the_embedded_model_and_stops_it(cli, docs: Path,
                                                                     fake_embedded: list[int]) -> None:
    result = cli(str(docs))

    assert result.code == 0, result.err
    # "FAKE SUMMARY" is in no document: the documents' own sentences stand in for it
    answers = result.report()["answers"]
    assert "FAKE" not in result.out and answers["backfilled"] + answers["extracted"] >= 2
    assert len(fake_embedded) == 1  # started once, and (checked by the fixture) stopped
    report = result.report()
    assert report["base_url"].startswith("http://127.0.0.1:")
    assert report["embedded_server_peak_rss_mb"] > 1


def test_local_threads_and_settings_given_reach_the_embedded_model(cli, docs: Path,
                                                                   embedded_stand_in: EmbeddedStandIn) -> None:
    result = cli(str(docs), "--local-threads", "1", "--concurrency", "2")

    assert result.code == 0, result.err
    assert (embedded_stand_in.settings[0].threads, embedded_stand_in.settings[0].n_parallel) == (1, 2)
    assert result.report()["concurrency"] == 2 and result.report()["model"] == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    assert {b["max_tokens"] for b in embedded_stand_in.bodies()} == {150, 500}  # the rest of its tuning


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


@pytest.mark.parametrize(("line", "message"), [
    ('inputs = "notes"', "key 'inputs' must be a list of strings, got a string"),
    ('inputs = "/srv/x"', "key 'inputs' must be a list of strings, got a string"),
    ("inputs = [1, 2]", "key 'inputs' must be a list of strings, got a list holding a whole number"),
    ('concurrency = "8"', "key 'concurrency' must be a whole number, got a string"),
    ("timeout = true", "key 'timeout' must be a number, got a boolean"),
    ('dry-run = "yes"', "key 'dry-run' must be a boolean, got a string"),
    ("language = 3", "key 'language' must be a string, got a whole number"),
    ("base-url = [{ url = 'x' }]", "key 'base-url' must be a string or list of strings, got a list holding a table"),
])
def test_a_config_value_of_the_wrong_type_is_refused_in_one_line(
        cli, tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str) -> None:
    config = tmp_path / "job.toml"
    config.write_text(line + "\n", encoding="utf-8")

    with pytest.raises(SystemExit) as exit_info:
        cli("--config", str(config))

    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: config {config}: {message} (see --help)"]


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_reader_that_goes_away_ends_the_output_quietly(fake: FakeOpenAI, docs: Path, tmp_path: Path,
                                                         dry_run: bool) -> None:
    # As `run.py ... | head -3` does: the pipe is closed before the summary is written.
    argv = [sys.executable, str(ROOT / "run.py"), str(docs), "--base-url", fake.base_url, "-q",
            "--out", str(tmp_path / "out"), *(["--dry-run"] if dry_run else [])]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    proc.stdout.close()
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()

    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err
    assert (tmp_path / "out" / ("preview.json" if dry_run else "summary.md")).exists()
def _system_messages(fake: FakeOpenAI) -> list[str]:
    return [body["messages"][0]["content"] for body in fake.bodies if body["messages"][0]["role"] == "system"]


def test_instructions_from_a_file_and_a_focus_reach_every_step(cli, fake: FakeOpenAI, docs: Path,
                                                               tmp_path: Path) -> None:
    brief = tmp_path / "brief.txt"
    brief.write_text("For the harbor board's budget meeting.\nKeep every amount in won.\n", encoding="utf-8")

    result = cli(str(docs), "--instructions", f"@{brief}", "--focus", "What will it cost?", base_url=fake.base_url)

    assert result.code == 0, result.err
    systems = _system_messages(fake)
    assert len(systems) == fake.chat_calls == 3  # two maps and the final
    for system in systems:
        assert "For the harbor board's budget meeting.\nKeep every amount in won." in system
        assert "What will it cost?" in system
        assert system.index("budget meeting") < system.index("What will it cost?") < system.index("Write your answer")


def test_a_prompts_folder_replaces_a_template_and_a_bad_one_stops_before_any_call(cli, fake: FakeOpenAI,
                                                                                  docs: Path, tmp_path: Path) -> None:
    folder = tmp_path / "house-style"
    folder.mkdir()
    (folder / "map.txt").write_text("List the facts a ferry operator needs.\n{language_instruction}\n",
                                    encoding="utf-8")

    good = cli(str(docs), "--prompts", str(folder), base_url=fake.base_url)

    assert good.code == 0, good.err
    maps = [s for s in _system_messages(fake) if s.startswith("List the facts a ferry operator needs.")]
    assert len(maps) == 2
    calls = fake.chat_calls
    (folder / "final.txt").write_text("Summarize all of it. {language_instruction}\n", encoding="utf-8")

    bad = cli(str(docs), "--prompts", str(folder), base_url=fake.base_url)

    assert bad.code == 1 and fake.chat_calls == calls
    assert bad.err.strip() == f"error: {folder / 'final.txt'}: missing placeholder {{length_instruction}}; " \
                              "final.txt takes {language_instruction}, {length_instruction}"


def test_an_unreadable_instructions_file_is_a_one_line_error(cli, fake: FakeOpenAI, docs: Path,
                                                            tmp_path: Path) -> None:
    result = cli(str(docs), "--instructions", f"@{tmp_path / 'missing.txt'}", base_url=fake.base_url)

    assert result.code == 1 and fake.chat_calls == 0
    assert result.err.strip() == f"error: cannot read the instructions file {tmp_path / 'missing.txt'}: " \
                                 "No such file or directory"


def test_a_config_file_names_instructions_and_prompts_beside_it(cli, fake: FakeOpenAI, docs: Path,
                                                                tmp_path: Path) -> None:
    job = tmp_path / "job"
    (job / "prompts").mkdir(parents=True)
    (job / "prompts" / "focus.txt").write_text("Answer this first: {focus}\n", encoding="utf-8")
    (job / "brief.md").write_text("Written for new crew members.", encoding="utf-8")
    (job / "nightly.toml").write_text(f'inputs = ["{docs}"]\nbase-url = "{fake.base_url}"\n'
                                      'instructions = "@brief.md"\nfocus = "Who runs the trial?"\n'
                                      'prompts = "prompts"\n', encoding="utf-8")

    result = cli("--config", str(job / "nightly.toml"))

    assert result.code == 0, result.err
    assert all("Written for new crew members." in s and "Answer this first: Who runs the trial?\n" in s
               for s in _system_messages(fake))


class _Stdin:
    """Standard input as the CLI sees it: bytes to read and, for a pipe or a file, a descriptor."""

    def __init__(self, data: bytes, descriptor: int | None) -> None:
        self.buffer, self._descriptor = io.BytesIO(data), descriptor

    def fileno(self) -> int:
        if self._descriptor is None:
            raise io.UnsupportedOperation("no descriptor")
        return self._descriptor


def test_piped_standard_input_is_read_when_no_input_is_named(cli, fake: FakeOpenAI,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import KOREAN

    read_end, write_end = os.pipe()
    os.close(write_end)
    try:
        monkeypatch.setattr(sys, "stdin", _Stdin(KOREAN.encode("cp949"), read_end))
        result = cli(base_url=fake.base_url)
    finally:
        os.close(read_end)

    assert result.code == 0, result.err
    assert [r["source"] for r in result.lines()] == ["<stdin>"]
    assert any(KOREAN[:20] in body["messages"][-1]["content"] for body in fake.bodies)


@pytest.mark.parametrize("stdin", ["terminal-like", "no descriptor", "test runner's own"])
def test_no_input_and_nothing_piped_is_a_usage_error_without_waiting(
        cli, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stdin: str) -> None:
    import run

    if stdin == "test runner's own" and run.stdin_piped(sys.stdin):
        pytest.skip("this test runner hands its own standard input on (pytest -s in a pipe)")
    null = os.open(os.devnull, os.O_RDONLY)  # a character device, as a terminal or cron's /dev/null
    if stdin != "test runner's own":
        monkeypatch.setattr(sys, "stdin", _Stdin(b"never read", null if stdin == "terminal-like" else None))

    try:
        with pytest.raises(SystemExit) as exit_info:
            cli(base_url=fake.base_url)
    finally:
        os.close(null)

    assert exit_info.value.code == 1 and fake.chat_calls == 0


def test_standard_input_counts_as_piped_only_from_a_pipe_or_a_file(tmp_path: Path) -> None:
    import run

    read_end, write_end = os.pipe()
    regular = tmp_path / "doc.txt"
    regular.write_text("text", encoding="utf-8")
    with open(regular, "rb") as file, open(os.devnull, "rb") as null:
        try:
            assert run.stdin_piped(_Stdin(b"", read_end)) and run.stdin_piped(file)
            assert not run.stdin_piped(null) and not run.stdin_piped(_Stdin(b"", None)) \
                and not run.stdin_piped(object())
        finally:
            os.close(read_end)
            os.close(write_end)


def test_an_out_that_is_a_file_is_a_one_line_error_before_any_call(cli, fake: FakeOpenAI, docs: Path) -> None:
    (docs.parent / "out").write_text("notes", encoding="utf-8")  # where the run's outputs were to go

    result = cli(str(docs / "*.txt"), base_url=fake.base_url)

    assert result.code == 1 and fake.chat_calls == 0
    assert result.err.strip().splitlines()[-1] == f"error: --out {result.out_dir} is a file, not a folder: " \
        "name a folder for the outputs"


def test_a_run_with_nowhere_to_keep_its_answers_says_how_a_rerun_would_pay_less(
        fake: FakeOpenAI, docs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import run

    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)
    hint = "no answer was kept: give --out DIR (or --store FILE) and a rerun pays only for what changed"

    assert run.main([str(docs / "*.txt"), "--base-url", fake.base_url]) == 0
    assert hint in capsys.readouterr().err
    assert run.main([str(docs / "*.txt"), "--base-url", fake.base_url, "--no-store"]) == 0
    assert hint not in capsys.readouterr().err  # asked for no store: nothing to say
