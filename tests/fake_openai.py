"""Fake OpenAI-compatible chat-completions server for tests and benchmarks.

In-process use (inside a running event loop)::

    async with FakeOpenAI(latency=0.0, script=["429"]) as fake:
        ...  # point the client at fake.base_url ("http://127.0.0.1:PORT/v1")
        assert fake.peak_in_flight <= 8

Out-of-process use (server CPU does not share the client's event loop)::

    with FakeOpenAIProcess(latency=0.1) as srv:   # or ``async with``
        ...  # use srv.base_url; srv.stats() / await srv.astats()

CLI: ``python -m tests.fake_openai --latency 0.1 --port 0`` prints the bound
port on its first stdout line and exits when stdin is closed.
The server only ever binds to 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import http.client
import json
import random
import re
import select
import subprocess
import sys
import time
import weakref
from typing import Any, Callable, Iterable, Mapping

from aiohttp import web

HOST = "127.0.0.1"
SPECIAL_FAULTS = ("hang", "malformed", "no_choices", "html")
# What a web UI or a proxy's login page answers: a page, status 200, text/html.
HTML_PAGE = ("<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
             "<body><form method=\"post\"><input name=\"password\"></form></body></html>\n")
CONTROL_PATHS = ("/health", "/stats", "/stats/reset", "/slots")
ReplyFn = Callable[[list[dict[str, Any]]], str]


def _text(content: Any) -> str:
    """Flatten a message ``content`` (string or list of parts) to text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


_TAG = re.compile(r"\[D\d+(?:, D\d+)*\]")


def default_reply(messages: list[dict[str, Any]]) -> str:
    """Deterministic summary: ``"SUMMARY[<n words>]: <first 12 words>"``, then a bullet per summary.

    Uses the text inside the last user message's ``<document ...>`` or
    ``<summaries>`` block if there is one, else that whole message (else the
    last message of any role). A map answer is that one line. A reduce answer (a
    ``<summaries>`` block) adds a bullet per summary in it, each its first ten words
    and ending with the summary's own tags, as a real model is asked to do.
    """
    users = [m for m in messages if m.get("role") == "user"] or messages[-1:]
    text = _text(users[-1].get("content")) if users else ""
    merging = False
    for opener, closer in (("<document", "</document>"), ("<summaries", "</summaries>")):
        start = text.find(opener)  # str.find is far cheaper than a regex on big docs
        body = text.find(">\n", start) if start >= 0 else -1
        if body >= 0:
            end = text.find(closer, body)
            text = text[body + 2:end if end >= 0 else len(text)]
            merging = opener == "<summaries"
            break
    words = _TAG.sub("", text).split() if merging else text.split()
    head = f"SUMMARY[{len(words)} words]: " + " ".join(words[:12])
    if not merging:
        return head
    bullets = []
    for block in text.split("\n\n"):
        tags = sorted(set(_TAG.findall(block)), key=lambda t: int(t[2:].split("]")[0].split(",")[0]))
        if tags:
            bullets.append("- " + " ".join(_TAG.sub("", block).split()[:10]) + " " + " ".join(tags))
    return "\n".join([head, *bullets])


