"""One LLM call, whichever model makes it: the same errors for the same answers, one way to call."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx
import openai
import pytest
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_openai import ChatOpenAI

import pipeline.llm.runner as llm
from pipeline.llm.client import OpenAICompatChat, Usage
from pipeline.errors import (
    AuthError,
    ConnectError,
    EndpointError,
    LLMError,
    RateLimitedError,
    RetryableLLMError,
    error_for_exception,
    retry_after,
)
from pipeline.llm.runner import LLMRunner
from pipeline.logs import error_line
from tests.fake_openai import FakeOpenAI

KEY = "sk-test-0123456789abcdef"
Models = Callable[[str], Any]


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm, "BACKOFF_BASE_S", 0.001)


@asynccontextmanager
async def _model(kind: str, base_url: str, timeout: float = 10.0) -> AsyncIterator[Any]:
    """The built-in client over a run's session, or ChatOpenAI (the openai SDK) with its retries off."""
    if kind == "builtin":
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            yield OpenAICompatChat(model="fake-model", base_url=base_url, api_key=KEY, session=session)
    else:
        yield ChatOpenAI(model="fake-model", base_url=base_url, api_key=KEY, max_retries=0, timeout=timeout)


def _runner(model: Any, max_retries: int = 2, timeout: float = 10.0) -> LLMRunner:
    return LLMRunner(model, concurrency=4, timeout=timeout, max_retries=max_retries,
                     count_tokens=lambda text: len(text.split()))


both = pytest.mark.parametrize("kind", ["builtin", "openai-sdk"])


@both
@pytest.mark.parametrize(("script", "error", "message"), [
    (["404"], EndpointError, "answered 404 .*check the base URL .*model name 'fake-model'"),
    (["400"], LLMError, r"request refused \(HTTP 400\)"),
    (["422"], LLMError, r"request refused \(HTTP 422\)"),
])
async def test_a_status_that_retrying_cannot_fix_fails_at_once(
        fake_in_loop: FakeOpenAI, kind: str, script: list[str], error: type[LLMError], message: str) -> None:
    fake_in_loop.script.extend(script)
    async with _model(kind, fake_in_loop.base_url) as model:
        runner = _runner(model)
        with pytest.raises(error, match=message) as caught:
            await runner.complete("map", "alpha beta", 50, "map")

    assert not isinstance(caught.value, RetryableLLMError)
    assert fake_in_loop.chat_calls == 1


@both
async def test_a_rejected_key_stops_the_run_without_showing_the_key(fake_in_loop: FakeOpenAI, kind: str) -> None:
    fake_in_loop.api_key, fake_in_loop.echo_key = "sk-the-right-one", True
    async with _model(kind, fake_in_loop.base_url) as model:
        runner = _runner(model)
        with pytest.raises(AuthError, match=r"rejected the API key \(HTTP 401\)") as caught:
            await runner.complete("map", "alpha beta", 50, "map")
        with pytest.raises(AuthError):  # the run has stopped: no second call is sent
            await runner.complete("map", "gamma delta", 50, "map")

    assert KEY not in str(caught.value) and KEY[-4:] not in str(caught.value)
    assert fake_in_loop.chat_calls == 1


@both
@pytest.mark.parametrize("script", [["429"], ["500"], ["503", "408"], ["425"]])
async def test_a_passing_failure_is_retried_until_the_answer_comes(
        fake_in_loop: FakeOpenAI, kind: str, script: list[str]) -> None:
    fake_in_loop.script.extend(script)
    async with _model(kind, fake_in_loop.base_url) as model:
        runner = _runner(model)
        done = await runner.complete("map", "alpha beta gamma", 50, "map")

    assert done.text == "SUMMARY[3 words]: alpha beta gamma" and done.tokens_in > 0
    assert fake_in_loop.chat_calls == len(script) + 1
    assert runner.stats.retries == len(script) and runner.stats.rate_limited == script.count("429")


@both
async def test_a_hung_call_times_out_and_is_retried(fake_in_loop: FakeOpenAI, kind: str) -> None:
    fake_in_loop.script.append("hang")
    async with _model(kind, fake_in_loop.base_url, timeout=0.3) as model:
        runner = _runner(model, max_retries=0)
        with pytest.raises(RetryableLLMError, match="^no answer before the timeout$"):
            await runner.complete("map", "alpha", 50, "map")


