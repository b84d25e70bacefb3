"""A dry run's estimate against the run it previews, on the fake server; and a dry run over --max-cost."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bench.docs import make_text, write_docs
from tests.fake_openai import FakeOpenAI

# Chunks small enough that one long document's kept points need collapsing.
SMALL_CHUNKS = ("--chunk-tokens", "500")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_TAGS = re.compile(r"\[D\d+(?:, D\d+)*\]")


def _block(text: str, opener: str, closer: str) -> str | None:
    start = text.find(opener)
    return None if start < 0 else text[text.index(">\n", start) + 2:text.rfind(closer)]


def model_like(messages: list[dict[str, Any]]) -> str:
    """Answer as a small model does: a chunk's first five sentences; two points of each summary merged.

    The fake server's stock answer is one line of twelve words, which no model writes.
    """
    text = str(messages[-1]["content"])
    if (document := _block(text, "<document", "</document>")) is not None:
        sentences = [s for s in _SENTENCE.split(" ".join(document.split())) if len(s.split()) >= 4]
        return "\n".join(f"- {s}" for s in sentences[:5])
    points = []
    for block in (_block(text, "<summaries", "</summaries>") or "").split("\n\n"):
        lines = block.splitlines()
        if lines and (label := re.match(r"\[D\d+\]", lines[0])):  # a document's summary: two of its points
            points += [f"{line} {label.group()}" for line in lines[1:3]]
        else:  # merged points, each already tagged: every other one
            points += [line for line in lines if _TAGS.search(line)][::2]
    return "\n".join(points)


def _estimate_and_run(cli: Any, fake: FakeOpenAI, *argv: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dry run's estimate, then the report of the run itself, with no store to answer from."""
    dry = cli(*argv, "--no-store", "--dry-run", base_url=fake.base_url)
    assert dry.code == 0 and fake.chat_calls == 0, dry.err
    run = cli(*argv, "--no-store", base_url=fake.base_url)
    assert run.code == 0, run.err
    return json.loads(dry.out), run.report()


def _assert_close(estimate: dict[str, Any], report: dict[str, Any]) -> None:
    """Map and final calls as the run made; collapse calls at most twice; never 20% under its tokens.

    The fake server's stock answers are one line, of which a point seldom stands: its
    documents keep a point fewer than a model's, and its merges are shorter than a
    model's, so the estimate, sized on a model's, is high here, by a level at most.
    """
    assert estimate["llm_calls"]["map"] == report["llm_calls"]["map"]
    assert estimate["llm_calls"]["final"] == report["llm_calls"]["final"]
    planned, made = estimate["llm_calls"]["collapse"], report["llm_calls"]["collapse"]
    assert made <= planned <= 2 * made, (planned, made)
    assert report["collapse_levels"] <= estimate["collapse_levels"] <= report["collapse_levels"] + 1
    assert estimate["estimated_prompt_tokens"] >= 0.8 * report["prompt_tokens"]
    assert estimate["estimated_completion_tokens"] >= 0.8 * report["completion_tokens"]


def test_the_estimate_of_many_small_files_is_close_to_their_run(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_docs(folder, 600)

    estimate, report = _estimate_and_run(cli, fake, str(folder))

    assert report["llm_calls"]["collapse"] > 5
    _assert_close(estimate, report)


def test_the_estimate_of_a_long_line_with_no_sentence_is_close_to_its_run(cli, fake: FakeOpenAI,
                                                                          tmp_path: Path) -> None:
    path = tmp_path / "one-line.txt"  # a dump of one line: its chunks have no sentence to keep but the answer
    path.write_text(" ".join(f"token{i}" for i in range(100_000)), encoding="utf-8")

    estimate, report = _estimate_and_run(cli, fake, str(path), *SMALL_CHUNKS)

    assert report["llm_calls"]["collapse"] > 1
    _assert_close(estimate, report)


def test_one_short_document_is_estimated_with_no_final_call(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    path = tmp_path / "note.txt"
    path.write_text(make_text(1), encoding="utf-8")

    estimate, report = _estimate_and_run(cli, fake, str(path))

    assert estimate["llm_calls"] == report["llm_calls"] == {"map": 1, "collapse": 0, "final": 0}


@pytest.mark.parametrize(("cap", "over"), [("0.000001", True), ("100", False)])
def test_a_dry_run_says_when_its_cost_passes_max_cost(cli, fake: FakeOpenAI, tmp_path: Path, cap: str,
                                                       over: bool) -> None:
    folder = tmp_path / "in"
    write_docs(folder, 3)

    result = cli(str(folder), "--dry-run", "--max-cost", cap, "--price-in", "0.15", "--price-out", "0.6",
                 base_url=fake.base_url)

    preview = json.loads(result.out)
    assert preview["over_max_cost"] is over and preview["max_cost_usd"] == float(cap)
    assert json.loads((result.out_dir / "preview.json").read_text(encoding="utf-8")) == preview
    assert fake.chat_calls == 0
    if over:  # as the run would end: stopped at the cap, exit 1, one line saying why
        assert result.code == 1
        assert [line for line in result.err.splitlines() if "--max-cost" in line] == [
            f"error: the estimated cost, ${preview['estimated_cost_usd']:.6f}".rstrip("0") + ", passes --max-cost "
            "$0.000001: a run would stop before the call that could pass it, keeping what it finished, and exit 1"]
    else:
        assert result.code == 0 and "--max-cost" not in result.err


@pytest.mark.parametrize("shape", ["many small files", "one long document"])
def test_the_estimate_is_close_to_a_run_whose_answers_read_like_a_model(cli, fake: FakeOpenAI, tmp_path: Path,
                                                                       shape: str) -> None:
    fake.reply = model_like
    if shape == "many small files":
        inputs: tuple[str, ...] = (str(tmp_path / "in"),)
        write_docs(tmp_path / "in", 600)
    else:
        (tmp_path / "long.txt").write_text("\n\n".join(make_text(i, 120) for i in range(1, 1001)), encoding="utf-8")
        inputs = (str(tmp_path / "long.txt"), *SMALL_CHUNKS)

    estimate, report = _estimate_and_run(cli, fake, *inputs)

    assert report["llm_calls"]["collapse"] > 5
    for step in ("map", "collapse", "final"):
        planned, made = estimate["llm_calls"][step], report["llm_calls"][step]
        assert 0.7 * made <= planned <= 1.3 * made, (step, planned, made)
    assert report["collapse_levels"] <= estimate["collapse_levels"] <= report["collapse_levels"] + 1
    assert 0.8 * report["prompt_tokens"] <= estimate["estimated_prompt_tokens"] <= 1.3 * report["prompt_tokens"]
    # A map answer is sized as models write them, near their cap; these are a few short sentences.
    assert estimate["estimated_completion_tokens"] >= 0.8 * report["completion_tokens"]
