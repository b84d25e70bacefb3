"""Errors the summarizer raises, each with a message meant for the person running it.

    SummarizerError                 anything the CLI turns into one line and an exit code
    ├── InputError                  no inputs, a glob that matches nothing, a missing file,
    │                               a setting out of range, an unwritable output folder
    ├── LLMError                    one LLM call failed (after retries, where retryable)
    │   ├── RetryableLLMError       worth another try: 408/409/429/5xx, timeouts, resets
    │   │   ├── RateLimitedError    429, with the server's Retry-After when it gave one
    │   │   ├── ConnectError        the endpoint refused or dropped the connection
    │   │   └── MalformedResponseError  200 with a body that is not a chat completion
    │   │       └── EmptyAnswerError    a chat completion without any text
    │   └── FatalLLMError           retrying cannot help, so the whole run stops
    │       ├── AuthError           401/403: wrong or missing API key
    │       └── EndpointError       unreachable endpoint, unknown model, bad base URL,
    │                               a web page or other non-API answers before any call worked
    ├── CollapseError               the reduce step stopped shrinking the summaries
    ├── BudgetExceededError         the next call could pass --max-cost
    ├── StoreError                  the result store cannot be written
    └── MemoryLimitError            RSS passed --memory-limit-mb
"""

from __future__ import annotations


class SummarizerError(Exception):
    """Base class: the message is shown to the user as is."""


class InputError(SummarizerError):
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


class FatalLLMError(LLMError):
    """A failure that stops the run: every other call would fail the same way."""


class AuthError(FatalLLMError):
    """The endpoint rejected the API key."""


class EndpointError(FatalLLMError):
    """The endpoint cannot be reached or does not serve the model."""


class CollapseError(SummarizerError):
    """Collapsing the summaries stopped making them shorter."""


class BudgetExceededError(SummarizerError):
    """The run stopped before spending more than its cap."""


class StoreError(SummarizerError):
    """Writing to the result store failed."""


class MemoryLimitError(SummarizerError):
    """The process grew past its memory limit."""
