"""Usage errors end in one line and exit 1 before any call; credentials never reach any output."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import run
from graphs import Context, graph
from pipeline.errors import InputError
from tests.conftest import ENGLISH
from tests.fake_openai import FakeOpenAI

KEY = "sk-proj-Zq81vRmT0aXc55NeLpW3yHb7UdKs2Gf4"
MASKED = f"{KEY[:6]}********{KEY[-4:]}"  # how the fake, like OpenAI, shows a key it refuses
PASSWORD = "url-pw-8TqZ2mXv"


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run the CLI in-process; an argparse error counts as its exit code."""
    try:
        code = run.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if " INFO " not in line]  # the run's info logs aside
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _many_docs(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        (folder / f"doc{i:02d}.txt").write_text(f"Report {i}. {ENGLISH}", encoding="utf-8")
    return folder


def _no_trace_of(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text
        assert secret[:14] not in text  # nor the head of it, as a cut-off echo would show
    if secret == KEY:
        assert all(MASKED not in text for text in texts)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No endpoint from the environment."""
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)
    yield


# --- numeric settings -------------------------------------------------------------------

BAD_NUMBERS = [
    ("--max-retries", "-1"), ("--rpm", "-1"), ("--rpm", "0"), ("--tpm", "-5"), ("--concurrency", "0"),
    ("--timeout", "0"), ("--timeout", "nan"), ("--chunk-tokens", "0"), ("--token-max", "-1"),
    ("--price-in", "-1"), ("--price-out", "-0.5"), ("--max-cost", "-1"), ("--memory-limit-mb", "0"),
    ("--local-threads", "0"), ("--concurrency", "2.5"),
]


@pytest.mark.parametrize(("option", "value"), BAD_NUMBERS)
def test_a_numeric_option_out_of_range_is_one_line_before_any_request(
        option: str, value: str, capsys: pytest.CaptureFixture[str], fake: FakeOpenAI, docs: Path,
        tmp_path: Path) -> None:
    code, err = _main(capsys, str(docs), option, value, "--base-url", fake.base_url, "--out", str(tmp_path / "o"))

    assert code == 1
    assert option in _one_line_error(err)
    assert fake.total_requests == 0


@pytest.mark.parametrize(("setting", "value"), [
    ("max-retries", "-1"), ("rpm", "-1"), ("tpm", "0"), ("concurrency", "0"), ("timeout", "0"),
    ("chunk-tokens", "0"), ("token-max", "0"), ("price-in", "-1"), ("max-cost", "-1"),
    ("memory-limit-mb", "-100"), ("local-threads", "0"), ("concurrency", "2.5"), ("concurrency", "true"),
    ("timeout", "nan"), ("rpm", "inf"),
])
def test_a_config_file_value_out_of_range_is_one_line_before_any_request(
        setting: str, value: str, capsys: pytest.CaptureFixture[str], fake: FakeOpenAI, docs: Path,
        tmp_path: Path) -> None:
    config = tmp_path / "job.toml"
    config.write_text(f"{setting} = {value}\n", encoding="utf-8")

    code, err = _main(capsys, str(docs), "--config", str(config), "--base-url", fake.base_url,
                      "--out", str(tmp_path / "o"))

    assert code == 1
    assert setting in _one_line_error(err)
    assert fake.total_requests == 0


async def test_a_notebook_context_out_of_range_is_refused_before_any_call(
        fake_in_loop: FakeOpenAI, docs: Path) -> None:
    for bad in ({"max_retries": -1}, {"rpm": -1.0}, {"tpm": 0.0}, {"price_in": -1.0}, {"memory_limit_mb": 0.0},
                {"concurrency": 0}, {"timeout": float("nan")}, {"max_cost": -1.0, "price_in": 1.0, "price_out": 1.0}):
        context = Context(base_url=fake_in_loop.base_url, **bad)  # type: ignore[arg-type]
        with pytest.raises(InputError):
            await graph.ainvoke({"paths": [str(p) for p in sorted(docs.iterdir())]}, context=context)
    assert fake_in_loop.total_requests == 0


# --- endpoints that are not the OpenAI API ------------------------------------------------

def test_a_base_url_answering_html_is_caught_by_the_probe(
        capsys: pytest.CaptureFixture[str], fake: FakeOpenAI, tmp_path: Path) -> None:
    folder = _many_docs(tmp_path / "in", 40)
    fake.html_everywhere = True

    code, err = _main(capsys, str(folder), "--base-url", fake.base_url, "--out", str(tmp_path / "o"))

    assert code == 1
    line = _one_line_error(err)
    assert "HTML" in line and "/v1" in line
    assert fake.chat_calls == 0 and fake.total_requests == 1


def test_chat_answering_html_stops_the_run_after_a_few_requests(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    folder = _many_docs(tmp_path / "in", 40)
    fake.faults = {"html": 1.0}  # the probe's /models passes; every chat call gets a web page

    result = cli(str(folder), "--concurrency", "4", "--max-retries", "2", base_url=fake.base_url)

    assert result.code == 1
    line = _one_line_error(result.err)
    assert "HTML" in line
    assert fake.chat_calls <= 4 + 3  # the calls in flight, plus one call's attempts
    assert result.report()["status"] == "error"


@pytest.mark.parametrize("url", ["127.0.0.1:{port}/v1", "localhost:{port}/v1"])
def test_a_base_url_without_a_scheme_is_one_line_suggesting_http(
        url: str, capsys: pytest.CaptureFixture[str], fake: FakeOpenAI, docs: Path, tmp_path: Path) -> None:
    given = url.format(port=fake.port)

    code, err = _main(capsys, str(docs), "--base-url", given, "--out", str(tmp_path / "o"))

    assert code == 1
    assert f"http://{given}" in _one_line_error(err)
    assert fake.total_requests == 0


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/v1", "http:///v1", "http://127.0.0.1:99999/v1"])
def test_a_base_url_without_http_or_a_host_is_one_line(
        url: str, capsys: pytest.CaptureFixture[str], docs: Path, tmp_path: Path) -> None:
    code, err = _main(capsys, str(docs), "--base-url", url, "--out", str(tmp_path / "o"))

    assert code == 1
    assert "base URL" in _one_line_error(err)


# --- places the run writes to --------------------------------------------------------------

@pytest.mark.parametrize("extra", [["--no-store"], [], ["--dry-run"]])
def test_an_unwritable_out_is_one_line_before_any_request(
        extra: list[str], capsys: pytest.CaptureFixture[str], fake: FakeOpenAI, docs: Path,
        tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")

    code, err = _main(capsys, str(docs), "--base-url", fake.base_url, "--out", str(blocker / "out"), *extra)

    assert code == 1
    assert "--out" in _one_line_error(err)
    assert fake.total_requests == 0


def test_an_unwritable_store_folder_is_one_line_before_any_request(
        capsys: pytest.CaptureFixture[str], fake: FakeOpenAI, docs: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")

    code, err = _main(capsys, str(docs), "--base-url", fake.base_url, "--out", str(tmp_path / "o"),
                      "--store", str(blocker / "store.sqlite"))

    assert code == 1
    assert "store" in _one_line_error(err)
    assert fake.total_requests == 0


# --- credentials ------------------------------------------------------------------------

def test_url_credentials_and_a_key_together_are_a_usage_error(
        capsys: pytest.CaptureFixture[str], fake: FakeOpenAI, docs: Path, tmp_path: Path) -> None:
    url = fake.base_url.replace("http://", f"http://user:{PASSWORD}@")

    code, err = _main(capsys, str(docs), "--base-url", url, "--api-key", KEY, "--out", str(tmp_path / "o"))

    assert code == 1
    assert "one of them" in _one_line_error(err)
    _no_trace_of(PASSWORD, err)
    _no_trace_of(KEY, err)
    assert fake.total_requests == 0


def test_url_credentials_without_a_key_go_as_basic_auth(cli, fake: FakeOpenAI, docs: Path) -> None:
    fake.basic_auth = f"user:{PASSWORD}"

    result = cli(str(docs), "--log-json", "-v", base_url=fake.base_url.replace("http://", f"http://user:{PASSWORD}@"),
                 quiet=False)

    assert result.code == 0 and fake.chat_calls == 3
    _no_trace_of(PASSWORD, result.err, result.out, (result.out_dir / "report.json").read_text(encoding="utf-8"))


def test_a_wrong_url_password_echoed_by_the_server_is_never_shown(cli, fake: FakeOpenAI, docs: Path) -> None:
    fake.basic_auth, fake.echo_key = "user:the-right-one", True

    result = cli(str(docs), base_url=fake.base_url.replace("http://", f"http://user:{PASSWORD}@"))

    assert result.code == 1
    _one_line_error(result.err)
    outputs = [result.err, result.out] + [p.read_text(encoding="utf-8") for p in result.out_dir.glob("*.json*")]
    _no_trace_of(PASSWORD, *outputs)


@pytest.mark.parametrize("log_options", [[], ["--log-json", "-v"], ["-v"]])
def test_a_key_echoed_in_a_401_is_never_shown(
        cli, fake: FakeOpenAI, docs: Path, log_options: list[str]) -> None:
    fake.api_key, fake.echo_key = "sk-the-right-key-000000000000", True

    result = cli(str(docs), "--api-key", KEY, *log_options, base_url=fake.base_url, quiet=not log_options)

    assert result.code == 1 and fake.chat_calls >= 1
    assert "rejected the API key" in result.err
    if not log_options:
        _one_line_error(result.err)
    _no_trace_of(KEY, result.err, result.out, (result.out_dir / "report.json").read_text(encoding="utf-8"),
                 (result.out_dir / "summaries.jsonl").read_text(encoding="utf-8"))


@pytest.mark.parametrize("log_options", [[], ["--log-json", "-v"], ["-v"]])
def test_a_key_echoed_in_a_500_is_never_shown(
        cli, fake: FakeOpenAI, docs: Path, log_options: list[str]) -> None:
    fake.api_key, fake.echo_key, fake.fail_marker = KEY, True, "ferry"  # one document always fails

    result = cli(str(docs), "--api-key", KEY, "--max-retries", "1", *log_options, base_url=fake.base_url,
                 quiet=False)

    assert result.code == 3
    failed = [line for line in result.lines() if line["status"] == "failed"]
    assert len(failed) == 1 and "HTTP 500" in failed[0]["error"] and "***" in failed[0]["error"]
    _no_trace_of(KEY, result.err, result.out, (result.out_dir / "report.json").read_text(encoding="utf-8"),
                 (result.out_dir / "summaries.jsonl").read_text(encoding="utf-8"))


@pytest.mark.parametrize("log_options", [["-v"], ["--log-json", "-v"]])
def test_the_key_in_an_unexpected_error_and_its_traceback_is_never_shown(
        cli, fake: FakeOpenAI, docs: Path, log_options: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.llm.factory

    async def leaky_probe(base_url: str, api_key: str | None, timeout: float = 15.0, session: object = None
                          ) -> list[str]:
        logging.getLogger("pipeline.llm.client").info("probing with %s", api_key)
        raise RuntimeError(f"a bug that prints {api_key} and {MASKED}")

    monkeypatch.setattr(pipeline.llm.factory, "probe_endpoint", leaky_probe)

    result = cli(str(docs), "--api-key", KEY, *log_options, base_url=fake.base_url, quiet=False)

    assert result.code == 1
    assert "unexpected RuntimeError" in result.err and "Traceback" in result.err  # --verbose shows it
    _no_trace_of(KEY, result.err, result.out, (result.out_dir / "report.json").read_text(encoding="utf-8"))
    if "--log-json" in log_options:
        assert all(json.loads(line) for line in result.err.splitlines() if line.startswith("{"))


# --- inputs -------------------------------------------------------------------------------

def test_an_explicitly_named_dangling_symlink_is_that_inputs_failure_not_the_batchs(
        capsys: pytest.CaptureFixture[str], fake: FakeOpenAI, docs: Path, tmp_path: Path) -> None:
    # As a shell expands `docs/*` for a nightly job: one stale link must not stop the run.
    link = tmp_path / "gone.txt"
    link.symlink_to(tmp_path / "nowhere.txt")

    code, err = _main(capsys, str(link), str(docs), "--base-url", fake.base_url, "--out", str(tmp_path / "o"))

    assert code == 3 and "Traceback" not in err
    lines = [json.loads(line) for line in (tmp_path / "o" / "summaries.jsonl").read_text().splitlines()]
    gone = next(r for r in lines if r["source"] == str(link))
    assert gone["status"] == "skipped" and "broken symbolic link" in gone["error"]
    assert sum(r["status"] == "ok" for r in lines) == 2


def test_an_input_path_the_system_refuses_is_one_line(
        capsys: pytest.CaptureFixture[str], fake: FakeOpenAI, tmp_path: Path) -> None:
    code, err = _main(capsys, str(tmp_path / ("x" * 300)), "--base-url", fake.base_url, "--out", str(tmp_path / "o"))

    assert code == 1
    _one_line_error(err)
    assert fake.total_requests == 0


def test_with_log_json_a_usage_error_is_one_json_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _main(capsys, "--log-json", "--concurrency", "0", str(tmp_path))

    assert code == 1
    (line,) = err.splitlines()
    entry = json.loads(line)
    assert entry["level"] == "error" and "--concurrency" in entry["message"]
