"""The Ray Data engine for the map phase: same outputs and store as in-process, reruns, resume, errors.

Runs on one local Ray instance of 2 CPUs for the whole module, against the fake server
on 127.0.0.1. Ray is installed in CI (the `ray` extra); elsewhere without it the tests that need it skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphs.context
from graphs import Context, graph, run_with_progress
from pipeline.progress import NoView
from tests.conftest import KOREAN
from tests.fake_openai import FakeOpenAI, default_reply

KEY = "sk-test-ray-0123456789abcdef"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray instance for the module: 2 CPUs, no dashboard, on loopback; CI has Ray, so never skips there."""
    ray = __import__("ray") if os.environ.get("CI") else pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", _node_ip_address="127.0.0.1")
    try:
        yield
    finally:
        ray.shutdown()


def _english_first(messages: list[dict[str, Any]]) -> str:
    """The fake's own answer, but a Korean document's in English until it is asked firmly."""
    system = messages[0]["content"]
    if "in Korean" in system and "entirely in Korean" not in system:
        return "- The citrus harvest began in early November and the fruit was sweeter than last year."
    return default_reply(messages)


def _corpus(folder: Path, n: int) -> list[str]:
    """`n` small reports, a binary file, and a link to nothing; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"report{i:02d}.txt").write_text(
            f"Report {i}. The ferry carried {100 + i} riders a day. " + " ".join(f"note{i}x{j}" for j in range(30))
            + ("\n\nPOISON: this part always fails." if i == 3 else ""), encoding="utf-8")
    (folder / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (folder / "gone.txt").symlink_to(folder / "nowhere.txt")
    return sorted(str(p) for p in folder.iterdir())


def _store(path: Path) -> tuple[list[Any], list[Any]]:
    """The store's results and documents, without their timestamps."""
    db = sqlite3.connect(path)
    try:
        results = sorted(db.execute("SELECT key, step, text, tokens_in, tokens_out FROM results"))
        documents = sorted(db.execute("SELECT source, sha256, status, summary, error, chunks, tokens_in, "
                                      "tokens_out, kind FROM documents"))
    finally:
        db.close()
    return results, documents


def _request_fields(fake: FakeOpenAI) -> set[str]:
    """The fields the calls carried besides their messages and answer size (the seed among them), each set once."""
    return {json.dumps({k: v for k, v in body.items() if k not in ("messages", "max_tokens")}, sort_keys=True)
            for body in fake.bodies}


def _context(fake: FakeOpenAI, store: Path, **options: Any) -> Context:
    return Context(base_url=fake.base_url, model="fake", concurrency=4, chunk_tokens=64, max_retries=1,
                   store_path=str(store), **options)


