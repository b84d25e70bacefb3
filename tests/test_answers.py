"""What a small model gets wrong is caught in its answers: the language, copied instructions, loops, length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import prompts
from graphs import Context, graph
from pipeline.answers.checks import clean, drop_labels, in_language
from pipeline.answers.length import Length, fit, parse_length
from tests.conftest import ENGLISH, KOREAN
from tests.fake_openai import FakeOpenAI, default_reply


def test_an_answer_that_copies_its_instructions_or_talks_about_itself_loses_those_lines() -> None:
    answer = "\n".join([
        "Here are the bullet points:",
        "- Ridership grew to 1,200 a day.",
        "- Keep its names, numbers and dates exactly as written.",
        "- 이는 한국어로 작성되었습니다.",
        "- The summary is written in English.",
        "- Sure Foods Ltd opened two shops in May.",
    ])

    text, done = clean(answer, (prompts.MAP,))

    assert text == "- Ridership grew to 1,200 a day.\n- Sure Foods Ltd opened two shops in May."
    assert done == {"filler": 3, "echo": 1}


def test_loops_are_cut_repeated_lines_dropped_and_a_repeated_section_ends_the_answer() -> None:
    answer = "\n".join([
        "## Ferry",
        "- Fares stayed at 1.80.",
        "- Fares stayed at 1.80. [D2]",
        "- The boat ran and ran on time and ran on time and ran on time and ran on time.",
        "## Ferry",
        "- Fares stayed at 1.80.",
    ])

    text, done = clean(answer)

    assert text == "## Ferry\n- Fares stayed at 1.80.\n- The boat ran and ran on time …"
    assert done == {"repeated_line": 1, "loop": 1, "repeated_heading": 1}


def test_an_answer_that_would_be_left_empty_is_kept() -> None:
    assert clean("Here is the summary:")[0] == "Here is the summary:"


def test_the_script_tells_whether_an_answer_is_in_its_language() -> None:
    assert in_language("- 제주 감귤 수확이 11월 초에 시작되었다 [D1]", "Korean")
    assert not in_language("- The citrus harvest in Jeju began in early November [D1]", "Korean")
    assert not in_language("- 제주 감귤 수확이 11월 초에 시작되었다고 보고서는 전한다", "English")
    assert in_language("- Die Fähre fuhr pünktlich und war oft voll", "German")
    assert in_language("short", "Korean")  # too short to judge


def _english_first(messages: list[dict[str, Any]]) -> str:
    """A model that answers in English unless told firmly to use the document's language."""
    if "entirely in Korean" in messages[0]["content"]:
        return default_reply(messages)  # the document's own (Korean) words
    return "- The citrus harvest began in early November and the fruit was sweet this year."


async def test_an_answer_in_the_wrong_language_is_asked_once_more_and_a_rerun_pays_nothing(
        fake_in_loop: FakeOpenAI, tmp_path: Path) -> None:
    fake_in_loop.reply = _english_first
    context = Context(base_url=fake_in_loop.base_url, store_path=str(tmp_path / "store.sqlite"))
    texts = [{"id": "citrus", "text": KOREAN}]

    out = await graph.ainvoke({"texts": texts}, context=context)

    assert fake_in_loop.chat_calls == 2  # the map call, once more firmly; one document needs no final call
    assert "감귤" in out["results"][0]["summary"]  # the answer in Korean, its prose made into points
    assert out["stats"]["answers"]["language_retried"] == 1 and out["stats"]["answers"]["wrong_language"] == 0

    again = await graph.ainvoke({"texts": texts}, context=context)
    assert fake_in_loop.chat_calls == 2 and again["summary"] == out["summary"]


async def test_one_short_document_takes_one_call_and_its_summary_is_the_answer(fake_in_loop: FakeOpenAI) -> None:
    fake_in_loop.reply = lambda messages: "- The ferry trial ran for six months.\n- Ridership reached 1,450 trips a day."

    out = await graph.ainvoke({"texts": [{"id": "ferry", "text": ENGLISH}]},
                              context=Context(base_url=fake_in_loop.base_url))

    assert fake_in_loop.chat_calls == 1
    assert out["summary"].startswith("- The ferry trial ran for six months. [D1]\n- Ridership reached 1,450 trips a day. [D1]\n")
    assert out["stats"]["llm_calls"]["final"] == 0


async def test_the_length_asked_for_reaches_the_prompt_and_the_answer_is_held_to_it(fake_in_loop: FakeOpenAI) -> None:
    texts = [{"id": f"doc-{i}", "text": f"Depot {i} moved {100 + i} crates of pears. " * 3} for i in range(5)]

    out = await graph.ainvoke({"texts": texts}, context=Context(base_url=fake_in_loop.base_url, length="2 bullets"))

    final_instructions = fake_in_loop.bodies[-1]["messages"][0]["content"]
    assert "Give at most 2 bullet points." in final_instructions
    body = out["summary"].split("**Sources**")[0]
    assert sum(line.startswith("- ") for line in body.splitlines()) == 2
    # The fake hands back the summaries in a row: not taken as a merge, the documents' own points stand in.
    assert out["stats"]["answers"]["concatenation"] == 1
    assert out["stats"]["length"] == {"target": "2 bullets", "bullets": 2, "words": out["stats"]["length"]["words"],
                                      "bullets_cut": 0, "within": True}


def test_cutting_to_length_keeps_a_bullet_for_every_document_it_can() -> None:
    answer = "Overview.\n- a one [D1]\n- a two [D1]\n- b one [D2]\n- a three [D1]\n- c one [D3]"

    text, measured = fit(answer, Length(3, "bullets"))

    assert text == "Overview.\n- a one [D1]\n- b one [D2]\n- c one [D3]"
    assert measured["bullets_cut"] == 2 and measured["within"]


def test_length_is_given_in_bullets_or_words() -> None:
    assert parse_length("auto") is None
    assert parse_length("6b") == parse_length("6 bullets") == Length(6, "bullets")
    assert parse_length("150 words") == Length(150, "words")


def test_lines_that_copy_a_summarys_label_go_and_a_point_after_one_stays() -> None:
    labels = ["data/ferry.txt", "data/citrus.txt (part 1 of 2)"]
    answer = "\n".join([
        "#### [D1] data/ferry.txt",
        "[The ferry pilot] data/ferry.txt",
        "[D2] data/citrus.txt - The harvest began in November.",
        "- data/ferry.txt says ridership doubled in the first month [D1]",
    ])

    text, dropped = drop_labels(answer, labels)

    assert text == "- The harvest began in November.\n- data/ferry.txt says ridership doubled in the first month [D1]"
    assert dropped == 3
