"""A document whose model points fall short keeps its own facts: its header fields and its densest sentences.

The fake answers are what the small model gives for a bill: its header lines, which
grounding drops as headings and fragments. What replaces them must be the document's own
text, word for word, with evidence that holds it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.answers.grounding import facts, source_terms
from pipeline.llm.runner import Completion
from pipeline.summarize import document_result
from pipeline.text.loading import DocRef

BILL = """지방공무원법 일부개정법률안

(정의화의원 대표발의 )

 의 안
 번 호

9890

발의연월일 : 2010.  11.  12.

발  의  자 : 정의화․이명수․김을동

제안이유 및 주요내용

  초등학교 저학년의 경우에도 부모의 보살핌이 필요

한 나이이나, 육아휴직을 할 수 있는 자녀의 나이는 만 6세 이하로 되어 있어

부모가 일자리를 그만 두어야 하는 문제가 있음.

  따라서 육아휴직이 가능한 자녀의 연령을 만 8세 이하로 개정하려

는 것임(안 제63조제2항제4호).

부      칙

이 법은 공포한 날부터 시행한다.
"""
# What the model answers for it: header lines, each dropped by grounding.
HEADER_ANSWER = "- 지방공무원법 일부개정법률안\n- 2010. 11. 12.\n- 정의화의원 대표발의\n- 의안 번호 9890"

NOTE = """Harbor ferry update

The electric ferry crossed the harbor 1,450 times in August.
"""

REPORT = """Depot Report

