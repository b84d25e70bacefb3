"""Spread calls over several OpenAI-compatible endpoints: weighted least-connections, health, failover.

Each endpoint has its own chat client over its own pooled session, its own adaptive
limit (halved on 429 and, unless fixed, steered by its latency: limits.KneeSearch) and
its own health. A call goes to the healthy endpoint with a free
slot and the fewest outstanding requests relative to its weight. A call that got no
answer on one endpoint (no connection, a timeout, 429, 5xx) is sent again at once to
another healthy one; only when every endpoint has failed it does the error reach the
runner, which counts a retry and backs off as it does for one endpoint. Each call's timeout
follows its endpoint's recent latency (`AdaptiveLimit.call_timeout`), and an endpoint whose
last call timed out gets calls only while no other has a free slot. An answer that
is no chat completion goes straight to the runner: it was an answer, paid for, and
trying again is one of the run's retries. An endpoint whose calls fail (no connection,
timeouts, 5xx, answers that are not chat completions) `MAX_FAILURES` times in a row is
taken out, probed in the background (GET /models, with backoff) and put back when it answers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp

from pydantic import SecretStr

from pipeline.llm.client import OpenAICompatChat, Usage, endpoint, open_session, probe_endpoint, redact_url
from pipeline.errors import (
    ConnectError,
    EndpointError,
    InputError,
    LLMError,
    MalformedResponseError,
    RateLimitedError,
    RetryableLLMError,
)
from pipeline.llm.limits import START, AdaptiveLimit, call_work, timed_out
from pipeline.prompting import Prompt

log = logging.getLogger(__name__)

MAX_FAILURES = 3  # failures in a row that take an endpoint out
QUEUEING_S = 30.0  # how long a timed-out endpoint goes last (unless it answers sooner)
PROBE_FIRST_S, PROBE_CAP_S = 0.2, 10.0  # backoff between probes of an endpoint that is out
PROBE_ATTEMPTS = 200  # then it stays out for the rest of the run (30 to 50 minutes of probing)
PROBE_TIMEOUT_S = 5.0
LATENCY_SAMPLE = 4096  # latencies kept per endpoint (a uniform sample of the run's) for p50/p95
_OPTIONS = re.compile(r"[a-z_]+:[^,=/]*(?:,[a-z_]+:[^,=/]*)*")


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One endpoint of a pool: `URL[=weight:W,concurrency:N]`."""

    url: str
    weight: float = 1.0
    concurrency: int | None = None  # None: the run's concurrency, split by weight

    def __repr__(self) -> str:  # the URL may carry user:password
        return f"EndpointSpec({redact_url(self.url)!r}, weight={self.weight:g}, concurrency={self.concurrency})"


def parse_endpoint(spec: str) -> EndpointSpec:
    """Read `http://a:8000/v1=weight:3,concurrency:64` (both options optional); raise InputError if bad."""
    url, sep, options = spec.rpartition("=")
    if not sep or not _OPTIONS.fullmatch(options.strip().lower()):
        return EndpointSpec(spec)
    given: dict[str, Any] = {}
    for item in options.strip().lower().split(","):
        name, _, value = item.partition(":")
        shown = f"{redact_url(url)}={options}"
        if name not in ("weight", "concurrency") or name in given:
            raise InputError(f"endpoint {shown!r}: unknown or repeated option {name!r} "
                             "(give URL=weight:W,concurrency:N)")
        try:
            number = float(value) if name == "weight" else int(value)
        except ValueError:
            raise InputError(f"endpoint {shown!r}: {name} must be a number, got {value!r}") from None
        if name == "weight" and not (math.isfinite(number) and number > 0):
            raise InputError(f"endpoint {shown!r}: weight must be more than 0, got {value!r}")
        if name == "concurrency" and number < 1:
            raise InputError(f"endpoint {shown!r}: concurrency must be at least 1, got {value!r}")
        given[name] = number
    return EndpointSpec(url, **given)


