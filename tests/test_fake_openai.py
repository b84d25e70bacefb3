"""Fast self-tests for the fake OpenAI server (only 127.0.0.1 is contacted)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

try:
    from tests.fake_openai import FakeOpenAI, FakeOpenAIProcess
except ImportError:  # tests/ not importable as a package
    from fake_openai import FakeOpenAI, FakeOpenAIProcess

TIMEOUT = aiohttp.ClientTimeout(total=5)
DOC = "Summarize this:\n<document source=\"x\">\nalpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi\n</document>"


def _body(content: str = DOC) -> dict[str, Any]:
    return {"model": "m1", "max_tokens": 50, "temperature": 0,
            "messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": content}]}


async def _post(session: aiohttp.ClientSession, fake: Any, content: str = DOC,
                **kw: Any) -> tuple[int, Any, Any]:
    async with session.post(fake.base_url + "/chat/completions", json=_body(content), **kw) as r:
        text = await r.text()
        try:
            data: Any = await r.json(content_type=None)
        except ValueError:
            data = text
        return r.status, data, r.headers


@pytest.mark.asyncio
async def test_normal_reply_and_usage() -> None:
    async with FakeOpenAI() as fake, aiohttp.ClientSession(timeout=TIMEOUT) as s:
        assert fake.base_url.startswith("http://127.0.0.1:") and fake.base_url.endswith("/v1")
        status, data, _ = await _post(s, fake)
        assert status == 200
        assert data["object"] == "chat.completion" and data["model"] == "m1"
        choice = data["choices"][0]
        assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
        assert choice["message"]["content"] == (
            "SUMMARY[14 words]: alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu")
        u = data["usage"]
        assert u["prompt_tokens"] > 0 and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
        async with s.get(fake.base_url + "/models") as r:
            assert (await r.json())["data"][0]["id"] == "fake-model"
        assert fake.bodies[0]["messages"][1]["content"] == DOC
        st = fake.stats()
        assert st["chat_calls"] == 1 and st["status_counts"] == {"200": 2}  # chat + models
        assert st["total_requests"] == 2


@pytest.mark.asyncio
async def test_custom_reply_and_no_body_recording() -> None:
    async with FakeOpenAI(reply=lambda msgs: f"n={len(msgs)}", record_bodies=False) as fake, \
            aiohttp.ClientSession(timeout=TIMEOUT) as s:
        status, data, _ = await _post(s, fake)
        assert status == 200 and data["choices"][0]["message"]["content"] == "n=2"
        assert fake.bodies == []


@pytest.mark.asyncio
async def test_script_429_then_500_then_success() -> None:
    async with FakeOpenAI(script=["429", "500"], retry_after=0.25) as fake, \
            aiohttp.ClientSession(timeout=TIMEOUT) as s:
        status, data, headers = await _post(s, fake)
        assert status == 429 and data["error"]["code"] == "rate_limit_exceeded"
        assert headers["Retry-After"] == "0.25" and headers["retry-after-ms"] == "250"
        assert (await _post(s, fake))[0] == 500
        assert (await _post(s, fake))[0] == 200
        assert fake.stats()["status_counts"] == {"200": 1, "429": 1, "500": 1}


@pytest.mark.asyncio
async def test_fail_marker_always_500() -> None:
    async with FakeOpenAI(fail_marker="POISON") as fake, aiohttp.ClientSession(timeout=TIMEOUT) as s:
        for _ in range(3):
            assert (await _post(s, fake, content="x POISON y"))[0] == 500
        assert (await _post(s, fake))[0] == 200


@pytest.mark.asyncio
async def test_malformed_and_no_choices() -> None:
    async with FakeOpenAI(script=["malformed", "no_choices"]) as fake, \
            aiohttp.ClientSession(timeout=TIMEOUT) as s:
        status, data, _ = await _post(s, fake)
        assert status == 200 and isinstance(data, str)  # body is not valid JSON
        status, data, _ = await _post(s, fake)
        assert status == 200 and "choices" not in data


@pytest.mark.asyncio
async def test_random_faults_are_seeded() -> None:
    async def run() -> list[int]:
        async with FakeOpenAI(faults={"429": 0.3, "500": 0.2}, seed=7) as fake, \
                aiohttp.ClientSession(timeout=TIMEOUT) as s:
            return [(await _post(s, fake))[0] for _ in range(30)]

    first, second = await run(), await run()
    assert first == second and {200, 429, 500} <= set(first)


@pytest.mark.asyncio
async def test_auth_401() -> None:
    async with FakeOpenAI(api_key="sk-test") as fake, aiohttp.ClientSession(timeout=TIMEOUT) as s:
        status, data, _ = await _post(s, fake, headers={"Authorization": "Bearer wrong"})
        assert status == 401 and data["error"]["code"] == "invalid_api_key"
        assert (await _post(s, fake))[0] == 401
        assert (await _post(s, fake, headers={"Authorization": "Bearer sk-test"}))[0] == 200


@pytest.mark.asyncio
async def test_peak_in_flight() -> None:
    async with FakeOpenAI(latency=0.05) as fake, aiohttp.ClientSession(timeout=TIMEOUT) as s:
        results = await asyncio.gather(*(_post(s, fake) for _ in range(10)))
        assert all(r[0] == 200 for r in results)
        assert fake.peak_in_flight == 10 and fake.in_flight == 0
        assert fake.connections_opened == 10


@pytest.mark.asyncio
async def test_connections_counted_with_pool_limit() -> None:
    async with FakeOpenAI(latency=0.01) as fake:
        conn = aiohttp.TCPConnector(limit=2)
        async with aiohttp.ClientSession(connector=conn, timeout=TIMEOUT) as s:
            results = await asyncio.gather(*(_post(s, fake) for _ in range(12)))
        assert all(r[0] == 200 for r in results)
        assert fake.chat_calls == 12
        assert 1 <= fake.connections_opened <= 2 and fake.peak_in_flight <= 2


@pytest.mark.asyncio
async def test_hang_does_not_block_shutdown() -> None:
    fake = FakeOpenAI(script=["hang"], hang_seconds=30)
    await fake.start()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
    task = asyncio.create_task(_post(session, fake))
    for _ in range(100):  # bounded wait until the request is being handled
        if fake.in_flight:
            break
        await asyncio.sleep(0.01)
    assert fake.in_flight == 1
    t0 = time.monotonic()
    await fake.stop()
    assert time.monotonic() - t0 < 1.5
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 3)
    await session.close()


@pytest.mark.asyncio
async def test_subprocess_helper() -> None:
    async with FakeOpenAIProcess(latency=0.01, script=["429"]) as srv:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            async with s.get(f"http://127.0.0.1:{srv.port}/health") as r:
                assert r.status == 200
            assert (await _post(s, srv))[0] == 429
            assert (await _post(s, srv))[0] == 200
        st = await srv.astats()
        assert st["chat_calls"] == 2 and st["status_counts"] == {"200": 1, "429": 1}
        assert st["bodies_recorded"] == 0  # record_bodies defaults off in the child
        await srv.areset_stats()
        assert (await srv.astats())["chat_calls"] == 0
        proc = srv.proc
    assert proc is not None and proc.returncode is not None and srv.proc is None


def test_subprocess_helper_sync() -> None:
    with FakeOpenAIProcess() as srv:
        assert srv.base_url == f"http://127.0.0.1:{srv.port}/v1"
        assert srv.stats()["total_requests"] == 0
