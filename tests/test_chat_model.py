"""A LangChain chat model brought in a notebook: what its calls carry, and what the run reports it sent."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI

from graphs import Context, graph
from pipeline.llm.chat_model import fit_chat_model
from pipeline.llm.runner import ChatModelCaller
from tests.conftest import ENGLISH
from tests.fake_openai import FakeOpenAI

BULLET = "- The harbor authority's electric ferry trial carried 1,450 trips a day, above the 900 planned."


def _texts(n: int) -> list[dict[str, str]]:
    return [{"id": f"doc-{i}", "text": f"{ENGLISH} Note {i} adds fact{i}."} for i in range(n)]


def _openai(fake: FakeOpenAI, **own: Any) -> ChatOpenAI:
    return ChatOpenAI(model="fake-model", base_url=fake.base_url, api_key="dummy", max_retries=0, **own)


def _sent(fake: FakeOpenAI, name: str) -> set[Any]:
    """The values of request field `name` the server received ("absent" for calls without it)."""
    assert fake.bodies
    return {body.get(name, "absent") for body in fake.bodies}


async def test_the_report_names_the_chat_models_model_and_what_its_calls_carried(fake_in_loop: FakeOpenAI) -> None:
    out = await graph.ainvoke({"texts": _texts(4)}, context=Context(chat_model=_openai(fake_in_loop), concurrency=8))

    assert out["summary"].startswith("- ")
    assert _sent(fake_in_loop, "model") == {"fake-model"}
    assert _sent(fake_in_loop, "seed") == {0}  # the run's seed, where the model sets none
    assert _sent(fake_in_loop, "temperature") == {"absent"}  # the model's own: it set none, so none is sent
    run = out["stats"]
    assert run["settings"]["model"] == run["model"] == "fake-model" and run["chat_model"] == "ChatOpenAI"
    assert (run["settings"]["temperature"], run["settings"]["seed"]) == (None, 0)


async def test_the_models_own_temperature_and_seed_stay_over_the_contexts(
        fake_in_loop: FakeOpenAI, caplog: pytest.LogCaptureFixture) -> None:
    model = _openai(fake_in_loop, temperature=0.7, seed=7)

    with caplog.at_level(logging.WARNING, logger="pipeline.llm.chat_model"):
        out = await graph.ainvoke({"texts": _texts(2)}, context=Context(chat_model=model, temperature=0.2, seed=5))

    assert _sent(fake_in_loop, "temperature") == {0.7} and _sent(fake_in_loop, "seed") == {7}
    assert (out["stats"]["settings"]["temperature"], out["stats"]["settings"]["seed"]) == (0.7, 7)
    assert "own temperature 0.7 is used, not the run's 0.2" in caplog.text


async def test_a_temperature_and_seed_given_in_the_context_go_where_the_model_sets_none(
        fake_in_loop: FakeOpenAI) -> None:
    model = _openai(fake_in_loop)

    out = await graph.ainvoke({"texts": _texts(2)},
                              context=Context(chat_model=model, temperature=0.3, seed=11, extra_body={"top_k": 20}))

    assert _sent(fake_in_loop, "temperature") == {0.3} and _sent(fake_in_loop, "seed") == {11}
    assert _sent(fake_in_loop, "top_k") == {20}
    shown = out["stats"]["settings"]
    assert (shown["temperature"], shown["seed"], shown["extra_body"]) == (0.3, 11, {"top_k": 20})
    assert model.temperature is None and model.seed is None  # the notebook's own object is left as it was


async def test_no_seed_in_the_context_sends_none_and_reports_none(fake_in_loop: FakeOpenAI) -> None:
    out = await graph.ainvoke({"texts": _texts(1)}, context=Context(chat_model=_openai(fake_in_loop), seed=None))

    assert _sent(fake_in_loop, "seed") == {"absent"} and out["stats"]["settings"]["seed"] is None


async def test_a_dry_run_names_the_chat_models_model_and_calls_nothing(fake_in_loop: FakeOpenAI) -> None:
    out = await graph.ainvoke({"texts": _texts(3)}, context=Context(chat_model=_openai(fake_in_loop), dry_run=True))

    assert out["preview"]["model"] == "fake-model" and fake_in_loop.chat_calls == 0


@pytest.mark.parametrize("make", [
    lambda: FakeListChatModel(responses=[BULLET]),
    lambda: GenericFakeChatModel(messages=itertools.cycle([AIMessage(BULLET)])),
], ids=["FakeListChatModel", "GenericFakeChatModel"])
async def test_a_model_that_is_not_openais_works_and_is_reported_by_its_own_name(
        make: Any, caplog: pytest.LogCaptureFixture) -> None:
    model = make()

    with caplog.at_level(logging.WARNING, logger="pipeline.llm.chat_model"):
        out = await graph.ainvoke({"texts": _texts(2)}, context=Context(chat_model=model, temperature=0.2))

    assert [r["status"] for r in out["results"]] == ["ok", "ok"] and "1,450 trips" in out["summary"]
    name = type(model).__name__
    shown = out["stats"]["settings"]
    assert out["stats"]["model"] == shown["model"] == out["stats"]["chat_model"] == name
    assert (shown["temperature"], shown["seed"], shown["extra_body"]) == (None, None, {})  # it takes neither
    assert f"({name}) has no temperature setting" in caplog.text


_temperatures = st.none() | st.sampled_from([0.0, 0.3, 0.7, 1.0])
_seeds = st.none() | st.integers(0, 2**31 - 1)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for all of a test's examples: ChatOpenAI keeps its HTTP client per endpoint, across models."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(own_temperature=_temperatures, own_seed=_seeds, temperature=_temperatures, seed=_seeds)
def test_what_a_call_carries_is_the_models_own_else_the_runs_and_is_what_is_reported(
        fake: FakeOpenAI, loop: asyncio.AbstractEventLoop, own_temperature: float | None, own_seed: int | None,
        temperature: float | None, seed: int | None) -> None:
    model = ChatOpenAI(model="fake-model", base_url=fake.base_url, api_key="dummy", max_retries=0,
                       temperature=own_temperature, seed=own_seed)
    called, sent = fit_chat_model(model, temperature=temperature, seed=seed)
    fake.bodies.clear()

    async def one_call() -> None:
        await ChatModelCaller(called, timeout=10).acomplete("alpha beta", 20)

    loop.run_until_complete(one_call())

    (body,) = fake.bodies
    assert body.get("temperature") == sent.temperature and body.get("seed") == sent.seed
    assert sent.temperature == (own_temperature if own_temperature is not None else temperature)
    assert sent.seed == (own_seed if own_seed is not None else seed)
    assert (model.temperature, model.seed) == (own_temperature, own_seed)
