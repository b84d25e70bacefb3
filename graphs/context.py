"""Run settings, passed to the graph as LangGraph runtime context.

The same frozen dataclass serves the CLI, a notebook and LangGraph Server: its JSON
schema is Studio's settings form, and a context that arrives as JSON (`{"concurrency":
"8"}`) is coerced to the declared types, or refused in one line naming the setting.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from langchain_core.language_models.chat_models import BaseChatModel
from pydantic import Field, TypeAdapter, ValidationError
from pydantic.json_schema import SkipJsonSchema

from pipeline.llm.budget import Price, price_for
from pipeline.llm.client import check_base_url
from pipeline.errors import InputError
from pipeline.text.language import check_language
from pipeline.answers.length import parse_length
from pipeline.llm.pool import EndpointSpec, parse_endpoint
from pipeline.secrets import url_credentials

DEFAULT_MODEL = "gpt-4o-mini"

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
    ("ray_actors", True, 1, True),
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


def _about(text: str) -> Any:
    return Field(description=text)


@dataclass(frozen=True, kw_only=True)
class Context:
    """Everything a run needs to know; the CLI, a notebook and the server build it the same way.

    `base_url` (any OpenAI-compatible endpoint), `base_urls` (several, calls spread over
    them: see pipeline.llm.pool), `api_key` alone (OpenAI itself) or
    `chat_model` (any LangChain chat model, which then takes precedence) says where
    summaries come from.
    """

    model: Annotated[str | None, _about("Model name; by default the endpoint's first listed model, "
                                        f"else {DEFAULT_MODEL}")] = None
    # Not in the repr: a URL may carry user:password.
    base_url: Annotated[str | None, _about("OpenAI-compatible base URL, ending in /v1")] = field(default=None,
                                                                                                 repr=False)
    base_urls: Annotated[list[str], _about("Several endpoints, calls spread over them: each a base URL, "
                                           "optionally =weight:W,concurrency:N")] = field(default_factory=list,
                                                                                          repr=False)
    api_key: SkipJsonSchema[str | None] = field(default=None, repr=False)
    chat_model: SkipJsonSchema[BaseChatModel | None] = field(default=None, repr=False, compare=False)
    concurrency: Annotated[int, _about("Most LLM calls in flight")] = 16
    chunk_tokens: Annotated[int, _about("Documents longer than this many tokens are split into chunks")] = 2000
    token_max: Annotated[int, _about("Most tokens one reduce call takes in; summaries are merged until "
                                     "they fit")] = 8000
    language: Annotated[str, _about("Language of the summaries: 'auto' (the documents' own) or a code "
                                    "such as en, ko")] = "auto"
    timeout: Annotated[float, _about("Seconds one LLM call may take")] = 120.0
    max_retries: Annotated[int, _about("Retries of a call after 429/5xx, timeouts and malformed answers")] = 4
    temperature: Annotated[float, _about("Sampling temperature; 0 (the default) answers the same prompt "
                                         "the same way")] = 0.0
    seed: Annotated[int | None, _about("Sampling seed sent with every call, for repeatable answers where the "
                                       "server honours it; null sends none")] = 0
    length: Annotated[str, _about("Length of the final summary: 'auto' (the prompt asks for two bullets "
                                  "per document, 6 to 12), or 'N bullets' or 'N words', held to by cutting bullets")] = "auto"
    cite: Annotated[Literal["docs", "lines"], _about("How bullets name their sources: 'docs' ([D3]) or 'lines' "
                                                     "([D3:12-14], the lines of the document that say it)")] = "docs"
    extra_body: Annotated[dict[str, Any], _about("Extra request fields for the server, e.g. "
                                                 "llama.cpp's repeat_penalty")] = field(default_factory=dict)
    map_max_tokens: Annotated[int, _about("Most tokens of one chunk's summary")] = 400
    final_max_tokens: Annotated[int, _about("Most tokens of the final summary")] = 1200
    memory_limit_mb: Annotated[float | None, _about(
        "Most RSS (MB) the process may reach; calls and documents held are lowered past 85% of the "
        "room above the RSS at start, and the run stops cleanly above it")] = None
    store_path: Annotated[str | None, _about("SQLite result store: finished calls are never paid "
                                             "for twice")] = None
    retry_failed: Annotated[bool, _about("Send again the unchanged documents that failed in an "
                                         "earlier run")] = False
    rpm: Annotated[float | None, _about("Most requests per minute")] = None
    tpm: Annotated[float | None, _about("Most tokens per minute")] = None
    price_in: Annotated[float | None, _about("USD per million prompt tokens")] = None
    price_out: Annotated[float | None, _about("USD per million completion tokens")] = None
    max_cost: Annotated[float | None, _about("Stop before spending more than this many USD")] = None
    dry_run: Annotated[bool, _about("Plan only: count the calls, tokens and cost, call nothing")] = False
    engine: Annotated[Literal["local", "ray"], _about(
        "Where the map phase runs: 'local' (this process) or 'ray' (Ray Data workers; needs the ray "
        "extra); the reduce always runs here")] = "local"
    ray_address: Annotated[str | None, _about("With engine 'ray': the cluster to join (e.g. auto, "
                                              "ray://head:10001); by default a local Ray instance")] = None
    ray_actors: Annotated[int | None, _about("With engine 'ray': actors making the map calls, the "
                                             "concurrency split among them (default: one per CPU)")] = None

    def __post_init__(self) -> None:
        # Every setting must be of its declared type; text (JSON from the server, a form)
        # is converted to it ("8" for 8), anything else is taken only as it is (no True for 1).
        for name, adapter in _adapters().items():
            value = getattr(self, name)
            try:
                coerced = adapter.validate_python(value, strict=not isinstance(value, str))
            except ValidationError as exc:
                problem = exc.errors()[0]["msg"].lower()
                raise InputError(f"{name.replace('_', '-')}: {problem}, got {value!r}") from None
            if coerced is not value:
                object.__setattr__(self, name, coerced)

    def validate(self) -> None:
        """Raise InputError for settings out of range or that cannot work together."""
        if self.chat_model is None and not self.base_url and not self.base_urls and not self.api_key \
                and not self.dry_run:
            raise InputError("no LLM endpoint: set base_url (an OpenAI-compatible /v1 URL, or "
                             "OPENAI_BASE_URL for the server), api_key, or chat_model")
        check_language(self.language)
        parse_length(self.length)
        if self.base_url and self.base_urls:
            raise InputError("give base_url (one endpoint) or base_urls (several), not both")
        for spec in self.endpoints if self.chat_model is None else ():
            check_base_url(spec.url)
            if self.api_key and url_credentials(spec.url):
                raise InputError("the base URL carries credentials (user and password) and an API key is set as well; "
                                 "give one of them (the URL's credentials go as HTTP Basic auth)")
        for name, whole, lowest, inclusive in _RANGES:
            value = getattr(self, name)
            if value is not None:
                check_number(name, value, whole=whole, lowest=lowest, inclusive=inclusive)
        if self.token_max < 4 * self.map_max_tokens:
            raise InputError(f"token max ({self.token_max}) must be at least 4x the per-summary "
                             f"budget ({self.map_max_tokens}) so that collapsing can converge")
        if self.engine == "ray":
            self._check_ray()
        if self.max_cost is not None and self.price is None:
            raise InputError(f"a spending cap needs prices: no known price for model {self.model!r}; "
                             "give --price-in and --price-out (price-in, price-out in a config file; USD per million "
                             "tokens)")

    def _check_ray(self) -> None:
        """Raise InputError unless the ray engine can run these settings."""
        if not ray_installed():
            raise InputError("the ray engine needs Ray, which is not installed: pip install -e '.[ray]'")
        if self.chat_model is not None:
            raise InputError("the ray engine makes its own HTTP calls from its workers: give base_url or "
                             "base_urls (or api_key for OpenAI) rather than chat_model")
        if self.max_cost is not None:
            raise InputError("max-cost is not available with the ray engine: its workers' spending is "
                             "not counted against one cap; leave it out or use the local engine")

    def with_endpoint(self, endpoint: dict[str, Any]) -> Context:
        """Take `endpoint` (base_url, api_key, model: the server's environment) when the run names none.

        All or nothing: a run that names its own endpoint never gets the server's key,
        nor its model.
        """
        if self.base_url or self.base_urls or self.api_key or self.chat_model is not None:
            return self
        given = {k: v for k, v in endpoint.items() if v is not None and not (k == "model" and self.model)}
        return dataclasses.replace(self, **given) if given else self

    @property
    def endpoints(self) -> list[EndpointSpec]:
        """The endpoints named, base_url's or base_urls' (InputError for a bad one)."""
        return [parse_endpoint(u) for u in self.base_urls] if self.base_urls else \
            [EndpointSpec(self.base_url)] if self.base_url else []

    @property
    def price(self) -> Price | None:
        """Prices per million tokens, given or known for the model."""
        return price_for(self.model or DEFAULT_MODEL, self.price_in, self.price_out)

    @property
    def identity(self) -> str:
        """What, besides content and prompt, makes a stored result reusable."""
        model = self.model if self.chat_model is None else repr(self.chat_model._identifying_params)
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.request_body.items()))
        return f"{model}|temperature={self.temperature}|{extra}"

    @property
    def request_body(self) -> dict[str, Any]:
        """Fields every request carries besides the prompt: the seed, then `extra_body`."""
        return self.extra_body if self.seed is None else {"seed": self.seed, **self.extra_body}

    @property
    def collapse_max_tokens(self) -> int:
        """Cap a merged summary at a quarter of the budget, so that two always fit together."""
        return min(self.token_max // 4, self.final_max_tokens)


def ray_installed() -> bool:
    """Whether Ray can be imported (the `ray` extra)."""
    return importlib.util.find_spec("ray") is not None


@functools.cache
def _adapters() -> dict[str, TypeAdapter[Any]]:
    """A validator for each setting (but the chat model, an object), built once."""
    hints = typing.get_type_hints(Context)
    return {f.name: TypeAdapter(hints[f.name]) for f in dataclasses.fields(Context) if f.name != "chat_model"}
