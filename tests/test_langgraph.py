"""The graph with LangGraph's own tooling: schemas, checkpointer threads, resuming, streaming, invoke."""

from __future__ import annotations

import importlib
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graphs import Context, builder, graph, make_builder, run_with_progress
from graphs.graph import NAME
from pipeline.errors import InputError, NothingSummarizedError
from pipeline.progress import NoView
from tests.fake_openai import FakeOpenAI

_LEGEND = re.compile(r"^- \[D(\d+)\] (.+)$", re.MULTILINE)


def _texts(prefix: str, n: int) -> list[dict[str, str]]:
    return [{"id": f"{prefix}-{i}", "text": f"Memo {prefix} {i}: the depot moved {i} crates on day {i}."}
            for i in range(n)]


def test_input_output_and_context_schemas_build() -> None:
    inputs = graph.get_input_jsonschema()
    assert set(inputs["properties"]) == {"paths", "texts", "documents"}
    assert inputs["properties"]["paths"]["items"] == {"type": "string"}
    assert set(graph.get_output_jsonschema()["properties"]) == {"summary", "results", "stats", "preview",
                                                                 "evidence"}
    settings = graph.get_context_jsonschema()["properties"]
    assert {"model", "base_url", "concurrency", "chunk_tokens", "token_max", "language"} <= set(settings)
    assert "api_key" not in settings and "chat_model" not in settings  # no secret or object in a form
    assert settings["concurrency"]["type"] == "integer" and settings["concurrency"]["description"]


def test_context_given_as_json_is_coerced_or_refused_in_one_line() -> None:
    assert Context(concurrency="8", retry_failed="true", rpm="120").concurrency == 8
    with pytest.raises(InputError, match=r"^concurrency: .*got 'many'$"):
        Context(concurrency="many")
    with pytest.raises(InputError, match=r"^concurrency must be at least 1, got 0$"):
        Context(concurrency=0, base_url="http://127.0.0.1:9/v1").validate()


async def test_a_reused_thread_holds_only_the_new_runs_documents(fake_in_loop: FakeOpenAI,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    threaded = builder.compile(checkpointer=InMemorySaver(), name=NAME)
    config: Any = {"configurable": {"thread_id": "nightly"}}
    context = Context(base_url=fake_in_loop.base_url)
    caplog.set_level(logging.WARNING)

    first = await threaded.ainvoke({"texts": _texts("north", 3)}, config, context=context)
    second = await threaded.ainvoke({"texts": _texts("south", 2)}, config, context=context)

    assert [r["source"] for r in first["results"]] == ["north-0", "north-1", "north-2"]
    assert [r["source"] for r in second["results"]] == ["south-0", "south-1"]
    assert {source for _, source in _LEGEND.findall(second["summary"])} <= {"south-0", "south-1"}
    state = await threaded.aget_state(config)
    assert "texts" not in state.values and state.values["results"] == second["results"]
    assert not [r for r in caplog.records if "Deserializ" in r.getMessage()]


async def test_a_failed_run_resumes_from_its_last_checkpoint(fake_in_loop: FakeOpenAI) -> None:
    saver = InMemorySaver()
    config: Any = {"configurable": {"thread_id": "t"}}
    context = Context(base_url=fake_in_loop.base_url, max_retries=0)
    fake_in_loop.fail_marker = "You write the final summary"  # the final call fails: the run stops there
    with pytest.raises(Exception, match="HTTP 500"):
        await builder.compile(checkpointer=saver, name=NAME).ainvoke({"texts": _texts("r", 12)}, config,
                                                                     context=context)
    assert fake_in_loop.chat_calls == 13
    fake_in_loop.fail_marker = None

    # A graph built afresh over the same checkpoints, as another process would have it.
    resumed = await make_builder().compile(checkpointer=saver, name=NAME).ainvoke(None, config, context=context)

    assert [r["status"] for r in resumed["results"]] == ["ok"] * 12
    assert fake_in_loop.chat_calls == 14  # only the final call again: planning and the map are not redone


async def test_results_and_progress_stream_as_they_happen(fake_in_loop: FakeOpenAI) -> None:
    events = [chunk async for chunk in graph.astream({"texts": _texts("s", 5)}, stream_mode="custom",
                                                     context=Context(base_url=fake_in_loop.base_url))]

    results = [e["result"] for e in events if e["event"] == "result"]
    assert sorted(r["source"] for r in results) == [f"s-{i}" for i in range(5)]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1] == {"event": "progress", "phase": "reduce", "done": 1, "total": 1}
    assert {"event": "progress", "phase": "map", "done": 5, "total": 5} in progress


