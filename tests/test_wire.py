"""What goes over the wire: a request body encoded in pieces is byte for byte the one json.dumps gives,
and an answer is read as json.loads reads it, whatever the bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.llm.answer import load_json
from pipeline.llm.wire import RequestEncoder, payload, wire_messages
from pipeline.prompting import Prompt

# Any text, lone surrogates included (an undecodable file name becomes them), and quotes, escapes, controls.
texts = st.text(alphabet=st.characters(), max_size=300) | st.sampled_from(["", '"', "\\", "\x00\n\t", "é ✓ 東京"])
prompts = st.one_of(texts, st.builds(Prompt, texts, texts))
extras = st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.floats(), st.text(max_size=8),
                                                        st.none(), st.lists(st.integers(), max_size=3)), max_size=3)
max_tokens = st.one_of(st.none(), st.integers(min_value=0, max_value=10**6), st.just(True), st.just(2.5))


def dumped(extra: dict[str, Any], model: str, temperature: Any, prompt: Prompt | str, tokens: Any) -> bytes:
    return json.dumps(payload(extra, model, wire_messages(prompt), temperature, tokens)).encode("utf-8")


@settings(max_examples=400, deadline=None)
@given(extra=extras, model=texts, temperature=st.one_of(st.floats(), st.integers()), calls=st.lists(
    st.tuples(prompts, max_tokens), min_size=1, max_size=4))
def test_body_is_what_json_dumps_gives(extra: dict[str, Any], model: str, temperature: Any,
                                       calls: list[tuple[Prompt | str, Any]]) -> None:
    encoder = RequestEncoder()
    for prompt, tokens in calls:  # several calls of one client: what was kept encoded is reused
        assert encoder.encode(extra, model, temperature, prompt, tokens) == dumped(extra, model, temperature,
                                                                                  prompt, tokens)


@pytest.mark.parametrize("extra", [{"model": "other"}, {"temperature": 1}, {"max_tokens": 5}, {"stream": True}])
def test_a_request_body_naming_a_call_field_is_sent_as_json_dumps_orders_it(extra: dict[str, Any]) -> None:
    prompt = Prompt("Summarize.", "Text.")
    assert RequestEncoder().encode(extra, "m", 0.0, prompt, 400) == dumped(extra, "m", 0.0, prompt, 400)


def test_a_changed_setting_changes_the_next_body() -> None:
    encoder, extra, prompt = RequestEncoder(), {"seed": 1}, Prompt("Summarize.", "Text.")
    encoder.encode(extra, "m", 0.0, prompt, 400)
    extra["seed"] = 2
    assert json.loads(encoder.encode(extra, "m", 0.5, prompt, 400)) == {
        "seed": 2, "model": "m", "temperature": 0.5, "stream": False, "max_tokens": 400,
        "messages": [{"role": "system", "content": "Summarize."}, {"role": "user", "content": "Text."}]}


def test_a_field_changed_in_place_changes_the_next_body() -> None:
    encoder, extra, prompt = RequestEncoder(), {"chat_template_kwargs": {"enable_thinking": False}}, "Text."
    encoder.encode(extra, "m", 0.0, prompt, 400)
    extra["chat_template_kwargs"]["enable_thinking"] = True
    assert encoder.encode(extra, "m", 0.0, prompt, 400) == dumped(extra, "m", 0.0, prompt, 400)


def test_a_setting_changed_to_an_equal_value_of_another_type_is_written_as_that_type() -> None:
    # 1, 1.0 and True are equal in Python and written three ways in JSON; so are 0.0 and -0.0.
    encoder, prompt = RequestEncoder(), Prompt("Summarize.", "Text.")
    for temperature, extra in [(1.0, {}), (1, {}), (True, {}), (0.0, {}), (-0.0, {}), (0.2, {"top_k": 1}),
                               (0.2, {"top_k": 1.0}), (0.2, {"top_k": True}), (0.2, {1: 2}), (0.2, {True: 2})]:
        assert encoder.encode(extra, "m", temperature, prompt, 400) == dumped(extra, "m", temperature, prompt, 400)


def test_many_instructions_are_each_encoded_right() -> None:
    encoder = RequestEncoder()
    for i in range(40):  # more than are kept
        prompt = Prompt(f"Instructions {i % 20}.", "Text.")
        assert encoder.encode({}, "m", 0.0, prompt, 1) == dumped({}, "m", 0.0, prompt, 1)


def loaded(read: Any, body: bytes) -> tuple[str, Any]:
    try:
        return "value", read(body)
    except RecursionError:
        return "error", "too deep"
    except ValueError as exc:
        return "error", str(exc)


json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | texts,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                           max_leaves=12)
bodies = st.one_of(
    st.dictionaries(texts, json_values, max_size=4).map(lambda d: json.dumps(d, ensure_ascii=False).encode(
        "utf-8", "surrogatepass")),
    st.builds(lambda d, enc: json.dumps(d).encode(enc), st.dictionaries(texts, json_values, max_size=2),
              st.sampled_from(["utf-16", "utf-16-le", "utf-32", "utf-8-sig"])),
    st.binary(max_size=40).map(lambda b: b"{" + b),
    st.binary(max_size=40),
)


@settings(max_examples=600, deadline=None)
@given(body=bodies)
def test_an_answer_is_read_as_json_loads_reads_it(body: bytes) -> None:
    expected = loaded(json.loads, body)
    kind, got = loaded(load_json, body)
    assert kind == expected[0]
    if kind == "value":
        assert json.dumps(got, sort_keys=True) == json.dumps(expected[1], sort_keys=True)
    else:  # the same message, which the error the user sees quotes
        assert got == expected[1]
