"""A range the model turns into a pair, or a pair into a range, is joined again as its document joins it."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.answers.attribution import check_bullets
from pipeline.answers.joins import restore_joins
from pipeline.llm.runner import Completion
from pipeline.summarize import document_result
from pipeline.text.loading import DocRef

BAKERY = ("Bakery quarterly report\n\nSales for July to September were 14% higher than the same quarter last year. "
          "The shop closed on 3 and 4 August for repairs. Deliveries ran Monday-Friday from 2019 to 2021.\n")


@pytest.mark.parametrize(("point", "restored"), [
    ("Sales for July and September were 14% higher.", "Sales for July to September were 14% higher."),
    ("The shop closed from 3 to 4 August.", "The shop closed from 3 to 4 August."),  # "from 3 and 4" is no pair
    ("The shop closed on 3 to 4 August.", "The shop closed on 3 and 4 August."),
    ("Deliveries ran Monday and Friday.", "Deliveries ran Monday-Friday."),
    ("Deliveries ran between 2019 and 2021.", "Deliveries ran between 2019 and 2021."),  # a range already
    ("Deliveries ran in 2019 and 2021.", "Deliveries ran in 2019 to 2021."),
    ("Sales rose in July to September.", "Sales rose in July to September."),  # as the document says
    ("Sales rose in May and June.", "Sales rose in May and June."),  # the document joins no such two
])
def test_two_ends_are_joined_as_the_document_joins_them(point: str, restored: str) -> None:
    assert restore_joins(point, BAKERY)[0] == restored


_ENDS = st.sampled_from(["July", "September", "Monday", "Friday", "2019", "2021", "14%", "3", "1,450"])
_JOINERS = st.sampled_from([" and ", " to ", " through ", "-", " – ", " or ", ", "])
_WORDS = st.sampled_from(["sales", "rose", "between", "from", "in", "the", "shop", "closed", "."])


@st.composite
def _texts(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.one_of(_ENDS, _JOINERS, _WORDS), max_size=14))
    return " ".join(parts)


_ANY_JOINER = re.compile(r"\s+(?:and|to|through|until|till)\s+|\s*[-–—]\s*")


@given(point=_texts(), source=_texts())
@settings(max_examples=400, deadline=None)
def test_only_a_joiner_ever_changes_and_a_second_pass_changes_nothing(point: str, source: str) -> None:
    restored, count = restore_joins(point, source)

    assert (restored == point) == (count == 0)
    assert _ANY_JOINER.sub(" ", restored) == _ANY_JOINER.sub(" ", point)  # the same words, the same order
    assert restore_joins(restored, source) == (restored, 0)


def test_a_map_point_and_a_final_bullet_keep_the_documents_range() -> None:
    counts: Counter[str] = Counter()
    ref = DocRef(id=1, source="bakery.txt", sha256="", spans=[(0, len(BAKERY))])
    answer = "- Sales for July and September were 14% higher than the same quarter last year."

    result = document_result(ref, [Completion(answer, 1, 1)], text=BAKERY, counts=counts)

    assert "- Sales for July to September were 14% higher than the same quarter last year." in result["summary"]
    assert counts["restored_join"] == 1

    checked: Counter[str] = Counter()
    final = check_bullets("- The bakery's sales for July and September were 14% higher [D1]", [1],
                          lambda doc: result["summary"], checked)

    assert final == "- The bakery's sales for July to September were 14% higher [D1]"
    assert checked["restored_joins"] == 1
