"""Make LLM calls for the pipeline: bounded concurrency, retries, timeouts and accounting.

Works with any LangChain chat model; the limit here, not the model, bounds how many
calls are in flight, so a model brought by the caller is held to the same limit. Every
call goes through one `ChatCaller`: the built-in client is one itself, and
`ChatModelCaller` makes one of any other chat model.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langsmith.utils import tracing_is_enabled

from pipeline.llm.chat_model import model_name
from pipeline.llm.client import OpenAICompatChat, Usage
from pipeline.errors import (
    ConnectError,
    EmptyAnswerError,
    EndpointError,
    FatalLLMError,
    LLMError,
    MalformedResponseError,
    RateLimitedError,
    RetryableLLMError,
    error_for_exception,
)
from pipeline.llm.budget import Budget
from pipeline.llm.limits import AdaptiveLimit, RateLimit, call_work, timed_out
from pipeline.llm.memory_guard import MemoryGuard
from pipeline.progress import NoProgress, Progress
from pipeline.prompting import Prompt
from pipeline.secrets import Redactor, credential_secrets
from pipeline.result_store import ResultStore, call_key
from pipeline.text.counting import TokenCounter

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 20.0
RETRY_AFTER_CAP_S = 120.0

STEPS = ("map", "collapse", "final")  # what calls are counted under
# The counters that add up across runners (the Ray actors' into the run's).
SUMMED = ("retries", "rate_limited", "prompt_tokens", "completion_tokens", "succeeded", "malformed")


@dataclass(frozen=True, slots=True)
class Completion:
    """The text of one answer and the tokens it cost."""

    text: str
    tokens_in: int
    tokens_out: int


@dataclass
class CallStats:
    """Counters over every call of a run."""

    calls: Counter[str] = field(default_factory=Counter)
    failed_calls: Counter[str] = field(default_factory=Counter)
    from_store: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    rate_limited: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    succeeded: int = 0
    malformed: int = 0  # answers that were not chat completions at all
    unanswered: int = 0  # calls sent whose answers the run stopped before reading (Ctrl-C, SIGTERM, a fatal error)
    answers: Counter[str] = field(default_factory=Counter)  # what the answer checks did (pipeline/answers/checks.py)
    citations: Counter[str] = field(default_factory=Counter)  # what the tag checks did (pipeline/answers/attribution.py)


@dataclass(frozen=True, slots=True)
class CallLimits:
    """Optional limits on a run's calls beyond the concurrency: rates, spending, memory."""

    rpm: RateLimit | None = None
    tpm: RateLimit | None = None
    budget: Budget | None = None
    memory: MemoryGuard | None = None


def _drop_cut_line(text: str) -> str:
    """Drop the last line of an answer cut off by max_tokens, unless it is the only one."""
    lines = text.rstrip().splitlines()
    return "\n".join(lines[:-1]) if len(lines) > 1 else text


def _count_prompt(count: TokenCounter, prompt: Prompt | str) -> int:
    return count(prompt) if isinstance(prompt, str) else count(prompt.system) + count(prompt.user)


def _model_secrets(model: object) -> list[str]:
    """The key and URL credentials a chat model holds (ours or ChatOpenAI's), to hide from messages."""
    found: list[str] = []
    for member in getattr(model, "chats", ()):  # a pool's endpoints
        found += _model_secrets(member)
    for key_field, url_field in (("api_key", "base_url"), ("openai_api_key", "openai_api_base")):
        key, url = getattr(model, key_field, None), getattr(model, url_field, None)
        key = key.get_secret_value() if hasattr(key, "get_secret_value") else key
        found += credential_secrets(key if isinstance(key, str) else None, url if isinstance(url, str) else None)
    return found


class ChatCaller(Protocol):
    """Answer one prompt with its text and usage: what the runner needs of a model.

    A `Prompt` is sent as a system message (its instructions) and a user message (its
    material); a plain string as one user message.
    """

    async def acomplete(self, prompt: Prompt | str, max_tokens: int) -> tuple[str, Usage]: ...


class ChatModelCaller:
    """Call any LangChain chat model through `ainvoke`, so that callbacks and tracing see each call."""

    def __init__(self, model: BaseChatModel, timeout: float) -> None:
        self.model = model
        self.timeout = timeout

    async def acomplete(self, prompt: Prompt | str, max_tokens: int,
                        timeout: float | None = None) -> tuple[str, Usage]:
        """Answer one prompt within `timeout` (default: the run's); read usage and finish reason off the message."""
        messages: list[BaseMessage] = [HumanMessage(content=prompt)] if isinstance(prompt, str) else [
            *([SystemMessage(content=prompt.system)] if prompt.system else []), HumanMessage(content=prompt.user)]
        async with asyncio.timeout(timeout or self.timeout):
            message = await self.model.ainvoke(messages, max_tokens=max_tokens)
        text = message.content if isinstance(message.content, str) else message.text
        usage = getattr(message, "usage_metadata", None) or {}
        return text, {"input_tokens": int(usage.get("input_tokens") or 0),
                      "output_tokens": int(usage.get("output_tokens") or 0),
                      "finish_reason": message.response_metadata.get("finish_reason")}


