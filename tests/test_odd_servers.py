"""Servers that answer oddly but validly, or hugely: odd `usage`, `choices: []`, any /models, oversized bodies."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeline.llm.answer as answer_module
from pipeline.errors import AnswerTooLargeError, EmptyAnswerError, SummarizerError
from pipeline.llm.answer import parse_completion, parse_models
from pipeline.llm.memory_guard import process_rss
from tests.conftest import ENGLISH

Body = Callable[[dict[str, Any]], Any]  # the request's JSON -> a JSON value, or bytes (or an iterator of them) to stream


def completion(content: Any = "- The ferry ran.", usage: Any = None, **extra: Any) -> dict[str, Any]:
    """A chat completion as servers send it, with `usage` and anything else as given."""
    body = {"id": "x", "object": "chat.completion", "model": "odd",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            **extra}
    if usage is not None:
        body["usage"] = usage
    return body


class OddServer:
    """An OpenAI-compatible server on its own loop in a thread, answering what `chat` and `models` say."""

    def __init__(self, chat: Body, models: Any = None) -> None:
        self.chat, self.models = chat, {"data": [{"id": "odd"}]} if models is None else models
        self.calls = 0
        self.bytes_sent: list[int] = []
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _models(self, request: web.Request) -> web.StreamResponse:
        body = self.models if isinstance(self.models, bytes) else json.dumps(self.models).encode()
        return web.Response(body=body, content_type="application/json")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        answer = self.chat(await request.json())
        if isinstance(answer, bytes):
            whole = answer
            answer = (whole[i:i + 65536] for i in range(0, len(whole), 65536))
        elif not isinstance(answer, Iterator):
            return web.json_response(answer)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})  # no length: streamed
        await resp.prepare(request)
        sent = 0
        try:
            for chunk in answer:
                await resp.write(chunk)
                sent += len(chunk)
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client stopped reading
        finally:
            self.bytes_sent.append(sent)
        return resp

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture
def odd() -> Iterator[Callable[..., OddServer]]:
    servers: list[OddServer] = []

    def start(chat: Body, models: Any = None) -> OddServer:
        servers.append(OddServer(chat, models))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _three(folder: Path) -> Path:
    folder.mkdir()
    for name, extra in (("a", ""), ("b", " The bridge opened."), ("c", " The tram was late.")):
        (folder / f"{name}.txt").write_text(ENGLISH + extra, encoding="utf-8")
    return folder


def _document(request: dict[str, Any]) -> str:
    return str(request["messages"][-1]["content"])


@pytest.mark.parametrize("usage", ["n/a", None, {"prompt_tokens": "lots", "completion_tokens": None},
                                   {"prompt_tokens": float("nan"), "completion_tokens": -3}, [1, 2], 7])
def test_odd_usage_keeps_the_answer_and_estimates_the_tokens(cli, odd, tmp_path: Path, usage: Any) -> None:
    server = odd(lambda request: completion(usage=usage))

    result = cli(str(_three(tmp_path / "docs")), base_url=server.base_url)

    assert result.code == 0, result.err
    assert [r["status"] for r in result.lines()] == ["ok"] * 3
    report = result.report()
    assert report["llm_calls"]["map"] == 3 and report["prompt_tokens"] > 0 and report["completion_tokens"] > 0
    assert "tokens are estimated" in result.err


def test_an_empty_choices_list_fails_that_document_and_the_batch_goes_on(cli, odd, tmp_path: Path) -> None:
    server = odd(lambda request: completion(choices=[]) if "bridge" in _document(request) else completion())

    result = cli(str(_three(tmp_path / "docs")), base_url=server.base_url)

    assert result.code == 3
    by_name = {Path(r["source"]).name: r for r in result.lines()}
    assert len(by_name) == 3 and by_name["a.txt"]["status"] == by_name["c.txt"]["status"] == "ok"
    assert by_name["b.txt"]["status"] == "failed" and "no choices" in by_name["b.txt"]["error"]


def test_a_deeply_nested_model_list_is_tolerated(cli, odd, tmp_path: Path) -> None:
    server = odd(lambda request: completion(), models=b"[" * 200_000 + b"]" * 200_000)

    result = cli(str(_three(tmp_path / "docs")), base_url=server.base_url)

    assert result.code == 0, result.err


def test_an_oversized_answer_fails_its_call_unread_and_memory_holds(cli, odd, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answer_module, "ANSWER_BASE_BYTES", 64 * 1024)
    head, tail = json.dumps(completion("")).encode().split(b'"content": ""')
    chunk, chunks = b"word " * 13_107, 1000  # 64 MB, made as it is sent, without a length

    def huge() -> Iterator[bytes]:
        yield head + b'"content": "'
        for _ in range(chunks):
            yield chunk
        yield b'"' + tail

    server = odd(lambda request: huge() if "bridge" in _document(request) else completion())
    limit = process_rss() / 2**20 + 300

    result = cli(str(_three(tmp_path / "docs")), "--max-retries", "1", "--memory-limit-mb", f"{limit:.0f}",
                 base_url=server.base_url)

    assert result.code == 3, result.err
    failed = [r for r in result.lines() if r["status"] == "failed"]
    assert len(failed) == 1 and "cap" in failed[0]["error"]
    assert server.calls == 4  # three maps and the final: an oversized answer is not asked for again
    assert max(server.bytes_sent) < len(chunk) * chunks / 4  # read no further than the cap (and the socket's buffers)
    assert result.report()["memory"]["peak_rss_mb"] < limit


def test_an_answer_far_past_max_tokens_is_refused() -> None:
    body = json.dumps(completion("w " * 20_000, usage={"prompt_tokens": 5, "completion_tokens": 20_000})).encode()

    with pytest.raises(AnswerTooLargeError, match="ignored max_tokens"):
        parse_completion(body, str, max_tokens=400)
    assert parse_completion(body, str).output_tokens == 20_000  # no max_tokens asked, no cap in tokens


@pytest.mark.parametrize("body", [completion(choices=[]), completion(content=None), completion(choices=[{}]),
                                  completion(choices=[{"message": None}])])
def test_empty_answers_are_empty_answer_errors(body: dict[str, Any]) -> None:
    with pytest.raises(EmptyAnswerError):
        parse_completion(json.dumps(body).encode(), str)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
FIELDS = st.sampled_from(["choices", "usage", "model", "error", "message", "content", "prompt_tokens",
                          "completion_tokens", "finish_reason", "data", "id"])
# Shapes near a real completion: any of its fields replaced by any JSON.
NEAR = st.builds(
    lambda usage, content, finish, choice_extra: {
        "choices": [{"message": {"content": content}, "finish_reason": finish, **choice_extra}], "usage": usage},
    JSON, JSON | st.text(), JSON, st.dictionaries(FIELDS, JSON, max_size=2))
ANY_BODY = (JSON | NEAR | st.dictionaries(FIELDS, JSON | NEAR, max_size=4)).map(
    lambda value: json.dumps(value).encode()) | st.binary(max_size=64) | st.integers(1, 5000).map(
    lambda depth: b'{"choices": ' + b"[" * depth + b"]" * depth + b"}")


@settings(max_examples=400, deadline=None)
@given(body=ANY_BODY, max_tokens=st.none() | st.integers(1, 4000))
def test_the_parser_raises_nothing_but_the_error_tree(body: bytes, max_tokens: int | None) -> None:
    try:
        answer = parse_completion(body, str, max_tokens)
    except SummarizerError:
        return
    assert isinstance(answer.text, str) and answer.input_tokens >= 0 and answer.output_tokens >= 0
    assert answer.finish_reason is None or isinstance(answer.finish_reason, str)


@settings(max_examples=200, deadline=None)
@given(body=ANY_BODY)
def test_any_model_list_gives_a_list_of_names(body: bytes) -> None:
    assert all(isinstance(name, str) for name in parse_models(body))


async def test_the_memory_guard_sees_a_big_read_and_can_stop_it(odd, monkeypatch: pytest.MonkeyPatch) -> None:
    import aiohttp

    from pipeline.errors import MemoryLimitError
    from pipeline.llm.client import OpenAICompatChat

    monkeypatch.setattr(answer_module, "MAX_ANSWER_BYTES", 64 * 2**20)
    body = json.dumps(completion("word " * 1_000_000)).encode()  # 5 MB, streamed
    server = odd(lambda request: body)
    seen: list[int] = []
    async with aiohttp.ClientSession() as session:
        chat = OpenAICompatChat(model="odd", base_url=server.base_url, session=session, on_read=seen.append)
        text, _ = await chat.acomplete("Summarize.", max_tokens=None)  # type: ignore[arg-type]
        assert len(text) == 5_000_000 and sum(seen) >= 4 * 2**20  # told of every MiB read

        read: list[int] = []

        def over(nbytes: int) -> None:
            read.append(nbytes)
            raise MemoryLimitError("memory use reached 9999 MB, over the limit")

        stopped = OpenAICompatChat(model="odd", base_url=server.base_url, session=session, on_read=over)
        with pytest.raises(MemoryLimitError):
            await stopped.acomplete("Summarize.", max_tokens=None)  # type: ignore[arg-type]
    # The read stopped at the first report: what the kernel had buffered beyond it was never taken in.
    assert len(read) == 1 and read[0] <= 2 * 2**20 < len(body)


def test_no_secret_in_any_output_when_an_odd_answer_echoes_it(cli, odd, tmp_path: Path) -> None:
    secret = "sk-odd-secret-0123456789abcdef"
    server = odd(lambda request: completion(choices=[], error={"message": f"no choices for key {secret}"})
                 if "bridge" in _document(request) else completion(usage=f"usage for {secret}"))

    result = cli(str(_three(tmp_path / "docs")), "--api-key", secret, base_url=server.base_url)

    assert result.code == 3
    written = b"".join(p.read_bytes() for p in result.out_dir.iterdir() if p.is_file())  # the store too
    assert secret not in result.out + result.err and secret.encode() not in written
    assert b"no choices" in written


async def test_a_declared_length_over_the_cap_is_refused_before_reading(odd, monkeypatch: pytest.MonkeyPatch) -> None:
    import aiohttp

    from pipeline.llm.client import OpenAICompatChat

    monkeypatch.setattr(answer_module, "ANSWER_BASE_BYTES", 16 * 1024)
    server = odd(lambda request: completion("word " * (8_000 if "long" in _document(request) else 10)))
    async with aiohttp.ClientSession() as session:
        chat = OpenAICompatChat(model="odd", base_url=server.base_url, session=session)
        assert (await chat.acomplete("short", max_tokens=50))[0].startswith("word")
        with pytest.raises(AnswerTooLargeError, match="bytes, over the"):
            await chat.acomplete("long", max_tokens=50)


async def test_a_max_tokens_set_only_in_the_extra_body_caps_the_answer_too(odd, monkeypatch: pytest.MonkeyPatch) -> None:
    import aiohttp

    from pipeline.llm.client import OpenAICompatChat

    monkeypatch.setattr(answer_module, "ANSWER_BASE_BYTES", 16 * 1024)
    body = json.dumps(completion("word " * 20_000)).encode()  # 100 KB: over 16 KB + 64 B for each of 10 tokens
    server = odd(lambda request: body)
    async with aiohttp.ClientSession() as session:
        chat = OpenAICompatChat(model="odd", base_url=server.base_url, session=session,
                                extra_body={"max_tokens": 10})
        with pytest.raises(AnswerTooLargeError):
            await chat.acomplete("Summarize.", max_tokens=None)  # type: ignore[arg-type]
