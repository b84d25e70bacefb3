"""The quality harness's scorers, on hand-made text (no model, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval import scores
from eval.systems import lead_n

EVAL = Path(__file__).resolve().parents[1] / "eval"


def test_korean_text_is_split_into_syllables_and_kept():
    assert scores.tokens("육아휴직 8세") == ["육", "아", "휴", "직", "8", "세"]
    assert scores.tokens("The UAE, 150명!") == ["the", "uae", "150", "명"]


def test_rouge_sees_korean_overlap_despite_particles():
    ref = "법안은 육아휴직 대상 자녀의 나이를 만 8세로 올린다"
    hyp = "법안이 육아휴직 자녀 나이를 8세로 올림"
    r = scores.rouge(hyp, ref)
    assert 50 < r["rouge1"] < 100
    assert 0 < r["rouge2"] < r["rouge1"]
    assert scores.rouge(ref, ref) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}


def test_rouge_l_follows_order():
    assert scores.rouge("a b c d", "a b c d")["rougeL"] == 100.0
    assert scores.rouge("d c b a", "a b c d")["rougeL"] == pytest.approx(25.0)


def test_chrf_is_100_for_identical_and_low_for_unrelated_text():
    text = "Shakespeare was baptized at Stratford in 1564."
    assert scores.chrf(text, text) == pytest.approx(100.0)
    assert scores.chrf(text, "Sockets were invented in Berkeley.") < 30
    assert scores.chrf("", text) == 0.0
    assert scores.chrf("Shakespeare  was\nbaptized", "Shakespeare was baptized") == pytest.approx(100.0)


def test_chrf_weighs_recall_over_precision():
    ref = "the quick brown fox jumps"
    assert scores.chrf("the quick brown fox jumps over the lazy dog", ref) > scores.chrf("the quick", ref)


@pytest.mark.parametrize("fact, text", [
    ("만 8세", "자녀 나이를 만8세 이하로"),
    ("3·1운동", "3.1 운동으로 건립된"),
    ("87.2%", "87.2 %가 따로"),
    ("Non sanz droict", "the motto NON SANZ DROICT."),
    ("2011년 12월 31일", "2011년12월 31일까지"),
    ("UAE|아랍에미리트", "아랍에미리트에 파견"),
])
def test_fact_matching_ignores_case_spacing_and_punctuation(fact, text):
    assert scores.fact_found(fact, text)


def test_fact_matching_keeps_currency_so_amounts_do_not_match_years():
    assert not scores.fact_found("£60", "in 1605 he spent")
    assert scores.fact_found("£60", "for £ 60")


def test_fact_recall_lists_what_was_missed():
    recall, missed = scores.fact_recall(["1564", "glover", "Snitterfield"], "Born 1564; his father was a Glover.")
    assert recall == pytest.approx(2 / 3) and missed == ["Snitterfield"]


SUMMARY = """The collection covers two motions.

- A unit of up to 150 troops goes to the UAE special warfare school. [D1]
- The Cheonghae unit off Somalia stays another year. [D2]
- Both units are paid for by the government. [D1, D2]
- Pirates threaten ships near the UAE. [D1]
- An unrelated claim. [D7]

**Sources**

