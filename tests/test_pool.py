"""Endpoint pools: calls spread by capacity, per-server limits, a server that dies mid-run, the syntax."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from graphs import Context, graph
from pipeline.errors import InputError
from pipeline.llm.pool import EndpointSpec, parse_endpoint, split_concurrency
from tests.conftest import ThreadedFake
from tests.fake_openai import FakeOpenAI, default_reply


def _texts(n: int) -> list[dict[str, str]]:
    return [{"id": f"doc-{i:03d}", "text": f"Document {i} " + " ".join(f"fact{i}-{j}" for j in range(40))}
            for i in range(n)]


def _write_docs(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"doc{i:03d}.txt").write_text(f"Report {i}: " + " ".join(f"w{i}x{j}" for j in range(30)),
                                                encoding="utf-8")


async def test_calls_split_by_capacity_and_no_server_passes_its_concurrency() -> None:
    # Capacity = concurrency / latency: 4/0.02 = 200, 3/0.06 = 50, 10/0.1 = 100 calls per second.
    shape = [(0.02, 4), (0.06, 3), (0.1, 10)]
    servers = [FakeOpenAI(latency=latency) for latency, _ in shape]
    for s in servers:
        await s.start()
    try:
        urls = [f"{s.base_url}=concurrency:{c}" for s, (_, c) in zip(servers, shape)]
        out = await graph.ainvoke({"texts": _texts(350)}, context=Context(base_urls=urls, concurrency=17))
    finally:
        for s in servers:
            await s.stop()

    assert [r["status"] for r in out["results"]] == ["ok"] * 350
    for s, (_, concurrency) in zip(servers, shape):
        assert s.peak_in_flight <= concurrency
    counts = [s.chat_calls for s in servers]
    capacity = [c / latency for latency, c in shape]
    shares = [n / sum(counts) for n in counts]
    expected = [c / sum(capacity) for c in capacity]
    assert all(abs(got - want) < 0.1 for got, want in zip(shares, expected)), (counts, expected)
    endpoints = out["stats"]["endpoints"]
    assert [e["calls"] for e in endpoints] == counts
    assert [e["concurrency"] for e in endpoints] == [4, 3, 10]
    assert all(e["errors"] == 0 and e["taken_out"] == 0 and e["latency_ms"]["p95"] >= e["latency_ms"]["p50"] > 0
               for e in endpoints)
    assert sum(e["prompt_tokens"] for e in endpoints) == out["stats"]["prompt_tokens"]
    assert out["stats"]["concurrency"] == 17


async def test_weights_split_the_run_concurrency_and_the_lightest_load_gets_the_call() -> None:
    async with FakeOpenAI(latency=0.05) as a, FakeOpenAI(latency=0.05) as b:
        urls = [a.base_url, f"{b.base_url}=weight:3"]
        out = await graph.ainvoke({"texts": _texts(80)}, context=Context(base_urls=urls, concurrency=8))

    assert [e["concurrency"] for e in out["stats"]["endpoints"]] == [2, 6]
    assert a.peak_in_flight <= 2 and b.peak_in_flight <= 6
    assert b.chat_calls > 2 * a.chat_calls


def _dies_after(calls: int) -> Any:
    """A reply function that stops its own server once it has answered `calls` requests."""
    seen = {"n": 0}
    holder: dict[str, FakeOpenAI] = {}

    def reply(messages: list[dict[str, Any]]) -> str:
        seen["n"] += 1
        if seen["n"] == calls:
            asyncio.get_running_loop().create_task(holder["server"].stop())
        return default_reply(messages)

    return reply, holder


def test_a_server_killed_mid_run_is_taken_out_and_every_document_is_summarized(cli, tmp_path: Path) -> None:
    _write_docs(tmp_path / "in", 60)
    reply, holder = _dies_after(10)
    fakes = [ThreadedFake(latency=0.02), ThreadedFake(latency=0.02, reply=reply), ThreadedFake(latency=0.02)]
    holder["server"] = fakes[1].server
    try:
        urls = [f.server.base_url for f in fakes]
        result = cli(str(tmp_path / "in"), "--concurrency", "6", *[a for u in urls for a in ("--base-url", u)])
    finally:
        for f in fakes:
            f.close()

    assert result.code == 0, result.err
    assert [r["status"] for r in result.lines()] == ["ok"] * 60
    report = result.report()
    dead = report["endpoints"][1]
    assert dead["taken_out"] >= 1 and dead["errors"] >= 3 and dead["up"] is False
    assert report["endpoints"][0]["taken_out"] == report["endpoints"][2]["taken_out"] == 0
    assert sum(e["calls"] - e["errors"] for e in report["endpoints"]) == 61  # 60 maps and the final
    assert report["retries"] == 0  # each failed call went at once to a live server


def test_command_line_takes_several_base_urls_with_weights(cli, docs: Path) -> None:
    a, b = ThreadedFake(), ThreadedFake()
    try:
        result = cli(str(docs), "--base-url", a.server.base_url, "--base-url",
                     f"{b.server.base_url}=weight:2,concurrency:3")
    finally:
        a.close()
        b.close()

    assert result.code == 0, result.err
    endpoints = result.report()["endpoints"]
    assert [(e["url"], e["weight"]) for e in endpoints] == [(a.server.base_url, 1.0), (b.server.base_url, 2.0)]
    assert endpoints[1]["concurrency"] == 3
    assert a.server.chat_calls + b.server.chat_calls == 3


@pytest.mark.parametrize("spec, message", [
    ("http://127.0.0.1:9/v1=weight:0", "weight must be more than 0"),
    ("http://127.0.0.1:9/v1=concurrency:0", "concurrency must be at least 1"),
    ("http://127.0.0.1:9/v1=speed:2", "unknown or repeated option 'speed'"),
    ("127.0.0.1:9/v1=weight:2", "must start with http://"),
])
def test_a_bad_endpoint_spec_is_one_line_and_exit_1(cli, docs: Path, spec: str, message: str) -> None:
    result = cli(str(docs), "--base-url", "http://127.0.0.1:9/v1", "--base-url", spec)

    assert result.code == 1
    assert result.err.count("\n") == 1 and message in result.err


def test_the_config_file_takes_a_list_and_the_command_line_replaces_it(cli, tmp_path: Path) -> None:
    _write_docs(tmp_path / "in", 2)
    a, b = ThreadedFake(), ThreadedFake()
    try:
        config = tmp_path / "nightly.toml"
        config.write_text(f'inputs = ["in"]\nbase-url = ["{a.server.base_url}", "{a.server.base_url}=weight:2"]\n',
                          encoding="utf-8")
        from_file = cli("--config", str(config))
        first = from_file.report()  # the next run writes to the same folder
        replaced = cli("--config", str(config), "--base-url", b.server.base_url)
    finally:
        a.close()
        b.close()

    assert from_file.code == 0 and [e["weight"] for e in first["endpoints"]] == [1.0, 2.0]
    assert replaced.code == 0 and "endpoints" not in replaced.report()
    assert replaced.report()["base_url"] == b.server.base_url


def test_endpoint_specs_parse_and_split_the_concurrency() -> None:
    assert parse_endpoint("http://a:8000/v1") == EndpointSpec("http://a:8000/v1")
    assert parse_endpoint("http://a:8000/v1=weight:3,concurrency:64") == EndpointSpec("http://a:8000/v1", 3.0, 64)
    assert parse_endpoint("http://a/v1?x=1") == EndpointSpec("http://a/v1?x=1")  # a query is not options
    specs = [EndpointSpec("http://a/v1"), EndpointSpec("http://b/v1", 3.0), EndpointSpec("http://c/v1", 1.0, 50)]
    assert split_concurrency(specs, 20) == [4, 12, 50]
    with pytest.raises(InputError, match="not both"):
        Context(base_url="http://a/v1", base_urls=["http://b/v1"]).validate()
    with pytest.raises(InputError, match="weight"):
        Context(base_urls=["http://a/v1", "http://b/v1=weight:-1"]).validate()
    assert "user:pw" not in repr(parse_endpoint("http://user:pw@a/v1=weight:2"))


async def test_an_endpoint_that_fails_is_put_back_once_it_answers_again() -> None:
    async with FakeOpenAI(latency=0.02, script=["500"] * 3) as a, FakeOpenAI(latency=0.02) as b:
        out = await graph.ainvoke({"texts": _texts(120)},
                                  context=Context(base_urls=[a.base_url, b.base_url], concurrency=4))

    assert [r["status"] for r in out["results"]] == ["ok"] * 120
    first = out["stats"]["endpoints"][0]
    assert first["taken_out"] == 1 and first["errors"] == 3 and first["up"] is True
    assert a.chat_calls > 3 + 10  # it took calls again after its probe answered
    assert out["stats"]["retries"] == 0


def test_no_endpoint_answering_is_one_line_and_exit_1(cli, docs: Path) -> None:
    result = cli(str(docs), "--base-url", "http://127.0.0.1:9/v1", "--base-url", "http://127.0.0.1:9/v2")

    assert result.code == 1
    assert result.err.count("\n") == 1 and "cannot reach the LLM endpoint" in result.err


def test_latency_percentiles_come_from_a_bounded_sample() -> None:
    from pipeline.llm.pool import LATENCY_SAMPLE, Endpoint

    ep = Endpoint(EndpointSpec("http://a/v1"), chat=None, session=None,  # type: ignore[arg-type]
                  concurrency=1, order=0)
    for i in range(3 * LATENCY_SAMPLE):
        ep.record(float(i % 100))

    assert len(ep.latencies_ms) == LATENCY_SAMPLE
    assert 40 <= ep.report()["latency_ms"]["p50"] <= 60 and ep.report()["latency_ms"]["p95"] >= 90


async def test_an_answer_that_is_no_chat_completion_is_the_runners_retry_not_a_free_resend() -> None:
    servers = [FakeOpenAI(script=["ok", "ok", "no_choices", "no_choices"]), FakeOpenAI()]
    for s in servers:
        await s.start()
    try:
        urls = [f"{s.base_url}=concurrency:1" for s in servers]
        out = await graph.ainvoke({"texts": _texts(6)}, context=Context(base_urls=urls, concurrency=2,
                                                                          max_retries=2))
    finally:
        for s in servers:
            await s.stop()

    stats = out["stats"]
    assert [r["status"] for r in out["results"]] == ["ok"] * 6
    assert sum(s.chat_calls for s in servers) == sum(stats["llm_calls"].values())  # every request counted
    assert stats["retries"] == 2  # each bad answer cost one retry of the runner's, with its backoff

