"""The graph on the real LangGraph dev server, driven through langgraph_sdk as Studio drives it.

One `langgraph dev` per module, in a temporary working directory, pointed at a fake
OpenAI-compatible endpoint in its own process; both listen on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph_api", reason="the dev server comes with the test extra: pip install -e '.[test]'")

from langgraph_sdk.client import LangGraphClient  # noqa: E402

from tests.conftest import ENGLISH, KOREAN  # noqa: E402
from tests.fake_openai import FakeOpenAIProcess  # noqa: E402
from tests.langgraph_server import LangGraphDevServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GRAPH = "summarizer"
API_KEY = "sk-test"
RUN_SECONDS = 60  # bound on any one run; a run against the fake takes well under a second
SETTINGS = ("concurrency", "chunk_tokens", "token_max", "language", "model", "base_url")
TIDE = "The tide table for the north pier changes on Monday. Low water moves two hours later."


@pytest.fixture(scope="module")
def endpoint() -> Iterator[FakeOpenAIProcess]:
    """A fake endpoint that refuses any key but the one the server is given."""
    with FakeOpenAIProcess(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(endpoint: FakeOpenAIProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LangGraphDevServer]:
    """`langgraph dev` on the project's langgraph.json, with the endpoint in its environment, reading files in data/."""
    env = {"OPENAI_BASE_URL": endpoint.base_url, "OPENAI_API_KEY": API_KEY, "SUMMARIZER_ROOT": str(ROOT / "data")}
    with LangGraphDevServer(ROOT / "langgraph.json", tmp_path_factory.mktemp("langgraph-dev"), env=env) as srv:
        yield srv


@pytest.fixture
async def client(server: LangGraphDevServer, endpoint: FakeOpenAIProcess) -> AsyncIterator[LangGraphClient]:
    """An SDK client; the endpoint's counters start from zero."""
    await endpoint.areset_stats()
    sdk = server.client()
    try:
        yield sdk
    finally:
        await sdk.aclose()


def _texts(**texts: str) -> list[dict[str, str]]:
    return [{"id": name.replace("_", "-"), "text": text} for name, text in texts.items()]


async def _wait(client: LangGraphClient, thread_id: str, **kwargs: Any) -> dict[str, Any]:
    """Run the summarizer on a thread and return its final state (or its `__error__`)."""
    async with asyncio.timeout(RUN_SECONDS):
        out = await client.runs.wait(thread_id, GRAPH, raise_error=False, **kwargs)
    assert isinstance(out, dict), out
    return out


def _ok(out: dict[str, Any]) -> dict[str, Any]:
    assert "__error__" not in out, f"the run failed: {out['__error__']}"
    return out


async def _thread(client: LangGraphClient) -> str:
    return (await client.threads.create())["thread_id"]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow `$ref`s and unwrap `X | None`, as a form renderer does."""
    defs = schema.get("$defs") or schema.get("definitions") or {}
    for _ in range(10):
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        elif "anyOf" in node and len(options := [o for o in node["anyOf"] if o.get("type") != "null"]) == 1:
            node = options[0]
        else:
            break
    return node


def _sources(summary: str) -> str:
    """The summary's Sources list: everything after its heading."""
    assert "Sources" in summary, summary
    return summary.rsplit("Sources", 1)[1]


async def test_studio_shows_input_settings_and_output_forms(client: LangGraphClient) -> None:
    assistants = await client.assistants.search(graph_id=GRAPH)
    assert len(assistants) == 1

    schemas = await client.assistants.get_schemas(assistants[0]["assistant_id"])

    inputs = schemas["input_schema"]
    assert inputs is not None, "no input schema: Studio cannot show an input form"
    paths = _resolve(inputs, inputs["properties"]["paths"])
    assert paths["type"] == "array" and _resolve(inputs, paths["items"])["type"] == "string"
    texts = _resolve(inputs, inputs["properties"]["texts"])
    assert texts["type"] == "array"
    text = _resolve(inputs, texts["items"])
    assert {k: _resolve(inputs, v).get("type") for k, v in text["properties"].items()} == {
        "id": "string", "text": "string", "location": "string"}
    document = _resolve(inputs, _resolve(inputs, inputs["properties"]["documents"])["items"])
    assert _resolve(inputs, document["properties"]["page_content"])["type"] == "string"
    assert _resolve(inputs, document["properties"]["metadata"])["type"] == "object"
    settings = schemas["context_schema"]
    assert settings is not None, "no context schema: Studio cannot show a settings form"
    assert set(SETTINGS) <= set(settings["properties"])
    outputs = schemas["output_schema"]
    assert outputs is not None, "no output schema"
    assert {"summary", "results", "stats"} <= set(outputs["properties"])