- [D1] eval/.cache/docs/uae.txt
- [D2] eval/.cache/docs/somalia.txt
"""
DOCS = {"uae": "UAE special warfare school: up to 150 troops; costs paid by the government.",
        "somalia": "The Cheonghae unit off Somalia fights pirates; costs paid by the government."}
FACTS = {"uae": ["UAE", "150"], "somalia": ["Cheonghae", "Somalia"]}


def test_sources_list_maps_tags_to_files():
    body, legend = scores.split_summary(SUMMARY)
    assert "**Sources**" not in body
    assert scores.sources_map(legend) == {1: "eval/.cache/docs/uae.txt", 2: "eval/.cache/docs/somalia.txt"}
    assert "[D" not in scores.content_text(SUMMARY)


def test_attribution_precision_on_a_hand_made_summary():
    att = scores.attribution(SUMMARY, {1: "uae", 2: "somalia"}, DOCS, FACTS, [])
    # pairs: D1, D2, D1, D2, D1 (pirates: a UAE fact, shared with D1's text), D7
    assert (att.pairs, att.invented) == (6, 1)
    assert att.supported == 5
    assert att.precision == pytest.approx(5 / 6)
    assert [f["tag"] for f in att.failures] == ["D7"]


def test_a_line_tagged_with_the_wrong_document_is_unsupported():
    summary = "- The Cheonghae unit off Somalia stays. [D1]\n"
    att = scores.attribution(summary, {1: "uae", 2: "somalia"}, DOCS, FACTS, [])
    assert (att.pairs, att.supported) == (1, 0)


def test_a_line_with_a_number_the_document_lacks_is_unsupported():
    assert scores.supports("The UAE school takes 150 troops.", DOCS["uae"], FACTS["uae"], [])
    assert not scores.supports("The UAE school takes 300 troops.", DOCS["uae"], FACTS["uae"], [])
    assert scores.supports("About 10,000 feet", "a 10000 foot view", [], [])


def test_a_heading_tag_covers_the_lines_under_it():
    summary = "[D2] docs/somalia.txt\n- The Cheonghae unit stays off Somalia.\n[D1] docs/uae.txt\n- 150 troops go.\n"
    att = scores.attribution(summary, {1: "uae", 2: "somalia"}, DOCS, FACTS, [])
    assert (att.headings, att.pairs, att.supported) == (2, 2, 2)
    ended = "[D2] docs/somalia.txt\n- The Cheonghae unit stays.\n### Key points\n- 150 troops go.\n"
    assert scores.attribution(ended, {1: "uae", 2: "somalia"}, DOCS, FACTS, []).pairs == 1


def test_coverage_counts_a_document_by_its_tag_or_its_facts():
    cov, missed = scores.coverage("- Somalia unit stays.\n", ["uae", "somalia"], FACTS)
    assert cov == 0.5 and missed == ["uae"]
    cov, _ = scores.coverage("- Something. [D1]\n- Somalia unit stays.\n", ["uae", "somalia"], FACTS,
                             {1: "uae", 2: "somalia"})
    assert cov == 1.0


def test_language_is_judged_by_script():
    assert scores.language_of("세 법안은 육아휴직 대상을 넓힌다 (UAE, 150명)") == "ko"
    assert scores.language_of("The bills widen childcare leave.") == "en"


def test_lead_n_matches_the_reference_length(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one two three four five six", encoding="utf-8")
    b.write_text("seven eight nine ten", encoding="utf-8")
    out = lead_n([a, b], reference="w1 w2 w3 w4 w5")
    assert out.summary == "one two three\n\nseven eight nine"


def test_every_item_has_a_reference_and_facts_for_each_document():
    manifest = json.loads((EVAL / "manifest.json").read_text(encoding="utf-8"))
    refs = json.loads((EVAL / "references.json").read_text(encoding="utf-8"))["items"]
    assert 8 <= len(manifest["items"]) <= 12
    for item in manifest["items"]:
        ref = refs[item["id"]]
        assert ref["reference"] and ref["facts"] and ref["origin"]
        assert set(ref["document_facts"]) == set(item["documents"])
        assert all(d in manifest["documents"] for d in item["documents"])
        assert all(scores.fact_found(f, ref["reference"]) for f in ref["facts"]) or ref["origin"].startswith("abstract")
    for doc in manifest["documents"].values():
        assert doc["source"] in manifest["sources"] and doc["sha256"] and doc["text_sha256"]


def test_grounding_counts_invented_mixed_and_unshaped_lines():
    from eval.grounding import grounding

    texts = {"bakery": "The Linden bakery sold 4,200 loaves in August.",
             "ferry": "The Harbor ferry carried 1,450 riders a day in August."}
    summary = ("### Key Points\n"
               "The collection is about towns.\n"
               "- The Linden bakery sold 4,200 loaves. [D1]\n"
               "- The Harbor ferry carried 1,450 riders. [D1]\n"
               "- It was written by Jonathan in 1987. [D2]\n\n"
               "**Sources**\n\n- [D1] bakery.txt\n- [D2] ferry.txt\n")

    found = grounding(summary, texts, {1: "bakery", 2: "ferry"}, ["bakery", "ferry"])

    assert (found["content_lines"], found["not_bullets"], found["bullets"]) == (5, 2, 3)
    assert found["invented_lines"] == 1 and "Jonathan" in found["invented_examples"][0]
    assert found["mixed_lines"] == 1 and "Harbor" in found["mixed_examples"][0]
    assert found["within_length"]  # three bullets, where auto asks for at most six


def test_the_grounding_measure_knows_the_line_that_names_the_groups() -> None:
    from eval.grounding import OVERVIEW, grounding
    from pipeline.grouping import Group, overview

    line = overview([Group(documents=[1, 3], terms=["ferry", "harbor"])], [1, 2, 3])
    assert OVERVIEW.match(line)
    measured = grounding(line + "\n\n- The ferry crossed the harbor. [D1]\n",
                         {"a": "The ferry crossed the harbor.", "b": "Citrus.", "c": "A harbor ferry."},
                         {1: "a", 2: "b", 3: "c"}, ["a", "b", "c"])
    assert measured["not_bullets"] == 0 and measured["overview_lines"] == 1 and measured["bullets"] == 1