async def test_run_with_progress_hands_over_each_result(fake_in_loop: FakeOpenAI) -> None:
    seen: list[str] = []

    out = await run_with_progress({"texts": _texts("n", 4)}, context=Context(base_url=fake_in_loop.base_url),
                                  view=NoView(), on_result=lambda r: seen.append(r["source"]))

    assert sorted(seen) == ["n-0", "n-1", "n-2", "n-3"] and out["summary"].startswith("- ")


def test_invoke_works_without_an_event_loop(fake: FakeOpenAI) -> None:
    out = graph.invoke({"texts": _texts("sync", 2)}, context=Context(base_url=fake.base_url))

    assert [r["status"] for r in out["results"]] == ["ok", "ok"]


async def test_a_dry_run_plans_and_calls_nothing(fake_in_loop: FakeOpenAI) -> None:
    out = await graph.ainvoke({"texts": _texts("d", 3)}, context=Context(dry_run=True))

    assert out["preview"]["llm_calls"] == {"map": 3, "collapse": 0, "final": 1}
    assert fake_in_loop.total_requests == 0 and not out["results"]


async def test_reordered_inputs_in_two_languages_make_no_calls(fake_in_loop: FakeOpenAI, tmp_path: Any) -> None:
    from tests.conftest import ENGLISH, KOREAN

    texts = [{"id": "ferry", "text": ENGLISH}, {"id": "citrus", "text": KOREAN}]  # one each: a tie
    context = Context(base_url=fake_in_loop.base_url, store_path=str(tmp_path / "store.sqlite"))
    first = await graph.ainvoke({"texts": texts}, context=context)
    calls = fake_in_loop.chat_calls

    again = await graph.ainvoke({"texts": texts[::-1]}, context=context)

    assert fake_in_loop.chat_calls == calls
    assert again["summary"].split("**Sources**")[0].replace("D2", "Dx").replace("D1", "D2").replace("Dx", "D1") \
        == first["summary"].split("**Sources**")[0]


async def test_the_servers_key_goes_only_to_the_servers_endpoint(fake_in_loop: FakeOpenAI) -> None:
    async with FakeOpenAI() as other:
        served = make_builder(environ={"OPENAI_BASE_URL": fake_in_loop.base_url, "OPENAI_API_KEY": "sk-server-only",
                                       "OPENAI_MODEL": "server-model"}).compile(name=NAME)
        await served.ainvoke({"texts": _texts("o", 1)}, context=Context(base_url=other.base_url))

        sent = {body.get("model") for body in other.bodies}
    assert other.chat_calls == 1 and sent == {"fake-model"}  # the run's endpoint, its own model,
    assert other.authorizations == [None]  # and not the server's key
    assert fake_in_loop.chat_calls == 0


async def test_a_reused_thread_does_not_keep_a_dry_runs_preview(fake_in_loop: FakeOpenAI) -> None:
    threaded = builder.compile(checkpointer=InMemorySaver(), name=NAME)
    config: Any = {"configurable": {"thread_id": "t"}}
    await threaded.ainvoke({"texts": _texts("p", 2)}, config, context=Context(dry_run=True))

    real = await threaded.ainvoke({"texts": _texts("p", 2)}, config, context=Context(base_url=fake_in_loop.base_url))

    assert real["preview"] is None and len(real["results"]) == 2