async def test_a_run_with_settings_from_json_summarizes_every_text(
        client: LangGraphClient, endpoint: FakeOpenAIProcess) -> None:
    texts = _texts(ferry_report=ENGLISH, citrus_harvest=KOREAN)

    out = _ok(await _wait(client, await _thread(client), input={"texts": texts},
                          context={"concurrency": "2", "language": "en"}))

    assert out["summary"].startswith("- ")
    assert sorted(r["source"] for r in out["results"]) == ["citrus-harvest", "ferry-report"]
    assert [r["status"] for r in out["results"]] == ["ok", "ok"]
    # two maps and one final, each answer in Korean asked for again in English (the fake answers in the
    # documents' words: the Korean map, and the final, which echoes mostly Korean points)
    assert (await endpoint.astats())["chat_calls"] == 3 + out["stats"]["answers"]["language_retried"]


async def test_documents_and_instructions_given_as_json_are_taken_as_a_notebook_gives_them(
        client: LangGraphClient, endpoint: FakeOpenAIProcess) -> None:
    pages = [{"page_content": f"Page {i + 1}: the ferry carried {100 + i} riders a day.",
              "metadata": {"source": "review.pdf", "page": i}, "type": "Document"} for i in range(2)]

    out = _ok(await _wait(client, await _thread(client), input={"documents": pages},
                          context={"focus": "How many riders?", "language": "en"}))

    assert [(r["source"], r["location"], r["status"]) for r in out["results"]] == [
        ("review.pdf", "page 1", "ok"), ("review.pdf", "page 2", "ok")]
    assert "[D2] review.pdf (page 2)" in out["summary"]


async def test_a_run_without_context_uses_the_servers_endpoint(
        client: LangGraphClient, endpoint: FakeOpenAIProcess) -> None:
    out = _ok(await _wait(client, await _thread(client), input={"texts": _texts(ferry_report=ENGLISH)}))

    assert out["summary"].startswith("- ")
    assert [(r["source"], r["status"]) for r in out["results"]] == [("ferry-report", "ok")]
    assert (await endpoint.astats())["chat_calls"] == 1  # one short document: its summary is the answer


async def test_a_run_on_paths_reads_the_files_on_the_server(
        client: LangGraphClient, endpoint: FakeOpenAIProcess) -> None:
    paths = [str(ROOT / "data" / "harbor-ferry-pilot.txt"), str(ROOT / "data" / "jeju-citrus-ko.txt")]

    out = _ok(await _wait(client, await _thread(client), input={"paths": paths}))

    assert sorted((Path(r["source"]).name, r["status"]) for r in out["results"]) == [
        ("harbor-ferry-pilot.txt", "ok"), ("jeju-citrus-ko.txt", "ok")]
    assert (await endpoint.astats())["chat_calls"] == 3


async def test_a_run_on_a_folder_with_long_documents_passes_the_servers_blocking_checks(
        client: LangGraphClient, endpoint: FakeOpenAIProcess) -> None:
    # A folder is expanded, and documents longer than a chunk are split (token byte lengths
    # read from the tokenizer's rank file), under the dev server's detection of blocking calls.
    out = _ok(await _wait(client, await _thread(client), input={"paths": [str(ROOT / "data")]},
                          context={"chunk_tokens": "200"}))

    assert sorted(Path(r["source"]).name for r in out["results"]) == sorted(p.name for p in (ROOT / "data").glob("*.txt"))
    assert all(r["status"] == "ok" for r in out["results"]) and max(r["chunks"] for r in out["results"]) > 1


@pytest.mark.parametrize("concurrency", ["many", 0])
async def test_a_bad_setting_fails_the_run_with_one_line_naming_it(
        client: LangGraphClient, endpoint: FakeOpenAIProcess, concurrency: object) -> None:
    thread_id = await _thread(client)

    out = await _wait(client, thread_id, input={"texts": _texts(ferry_report=ENGLISH)},
                      context={"concurrency": concurrency})

    assert "__error__" in out, f"the run succeeded: {out}"
    message = out["__error__"]["message"]
    assert "concurrency" in message and "\n" not in message.strip(), message
    assert [r["status"] for r in await client.runs.list(thread_id)] == ["error"]
    assert (await endpoint.astats())["chat_calls"] == 0


