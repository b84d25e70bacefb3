"""Run settings, passed to the graph as LangGraph runtime context."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.budget import Price, price_for
from pipeline.client import check_base_url
from pipeline.errors import InputError
from pipeline.secrets import url_credentials

if TYPE_CHECKING:
    from langchain_core.language_models.chat_models import BaseChatModel

    from pipeline.progress import Progress
    from pipeline.summarize import DocResult

# The numeric settings: (name, whole number?, lowest value, is the lowest allowed?). Checked
# here, not only by the command line: a config file or a notebook passes values unchecked.
_RANGES = (
    ("concurrency", True, 1, True),
    ("chunk_tokens", True, 64, True),
    ("token_max", True, 1, True),
    ("map_max_tokens", True, 1, True),
    ("final_max_tokens", True, 1, True),
    ("max_retries", True, 0, True),
    ("timeout", False, 0, False),
    ("temperature", False, 0, True),
    ("rpm", False, 0, False),
    ("tpm", False, 0, False),
    ("price_in", False, 0, True),
    ("price_out", False, 0, True),
    ("max_cost", False, 0, True),
    ("memory_limit_mb", False, 0, False),
)


def check_number(name: str, value: object, *, whole: bool, lowest: float, inclusive: bool) -> None:
    """Raise InputError unless `value` is a finite number (whole if asked) at or above `lowest`."""
    shown = name.replace("_", "-")
    kind = "a whole number" if whole else "a number"
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        raise InputError(f"{shown} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise InputError(f"{shown} must be a finite number, got {value!r}")
    if value < lowest or (value == lowest and not inclusive):
        bound = f"at least {lowest:g}" if inclusive else f"more than {lowest:g}"
        raise InputError(f"{shown} must be {bound}, got {value!r}")


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
        if self.chat_model is None and self.base_url:
            check_base_url(self.base_url)
            if self.api_key and url_credentials(self.base_url):
                raise InputError("the base URL carries a user:password and an API key is set as well; "
                                 "give one of them (the URL's credentials go as HTTP Basic auth)")
        for name, whole, lowest, inclusive in _RANGES:
            value = getattr(self, name)
            if value is not None:
                check_number(name, value, whole=whole, lowest=lowest, inclusive=inclusive)
        if self.token_max < 4 * self.map_max_tokens:
            raise InputError(f"token max ({self.token_max}) must be at least 4x the per-summary "
                             f"budget ({self.map_max_tokens}) so that collapsing can converge")
        if self.max_cost is not None and self.price is None:
            raise InputError(f"a spending cap needs prices: no known price for model {self.model!r}; "
                             "give price_in and price_out (USD per million tokens)")

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
