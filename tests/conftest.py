"""Shared fixtures: a fake OpenAI-compatible server on 127.0.0.1, sample documents, the CLI in-process."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import run
from tests.fake_openai import FakeOpenAI

ENGLISH = ("The harbor authority ran an electric ferry trial for six months. Ridership reached 1,450 "
           "trips a day, well above the 900 planned. Two battery faults stopped service for nine days. "
           "The review recommends a second boat and a covered shelter.")
KOREAN = ("제주 감귤 수확이 11월 초에 시작되었다. 여름 강수량이 적어 열매는 작지만 당도는 11.8브릭스로 높았다. "
          "농가들은 일손 부족과 인건비 상승을 가장 큰 어려움으로 꼽았다.")


class ThreadedFake:
    """A FakeOpenAI running on its own event loop in a thread, for tests of the synchronous CLI."""

    def __init__(self, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.server = FakeOpenAI(**options)
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture(autouse=True)
def _root_logger() -> Iterator[None]:
    """Each test starts with no log handler: the CLI points one at the captured stderr of the test that ran it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers[:], root.level = [], logging.WARNING
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A fake endpoint for CLI tests; configure it through its attributes before running."""
    threaded = ThreadedFake()
    try:
        yield threaded.server
    finally:
        threaded.close()


@pytest.fixture
async def fake_in_loop() -> AsyncIterator[FakeOpenAI]:
    """A fake endpoint on the test's own running loop, as a notebook would have it."""
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A folder with one English and one Korean document."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "ferry.txt").write_text(ENGLISH, encoding="utf-8")
    (folder / "citrus.txt").write_text(KOREAN, encoding="utf-8")
    return folder


@dataclass
class CliResult:
    code: int
    out: str
    err: str
    out_dir: Path

    def report(self) -> dict[str, Any]:
        return json.loads((self.out_dir / "report.json").read_text(encoding="utf-8"))

    def lines(self) -> list[dict[str, Any]]:
        text = (self.out_dir / "summaries.jsonl").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run `run.main(argv)` in-process with a clean environment; return code, stdout, stderr, outputs."""
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)

    def invoke(*argv: str, base_url: str | None = None, quiet: bool = True) -> CliResult:
        out_dir = tmp_path / "out"
        args = [*argv, "--out", str(out_dir), *(["-q"] if quiet else [])]
        if base_url:
            args += ["--base-url", base_url]
        code = run.main(args)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err, out_dir)

    return invoke


@dataclass
class EmbeddedStandIn:
    """The embedded model replaced by tests/embedded_fake_server.py: what each start was given and asked."""

    bodies_file: Path
    pids: list[int] = field(default_factory=list)
    settings: list[Any] = field(default_factory=list)  # the EmbeddedSettings of each start

    def bodies(self) -> list[dict[str, Any]]:
        """The chat requests the stand-in received, in order."""
        if not self.bodies_file.exists():
            return []
        return [json.loads(line) for line in self.bodies_file.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def embedded_stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[EmbeddedStandIn]:
    """Make the embedded model a stand-in server; check that every one started was stopped."""
    import sys

    import psutil

    from pipeline.llm import embedded

    stand_in = EmbeddedStandIn(tmp_path / "embedded-bodies.jsonl")
    script = Path(__file__).with_name("embedded_fake_server.py")

    def command(path: Path, settings: Any, alias: str = "") -> list[str]:
        stand_in.settings.append(settings)
        return [sys.executable, str(script), "--mode", "ok", "--bodies", str(stand_in.bodies_file)]

    monkeypatch.setattr(embedded, "ensure_model", lambda cache_dir=None: Path("model.gguf"))
    monkeypatch.setattr(embedded, "server_command", command)
    started = embedded.EmbeddedServer._start

    async def record(self, command):  # type: ignore[no-untyped-def]
        await started(self, command)
        stand_in.pids.append(self.pid)

    monkeypatch.setattr(embedded.EmbeddedServer, "_start", record)
    yield stand_in
    for pid in stand_in.pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
