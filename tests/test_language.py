"""The answer language a user names: ISO 639-1 codes and English names, anything else refused in one line."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from graphs import Context, graph
from pipeline.errors import InputError
from pipeline.text.language import check_language, language_name
from tests.fake_openai import FakeOpenAI


@pytest.mark.parametrize(("given_value", "name"), [
    ("ko", "Korean"), ("KO", "Korean"), ("korean", "Korean"), (" Korean ", "Korean"),
    ("sw", "Swahili"), ("norwegian bokmål", "Norwegian Bokmål"), ("pt-BR", "Portuguese (BR)"),
    ("zh_tw", "Chinese (TW)"), ("zh-Hant", "Chinese (Hant)"),
])
def test_codes_and_english_names_give_the_name_the_prompt_uses(given_value: str, name: str) -> None:
    assert check_language(given_value) == name


def test_auto_stays_auto() -> None:
    assert check_language("auto") == check_language("AUTO") == "auto"


@pytest.mark.parametrize("value", ["klingon", "xx", "", "en-", "english-US", "auto-ish"])
def test_an_unknown_language_is_refused_with_codes_to_use_instead(value: str) -> None:
    with pytest.raises(InputError, match=r"unknown language .*e\.g\. en, ko, ja") as caught:
        check_language(value)
    assert "\n" not in str(caught.value)


@given(st.text(max_size=30))
@example("aa-Aaaa")  # a code with a script: "Afar (Aaaa)" must be accepted again
def test_any_text_is_a_known_language_or_one_line_input_error(value: str) -> None:
    try:
        name = check_language(value)
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        assert name == "auto" or language_name(name) == name  # what comes back is accepted again as is


async def test_a_run_with_an_unknown_language_stops_before_any_call(fake_in_loop: FakeOpenAI) -> None:
    with pytest.raises(InputError, match="unknown language 'klingon'"):
        await graph.ainvoke({"texts": [{"id": "a", "text": "The ferry ran on time."}]},
                            context=Context(base_url=fake_in_loop.base_url, language="klingon"))

    assert fake_in_loop.chat_calls == 0