The depot opened on the east quay in 2019 with four loading bays. Crews unloaded 310 containers in the first week.
The old crane was sold to the Merrow yard for 12,000 pounds. Two drivers retired in March.
Calloway Freight signed a contract for 48 weekly slots, starting in the spring of 2021.
The roof was repainted. Lunch breaks moved to noon. Night shifts were shortened by an hour.
The council asked for a noise survey, which found levels of 61 decibels at the fence.
"""


def _result(text: str, answer: str) -> tuple[dict[str, Any], Counter[str]]:
    counts: Counter[str] = Counter()
    ref = DocRef(id=1, source="doc.txt", sha256="", spans=[(0, len(text))])
    return dict(document_result(ref, [Completion(answer, 1, 1)], text=text, counts=counts)), counts


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_a_bill_answered_with_its_header_lines_keeps_its_header_fields_and_its_densest_sentences() -> None:
    result, counts = _result(BILL, HEADER_ANSWER)

    points = result["summary"].splitlines()
    # Its date counts as a field but is not quoted: "2010. 11. 12." would be cut into sentences downstream.
    assert points[0] == "- 지방공무원법 일부개정법률안 (정의화의원 대표발의 ) 발 의 자 : 정의화․이명수․김을동"
    assert "- 따라서 육아휴직이 가능한 자녀의 연령을 만 8세 이하로 개정하려 는 것임(안 제63조제2항제4호)." in points
    assert all(_flat(p[2:]) in _flat(BILL) for p in points[1:])  # the bill's own sentences, word for word
    assert counts["header_point"] == 1 and counts["backfilled"] == len(points) - 1 >= 1
    assert counts["title_point"] + counts["fragment"] >= 3  # the model's header lines still went
    header = result["evidence"][0]  # the title's line and each field's line
    assert [header[i + 2] for i in range(0, len(header), 4)] == [1, 3, 12]


def test_a_sentence_wrapped_over_lines_is_one_point_with_one_span() -> None:
    result, _ = _result(BILL, HEADER_ANSWER)

    wrapped = next(i for i, p in enumerate(result["summary"].splitlines()) if "만 6세" in p)
    start, end, first, last = result["evidence"][wrapped]
    assert len(result["evidence"][wrapped]) == 4 and BILL[start:end].startswith("초등학교") and last - first == 4


def test_a_document_of_a_few_lines_is_not_padded() -> None:
    result, counts = _result(NOTE, "- The electric ferry crossed the harbor 1,450 times in August.")

    assert result["summary"] == "- The electric ferry crossed the harbor 1,450 times in August."
    assert counts["backfilled"] == 0 and counts["header_point"] == 0


def test_a_short_answer_is_topped_up_with_the_sentences_richest_in_names_and_numbers_not_repeated() -> None:
    result, counts = _result(REPORT, "- Crews unloaded 310 containers in the first week.")

    points = result["summary"].splitlines()
    assert points[-1] == "- Crews unloaded 310 containers in the first week."  # after the document's own
    assert counts["backfilled"] == len(points) - 1 == 2  # eight sentences: three points
    assert "- Calloway Freight signed a contract for 48 weekly slots, starting in the spring of 2021." in points
    assert "- The roof was repainted." not in points and len(set(points)) == len(points)
    assert len(result["evidence"]) == len(points)


_WORD = st.sampled_from("harbor ferry bakery loaves ridership budget council migration battery quay".split())
_NAME = st.sampled_from(["Linden", "Arden", "Calloway", "Merrow", "Oakham", "Selby", "Thirsk"])
_NUMBER = st.integers(min_value=10, max_value=99999).map(str)
_SENTENCE = st.lists(st.one_of(_WORD, _NAME, _NUMBER), min_size=2, max_size=12).map(lambda w: "The " + " ".join(w) + ".")


@settings(max_examples=60, deadline=None)
@given(st.lists(_SENTENCE, min_size=1, max_size=12), st.sampled_from(["\n", " ", "\n\n"]),
       st.lists(st.sampled_from(["Subject: ", "Date: ", "(", ""]), max_size=3), st.integers(0, 3))
def test_every_added_point_is_the_documents_own_text_and_its_evidence_holds_its_facts(
        body: list[str], joint: str, fields: list[str], picked: int) -> None:
    head = "".join(f"{f}Linden 2024{')' if f == '(' else ''}\n" for f in fields)
    text = "Notice\n" + head + "\n" + joint.join(body) + "\n"
    answer = "\n".join(f"- {s}" for s in body[:picked])
    result, _ = _result(text, answer)

    points = result["summary"].splitlines()
    assert len(points) == len(result["evidence"])
    for point, evidence in zip(points, result["evidence"]):
        said = " ".join(text[evidence[i]:evidence[i + 1]] for i in range(0, len(evidence), 4))
        claim = facts(point)
        assert claim.required <= source_terms(said), (point, said)
        if point not in answer.splitlines():  # added: the document's own text, each quoted span whole
            assert all(_flat(text[evidence[i]:evidence[i + 1]]) in _flat(point) for i in range(0, len(evidence), 4))


def test_a_sentence_the_chunk_cuts_at_either_end_is_never_taken() -> None:
    text = ("who sold the mill in 1571 to Arden, his cousin.\n" + REPORT.split("\n", 2)[2]
            + "In 1599 the depot and its 14 bays passed to Selby and")
    result, counts = _result(text, "- Crews unloaded 310 containers in the first week.")

    assert counts["backfilled"] >= 1
    assert not any(p.startswith("- who") or "passed to Selby" in p for p in result["summary"].splitlines())


def test_a_sentence_in_two_overlapping_chunks_is_one_point() -> None:
    plain = "the town had a quiet week and people went about their usual business in the streets."
    dense = "The Mayor Jane Roe signed the Rail Act with 12 Senators in Columbus on 3 May 2024."
    days = [f"Day {i}: {plain}" for i in range(1, 7)]
    text = "\n".join(days[:5] + [dense] + days[5:] + [f"Night {i}: {plain}" for i in range(1, 6)]) + "\n"
    cut = text.index(dense) + len(dense) + 1
    ref = DocRef(id=1, source="town.txt", sha256="", spans=[(0, cut), (text.index("Day 4"), len(text))])

    result = document_result(ref, [Completion("- The town was quiet.", 0, 0)] * 2, text=text, counts=Counter())

    lines = result["summary"].splitlines()
    assert lines.count("- " + dense) == 1 and len(lines) == len(set(lines)) == len(result["evidence"])


def test_a_transcript_is_no_header() -> None:
    from pipeline.answers.backfill import header_point

    talk = ("Alice: " + "we should move the launch because the vendor is late " * 30
            + "\nBob: Agreed, let us wait\nCarol: Fine by me\nDave: I will tell Sales\n")
    assert header_point(talk) is None


@given(words=st.lists(st.text(st.characters(categories=("L", "N", "P")), min_size=1, max_size=14), min_size=1,
                      max_size=12), spaces=st.lists(st.sampled_from([" ", "\n", "  ", "\t", "\n\n"]), min_size=13,
                                                    max_size=13))
@settings(max_examples=200, deadline=None)
def test_a_document_too_short_for_any_point_is_summarized_by_its_own_words(words: list[str],
                                                                          spaces: list[str]) -> None:
    text = spaces[0] + "".join(w + s for w, s in zip(words, spaces[1:]))
    if not any(c.isalnum() for c in text):
        return
    result, counts = _result(text, "SUMMARY[3 words]: It is short.")  # nothing of it stands on the document

    assert result["status"] == "ok" and counts["extracted"] + counts["backfilled"] == 1
    points = result["summary"].splitlines()
    assert points and len(points) == len(result["evidence"])
    for point, evidence in zip(points, result["evidence"]):
        assert point.startswith("- ") and set(point[2:].split()) <= set(text.split())  # its own words
        quoted = " ".join(text[evidence[i]:evidence[i + 1]] for i in range(0, len(evidence), 4))
        assert set(point[2:].split()) <= set(quoted.split())


def test_a_long_document_nothing_can_stand_for_fails_with_its_reason_rather_than_an_empty_summary() -> None:
    numbers = "\n".join(f"{i} {i * 7} {i * 13}" for i in range(1, 200))  # a table of numbers, no sentence

    result, _ = _result(numbers, "SUMMARY[597 words]: The table lists values.")

    assert result["status"] == "failed" and not result.get("summary")
    assert result["error"] == ("nothing the model wrote stands on the document, and no sentence of its own "
                               "can stand for it")
