"""Errors the summarizer raises, each with a message meant for the person running it.

    SummarizerError                 anything the CLI turns into one line and an exit code
    ├── InputError                  no inputs, a glob that matches nothing, a missing file,
    │                               a setting out of range, an unwritable output folder
    ├── LLMError                    one LLM call failed (after retries, where retryable)
    │   ├── RetryableLLMError       worth another try: 408/409/425/429/5xx, timeouts, resets
    │   │   ├── RateLimitedError    429, with the server's Retry-After when it gave one
    │   │   ├── ConnectError        the endpoint refused or dropped the connection
    │   │   └── MalformedResponseError  200 with a body that is not a chat completion
    │   │       └── EmptyAnswerError    a chat completion without any text (`choices: []` too)
    │   ├── AnswerTooLargeError     an answer past its size cap (bytes, or tokens beyond max_tokens)
    │   └── FatalLLMError           retrying cannot help, so the whole run stops
    │       ├── AuthError           401/403: wrong or missing API key
    │       ├── EndpointError       unreachable endpoint, unknown model, bad base URL,
    │       │                       a web page or other non-API answers before any call worked
    │       └── BatchPendingError   batches are submitted and the run was not to wait for them
    ├── NothingSummarizedError      no input could be summarized (the first reasons in its message)
    ├── CollapseError               the reduce step stopped shrinking the summaries
    ├── BudgetExceededError         the next call could pass --max-cost
    ├── StoreError                  the result store cannot be written
    ├── LockedError                 another run holds the store (or the output folder)
    └── MemoryLimitError            RSS passed --memory-limit-mb

SummarizerError is a RuntimeError and InputError also a ValueError, so that LangGraph
Server passes their messages on to a client (Studio, the SDK) instead of hiding them as
"An internal error occurred".

An HTTP status becomes one of these through one table, `error_for_status`, whether the
built-in client saw it or a foreign SDK's exception carried it (`error_for_exception`,
which also knows the SDKs' timeouts and connection failures).
"""

from __future__ import annotations

import email.utils
import sys
import time
from collections.abc import Callable
from typing import Any


class SummarizerError(RuntimeError):
    """Base class: the message is shown to the user as is."""


class InputError(SummarizerError, ValueError):
    """The inputs named on the command line or in the graph input are unusable."""


class LLMError(SummarizerError):
    """An LLM call failed."""


class RetryableLLMError(LLMError):
    """A failure that another attempt may not repeat."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitedError(RetryableLLMError):
    """The endpoint answered 429."""


class ConnectError(RetryableLLMError):
    """The endpoint could not be reached."""


class MalformedResponseError(RetryableLLMError):
    """The endpoint answered 200 with something that is not a chat completion."""


class EmptyAnswerError(MalformedResponseError):
    """The endpoint answered a chat completion, but with no text in it."""


class AnswerTooLargeError(LLMError):
    """The answer was larger than a call may take; it was read no further than the cap."""


class FatalLLMError(LLMError):
    """A failure that stops the run: every other call would fail the same way."""


class AuthError(FatalLLMError):
    """The endpoint rejected the API key."""


class EndpointError(FatalLLMError):
    """The endpoint cannot be reached or does not serve the model."""


class NothingSummarizedError(SummarizerError):
    """No input could be summarized; `results` holds each input's outcome and reason."""

    NAMED = 3  # inputs named in the message; the rest are counted

    def __init__(self, results: list[dict[str, Any]]) -> None:
        self.results = results
        reasons = "; ".join(f"{r['source']}: {r['status']} ({' '.join(str(r.get('error') or 'no reason given').split())})"
                            for r in results[:self.NAMED])
        more = f"; and {len(results) - self.NAMED} more" if len(results) > self.NAMED else ""
        super().__init__(f"nothing could be summarized: every input failed or was skipped: {reasons}{more}"
                         if results else "nothing could be summarized: no input was found")
class BatchPendingError(FatalLLMError):
    """Batches were submitted, or are still running, and the run was asked not to wait (--no-wait)."""