async def test_the_first_calls_leave_before_every_file_is_planned(fake_in_loop: FakeOpenAI, tmp_path: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.text.loading
    from tests.fake_openai import default_reply

    order: list[str] = []
    real = pipeline.text.loading.plan_document

    def plan_document(*args: Any, **kwargs: Any) -> Any:
        order.append("plan")
        return real(*args, **kwargs)

    def reply(messages: Any) -> str:
        order.append("call")
        return default_reply(messages)

    monkeypatch.setattr(pipeline.text.loading, "plan_document", plan_document)
    fake_in_loop.reply = reply
    fake_in_loop.latency = 0.01
    paths = []
    for i in range(300):  # 5 shards of 64 at concurrency 1, 3 of them held at once
        (tmp_path / f"r{i:03d}.txt").write_text(f"Report {i}: {i} crates moved.", encoding="utf-8")
        paths.append(str(tmp_path / f"r{i:03d}.txt"))

    out = await graph.ainvoke({"paths": paths}, context=Context(base_url=fake_in_loop.base_url, concurrency=1))

    assert len(out["results"]) == 300
    assert order.index("call") < len(order) - order[::-1].index("plan") - 1  # a call before the last planning


def test_studio_draws_the_map_reduce_inside_the_run() -> None:
    nodes = set(graph.get_graph(xray=True).nodes)

    assert {f"summarize:{step}" for step in ("plan", "map_shard", "collect", "collapse", "final")} <= nodes


async def test_a_run_in_which_nothing_could_be_summarized_raises_with_the_reasons(
        fake_in_loop: FakeOpenAI, tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    paths = [str(tmp_path / "empty.txt"), str(tmp_path / "missing.txt")]

    with pytest.raises(NothingSummarizedError, match=r"^nothing could be summarized: .*empty\.txt: skipped \(.+\)"
                                                     r".*missing\.txt: skipped \(.+\)") as caught:
        await graph.ainvoke({"paths": paths}, context=Context(base_url=fake_in_loop.base_url))

    assert [(Path(r["source"]).name, r["status"]) for r in caught.value.results] == [
        ("empty.txt", "skipped"), ("missing.txt", "skipped")]
    assert "\n" not in str(caught.value)
    assert fake_in_loop.chat_calls == 0


def test_a_synchronous_run_in_which_nothing_could_be_summarized_raises(fake: FakeOpenAI, tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(NothingSummarizedError, match="empty.txt: skipped"):
        graph.invoke({"paths": [str(tmp_path / "empty.txt")]}, context=Context(base_url=fake.base_url))


def test_a_run_whose_only_input_is_missing_says_so_before_any_call(fake: FakeOpenAI, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory: .*missing.txt"):
        graph.invoke({"paths": [str(tmp_path / "missing.txt")]}, context=Context(base_url=fake.base_url))
    assert fake.chat_calls == 0


async def test_a_dry_run_of_inputs_that_cannot_be_read_still_previews(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    out = await graph.ainvoke({"paths": [str(tmp_path / "empty.txt")]}, context=Context(dry_run=True))

    assert out["preview"] is not None and out["summary"] == ""


@pytest.fixture
def rooted(tmp_path: Path) -> Path:
    """A root folder with a document, a link inside it leading out, and a document outside it."""
    root = tmp_path / "root"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "tide.txt").write_text("The tide table changes on Monday.", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("The vault code is 4711.", encoding="utf-8")
    (root / "notes" / "leak.txt").symlink_to(tmp_path / "secret.txt")
    return root


@pytest.mark.parametrize("name", ["{outside}/secret.txt", "../secret.txt", "notes/leak.txt",
                                  "notes/../../*.txt", "/etc/os-release"])
async def test_paths_outside_the_root_are_refused_in_one_line(fake_in_loop: FakeOpenAI, rooted: Path,
                                                              name: str) -> None:
    confined = make_builder(root=rooted).compile(name=NAME)

    with pytest.raises(InputError, match=r"^refused: '.+' is outside the folder this server reads") as caught:
        await confined.ainvoke({"paths": [name.format(outside=rooted.parent)]},
                               context=Context(base_url=fake_in_loop.base_url))

    assert "\n" not in str(caught.value) and fake_in_loop.chat_calls == 0


@pytest.mark.parametrize("name", ["notes", "notes/*.txt", "**/*.txt"])
async def test_a_link_found_in_a_folder_that_leads_out_of_the_root_is_left_out_and_the_run_goes_on(
        fake_in_loop: FakeOpenAI, rooted: Path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    confined = make_builder(root=rooted).compile(name=NAME)

    out = await confined.ainvoke({"paths": [name]}, context=Context(base_url=fake_in_loop.base_url))

    assert [Path(r["source"]).name for r in out["results"]] == ["tide.txt"] and out["results"][0]["status"] == "ok"
    received = repr(fake_in_loop.bodies)
    assert "tide table" in received and "vault" not in received  # never read
    assert "left out 1 file behind links that lead out of the folder this server reads" in caplog.text


async def test_a_folder_whose_every_file_leads_out_of_the_root_is_refused_in_one_line(
        fake_in_loop: FakeOpenAI, rooted: Path) -> None:
    (rooted / "notes" / "tide.txt").unlink()
    confined = make_builder(root=rooted).compile(name=NAME)

    with pytest.raises(InputError, match=r"^refused: every file found leads out of the folder this server reads"):
        await confined.ainvoke({"paths": ["notes"]}, context=Context(base_url=fake_in_loop.base_url))

    assert fake_in_loop.chat_calls == 0


async def test_paths_inside_the_root_are_read_relative_ones_from_it(fake_in_loop: FakeOpenAI, rooted: Path) -> None:
    (rooted / "notes" / "leak.txt").unlink()
    confined = make_builder(root=rooted).compile(name=NAME)

    out = await confined.ainvoke({"paths": ["notes/tide.txt", str(rooted / "notes")]},
                                 context=Context(base_url=fake_in_loop.base_url))

    assert [r["status"] for r in out["results"]] == ["ok"]
    assert Path(out["results"][0]["source"]).resolve() == (rooted / "notes" / "tide.txt").resolve()


async def test_without_a_root_a_confined_graph_takes_texts_only(fake_in_loop: FakeOpenAI, rooted: Path) -> None:
    texts_only = make_builder(root=False).compile(name=NAME)
    context = Context(base_url=fake_in_loop.base_url)

    with pytest.raises(InputError, match=r"^refused: .*reads no files.*`texts`"):
        await texts_only.ainvoke({"paths": [str(rooted / "notes" / "tide.txt")]}, context=context)
    out = await texts_only.ainvoke({"texts": _texts("t", 1)}, context=context)

    assert [r["status"] for r in out["results"]] == ["ok"]


def test_the_server_reads_its_root_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import graphs.server

    monkeypatch.delenv("SUMMARIZER_ROOT", raising=False)
    assert importlib.reload(graphs.server).ROOT is False
    monkeypatch.setenv("SUMMARIZER_ROOT", str(tmp_path))
    assert importlib.reload(graphs.server).ROOT == str(tmp_path)


async def test_the_result_store_makes_its_folder_off_the_event_loop(fake_in_loop: FakeOpenAI, tmp_path: Path) -> None:
    # `langgraph dev` fails a run that makes a folder on the event loop; so does this.
    from blockbuster import BlockBuster

    checker = BlockBuster(["graphs", "pipeline"])
    mkdir = checker.functions["os.mkdir"]
    store = tmp_path / "runs" / "store.sqlite"
    mkdir.activate()
    try:
        out = await graph.ainvoke({"texts": _texts("s", 2)},
                                  context=Context(base_url=fake_in_loop.base_url, store_path=str(store)))
    finally:
        mkdir.deactivate()

    assert [r["status"] for r in out["results"]] == ["ok", "ok"] and store.exists()