async def test_ray_gives_the_same_summary_and_store_and_a_rerun_makes_no_calls(
        local_ray: None, fake_in_loop: FakeOpenAI, tmp_path: Path) -> None:
    fake = fake_in_loop
    fake.fail_marker = "POISON"
    fake.reply = _english_first
    paths = _corpus(tmp_path / "in", 6)
    texts = [{"id": "memo", "text": "A note held in memory about the harbor budget."},
             {"id": "citrus", "text": KOREAN}]  # answered in English, then asked again firmly

    local = await graph.ainvoke({"paths": paths, "texts": texts}, context=_context(fake, tmp_path / "local.sqlite"))
    local_calls, local_fields = fake.chat_calls, _request_fields(fake)
    fake.reset_stats()
    on_ray = await graph.ainvoke({"paths": paths, "texts": texts},
                                 context=_context(fake, tmp_path / "ray.sqlite", engine="ray", ray_actors=2))
    ray_calls = fake.chat_calls
    assert _request_fields(fake) == local_fields and all('"seed": 0' in fields for fields in local_fields)

    assert on_ray["summary"] == local["summary"] and "report05.txt" in on_ray["summary"]
    assert on_ray["results"] == local["results"]
    assert _store(tmp_path / "ray.sqlite") == _store(tmp_path / "local.sqlite")
    assert ray_calls == local_calls
    assert on_ray["stats"]["llm_calls"] == local["stats"]["llm_calls"]
    assert on_ray["stats"]["answers"] == local["stats"]["answers"] and local["stats"]["answers"]["language_retried"] == 1
    status = {Path(r["source"]).name: r["status"] for r in on_ray["results"]}
    assert status["report03.txt"] == "failed" and status["image.txt"] == status["gone.txt"] == "skipped"
    assert sum(s == "ok" for s in status.values()) == 7  # five reports and the two texts

    fake.reset_stats()
    again = await graph.ainvoke({"paths": paths, "texts": texts},
                                context=_context(fake, tmp_path / "ray.sqlite", engine="ray", ray_actors=1))
    assert fake.chat_calls == 0, [b["messages"][0]["content"][:80] + " | " + b["messages"][-1]["content"][:200] for b in fake.bodies]
    assert again["summary"] == on_ray["summary"]
    assert again["stats"]["from_store"]["map"] == 1 + sum(r["chunks"] for r in local["results"] if r["status"] == "ok")
    assert again["stats"]["answers"] == local["stats"]["answers"]  # the same choice, made from the store


def test_an_interrupted_ray_run_resumes_without_paying_twice(local_ray: None, cli, fake: FakeOpenAI,
                                                             tmp_path: Path) -> None:
    fake.api_key, fake.latency = KEY, 0.2
    paths = [p for p in _corpus(tmp_path / "in", 12) if "report" in p]
    store = tmp_path / "store.sqlite"

    async def interrupted() -> None:
        seen: list[Any] = []

        def on_result(result: Any) -> None:
            seen.append(result)
            task.cancel()  # as Ctrl-C does, once results have started to land

        context = Context(base_url=fake.base_url, api_key=KEY, model="fake", concurrency=2, store_path=str(store),
                          engine="ray", ray_actors=1)
        task = asyncio.ensure_future(run_with_progress({"paths": paths}, context=context, view=NoView(),
                                                       on_result=on_result))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 120)

    asyncio.run(interrupted())
    committed = sqlite3.connect(store).execute("SELECT COUNT(*) FROM results WHERE step = 'map'").fetchone()[0]
    assert 1 <= committed < len(paths)
    fake.reset_stats()

    resumed = cli(*paths, "--engine", "ray", "--ray-actors", "1", "--concurrency", "2", "--store", str(store),
                  "--api-key", KEY, "--model", "fake", base_url=fake.base_url)

    assert resumed.code == 0
    report = resumed.report()
    assert report["llm_calls"]["map"] == fake.chat_calls - 1 == len(paths) - committed
    assert report["from_store"]["map"] == committed
    assert len(resumed.lines()) == len(paths)
    shown = resumed.out + resumed.err + (resumed.out_dir / "report.json").read_text()
    assert KEY not in shown


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop_tree(process: subprocess.Popen[bytes]) -> None:
    """Kill a `ray start --block` and every process under it (it would drain for 30 s on SIGTERM)."""
    import psutil

    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for child in tree:
        try:
            child.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    process.kill()
    process.wait(timeout=30)
    psutil.wait_procs(tree, timeout=30)


