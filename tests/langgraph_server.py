"""The real LangGraph dev server (`langgraph dev`) in a child process on 127.0.0.1, for tests.

    with LangGraphDevServer(Path("langgraph.json"), workdir, env={"OPENAI_BASE_URL": ...}) as server:
        client = server.client()          # a langgraph_sdk client for server.url

The server writes `.langgraph_api/` into its working directory, and `langgraph.json`
names its graphs and dependencies relative to the file, so the server runs in `workdir`
from a copy of the config whose local paths are made absolute: the checkout stays clean
and the graph is still loaded from it. The child gets a small, explicit environment with
everything that could reach the network at start-up turned off: the CLI's analytics
post, the PyPI version check, LangSmith tracing (and the org lookup it triggers), the
browser; with no license or control-plane key the metadata loop never starts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
from langgraph_sdk.client import LangGraphClient

HOST = "127.0.0.1"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the server colours its log lines
# Passed through from the test's own environment; nothing else is (no keys, no proxies).
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ")
OFFLINE = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",      # langgraph_cli.analytics posts every command otherwise
    "LANGGRAPH_NO_VERSION_CHECK": "true",   # langgraph_api.cli asks PyPI for newer releases otherwise
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "NO_PROXY": f"{HOST},localhost",
    "no_proxy": f"{HOST},localhost",
    "PYTHONUNBUFFERED": "1",
}


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _absolute(ref: str, base: Path) -> str:
    """Make a local path (`./x`, `x/y.py:var`) absolute against `base`; leave package names alone."""
    path, sep, rest = ref.partition(":")
    if path.startswith(".") or "/" in path:
        return str((base / path).resolve()) + sep + rest
    return ref


def portable_config(config: Path, workdir: Path) -> Path:
    """Write a copy of `config` into `workdir` whose local dependencies, graphs and env file are absolute."""
    data = json.loads(config.read_text(encoding="utf-8"))
    base = config.resolve().parent
    data["dependencies"] = [_absolute(d, base) for d in data.get("dependencies", [])]
    graphs: dict[str, Any] = data.get("graphs", {})
    for name, spec in graphs.items():
        if isinstance(spec, dict):
            spec["path"] = _absolute(spec["path"], base)
        else:
            graphs[name] = _absolute(spec, base)
    if isinstance(data.get("env"), str):
        data["env"] = str((base / data["env"]).resolve())
    copy = workdir / "langgraph.json"
    copy.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return copy


class LangGraphDevServer:
    """`langgraph dev` for one config, started and stopped as a context manager.

    Blocking-call detection stays on unless `allow_blocking`, as in a plain `langgraph dev`:
    a node that blocks the event loop fails its run there, so it fails here too.
    """

    def __init__(self, config: Path, workdir: Path, *, env: dict[str, str] | None = None,
                 allow_blocking: bool = False, startup_timeout: float = 90.0) -> None:
        self.config, self.workdir = config, workdir
        self.env = env or {}
        self.allow_blocking = allow_blocking
        self.startup_timeout = startup_timeout
        self.port = 0
        self.startup_seconds = 0.0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "server.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def argv(self, config: Path) -> list[str]:
        argv = [sys.executable, "-m", "langgraph_cli", "dev", "--host", HOST, "--port", str(self.port),
                "--no-browser", "--no-reload", "--config", str(config)]
        return argv + (["--allow-blocking"] if self.allow_blocking else [])

    def child_env(self) -> dict[str, str]:
        passed = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
        return {**passed, **OFFLINE, **self.env}

    def log(self, last: int = 4000) -> str:
        """The end of the server's output, for failure messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return _ANSI.sub("", text)[-last:]

    def _answers_ok(self) -> bool:
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    f"{self.url}/ok", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> None:
        """Spawn the server in its own process group and wait (bounded) until `/ok` answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = portable_config(self.config, self.workdir)
        self.port = free_port()
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv(config), cwd=self.workdir, env=self.child_env(),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = started + self.startup_timeout
        while not self._answers_ok():
            code = self.proc.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                why = f"exited with code {code}" if code is not None else \
                    f"did not answer /ok within {self.startup_timeout:g} s"
                raise RuntimeError(f"langgraph dev {why}; its output ends:\n{self.log()}")
            time.sleep(0.1)
        self.startup_seconds = time.monotonic() - started
        if "already in use" in self.log():  # it moved to another port: /ok came from someone else
            self.stop()
            raise RuntimeError(f"port {self.port} was taken; the server moved:\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and anything it started: SIGTERM to its group, SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # children that outlived the leader
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def client(self, timeout: float = 60.0) -> LangGraphClient:
        """A langgraph_sdk client for this server that ignores proxy settings; close it with `aclose`."""
        http = httpx.AsyncClient(base_url=self.url, trust_env=False,
                                 timeout=httpx.Timeout(timeout, connect=5.0))
        return LangGraphClient(http)

    def __enter__(self) -> LangGraphDevServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
