"""Run settings, passed to the graph as LangGraph runtime context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.budget import Price, price_for
from pipeline.errors import InputError

if TYPE_CHECKING:
    from langchain_core.language_models.chat_models import BaseChatModel

    from pipeline.progress import Progress
    from pipeline.summarize import DocResult


@dataclass(frozen=True, kw_only=True)
class Context:
    """Everything a run needs to know; the CLI and a notebook build it the same way.

    Either `base_url` (any OpenAI-compatible endpoint) or `chat_model` (any LangChain
    chat model, which then takes precedence) says where summaries come from.
    """

    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    chat_model: BaseChatModel | None = field(default=None, repr=False)
    concurrency: int = 16
    chunk_tokens: int = 2000
    token_max: int = 8000
    language: str = "auto"
    timeout: float = 120.0
    max_retries: int = 4
    temperature: float = 0.2
    extra_body: dict[str, Any] = field(default_factory=dict)  # e.g. llama.cpp's repeat_penalty
    map_max_tokens: int = 400
    final_max_tokens: int = 1200
    memory_limit_mb: float | None = None
    store_path: str | None = None
    retry_failed: bool = False
    rpm: float | None = None
    tpm: float | None = None
    price_in: float | None = None
    price_out: float | None = None
    max_cost: float | None = None
    progress: Progress | None = field(default=None, repr=False, compare=False)
    on_result: Callable[[DocResult], None] | None = field(default=None, repr=False, compare=False)
    on_stats: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False, compare=False)

    def validate(self) -> None:
        """Raise InputError for settings that cannot work together."""
        if self.chat_model is None and not self.base_url:
            raise InputError("no LLM endpoint: set base_url (an OpenAI-compatible /v1 URL) or chat_model")
        if self.concurrency < 1:
            raise InputError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.chunk_tokens < 64:
            raise InputError(f"chunk tokens must be at least 64, got {self.chunk_tokens}")
        if self.token_max < 4 * self.map_max_tokens:
            raise InputError(f"token max ({self.token_max}) must be at least 4x the per-summary "
                             f"budget ({self.map_max_tokens}) so that collapsing can converge")
        if self.max_cost is not None and self.price is None:
            raise InputError(f"a spending cap needs prices: no known price for model {self.model!r}; "
                             "give price_in and price_out (USD per million tokens)")
        if self.timeout <= 0:
            raise InputError(f"timeout must be positive, got {self.timeout}")

    @property
    def price(self) -> Price | None:
        """Prices per million tokens, given or known for the model."""
        return price_for(self.model, self.price_in, self.price_out)

    @property
    def identity(self) -> str:
        """What, besides content and prompt, makes a stored result reusable."""
        model = self.model if self.chat_model is None else repr(self.chat_model._identifying_params)
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.extra_body.items()))
        return f"{model}|temperature={self.temperature}|{extra}"

    @property
    def collapse_max_tokens(self) -> int:
        """Cap a merged summary at a quarter of the budget, so that two always fit together."""
        return min(self.token_max // 4, self.final_max_tokens)