async def test_a_second_run_on_a_thread_reports_only_its_own_documents(
        client: LangGraphClient, endpoint: FakeOpenAIProcess) -> None:
    thread_id = await _thread(client)
    _ok(await _wait(client, thread_id, input={"texts": _texts(ferry_report=ENGLISH, citrus_harvest=KOREAN)}))
    await endpoint.areset_stats()

    out = _ok(await _wait(client, thread_id, input={"texts": _texts(tide_table=TIDE)}))

    assert [r["source"] for r in out["results"]] == ["tide-table"]
    sources = _sources(out["summary"])
    assert "tide-table" in sources
    assert "ferry-report" not in sources and "citrus-harvest" not in sources
    assert (await endpoint.astats())["chat_calls"] == 1  # its own one call, nothing of the first run


async def test_streaming_reports_each_document_then_the_summary(client: LangGraphClient) -> None:
    texts = _texts(ferry_report=ENGLISH, citrus_harvest=KOREAN, tide_table=TIDE)
    parts = []

    async with asyncio.timeout(RUN_SECONDS):
        async for part in client.runs.stream(await _thread(client), GRAPH, input={"texts": texts},
                                             stream_mode=["custom", "values"]):
            parts.append(part)

    assert not [p.data for p in parts if p.event == "error"]
    custom = [p.data for p in parts if p.event == "custom"]
    results = [c["result"] for c in custom if isinstance(c, dict) and c.get("event") == "result"]
    assert sorted(r["source"] for r in results) == ["citrus-harvest", "ferry-report", "tide-table"]
    assert {r["status"] for r in results} == {"ok"}
    assert any(isinstance(c, dict) and c.get("event") == "progress" for c in custom), custom
    events = [p.event for p in parts]
    last_values = len(events) - 1 - events[::-1].index("values")
    assert parts[last_values].data["summary"].startswith("- ")
    last_result = max(i for i, p in enumerate(parts) if p.event == "custom" and p.data.get("event") == "result")
    assert last_result < last_values


async def test_a_result_store_works_under_the_servers_blocking_checks(
        client: LangGraphClient, endpoint: FakeOpenAIProcess, tmp_path: Path) -> None:
    store = tmp_path / "runs" / "store.sqlite"  # its folder is made by the run
    texts = _texts(ferry_report=ENGLISH, tide_table=TIDE)
    first = _ok(await _wait(client, await _thread(client), input={"texts": texts},
                            context={"store_path": str(store)}))
    calls = (await endpoint.astats())["chat_calls"]

    again = _ok(await _wait(client, await _thread(client), input={"texts": texts},
                            context={"store_path": str(store)}))

    assert store.exists() and calls == 3
    assert again["summary"] == first["summary"]
    assert (await endpoint.astats())["chat_calls"] == calls  # every answer came from the store


@pytest.mark.parametrize("name", ["/etc/os-release", str(ROOT / "README.md"), "../run.py"])
async def test_a_path_outside_the_servers_root_is_refused_in_one_line(
        client: LangGraphClient, endpoint: FakeOpenAIProcess, name: str) -> None:
    out = await _wait(client, await _thread(client), input={"paths": [name]})

    assert "__error__" in out, f"the run succeeded: {out}"
    message = out["__error__"]["message"]
    assert message.startswith(f"refused: {name!r} is outside") and "\n" not in message.strip(), message
    assert (await endpoint.astats())["chat_calls"] == 0


async def test_a_run_in_which_nothing_could_be_summarized_fails_with_the_reasons(
        client: LangGraphClient, endpoint: FakeOpenAIProcess) -> None:
    out = await _wait(client, await _thread(client),
                      input={"paths": ["no-such-report.txt"], "texts": _texts(blank="   ")})

    assert "__error__" in out, f"the run succeeded: {out}"
    message = out["__error__"]["message"]
    assert message.startswith("nothing could be summarized"), message
    assert "no-such-report.txt: skipped" in message and "blank: skipped" in message


async def test_studio_draws_the_steps_inside_the_run(client: LangGraphClient) -> None:
    assistant = (await client.assistants.search(graph_id=GRAPH))[0]

    drawn = await client.assistants.get_graph(assistant["assistant_id"], xray=True)

    ids = {node["id"] for node in drawn["nodes"]}
    assert {f"summarize:{step}" for step in ("plan", "map_shard", "collect", "collapse", "final")} <= ids, ids
