"""Against a server that batches and queues (never 429), the default settings fill its slots without a queue."""

from __future__ import annotations

from typing import Any

from graphs import Context, graph
from tests.conftest import ThreadedFake
from tests.fake_openai import FakeOpenAI, FakeOpenAIProcess


def _texts(n: int) -> list[dict[str, str]]:
    return [{"id": f"doc-{i:03d}", "text": f"Report {i}: the depot counted "
             + " ".join(f"item{i}x{j}" for j in range(30))} for i in range(n)]


async def _run(fake: FakeOpenAI | FakeOpenAIProcess, docs: int, **settings: Any) -> dict[str, Any]:
    out = await graph.ainvoke({"texts": _texts(docs)}, context=Context(base_url=fake.base_url, **settings))
    assert [r["status"] for r in out["results"]] == ["ok"] * docs
    return out


async def test_a_small_server_is_kept_busy_without_a_queue_while_a_fixed_concurrency_floods_it() -> None:
    async with FakeOpenAIProcess(latency=0.04, slots=4) as fake:
        await _run(fake, 160)
        adaptive = await fake.astats()
        await fake.areset_stats()
        await _run(fake, 160, concurrency=32, adapt_concurrency=False)
        fixed = await fake.astats()

    assert adaptive["peak_serving"] == 4  # every slot used
    assert adaptive["peak_queue"] <= 8  # at most slow start's first doubling waited
    assert fixed["peak_queue"] >= 20  # what a fixed --concurrency 32 does to the same server


async def test_a_big_server_gets_many_calls_at_once_from_a_limit_that_starts_at_four() -> None:
    # In its own process, so that the server's work does not slow this one's event loop.
    async with FakeOpenAIProcess(latency=0.1, slots=24) as fake:
        out = await _run(fake, 500)
        served = await fake.astats()

    assert served["peak_serving"] >= 18  # grew well past the start of 4 ...
    assert served["peak_queue"] <= 24 + 8  # ... and queued at most one round past the knee
    assert out["stats"]["concurrency"] == 256
    assert out["stats"]["rate_limited"] == 0 and out["stats"]["retries"] == 0


def test_no_adapt_on_the_command_line_keeps_the_concurrency_as_given(tmp_path: Any) -> None:
    import run

    doc = tmp_path / "a.txt"
    doc.write_text("The depot counted 40 crates on Monday and 52 on Tuesday.", encoding="utf-8")
    fake = ThreadedFake(latency=0.0)
    try:
        args = run.build_parser({}).parse_args([str(doc), "--base-url", fake.server.base_url, "--no-adapt",
                                                "--concurrency", "8"])
        job = run.settings(args)
    finally:
        fake.close()
    assert job.context.adapt_concurrency is False and job.context.concurrency == 8
    assert Context().adapt_concurrency is True and Context(base_url="http://h/v1").resolved().concurrency == 256


async def test_every_call_of_a_step_shares_its_prefix_up_to_the_document() -> None:
    # A server's prefix cache (vLLM, llama.cpp) reuses the work on a prompt's shared beginning:
    # each map call must send the same system message first, and nothing variable before the document.
    async with FakeOpenAI(latency=0.0) as fake:
        await _run(fake, 30, token_max=1600, map_max_tokens=100)
        bodies = fake.bodies

    maps = [b["messages"] for b in bodies if "<document" in b["messages"][-1]["content"]]
    assert len(maps) == 30
    assert all([m["role"] for m in messages] == ["system", "user"] for messages in maps)
    assert len({messages[0]["content"] for messages in maps}) == 1
    assert all(messages[1]["content"].startswith('<document source="') for messages in maps)
    # The reduce calls of one step share their system message too.
    reduces = [b["messages"] for b in bodies if "<summaries" in b["messages"][-1]["content"]]
    assert reduces and all(messages[0]["role"] == "system" for messages in reduces)
    assert len(reduces) > 2  # collapse calls, then the final
    assert len({messages[0]["content"] for messages in reduces}) == 2  # one for all collapse calls, one for the final
    # Everything but the messages is the same in every request.
    assert len({repr(sorted((k, v) for k, v in b.items() if k not in ("messages", "max_tokens"))) for b in bodies}) == 1


async def test_a_call_that_timed_out_while_the_server_worked_on_is_counted_as_possibly_paid_twice() -> None:
    async with FakeOpenAI(latency=0.0, script=["hang"], hang_seconds=5.0) as fake:
        out = await _run(fake, 3, timeout=0.5)

    assert out["stats"]["possible_duplicate_calls"] == 1
    assert out["stats"]["retries"] == 1
    assert fake.chat_calls == 3 + 1 + 1  # three maps, the one sent again, the final


async def test_a_timed_out_call_halves_the_limit_so_its_retry_waits_for_the_queue_to_shrink() -> None:
    from pipeline.llm.limits import START, AdaptiveLimit

    limit = AdaptiveLimit(64, start=START, cooldown=0)
    limit.on_failure(ValueError("not a timeout"))
    assert limit.limit == START and limit.timeouts == 0
    wrapped = RuntimeError("no answer before the timeout")
    wrapped.__cause__ = TimeoutError()
    limit.on_failure(wrapped)
    assert limit.limit == START // 2 and limit.timeouts == 1
    fixed = AdaptiveLimit(16)
    fixed.on_failure(TimeoutError())
    assert fixed.limit == 16 and fixed.timeouts == 1  # --no-adapt: counted, the concurrency kept


async def test_each_server_of_a_pool_gets_its_own_limit_from_its_own_latency() -> None:
    async with FakeOpenAIProcess(latency=0.05, slots=3) as small, FakeOpenAIProcess(latency=0.05, slots=12) as big:
        out = await graph.ainvoke({"texts": _texts(300)}, context=Context(base_urls=[small.base_url, big.base_url]))
        served = [await small.astats(), await big.astats()]

    assert [r["status"] for r in out["results"]] == ["ok"] * 300
    # Each queue stays within a few rounds of its server's slots (a fixed share of 128 would queue over 100).
    assert served[0]["peak_queue"] <= 5 * 3 and served[1]["peak_queue"] <= 12 + 16
    assert served[1]["chat_calls"] > 1.5 * served[0]["chat_calls"]  # the bigger server did more of the work
    endpoints = out["stats"]["endpoints"]
    assert [e["concurrency"] for e in endpoints] == [128, 128]  # the ceilings: a share of --concurrency each
    # A doubling that a loaded machine's noisy latencies made look worth it may pass 8 for a round.
    assert endpoints[0]["concurrency_highest"] <= 16 and endpoints[1]["concurrency_highest"] > 8
