"""Make LLM calls for the pipeline: bounded concurrency, retries, timeouts and accounting.

Works with any LangChain chat model; the semaphore here, not the model, bounds how many
calls are in flight, so a model brought by the caller is held to the same limit.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from dataclasses import dataclass, field

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import HumanMessage

from pipeline.errors import (
    AuthError,
    ConnectError,
    EndpointError,
    FatalLLMError,
    LLMError,
    MalformedResponseError,
    RateLimitedError,
    RetryableLLMError,
)
from pipeline.memory import MemoryGuard
from pipeline.progress import NoProgress, Progress
from pipeline.tokens import TokenCounter

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 20.0
RETRY_AFTER_CAP_S = 120.0


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
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    succeeded: int = 0


def _classify(exc: Exception) -> LLMError:
    """Map a foreign model's exception (openai SDK and the like) onto our error tree."""
    if isinstance(exc, LLMError):
        return exc
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    name = type(exc).__name__
    text = f"{name}: {exc}"
    if status in (401, 403) or "Authentication" in name or "PermissionDenied" in name:
        return AuthError(f"the endpoint rejected the API key ({text})")
    if status == 404 or "NotFound" in name:
        return EndpointError(f"the endpoint or model was not found ({text})")
    if status == 429 or "RateLimit" in name:
        return RateLimitedError(text)
    if "Connection" in name:
        return ConnectError(text)
    if isinstance(exc, TimeoutError) or "Timeout" in name or (isinstance(status, int) and status >= 500):
        return RetryableLLMError(text)
    return LLMError(text)


class LLMRunner:
    """Run prompts through one chat model with a semaphore, retries and counters."""

    def __init__(self, model: BaseChatModel, *, concurrency: int, timeout: float, max_retries: int,
                 count_tokens: TokenCounter, memory: MemoryGuard | None = None,
                 progress: Progress | None = None) -> None:
        self.model = model
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.count_tokens = count_tokens
        self.memory = memory or MemoryGuard(None)
        self.progress = progress or NoProgress()
        self.stats = CallStats()
        self._semaphore = asyncio.Semaphore(concurrency)

    async def complete(self, step: str, prompt: str, max_tokens: int, phase: str) -> Completion:
        """Answer one prompt, retrying what is worth retrying; count the call under `step`."""
        try:
            return await self._complete(step, prompt, max_tokens)
        except LLMError:
            self.stats.failed_calls[step] += 1
            raise
        finally:
            self.progress.advance(phase)

    async def _complete(self, step: str, prompt: str, max_tokens: int) -> Completion:
        stats = self.stats
        for attempt in range(self.max_retries + 1):
            await self.memory.admit()
            try:
                async with self._semaphore:
                    stats.in_flight += 1
                    stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
                    stats.calls[step] += 1
                    try:
                        async with asyncio.timeout(self.timeout):
                            message = await self.model.ainvoke([HumanMessage(content=prompt)],
                                                               max_tokens=max_tokens)
                    finally:
                        stats.in_flight -= 1
                text = message.content if isinstance(message.content, str) else message.text
                if not text.strip():
                    raise MalformedResponseError("the model returned an empty answer")
            except Exception as raw:  # noqa: BLE001 - classified just below
                exc = _classify(raw)
                if isinstance(exc, FatalLLMError):
                    raise exc from raw
                if not isinstance(exc, RetryableLLMError) and not isinstance(raw, TimeoutError):
                    raise exc from raw
                if attempt == self.max_retries:
                    if isinstance(exc, ConnectError) and not stats.succeeded:
                        raise EndpointError(f"{exc} (is the server running? check --base-url)") from raw
                    raise exc from raw
                stats.retries += 1
                delay = self._backoff(attempt, getattr(exc, "retry_after", None))
                log.debug("%s call failed (%s); retry %d in %.2fs", step, exc, attempt + 1, delay)
                await asyncio.sleep(delay)
                continue
            stats.succeeded += 1
            usage = getattr(message, "usage_metadata", None) or {}
            tokens_in = usage.get("input_tokens") or self.count_tokens(prompt)
            tokens_out = usage.get("output_tokens") or self.count_tokens(text)
            stats.prompt_tokens += tokens_in
            stats.completion_tokens += tokens_out
            return Completion(text.strip(), tokens_in, tokens_out)
        raise AssertionError("unreachable: the retry loop returns or raises")

    @staticmethod
    def _backoff(attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP_S) + random.uniform(0, 0.1)
        return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