def chat_caller(model: BaseChatModel | ChatCaller, timeout: float) -> ChatCaller:
    """Return how the runner calls `model`: the built-in client directly, anything else through `ainvoke`.

    The built-in client skips `BaseChatModel.ainvoke` (callback managers, run ids, message
    objects: most of a call's client CPU), and its session's ClientTimeout(total=timeout)
    already bounds each call; with LangSmith tracing on it goes through `ainvoke` too, so
    that the traces show its calls. A plain ChatCaller (no chat model) is used as it is.
    """
    if isinstance(model, OpenAICompatChat) and model.session is not None and not tracing_is_enabled():
        return model
    if isinstance(model, BaseChatModel):
        return ChatModelCaller(model, timeout)
    return model


class LLMRunner:
    """Run prompts through one chat model with bounded concurrency, retries, a store and counters."""

    def __init__(self, model: BaseChatModel | ChatCaller, *, concurrency: int | AdaptiveLimit, timeout: float,
                 max_retries: int, count_tokens: TokenCounter, limits: CallLimits | None = None,
                 store: ResultStore | None = None, progress: Progress | None = None,
                 identity: str = "") -> None:
        self.model = model
        self.identity = identity
        self.timeout = timeout
        self.max_retries = max_retries
        self.count_tokens = count_tokens
        self.limits = limits or CallLimits()
        # Whether a call may have to wait before it is sent (rates, spending); otherwise it never does.
        self._waits = bool(self.limits.rpm or self.limits.tpm or self.limits.budget)
        self.memory = self.limits.memory or MemoryGuard(None)
        self.store = store
        self.progress = progress or NoProgress()
        self.stats = CallStats()
        self.concurrency = concurrency if isinstance(concurrency, AdaptiveLimit) else AdaptiveLimit(concurrency)
        self.memory.watch("concurrency", self.concurrency)
        self.caller = chat_caller(model, timeout)
        # Callers that take a timeout per call get one scaled to what the server has shown (a pool
        # scales each endpoint's itself; a batch's calls wait for hours by design).
        self._timed = isinstance(self.caller, (OpenAICompatChat, ChatModelCaller))
        self._redact = Redactor(_model_secrets(model))
        self._model_name = model_name(model)  # named in a 404's message
        self._fatal: FatalLLMError | None = None  # once one call has stopped the run, no other is sent

    async def complete(self, step: str, prompt: Prompt | str, max_tokens: int, phase: str,
                       key: str | None = None) -> Completion:
        """Answer one prompt, retrying what is worth retrying; count the call under `step`.

        With a `key` and a store, a stored answer is returned without a call, and a
        new answer is stored the moment it arrives. Progress counts the call once it has
        an answer, from the store or not, or has failed; a cancelled call is not done.
        """
        store = self.store
        if key is not None and store is not None and (
                hit := store.get(key) if not store.off_loop else await store.aget(key)):
            self.stats.from_store[step] += 1
            self.progress.advance(phase)
            return Completion(hit.text, hit.tokens_in, hit.tokens_out)
        try:
            done = await self._complete(step, prompt, max_tokens)
        except LLMError:
            self.stats.failed_calls[step] += 1
            self.progress.advance(phase)
            raise
        if key is not None and store is not None:
            store.put(key, step, done.text, done.tokens_in, done.tokens_out)  # (queued, where the store has a thread)
        self.progress.advance(phase)
        return done

    def key(self, step: str, max_tokens: int, *material: str) -> str | None:
        """The store key of a call, or None when there is no store."""
        return None if self.store is None else call_key(step, self.identity, max_tokens, *material)

    async def _admit(self, prompt: Prompt | str, max_tokens: int) -> float:
        """Wait for memory and rate limits; reserve the call's worst-case cost."""
        limits = self.limits
        self.memory.admit()  # never waits: under pressure it lowers the limits instead
        estimate = _count_prompt(self.count_tokens, prompt) if limits.tpm or limits.budget else 0
        reserved = await limits.budget.reserve(estimate, max_tokens) if limits.budget else 0.0
        if limits.rpm:
            await limits.rpm.take(1)
        if limits.tpm:
            await limits.tpm.take(estimate + max_tokens)
        return reserved

    async def _complete(self, step: str, prompt: Prompt | str, max_tokens: int) -> Completion:
        stats, budget, limit = self.stats, self.limits.budget, self.concurrency
        work = call_work(prompt, max_tokens)
        scaled = True  # until a call times out: its retries get the whole --timeout
        for attempt in range(self.max_retries + 1):
            if self._waits:
                reserved = await self._admit(prompt, max_tokens)
            else:  # no coroutine to make and await: the memory guard alone never waits
                self.memory.admit()
                reserved = 0.0
            started = time.perf_counter()
            try:
                async with self.concurrency:
                    if self._fatal is not None:
                        raise type(self._fatal)(str(self._fatal))
                    stats.in_flight += 1
                    stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
                    stats.calls[step] += 1
                    timeout = limit.call_timeout(work, self.timeout, max_tokens) \
                        if self._timed and scaled else self.timeout
                    started = time.perf_counter()
                    try:
                        if timeout < self.timeout:  # otherwise the session's own, the run's, applies
                            timed: OpenAICompatChat | ChatModelCaller = self.caller  # type: ignore[assignment]
                            text, usage = await timed.acomplete(prompt, max_tokens, timeout=timeout)
                        elif not scaled and getattr(self.caller, "scales_timeouts", False):  # a pool
                            text, usage = await self.caller.acomplete(prompt, max_tokens, scaled=False)
                        else:
                            text, usage = await self.caller.acomplete(prompt, max_tokens)
                    except asyncio.CancelledError:
                        stats.unanswered += 1  # sent, and perhaps answered and billed, but never read
                        raise
                    finally:
                        stats.in_flight -= 1
                if not text.strip():
                    raise EmptyAnswerError("the model returned an empty answer")
            except Exception as raw:  # noqa: BLE001 - classified just below
                if budget:
                    await budget.settle(reserved)
                exc = error_for_exception(raw, self._redact.text, self._model_name)
                self.concurrency.on_failure(raw)
                if timed_out(raw):
                    # The server may only be slower for now: what the call waited counts as a latency
                    # seen, and its retries may take the whole --timeout.
                    limit.saw(time.perf_counter() - started, work, max_tokens)
                    scaled = False
                if isinstance(exc, RateLimitedError):
                    stats.rate_limited += 1
                    self.concurrency.on_rate_limited()
                if isinstance(exc, FatalLLMError):
                    raise self._stop(exc) from raw
                if not isinstance(exc, RetryableLLMError):
                    raise exc from raw
                # Before any call has worked, a dead endpoint, or one that answers something other
                # than chat completions (a web page), would fail every document alike. Malformed
                # answers count over the whole run, so that the calls in flight beside this one
                # do not each spend their own retries on it.
                if not isinstance(exc, EmptyAnswerError) and isinstance(exc, MalformedResponseError):
                    stats.malformed += 1
                    if not stats.succeeded and stats.malformed > self.max_retries:
                        raise self._stop(EndpointError(
                            f"{exc} ({stats.malformed} answers and none usable, so the run stops here)")) from raw
                if attempt >= self.max_retries:
                    if isinstance(exc, ConnectError) and not stats.succeeded:
                        raise self._stop(EndpointError(f"{exc} (is the server running? check --base-url)")) from raw
                    raise exc from raw
                stats.retries += 1
                delay = self._backoff(attempt, exc.retry_after)
                log.debug("%s call failed (%s); retry %d in %.2fs", step, exc, attempt + 1, delay)
                await asyncio.sleep(delay)
                continue
            stats.succeeded += 1
            limit.on_success(time.perf_counter() - started, work, kind=max_tokens)
            tokens_in = usage.get("input_tokens") or _count_prompt(self.count_tokens, prompt)
            tokens_out = usage.get("output_tokens") or self.count_tokens(text)
            if budget:
                await budget.settle(reserved, tokens_in, tokens_out)
            stats.prompt_tokens += tokens_in
            stats.completion_tokens += tokens_out
            if usage.get("finish_reason") == "length":
                text = _drop_cut_line(text)
            return Completion(text.strip(), tokens_in, tokens_out)
        raise AssertionError("unreachable: the retry loop returns or raises")

    def _stop(self, exc: FatalLLMError) -> FatalLLMError:
        """Remember the first error that stops the run, so that no further call is sent; return `exc`."""
        self._fatal = self._fatal or exc
        return exc

    @staticmethod
    def _backoff(attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP_S) + random.uniform(0, 0.1)
        return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