def split_concurrency(specs: list[EndpointSpec], concurrency: int) -> list[int]:
    """Each endpoint's most calls in flight: its own, or the run's share by weight (at least 1)."""
    total = sum(s.weight for s in specs)
    return [s.concurrency or max(1, round(concurrency * s.weight / total)) for s in specs]


class Endpoint:
    """One member of the pool: client, session, limit, health and counters."""

    def __init__(self, spec: EndpointSpec, chat: OpenAICompatChat, session: aiohttp.ClientSession,
                 concurrency: int, order: int, adapt: bool = False) -> None:
        self.spec, self.chat, self.session, self.order = spec, chat, session, order
        self.weight = spec.weight
        # A concurrency given for this server is its capacity, as its operator knows it: kept as given.
        self.limit = AdaptiveLimit(concurrency, start=START if adapt and spec.concurrency is None else None)
        self.outstanding = 0
        self.up = True
        self.queueing_until = 0.0  # its last call timed out, no answer since: a free endpoint goes first till then
        self.failures_in_a_row = 0
        self.calls = self.errors = self.taken_out = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.latencies_ms = array("f")
        self.answered = 0

    @property
    def queueing(self) -> bool:
        """Whether its last call timed out lately and it has not answered since."""
        return self.queueing_until > time.monotonic()

    def record(self, latency_ms: float) -> None:
        """Keep a latency in the sample (reservoir sampling: every answer equally likely to be kept)."""
        self.answered += 1
        if len(self.latencies_ms) < LATENCY_SAMPLE:
            self.latencies_ms.append(latency_ms)
        elif (slot := random.randrange(self.answered)) < LATENCY_SAMPLE:
            self.latencies_ms[slot] = latency_ms

    def report(self) -> dict[str, Any]:
        """This endpoint's counters, for report.json."""
        ordered = sorted(self.latencies_ms)

        def pct(p: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1) if ordered else None

        return {"url": redact_url(self.spec.url), "weight": self.weight, "concurrency": self.limit.maximum,
                "concurrency_settled": self.limit.limit, "concurrency_highest": self.limit.highest,
                "calls": self.calls, "errors": self.errors, "taken_out": self.taken_out, "up": self.up,
                "latency_ms": {"p50": pct(0.5), "p95": pct(0.95)},
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


class EndpointPool:
    """A `ChatCaller` over several endpoints; see the module docstring."""

    def __init__(self, endpoints: list[Endpoint], model: str) -> None:
        self.endpoints = endpoints
        self.model = model  # named in a 404's message by the runner
        self.chats = [e.chat for e in endpoints]  # the runner hides their credentials
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._probes: set[asyncio.Task[None]] = set()
        self.wait_timeout: float | None = max((e.session.timeout.total or 0 for e in endpoints), default=0) or 120.0
        if any(e.limit.knee is not None for e in endpoints):  # limits that start low make waiting normal
            self.wait_timeout = None  # every call out has its own timeout, so a slot always frees up

    @property
    def concurrency(self) -> int:
        """The most calls all endpoints together take at once."""
        return sum(e.limit.maximum for e in self.endpoints)

    scales_timeouts = True  # each endpoint's calls are timed by its own latency (`scaled`)

    async def acomplete(self, prompt: Prompt | str, max_tokens: int, *, scaled: bool = True) -> tuple[str, Usage]:
        """Answer on the least-loaded healthy endpoint; on a retryable error, at once on another.

        `scaled`: time the call by the endpoint's recent latency; False (the retry of a call
        that timed out) gives it the session's whole timeout.
        """
        tried: set[int] = set()
        last: LLMError | None = None
        work = call_work(prompt, max_tokens)
        while len(tried) < len(self.endpoints):  # each endpoint at most once per call
            ep = await self._acquire(tried)
            if ep is None:
                break
            tried.add(ep.order)
            ceiling = ep.session.timeout.total or 0.0
            timeout = ep.limit.call_timeout(work, ceiling, max_tokens) if ceiling and scaled else 0.0
            started = time.perf_counter()
            ep.calls += 1
            try:
                text, usage = await ep.chat.acomplete(prompt, max_tokens,
                                                      timeout=timeout if timeout < ceiling else None)
            except MalformedResponseError as exc:
                # The server answered (and was paid): trying again is the runner's retry, with
                # its backoff and its count, not a free resend to another server. It still
                # counts against the server's health: one that keeps answering garbage goes out.
                ep.errors += 1
                self._failed(ep, exc)
                raise
            except RetryableLLMError as exc:
                ep.errors += 1
                last = exc
                if timed_out(exc):  # what it waited counts as a latency seen: the endpoint may only be slower
                    ep.limit.saw(time.perf_counter() - started, work, max_tokens)
                self._failed(ep, exc)
                continue
            except Exception:
                ep.errors += 1
                raise
            finally:
                self._release(ep)
            took = time.perf_counter() - started
            ep.record(took * 1000)
            ep.failures_in_a_row, ep.queueing_until = 0, 0.0
            ep.limit.on_success(took, work, ep.outstanding + 1, kind=max_tokens)
            ep.prompt_tokens += usage.get("input_tokens") or 0
            ep.completion_tokens += usage.get("output_tokens") or 0
            return text, usage
        if last is not None:
            raise last
        raise ConnectError("no endpoint of the pool is up (all taken out after failing; being probed)")

    async def _acquire(self, tried: set[int]) -> Endpoint | None:
        """Take a slot on the best healthy endpoint not yet tried; wait for one if all are full."""
        try:
            async with asyncio.timeout(self.wait_timeout):
                return await self._take_slot(tried)
        except TimeoutError:
            raise RetryableLLMError("no endpoint of the pool had a free slot before the timeout") from None

    async def _take_slot(self, tried: set[int]) -> Endpoint | None:
        for _ in range(1_000_000):  # each turn waits for a slot to free up; the caller's timeout bounds all
            best, full = None, False
            for ep in self.endpoints:
                if not ep.up or ep.order in tried:
                    continue
                if ep.outstanding >= ep.limit.limit:
                    full = True
                    continue
                if best is None or _load(ep) < _load(best):
                    best = ep
            if best is not None:
                best.outstanding += 1
                return best
            if not full:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake(1)  # woken, but leaving: pass the freed slot on
                else:
                    waiter.cancel()
                raise
        return None

    def _release(self, ep: Endpoint) -> None:
        ep.outstanding -= 1
        # Every waiter looks again: the first may have tried this endpoint already and
        # cannot use the slot, and a wake-up given to it alone would be lost.
        self._wake(len(self._waiters))

    def _wake(self, count: int) -> None:
        while count and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    def _failed(self, ep: Endpoint, exc: RetryableLLMError) -> None:
        """Lower a rate-limited or timed-out endpoint's limit; take out one that keeps failing."""
        ep.limit.on_failure(exc)
        if timed_out(exc):  # for a while: sent no calls, it could never show it answers again
            ep.queueing_until = time.monotonic() + QUEUEING_S
        if isinstance(exc, RateLimitedError):
            ep.limit.on_rate_limited()
            return
        ep.failures_in_a_row += 1
        if ep.up and ep.failures_in_a_row >= MAX_FAILURES:
            ep.up = False
            ep.taken_out += 1
            log.warning("endpoint %s taken out after %d failures in a row (%s); probing it",
                        redact_url(ep.spec.url), ep.failures_in_a_row, exc)
            self.take_out(ep)

    def take_out(self, ep: Endpoint) -> None:
        """Stop sending calls to `ep` and probe it in the background until it answers."""
        ep.up = False
        task = asyncio.get_running_loop().create_task(self._probe(ep))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)
        self._wake(len(self._waiters))  # those waiting for it may go elsewhere, or give up

    async def _probe(self, ep: Endpoint) -> None:
        url, headers = endpoint(ep.spec.url, ep.chat.api_key.get_secret_value() if ep.chat.api_key else None)
        delay = PROBE_FIRST_S
        for _ in range(PROBE_ATTEMPTS):
            await asyncio.sleep(delay)
            try:
                async with ep.session.get(url.rstrip("/") + "/models", headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as resp:
                    await resp.read()
                    if resp.status < 500 and "html" not in resp.content_type:
                        ep.up, ep.failures_in_a_row = True, 0
                        log.warning("endpoint %s answers again; calls go to it", redact_url(ep.spec.url))
                        self._wake(len(self._waiters))
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            delay = min(PROBE_CAP_S, delay * 2)
        log.warning("endpoint %s still does not answer; it stays out for the rest of the run",
                    redact_url(ep.spec.url))

    def report(self) -> list[dict[str, Any]]:
        """Per endpoint: calls, errors, times taken out, latency p50/p95 and tokens."""
        return [e.report() for e in self.endpoints]

    async def aclose(self) -> None:
        """Stop the probes and close every endpoint's session."""
        for task in list(self._probes):
            task.cancel()
        await asyncio.gather(*self._probes, return_exceptions=True)
        await asyncio.gather(*(e.session.close() for e in self.endpoints), return_exceptions=True)


async def open_pool(specs: list[EndpointSpec], *, concurrency: int, timeout: float, api_key: str | None,
                    model: str | None, default_model: str, temperature: float,
                    extra_body: dict[str, Any], adapt: bool = False) -> tuple[EndpointPool, str]:
    """Open a session per endpoint, probe them all at once; return the pool and its model.

    The model is `model`, else the first model listed by the first endpoint that lists
    one, else `default_model`. With `adapt`, each endpoint's limit but those given their
    own concurrency starts low and finds that server's capacity from its latency, up to
    its share of `concurrency`.

    An endpoint that cannot be reached starts out taken out (and probed); a refused key, or
    no endpoint answering at all, raises as the probe of a single endpoint does.
    """
    limits = split_concurrency(specs, concurrency)
    sessions = [open_session(n, timeout) for n in limits]
    try:
        probes = await asyncio.gather(*(probe_endpoint(s.url, api_key, session=session)
                                        for s, session in zip(specs, sessions)), return_exceptions=True)
        for outcome in probes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, EndpointError):
                raise outcome
        if all(isinstance(o, BaseException) for o in probes):
            raise probes[0]
    except BaseException:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        raise
    listed = next((o for o in probes if not isinstance(o, BaseException) and o), [])
    name = model or (listed[0] if listed else default_model)
    chats = [OpenAICompatChat(model=name, base_url=s.url, api_key=SecretStr(api_key) if api_key else None,
                              temperature=temperature, extra_body=extra_body, session=session)
             for s, session in zip(specs, sessions)]
    pool = EndpointPool([Endpoint(s, chat, session, n, i, adapt)
                         for i, (s, chat, session, n) in enumerate(zip(specs, chats, sessions, limits))], name)
    for ep, outcome in zip(pool.endpoints, probes):
        if isinstance(outcome, BaseException):
            log.warning("endpoint %s does not answer (%s); it starts out taken out", redact_url(ep.spec.url), outcome)
            ep.taken_out += 1
            pool.take_out(ep)
    return pool, name


def _load(ep: Endpoint) -> tuple[bool, float, float, int]:
    """Weighted least-connections: fewest outstanding per weight, then the heavier, then the first.

    An endpoint whose last call timed out comes after every other with a free slot: a
    call that timed out there, sent again, goes where no queue has shown.
    """
    return ep.queueing, ep.outstanding / ep.weight, -ep.weight, ep.order
