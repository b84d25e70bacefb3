"""One behaviour from every entry point: the CLI, a notebook (graph or run_with_progress) and the server graph."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from graphs import Context, graph, make_builder, run_with_progress
from graphs.graph import NAME
from pipeline.llm.embedded import MODEL_NAME
from pipeline.progress import NoView
from tests.conftest import ENGLISH, KOREAN, EmbeddedStandIn, ThreadedFake
from tests.fake_openai import FakeOpenAI

TEXTS = [{"id": "ferry", "text": ENGLISH}, {"id": "citrus", "text": KOREAN},
         {"id": "tide", "text": "The tide table for the north pier changes on Monday."}]
SERVER_GRAPH = make_builder(environ={}).compile(name=NAME)  # the server's graph, with no OPENAI_* set


@pytest.mark.parametrize("summarizer", [graph, SERVER_GRAPH], ids=["notebook", "server"])
async def test_a_context_with_no_endpoint_runs_the_embedded_model_with_its_tuning_and_stops_it(
        summarizer: Any, embedded_stand_in: EmbeddedStandIn) -> None:
    out = await summarizer.ainvoke({"texts": TEXTS}, context=Context(local_threads=1))

    # The stand-in answers "FAKE SUMMARY", which no document says: their own sentences stand in for it.
    assert out["summary"].startswith("- ") and "FAKE" not in out["summary"]
    assert [r["status"] for r in out["results"]] == ["ok"] * 3
    assert len(embedded_stand_in.pids) == 1  # started once; the fixture checks it was stopped
    started = embedded_stand_in.settings[0]
    assert (started.threads, started.n_parallel) == (1, 1)  # --local-threads, and one call at a time
    bodies = embedded_stand_in.bodies()
    assert {(b["temperature"], b["repeat_penalty"]) for b in bodies} == {(0.0, 1.1)}
    assert sorted({b["max_tokens"] for b in bodies}) == [150, 500]  # the maps, the final
    assert out["stats"]["model"] == MODEL_NAME and out["stats"]["concurrency"] == 1
    assert out["stats"]["base_url"].startswith("http://127.0.0.1:")
    assert out["stats"]["embedded_server_peak_rss_mb"] > 1


async def test_the_embedded_model_starts_under_the_dev_servers_blocking_call_checks(
        embedded_stand_in: EmbeddedStandIn) -> None:
    # `langgraph dev` fails a run that blocks its event loop (listing /sys to count cores did).
    queue = pytest.importorskip("langgraph_runtime_inmem.queue", reason="the dev server comes with the test extra")
    checks = queue._enable_blockbuster()  # the checks exactly as the dev server turns them on
    try:
        out = await SERVER_GRAPH.ainvoke({"texts": TEXTS}, context=Context())
    finally:
        checks.deactivate()

    assert embedded_stand_in.bodies() and "FAKE" not in out["summary"] and len(embedded_stand_in.pids) == 1


async def test_settings_given_win_over_the_embedded_models_tuning(embedded_stand_in: EmbeddedStandIn) -> None:
    context = Context(concurrency=2, map_max_tokens=120, extra_body={}, temperature=0.5)

    out = await graph.ainvoke({"texts": TEXTS}, context=context)

    assert out["stats"]["concurrency"] == 2 and embedded_stand_in.settings[0].n_parallel == 2
    bodies = embedded_stand_in.bodies()
    assert all("repeat_penalty" not in b and b["temperature"] == 0.5 for b in bodies)
    assert sorted({b["max_tokens"] for b in bodies}) == [120, 500]


async def test_local_threads_with_an_endpoint_says_it_is_ignored(fake_in_loop: FakeOpenAI,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    out = await graph.ainvoke({"texts": TEXTS}, context=Context(base_url=fake_in_loop.base_url, local_threads=5))

    assert out["summary"] and fake_in_loop.chat_calls > 0
    assert "local_threads is the embedded model's setting: this run calls an endpoint, so it is ignored" \
        in caplog.text


async def test_model_local_runs_the_embedded_model_even_where_an_endpoint_is_set(
        fake_in_loop: FakeOpenAI, embedded_stand_in: EmbeddedStandIn) -> None:
    context = Context.from_env({"OPENAI_BASE_URL": fake_in_loop.base_url}, model="local")

    out = await graph.ainvoke({"texts": TEXTS}, context=context)

    assert embedded_stand_in.bodies() and "FAKE" not in out["summary"] and len(embedded_stand_in.pids) == 1
    assert fake_in_loop.total_requests == 0


async def test_a_dry_run_with_no_endpoint_starts_nothing_and_estimates_for_the_embedded_model(
        embedded_stand_in: EmbeddedStandIn) -> None:
    out = await graph.ainvoke({"texts": TEXTS}, context=Context(dry_run=True))

    assert out["preview"]["model"] == MODEL_NAME and out["preview"]["llm_calls"]["map"] == 3
    assert embedded_stand_in.pids == []


def test_from_env_reads_the_openai_variables_and_what_is_given_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"OPENAI_BASE_URL": "http://env:8000/v1", "OPENAI_API_KEY": "sk-env", "OPENAI_MODEL": "env-model"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    from_os = Context.from_env()
    assert (from_os.base_url, from_os.api_key, from_os.model) == ("http://env:8000/v1", "sk-env", "env-model")
    mine = Context.from_env(env, base_url="http://mine:8000/v1", model=None, concurrency=3)
    assert (mine.base_url, mine.api_key, mine.model, mine.concurrency) == (
        "http://mine:8000/v1", "sk-env", "env-model", 3)  # as the OpenAI client: the key still applies
    pool = Context.from_env(env, base_urls=["http://a:8000/v1", "http://b:8000/v1"])
    assert pool.base_url is None and pool.base_urls == ["http://a:8000/v1", "http://b:8000/v1"]
    assert not Context.from_env({}).names_endpoint and Context.from_env({}).local
    plain = Context()  # reads nothing behind the caller's back
    assert (plain.base_url, plain.api_key, plain.model) == (None, None, None) and plain.local


def test_a_pool_runs_as_many_calls_at_once_from_every_entry_point(
        cli: Any, tmp_path: Path) -> None:
    # Two endpoints that give their own concurrency, and no --concurrency: their sum, from
    # wherever the run starts (the CLI summed them, a notebook took at most 16 of them).
    servers = [ThreadedFake(latency=0.2), ThreadedFake(latency=0.2)]
    try:
        urls = [f"{s.server.base_url}=concurrency:12" for s in servers]
        folder = tmp_path / "docs"
        folder.mkdir()
        for i in range(60):
            (folder / f"r{i:02d}.txt").write_text(f"Report {i}: {i} crates moved at the north pier.", encoding="utf-8")
        paths = [str(p) for p in sorted(folder.iterdir())]
        context = Context.from_env({}, base_urls=urls)
        peaks: dict[str, list[int]] = {}

        def peak_of(name: str, run: Any) -> None:
            for s in servers:
                s.server.reset_stats()
            run()
            assert sum(s.server.chat_calls for s in servers) >= 60
            peaks[name] = [s.server.peak_in_flight for s in servers]

        peak_of("cli", lambda: cli(*paths, *(a for url in urls for a in ("--base-url", url))))
        peak_of("notebook", lambda: asyncio.run(graph.ainvoke({"paths": paths}, context=context)))
        peak_of("run_with_progress", lambda: asyncio.run(run_with_progress({"paths": paths}, context=context,
                                                                           view=NoView())))
    finally:
        for s in servers:
            s.close()

    assert peaks == {name: [12, 12] for name in ("cli", "notebook", "run_with_progress")}


def test_chunk_tokens_has_one_lower_bound_from_every_entry_point(capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path) -> None:
    import run
    from pipeline.errors import InputError

    config = tmp_path / "job.toml"
    config.write_text("chunk-tokens = 63\n", encoding="utf-8")
    notes = tmp_path / "notes.txt"
    notes.write_text(ENGLISH, encoding="utf-8")
    with pytest.raises(SystemExit):
        run.main([str(notes), "--chunk-tokens", "63"])
    from_option = capsys.readouterr().err
    assert run.main([str(notes), "--config", str(config), "--dry-run"]) == 1
    from_config = capsys.readouterr().err
    with pytest.raises(InputError) as from_notebook:
        asyncio.run(graph.ainvoke({"texts": TEXTS}, context=Context(chunk_tokens=63, dry_run=True)))

    for said in (from_option, from_config, str(from_notebook.value)):
        assert "chunk-tokens" in said and "must be at least 64, got 63" in said, said
    assert Context(chunk_tokens=64, dry_run=True).validate() is None