async def test_a_chat_model_without_a_timeout_of_its_own_is_held_to_the_runs(fake_in_loop: FakeOpenAI) -> None:
    fake_in_loop.script.append("hang")
    model = ChatOpenAI(model="fake-model", base_url=fake_in_loop.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(RetryableLLMError, match="^no answer before the timeout$"):
        await _runner(model, max_retries=0, timeout=0.3).complete("map", "alpha", 50, "map")


@both
async def test_nothing_listening_stops_the_run_once_retries_are_spent(kind: str) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with _model(kind, f"http://127.0.0.1:{port}/v1") as model:
        runner = _runner(model, max_retries=1)
        with pytest.raises(EndpointError, match="is the server running"):
            await runner.complete("map", "alpha", 50, "map")

    assert runner.stats.retries == 1


async def test_the_sdks_retry_after_is_honoured_like_the_built_in_clients() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(429, headers={"retry-after": "7"}, request=request)
    raw = openai.RateLimitError("Rate limit reached", response=response, body=None)

    error = error_for_exception(raw)

    assert isinstance(error, RateLimitedError) and error.retry_after == 7.0
    assert str(error).startswith("rate limited (HTTP 429): RateLimitError:")


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"Retry-After": "3"}, 3.0), ({"retry-after-ms": "1500", "Retry-After": "2"}, 1.5),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0), ({"Retry-After": "soon"}, None), ({}, None),
])
def test_a_servers_retry_after_is_read_in_any_of_its_forms(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(headers) == seconds


def test_a_connection_failure_in_any_client_library_is_a_connection_error() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    for raw in (ConnectionRefusedError("refused"), httpx.ConnectError("refused"),
                openai.APIConnectionError(request=request)):
        assert isinstance(error_for_exception(raw), ConnectError), raw
    assert str(error_for_exception(openai.APITimeoutError(request=request))) == "no answer before the timeout"


class _Recorder:
    """A ChatCaller that is no chat model at all: it answers each prompt with its first line, cut short."""

    def __init__(self) -> None:
        self.prompts: list[tuple[str, int]] = []

    async def acomplete(self, prompt: str, max_tokens: int) -> tuple[str, Usage]:
        self.prompts.append((prompt, max_tokens))
        return "kept line\ncut li", {"input_tokens": 11, "output_tokens": 3, "finish_reason": "length"}


async def test_any_chat_caller_can_make_the_calls() -> None:
    caller = _Recorder()
    runner = _runner(caller)

    done = await runner.complete("map", "the prompt", 40, "map")

    assert caller.prompts == [("the prompt", 40)]
    assert (done.text, done.tokens_in, done.tokens_out) == ("kept line", 11, 3)  # the cut-off line is dropped


class _Counting(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.starts = 0

    async def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.starts += 1


@pytest.mark.parametrize("tracing", [False, True])
async def test_with_tracing_on_the_built_in_clients_calls_show_in_traces(
        fake_in_loop: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, tracing: bool) -> None:
    monkeypatch.setattr(llm, "tracing_is_enabled", lambda: tracing)
    seen = _Counting()
    async with _model("builtin", fake_in_loop.base_url) as model:
        model.callbacks = [seen]
        runner = _runner(model)
        done = await runner.complete("map", "alpha beta", 50, "map")

    assert done.text == "SUMMARY[2 words]: alpha beta"
    assert seen.starts == (1 if tracing else 0)  # untraced, the hot path skips LangChain's callbacks


@pytest.mark.parametrize("as_json", [False, True])
async def test_a_fatal_error_is_one_line_in_the_logs_format(fake_in_loop: FakeOpenAI, as_json: bool) -> None:
    fake_in_loop.api_key = "sk-the-right-one"
    async with _model("builtin", fake_in_loop.base_url) as model:
        with pytest.raises(AuthError) as caught:
            await _runner(model).complete("map", "alpha", 50, "map")

    line = error_line(str(caught.value), as_json=as_json)

    assert "\n" not in line
    if as_json:
        entry = json.loads(line)
        assert (entry["level"], entry["logger"]) == ("error", "run") and entry["ts"]
        assert entry["message"] == str(caught.value)
    else:
        assert line == f"error: {caught.value}"


class _Hanging:
    """A ChatCaller whose answer never comes."""

    async def acomplete(self, prompt: str, max_tokens: int) -> tuple[str, Usage]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_progress_counts_answered_and_failed_calls_never_cancelled_ones() -> None:
    from pipeline.progress import EventProgress

    events: list[dict[str, Any]] = []
    progress = EventProgress(events.append, every=0.0)
    answered, hanging = _runner(_Recorder()), _runner(_Hanging())
    answered.progress = hanging.progress = progress

    await answered.complete("map", "a prompt", 40, "map")
    task = asyncio.create_task(hanging.complete("map", "another", 40, "map"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    progress.close()

    assert progress.done["map"] == 1