def _tokens(text: str) -> int:
    """Cheap token estimate (~4 characters per token)."""
    return max(1, len(text) // 4)


def _error(status: int, message: str, etype: str, code: str | None = None,
           headers: Mapping[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _percentiles(latencies: list[float]) -> dict[str, float | None]:
    """p50 and p95 of the chat requests' latencies, in seconds (None before any)."""
    ordered = sorted(latencies)
    if not ordered:
        return {"latency_p50": None, "latency_p95": None}
    return {f"latency_p{p}": round(ordered[min(len(ordered) - 1, p * len(ordered) // 100)], 4) for p in (50, 95)}


def _check_fault(name: str) -> str:
    if name in SPECIAL_FAULTS or (name.isdigit() and 400 <= int(name) < 600):
        return name
    raise ValueError(f"unknown fault {name!r}; use an HTTP status 4xx/5xx or one of {SPECIAL_FAULTS}")


class FakeOpenAI:
    """In-process fake server; see module docstring. All options are public
    attributes and may be changed while the server runs.

    faults: random fault rates, e.g. ``{"429": 0.1, "500": 0.05, "hang": 0.01,
    "malformed": 0.01, "no_choices": 0.01}`` (drawn from ``random.Random(seed)``).
    script: fault names consumed one per chat request before random faults
    ("ok" = no fault). fail_marker: any request whose messages contain it gets 500.
    Precedence: html_everywhere -> 401 auth -> fail_marker -> script -> random faults.

    html_everywhere: answer every request (but the fake's own /health and /stats) with
    an HTML page, status 200, as a web UI or a proxy's login page does; chat requests
    are still counted. The "html" fault does the same for one chat request.
    basic_auth: "user:password" that chat requests must present as HTTP Basic auth.
    echo_key: 401 and 500 messages repeat the credential the request carried (the key,
    or the Basic user:password), in full and masked the way OpenAI masks keys.

    slots: serve at most this many chat requests at once, as a batching inference server
    does (vLLM's max_num_seqs, llama.cpp's --parallel); the rest wait in a FIFO queue,
    never refused. A request's latency then grows with the batch it starts in:
    ``latency * (1 + (batch - 1) / slots)``. ``set_slots`` changes it while serving
    (``POST /slots?n=N`` out of process); ``peak_queue`` and ``peak_serving`` record what
    queued and what was served at once.
    """

    def __init__(self, *, latency: float = 0.0, jitter: float = 0.0,
                 reply: ReplyFn | None = None, faults: Mapping[str, float] | None = None,
                 seed: int = 0, script: Iterable[str] = (), fail_marker: str | None = None,
                 api_key: str | None = None, retry_after: float = 0.0,
                 hang_seconds: float = 30.0, record_bodies: bool = True,
                 port: int = 0, shutdown_timeout: float = 1.0, html_everywhere: bool = False,
                 basic_auth: str | None = None, echo_key: bool = False, slots: int | None = None) -> None:
        self.latency, self.jitter = latency, jitter
        self.slots = slots
        self.serving = 0
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self.reply: ReplyFn = reply or default_reply
        self.faults: dict[str, float] = {_check_fault(k): float(v) for k, v in (faults or {}).items()}
        if sum(self.faults.values()) > 1.0:
            raise ValueError("fault rates must sum to <= 1")
        self.rng = random.Random(seed)
        self._jitter_rng = random.Random(seed + 1)
        self.script: collections.deque[str] = collections.deque(
            s if s == "ok" else _check_fault(s) for s in script)
        self.fail_marker, self.api_key = fail_marker, api_key
        self.retry_after = retry_after
        self.hang_seconds = min(hang_seconds, 300.0)
        self.record_bodies = record_bodies
        self.ignore_max_tokens = False  # True: answers run past max_tokens, as some servers' do
        self.html_everywhere, self.basic_auth, self.echo_key = html_everywhere, basic_auth, echo_key
        self.port = port
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self.reset_stats()

    # ------------------------------------------------------------------ stats
    def reset_stats(self) -> None:
        """Zero all counters and forget recorded bodies and connections."""
        self.total_requests = 0          # requests to /v1/* endpoints
        self.chat_calls = 0              # POST /v1/chat/completions
        self.status_counts: collections.Counter[int] = collections.Counter()
        self.faults_injected: collections.Counter[str] = collections.Counter()
        self.in_flight = getattr(self, "in_flight", 0)
        self.peak_in_flight = self.in_flight
        self.connections_opened = 0
        self._conns: weakref.WeakSet[Any] = weakref.WeakSet()
        self._peers: set[Any] = set()    # fallback for non-weakrefable transports
        self.bodies: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []  # the Authorization header of each chat request
        self.peak_queue = len(getattr(self, "_queue", ()))
        self.peak_serving = getattr(self, "serving", 0)
        self.latencies: list[float] = []  # seconds from each chat request's arrival to its answer
        self.abandoned = 0  # answers finished after the client had hung up (it may have sent the call again)

    def stats(self, include_bodies: bool = False) -> dict[str, Any]:
        """Snapshot of the counters (the JSON served by ``GET /stats``)."""
        out: dict[str, Any] = {
            "total_requests": self.total_requests, "chat_calls": self.chat_calls,
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "faults_injected": dict(self.faults_injected),
            "in_flight": self.in_flight, "peak_in_flight": self.peak_in_flight,
            "connections_opened": self.connections_opened,
            "bodies_recorded": len(self.bodies),
            "slots": self.slots, "queued": len(self._queue), "peak_queue": self.peak_queue,
            "peak_serving": self.peak_serving, "serving": self.serving, "abandoned": self.abandoned,
            **_percentiles(self.latencies),
        }
        if include_bodies:
            out["bodies"] = self.bodies
        return out

    def _track_connection(self, request: web.Request) -> None:
        transport = request.transport
        if transport is None:
            return
        try:
            if transport in self._conns:
                return
            self._conns.add(transport)
        except TypeError:
            peer = transport.get_extra_info("peername")
            if peer in self._peers:
                return
            self._peers.add(peer)
        self.connections_opened += 1

    # -------------------------------------------------------------- handlers
    @web.middleware
    async def _count(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if self.html_everywhere and request.path not in CONTROL_PATHS:
            self.total_requests += 1
            self.chat_calls += request.path.endswith("/chat/completions")
            self.status_counts[200] += 1
            return web.Response(text=HTML_PAGE, content_type="text/html")
        if not request.path.startswith("/v1/"):
            return await handler(request)
        self.total_requests += 1
        self._track_connection(request)
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            self.status_counts[exc.status] += 1
            raise
        self.status_counts[resp.status] += 1
        return resp

    def _pick_fault(self, messages: list[dict[str, Any]]) -> str | None:
        marker = self.fail_marker
        if marker and any(marker in _text(m.get("content")) for m in messages):
            return "500"
        if self.script:
            name = self.script.popleft()
            return None if name == "ok" else name
        if self.faults:
            r, acc = self.rng.random(), 0.0
            for name, rate in self.faults.items():
                acc += rate
                if r < acc:
                    return name
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.chat_calls += 1
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        arrived = time.perf_counter()
        try:
            return await self._chat_inner(request)
        finally:
            self.in_flight -= 1
            self.latencies.append(time.perf_counter() - arrived)
            if request.transport is None or request.transport.is_closing():
                self.abandoned += 1

    def _echo(self, request: web.Request) -> str:
        """The credential a request carried, as a careless server repeats it (empty unless echo_key)."""
        if not self.echo_key:
            return ""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            value = base64.b64decode(value).decode("utf-8", "replace")
        masked = f"{value[:6]}{'*' * 8}{value[-4:]}" if len(value) > 10 else "***"
        return f" You passed {value} (shown as {masked})."

    async def _chat_inner(self, request: web.Request) -> web.StreamResponse:
        self.authorizations.append(request.headers.get("Authorization"))
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided." + self._echo(request),
                          "invalid_request_error", "invalid_api_key")
        if self.basic_auth is not None:
            expected = "Basic " + base64.b64encode(self.basic_auth.encode()).decode()
            if request.headers.get("Authorization") != expected:
                return _error(401, "Wrong user or password." + self._echo(request), "invalid_request_error")
        try:
            body = await request.json()
            messages = body["messages"]
            if not isinstance(messages, list) or not messages:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return _error(400, "Body must be JSON with a non-empty 'messages' list.", "invalid_request_error")
        if self.record_bodies:
            self.bodies.append(body)
        fault = self._pick_fault(messages)
        if fault:
            self.faults_injected[fault] += 1
        if self.slots:
            await self._serve_in_slot()
        else:
            delay = self.latency + (self._jitter_rng.uniform(0, self.jitter) if self.jitter else 0.0)
            if delay > 0:
                await asyncio.sleep(delay)
        if fault == "hang" and self._closing is not None:
            try:  # returns early when the server is shutting down
                await asyncio.wait_for(self._closing.wait(), self.hang_seconds)
            except asyncio.TimeoutError:
                pass
        elif fault == "malformed":
            return web.Response(status=200, text='{"id": "chatcmpl-broken", "choices": [{"mess',
                                content_type="application/json")
        elif fault == "no_choices":
            return web.json_response({"id": "chatcmpl-broken", "object": "chat.completion"})
        elif fault == "html":
            return web.Response(text=HTML_PAGE, content_type="text/html")
        elif fault == "429":
            ra = self.retry_after
            return _error(429, "Rate limit reached (fake).", "requests", "rate_limit_exceeded",
                          headers={"Retry-After": f"{ra:g}", "retry-after-ms": str(int(ra * 1000))})
        elif fault:
            return _error(int(fault), f"Injected fault {fault}." + self._echo(request), "server_error")
        content, finish = self.reply(messages), "stop"
        cap = body.get("max_tokens")
        if isinstance(cap, int) and cap > 0 and _tokens(content) > cap and not self.ignore_max_tokens:
            content, finish = content[:cap * 4], "length"
        prompt_tokens = sum(_tokens(_text(m.get("content"))) for m in messages)
        completion_tokens = _tokens(content)
        return web.json_response({
            "id": f"chatcmpl-fake-{self.chat_calls}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", "fake-model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })

    async def _serve_in_slot(self) -> None:
        """Wait in the FIFO queue for a slot, then take the batch's service time."""
        if self.serving < (self.slots or 0) and not self._queue:
            self.serving += 1
        else:
            turn = asyncio.get_running_loop().create_future()
            self._queue.append(turn)
            self.peak_queue = max(self.peak_queue, len(self._queue))
            try:
                await turn  # the slot is counted as ours when the turn is given
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._free_slot()
                else:
                    self._queue.remove(turn)
                raise
        self.peak_serving = max(self.peak_serving, self.serving)
        slots = max(1, self.slots or 1)
        delay = self.latency * (1 + (self.serving - 1) / slots)
        try:
            await asyncio.sleep(delay + (self._jitter_rng.uniform(0, self.jitter) if self.jitter else 0.0))
        finally:
            self._free_slot()

    def _free_slot(self) -> None:
        self.serving -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        while self._queue and self.serving < (self.slots or 0):
            turn = self._queue.popleft()
            if not turn.done():
                self.serving += 1
                turn.set_result(None)

    def set_slots(self, slots: int) -> None:
        """Change how many requests are served at once; a raise lets queued ones in at once."""
        self.slots = max(1, slots)
        self._hand_over()

    async def _set_slots(self, request: web.Request) -> web.Response:
        self.set_slots(int(request.query["n"]))
        return web.json_response({"slots": self.slots})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]})

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats(include_bodies=request.query.get("bodies") == "1"))

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({"status": "reset"})

    # ------------------------------------------------------------- lifecycle
    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{HOST}:{self.port}/v1"

    async def start(self) -> None:
        """Bind to 127.0.0.1 (``port=0`` picks a free port) and start serving."""
        self._closing = asyncio.Event()
        app = web.Application(middlewares=[self._count], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/stats/reset", self._reset)
        app.router.add_post("/slots", self._set_slots)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Release hanging requests and shut the server down (~1 s worst case)."""
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> "FakeOpenAI":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class FakeOpenAIProcess:
    """Runs the fake server in a child Python process (sync or async context
    manager). Keyword options mirror the CLI flags: latency, jitter, seed,
    faults (dict), script (list), fail_marker, api_key, retry_after,
    hang_seconds, record_bodies (default False here), html_everywhere, basic_auth,
    echo_key."""

    def __init__(self, *, startup_timeout: float = 10.0, **options: Any) -> None:
        self.options = options
        self.startup_timeout = startup_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def _argv(self) -> list[str]:
        argv = [sys.executable, "-u", __file__, "--port", "0"]
        for key, value in self.options.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):  # record_bodies, html_everywhere, echo_key: on/off flags
                argv += [flag] if value else []
            elif key == "faults":
                argv += [flag, json.dumps(value)]
            elif key == "script":
                argv += [flag, ",".join(value)]
            elif value is not None:
                argv += [flag, str(value)]
        return argv

    def start(self) -> None:
        """Spawn the child and wait (bounded) for the port line."""
        self.proc = subprocess.Popen(self._argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], self.startup_timeout)
        line = self.proc.stdout.readline().strip() if ready else b""
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"fake server failed to start (got {line!r})")
        self.port = int(line)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the child's stdin (it exits); terminate/kill if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(2)
        if proc.stdout:
            proc.stdout.close()

    def _request(self, method: str, path: str) -> dict[str, Any]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=10)  # never uses proxies
        try:
            conn.request(method, path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def stats(self, include_bodies: bool = False) -> dict[str, Any]:
        """Blocking ``GET /stats``."""
        return self._request("GET", "/stats?bodies=1" if include_bodies else "/stats")

    def reset_stats(self) -> dict[str, Any]:
        return self._request("POST", "/stats/reset")

    def set_slots(self, slots: int) -> dict[str, Any]:
        """Blocking ``POST /slots?n=N``: change how many requests the server serves at once."""
        return self._request("POST", f"/slots?n={int(slots)}")

    async def astats(self, include_bodies: bool = False) -> dict[str, Any]:
        return await asyncio.to_thread(self.stats, include_bodies)

    async def areset_stats(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.reset_stats)

    def __enter__(self) -> "FakeOpenAIProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> "FakeOpenAIProcess":
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)


async def serve(args: argparse.Namespace, reply: ReplyFn | None = None) -> None:
    """Serve with the CLI's settings until stdin closes, printing the port first."""
    fake = FakeOpenAI(
        reply=reply, latency=args.latency, jitter=args.jitter, seed=args.seed, port=args.port,
        faults=json.loads(args.faults) if args.faults else None,
        script=[s for s in args.script.split(",") if s], fail_marker=args.fail_marker,
        api_key=args.api_key, retry_after=args.retry_after, hang_seconds=args.hang_seconds,
        record_bodies=args.record_bodies, html_everywhere=args.html_everywhere,
        basic_auth=args.basic_auth, echo_key=args.echo_key, slots=args.slots)
    async with fake:
        print(fake.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)


def build_parser() -> argparse.ArgumentParser:
    """The CLI's options, one per FakeOpenAI setting."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--jitter", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--faults", default="", help='JSON, e.g. \'{"429": 0.1}\'')
    p.add_argument("--script", default="", help="comma-separated fault names")
    p.add_argument("--fail-marker")
    p.add_argument("--api-key")
    p.add_argument("--retry-after", type=float, default=0.0)
    p.add_argument("--hang-seconds", type=float, default=30.0)
    p.add_argument("--record-bodies", action="store_true")
    p.add_argument("--html-everywhere", action="store_true")
    p.add_argument("--basic-auth", help="user:password that chat requests must carry")
    p.add_argument("--echo-key", action="store_true")
    p.add_argument("--slots", type=int, help="requests served at once (the rest queue); service time grows "
                                             "with the batch: latency * (1 + (batch - 1) / slots)")
    return p


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; see module docstring."""
    asyncio.run(serve(build_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