class CollapseError(SummarizerError):
    """Collapsing the summaries stopped making them shorter."""


class BudgetExceededError(SummarizerError):
    """The run stopped before spending more than its cap."""


class StoreError(SummarizerError):
    """Writing to the result store failed."""


class LockedError(SummarizerError):
    """Another run is using the same result store or output folder."""


class MemoryLimitError(SummarizerError):
    """The process grew past its memory limit."""


# What each HTTP status means for the run; any other 5xx is a server error, anything else a refusal.
_SERVER_ERROR = (RetryableLLMError, "server error (HTTP {status}): {detail}")
_REJECTED_KEY = (AuthError, "the endpoint rejected the API key (HTTP {status}): {detail}")
_BY_STATUS: dict[int, tuple[type[LLMError], str]] = {
    401: _REJECTED_KEY,
    403: _REJECTED_KEY,
    404: (EndpointError, "{where} answered 404 ({detail}); check the base URL (it usually ends in /v1) "
                         "and the model name{model}"),
    408: _SERVER_ERROR,
    409: _SERVER_ERROR,
    425: _SERVER_ERROR,
    429: (RateLimitedError, "rate limited (HTTP 429): {detail}"),
}


def error_for_status(status: int, detail: str, retry_after: float | None = None, *,
                     where: str = "the endpoint", model: str | None = None) -> LLMError:
    """Return the error for an HTTP status other than 200; any 5xx not listed is worth a retry.

    `detail` is what the server said, already redacted; `where` (the URL) and `model`
    only name what to check when the answer is 404.
    """
    kind, template = _BY_STATUS.get(status) or (
        _SERVER_ERROR if status >= 500 else (LLMError, "request refused (HTTP {status}): {detail}"))
    message = template.format(status=status, detail=detail, where=where,
                              model=f" {model!r}" if model else "")
    return kind(message, retry_after) if issubclass(kind, RetryableLLMError) else kind(message)


def retry_after(headers: Any) -> float | None:
    """Return the seconds a server asked to wait (Retry-After, or OpenAI's retry-after-ms), if any."""
    if ms := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):  # neither seconds nor a date: as if the server had not said
        return None
    return max(0.0, when.timestamp() - time.time())


def _status(exc: Exception) -> int | None:
    """The HTTP status an SDK's exception carries (openai's `status_code`, or its response's), if any."""
    for holder in (exc, getattr(exc, "response", None)):
        for name in ("status_code", "status"):
            if isinstance(value := getattr(holder, name, None), int) and value >= 100:
                return value
    return None


def _transport_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """The exception types that mean a timeout, and those that mean no connection.

    An SDK's types count only once it has been imported: an exception cannot come from
    a library nobody loaded. openai's timeout is a kind of its connection error, so
    timeouts are tested first.
    """
    timeouts: list[type[BaseException]] = [TimeoutError]
    connects: list[type[BaseException]] = [ConnectionError]
    if (aiohttp := sys.modules.get("aiohttp")) is not None:
        connects.append(aiohttp.ClientConnectorError)
    if (openai := sys.modules.get("openai")) is not None:
        timeouts.append(openai.APITimeoutError)
        connects.append(openai.APIConnectionError)
    if (httpx := sys.modules.get("httpx")) is not None:
        timeouts.append(httpx.TimeoutException)
        connects.append(httpx.ConnectError)
    return tuple(timeouts), tuple(connects)


def error_for_exception(exc: Exception, redact: Callable[[str], str] | None = None,
                        model: str | None = None) -> LLMError:
    """Map any exception a call raised (the openai SDK's and the like) onto the tree; ours pass as they are."""
    if isinstance(exc, LLMError):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    if redact:  # the SDK's messages carry what the server said, an echoed key included
        text = redact(text)
    if (status := _status(exc)) is not None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
        return error_for_status(status, text, retry_after(headers) if headers is not None else None, model=model)
    timeouts, connects = _transport_errors()
    if isinstance(exc, timeouts):
        return RetryableLLMError("no answer before the timeout")
    if isinstance(exc, connects):
        return ConnectError(text)
    return LLMError(text)