def test_a_run_joins_a_running_cluster_that_asks_for_a_token(fake: FakeOpenAI, tmp_path: Path) -> None:
    # The README's recipe with the real tools: a head started by `ray start` that requires Ray's
    # token authentication, and the CLI joining it through RAY_ADDRESS with RAY_AUTH_MODE=token
    # and RAY_AUTH_TOKEN. Ray's CLI resolves 127.0.0.1 to the machine's outward address unless
    # cluster mode is off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), which keeps all of it on loopback.
    __import__("ray") if os.environ.get("CI") else pytest.importorskip("ray")
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip("the ray command is not installed beside this interpreter")
    fake.api_key = KEY
    paths = [p for p in _corpus(tmp_path / "in", 6) if "report" in p]
    port, token = _free_port(), secrets.token_hex(32)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_", "OPENAI_"))}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0", "HOME": str(tmp_path)}  # no ~/.ray/auth_token of the machine's
    # Its own temporary folder (short: it holds Unix sockets), so that the address it records
    # for `ray.init()` to find never outlives the test in the machine's /tmp/ray.
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={temp}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and head.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"ray start --head did not listen on port {port} within 60 s (exit {head.poll()})")
        out = tmp_path / "out"

        run = subprocess.run([sys.executable, "run.py", *paths, "--engine", "ray", "--base-url", fake.base_url,
                              "--api-key", KEY, "--model", "fake", "--out", str(out), "-q"],
                             env=env | {"RAY_ADDRESS": f"127.0.0.1:{port}"}, cwd=Path(__file__).resolve().parents[1],
                             capture_output=True, text=True, timeout=240)
    finally:
        _stop_tree(head)
        shutil.rmtree(temp, ignore_errors=True)

    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    results = [json.loads(line) for line in (out / "summaries.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["status"] for r in results] == ["ok"] * len(paths)
    assert report["llm_calls"]["map"] == sum(r["chunks"] for r in results) == fake.chat_calls - 1  # and a final
    assert token not in run.stdout + run.stderr and KEY not in run.stdout + run.stderr


def test_planning_warnings_from_ray_workers_come_out_as_the_drivers_own_log_lines(fake: FakeOpenAI,
                                                                                     tmp_path: Path) -> None:
    # A worker's log lines would reach the terminal through Ray, prefixed and coloured, even
    # with --log-json; the driver logs them instead, as JSON like every other line.
    __import__("ray") if os.environ.get("CI") else pytest.importorskip("ray")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "minutes.txt").write_bytes("The café opened.\nMrs. Müller spoke.\n".encode().replace(b"spoke", b"sp\x9doke"))
    (folder / "plain.txt").write_text("The ferry runs at dawn.", encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_", "OPENAI_"))}

    run = subprocess.run([sys.executable, "run.py", str(folder), "--engine", "ray", "--base-url", fake.base_url,
                          "--out", str(tmp_path / "out"), "--log-json"], env=env,
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=240)

    assert run.returncode == 0, run.stderr[-2000:]
    ours = [line for line in run.stderr.splitlines() if not line.startswith("[20")]  # Ray's C++ core logs as it will
    entries = [json.loads(line) for line in ours]  # every line of ours is JSON
    warned = [e for e in entries if e["level"] == "warning" and "minutes.txt" in e["message"]]
    assert len(warned) == 1 and "1 undecodable character(s)" in warned[0]["message"]
    assert "pid=" not in run.stderr and "\x1b[" not in run.stderr


@settings(max_examples=200, deadline=None)
@given(stored=st.sets(st.binary(min_size=32, max_size=32), max_size=40),
       other=st.sets(st.binary(min_size=32, max_size=32), max_size=10),
       ends=st.lists(st.sampled_from([b"", b"\x00", b"\x00\x00", b"\x01\x00"]), min_size=1, max_size=40))
def test_the_store_snapshot_holds_exactly_the_stored_keys(stored: set[bytes], other: set[bytes],
                                                         ends: list[bytes]) -> None:
    # What planning workers skip as paid for. Keys that end in zero bytes (one in 256) come up
    # on purpose: NumPy drops trailing NULs from its byte strings, and such keys went unseen.
    __import__("ray") if os.environ.get("CI") else pytest.importorskip("ray")
    from pipeline.ray.plan import make_snapshot

    stored = {key[:32 - len(end)] + end for key, end in zip(sorted(stored), ends * 40)}
    snapshot = make_snapshot([k.hex() for k in stored], {}, retry_failed=False)

    assert all(snapshot.holds(key.hex()) for key in stored)
    assert not any(snapshot.holds(key.hex()) for key in other - stored)


def test_the_ray_engine_without_ray_is_one_line(cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(graphs.context, "ray_installed", lambda: False)
    (tmp_path / "a.txt").write_text("Some text.", encoding="utf-8")

    result = cli(str(tmp_path / "a.txt"), "--engine", "ray", base_url="http://127.0.0.1:9/v1")

    assert result.code == 1
    assert result.err.strip().splitlines() == [
        "error: the ray engine needs Ray, which is not installed: pip install -e '.[ray]'"]


def test_each_ray_actor_calls_with_its_share_of_the_runs_settings() -> None:
    # The actors' settings come from the run's Context: its endpoints, key and request fields,
    # with the concurrency and the rate limits split among them.
    __import__("ray") if os.environ.get("CI") else pytest.importorskip("ray")
    from graphs.ray_map import ray_settings

    context = Context(base_urls=["http://127.0.0.1:9/v1=concurrency:8", "http://127.0.0.1:10/v1"], api_key=KEY,
                      model="fake", rpm=60, tpm=6000, seed=7, extra_body={"top_k": 5}).resolved()

    plan, call = ray_settings(context, concurrency=16, actors=4, keyed=True, templates=context.templates())

    chat = call.chat
    assert (chat.concurrency, [e.concurrency for e in chat.endpoints], chat.rpm, chat.tpm) == (4, [2, None], 15, 1500)
    assert chat.request_body == {"seed": 7, "top_k": 5} and chat.model == plan.model == "fake"
    assert chat.identity == plan.identity == context.identity  # the keys planning makes are those of the calls
    assert chat.price is None  # spending is not capped on Ray
    assert KEY not in repr(call)


async def test_ray_sends_the_readers_instructions_and_keeps_documents_pages_as_in_process(
        local_ray: None, fake_in_loop: FakeOpenAI, tmp_path: Path) -> None:
    from langchain_core.documents import Document

    fake = fake_in_loop
    documents = [Document(page_content=f"Page {i + 1} of the ferry review: {100 + i} riders a day.",
                          metadata={"source": "review.pdf", "page": i}) for i in range(3)]
    options = {"instructions": "For the harbor board.", "focus": "How many riders?"}

    local = await graph.ainvoke({"documents": documents}, context=_context(fake, tmp_path / "local.sqlite", **options))
    sent_here = sorted((b["messages"][0]["content"], b["messages"][-1]["content"]) for b in fake.bodies)
    fake.reset_stats()
    on_ray = await graph.ainvoke({"documents": documents},
                                 context=_context(fake, tmp_path / "ray.sqlite", engine="ray", ray_actors=1, **options))

    assert sorted((b["messages"][0]["content"], b["messages"][-1]["content"]) for b in fake.bodies) == sent_here
    assert all("For the harbor board." in system and "How many riders?" in system for system, _ in sent_here)
    assert on_ray["results"] == local["results"]
    assert [r["location"] for r in on_ray["results"]] == ["page 1", "page 2", "page 3"]


def test_ray_reads_every_format_as_the_local_engine_does(local_ray: None, cli, fake: FakeOpenAI,
                                                        tmp_path: Path) -> None:
    from tests import format_files
    from tests.test_formats import received

    folder = tmp_path / "docs"
    folder.mkdir()
    format_files.write_all(folder)
    args = (str(folder), str(folder / "*.jsonl"), "--text-field", "body", "--id-field", "id", "--no-store")

    local = cli(*args, base_url=fake.base_url)
    sent_locally, local_lines = received(fake), local.lines()
    fake.reset_stats()
    on_ray = cli(*args, "--engine", "ray", "--ray-actors", "1", base_url=fake.base_url)

    assert local.code == on_ray.code == 0, on_ray.err
    assert received(fake) == sent_locally
    assert [(r["source"], r["locations"]) for r in on_ray.lines()] == [(r["source"], r["locations"]) for r in local_lines]
