"""Turn call settings into a run's chat client and its call runner: the one way every engine builds them.

The local run builds them once per run (graphs/resources.py), each Ray call actor once
for its share of the run (pipeline/ray/calls.py); both from a `ChatSettings`.

    endpoints (several) ─▶ EndpointPool, a session per endpoint
    base_url            ─▶ OpenAICompatChat over one pooled aiohttp session
    an API key alone    ─▶ ChatOpenAI, OpenAI's own endpoint
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from pipeline.llm.budget import Budget, Price
from pipeline.llm.client import OpenAICompatChat, open_session, probe_endpoint
from pipeline.llm.limits import START, AdaptiveLimit, RateLimit
from pipeline.llm.memory_guard import MemoryGuard
from pipeline.llm.pool import EndpointPool, EndpointSpec, open_pool
from pipeline.llm.runner import CallLimits, LLMRunner
from pipeline.progress import Progress
from pipeline.result_store import ResultStore
from pipeline.text.counting import token_counter


OPENAI_BASE_URL = "https://api.openai.com/v1"  # where a key alone sends calls, as ChatOpenAI does

@dataclass(frozen=True)
class ChatSettings:
    """Where the calls go and what limits them; plain data, so that Ray can hand it to its actors."""

    model: str | None  # None: the endpoint's first listed model, else default_model
    default_model: str
    base_url: str | None = dataclasses.field(repr=False)  # it may carry user:password
    endpoints: list[EndpointSpec]  # several: an endpoint pool (base_url is then None)
    api_key: SecretStr | None = dataclasses.field(repr=False)  # SecretStr: never shown, even by Ray
    concurrency: int
    timeout: float
    max_retries: int
    temperature: float
    seed: int | None  # sent by ChatOpenAI; the other clients carry it in request_body
    request_body: dict[str, Any]
    identity: str  # what makes a stored answer reusable (see Context.identity)
    rpm: float | None = None
    tpm: float | None = None
    price: Price | None = None
    max_cost: float | None = None
    adapt: bool = False  # start low and find each server's capacity from its latency (limits.AdaptiveLimit)


async def open_chat(settings: ChatSettings, stack: AsyncExitStack, *, probe: bool = True,
                    on_read: Callable[[int], None] | None = None) -> tuple[Any, str]:
    """Open the chat client the settings ask for, closed by `stack`; return it and its model's name.

    With `probe`, a single endpoint is asked for its models first (a refused key or a dead
    server fails here, before any document is read); a pool always probes its endpoints.
    `on_read` hears the size of every answer body as it is read (the memory guard's view).
    """
    s = settings
    key = s.api_key.get_secret_value() if s.api_key else None
    if s.endpoints:
        pool, name = await open_pool(s.endpoints, concurrency=s.concurrency, timeout=s.timeout, api_key=key,
                                     model=s.model, default_model=s.default_model, temperature=s.temperature,
                                     extra_body=s.request_body, adapt=s.adapt)
        stack.push_async_callback(pool.aclose)
        return pool, name
    if s.base_url:
        session = open_session(s.concurrency, s.timeout)
        stack.push_async_callback(session.close)
        listed = await probe_endpoint(s.base_url, key, session=session) if probe else []
        name = s.model or (listed[0] if listed else s.default_model)
        return OpenAICompatChat(model=name, base_url=s.base_url, api_key=s.api_key, temperature=s.temperature,
                                extra_body=s.request_body, session=session, on_read=on_read), name
    # A key alone means OpenAI itself, through langchain-openai and its own endpoint.
    from langchain_openai import ChatOpenAI

    name = s.model or s.default_model
    return ChatOpenAI(model=name, api_key=s.api_key or SecretStr(""), temperature=s.temperature, seed=s.seed,
                      timeout=s.timeout, max_retries=0), name  # the runner retries, with backoff and adaptive concurrency


def calls_in_flight(concurrency: int, model: Any) -> int:
    """The most calls the runner lets out at once: `concurrency`, and for a pool no more than its endpoints take."""
    return min(concurrency, model.concurrency) if isinstance(model, EndpointPool) else concurrency


def make_runner(model: Any, settings: ChatSettings, name: str, *, store: ResultStore | None = None,
                memory: MemoryGuard | None = None, progress: Progress | None = None) -> LLMRunner:
    """The runner of `model`'s calls (named `name`) with the settings' limits, writing to `store`."""
    s = settings
    limits = CallLimits(rpm=RateLimit(s.rpm, "rpm") if s.rpm else None, tpm=RateLimit(s.tpm, "tpm") if s.tpm else None,
                        budget=Budget(s.price, s.max_cost) if s.price else None, memory=memory)
    # A pool's endpoints each find their own server's knee; a single endpoint's is found here.
    adapt = s.adapt and not isinstance(model, EndpointPool)
    limit = AdaptiveLimit(calls_in_flight(s.concurrency, model), start=START if adapt else None)
    return LLMRunner(model, concurrency=limit, timeout=s.timeout,
                     max_retries=s.max_retries, count_tokens=token_counter(name), limits=limits, store=store,
                     progress=progress, identity=s.identity)
