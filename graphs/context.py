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
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from langchain_core.language_models.chat_models import BaseChatModel
from pydantic import Field, TypeAdapter, ValidationError
from pydantic.json_schema import SkipJsonSchema

import prompts
from pipeline.llm.budget import Price, price_for
from pipeline.llm.client import check_base_url
from pipeline.errors import InputError
from pipeline.text.language import check_language
from pipeline.answers.length import parse_length
from pipeline.llm.local_model import LOCAL, TUNING
from pipeline.llm.pool import EndpointSpec, parse_endpoint
from pipeline.secrets import url_credentials
from prompts import Templates

DEFAULT_MODEL = "gpt-4o-mini"
# What a setting left unset (None) becomes for an endpoint; the embedded model has its own (TUNING).
DEFAULTS: dict[str, Any] = {"concurrency": 256, "chunk_tokens": 2000, "token_max": 8000, "temperature": 0.0,
                            "extra_body": {}, "map_max_tokens": 400, "final_max_tokens": 1200}

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
    ("local_threads", True, 1, True),
)
BOUNDS = {name: (whole, lowest, inclusive) for name, whole, lowest, inclusive in _RANGES}


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


# A setting that may be left unset (None) until the run resolves it; Studio's form shows its type alone.
Unset = SkipJsonSchema[None]


def _about(text: str) -> Any:
    return Field(description=text)


@dataclass(frozen=True, kw_only=True)
class Context:
    """Everything a run needs to know; the CLI, a notebook and the server build it the same way.

    `base_url` (any OpenAI-compatible endpoint), `base_urls` (several, calls spread over
    them: see pipeline.llm.pool), `api_key` alone (OpenAI itself) or
    `chat_model` (any LangChain chat model, which then takes precedence) says where
    summaries come from; none of them, or the model `local`, runs the embedded model.
    Settings left None take their default when the run starts (`resolved`): the
    embedded model's own tuning where it runs, else `DEFAULTS`; a chat model keeps its own
    temperature unless one is given (pipeline.llm.chat_model says what it is sent).
    `Context.from_env()` takes the endpoint, key and model from the standard OpenAI
    variables; `Context()` itself reads no environment.
    """

    model: Annotated[str | None, _about("Model name; by default the endpoint's first listed model, "
                                        f"else {DEFAULT_MODEL}; '{LOCAL}' runs the embedded model, as "
                                        "happens when no endpoint, key or chat model is given")] = None
    # Not in the repr: a URL may carry user:password.
    base_url: Annotated[str | None, _about("OpenAI-compatible base URL, ending in /v1")] = field(default=None,
                                                                                                 repr=False)
    base_urls: Annotated[list[str], _about("Several endpoints, calls spread over them: each a base URL, "
                                           "optionally =weight:W,concurrency:N")] = field(default_factory=list,
                                                                                          repr=False)
    api_key: SkipJsonSchema[str | None] = field(default=None, repr=False)
    chat_model: SkipJsonSchema[BaseChatModel | None] = field(default=None, repr=False, compare=False)
    concurrency: Annotated[int | Unset, _about(
        "Most LLM calls in flight (default 256, 1 for the embedded model; for endpoints that all give "
        "their own concurrency, their sum, which a value given here caps); below it the limit finds what "
        "the server can take from its latency (see adapt_concurrency)")] = None
    adapt_concurrency: Annotated[bool, _about("Start a few calls in flight and find the server's capacity from "
                                              "its latency, up to concurrency; false keeps concurrency calls "
                                              "in flight (lowered only after 429s)")] = True
    chunk_tokens: Annotated[int | Unset, _about("Documents longer than this many tokens are split into "
                                                "chunks (default 2000, 800 for the embedded model)")] = None
    token_max: Annotated[int | Unset, _about("Most tokens one reduce call takes in; summaries are merged until "
                                             "they fit (default 8000, 2000 for the embedded model)")] = None
    language: Annotated[str, _about("Language of the summaries: 'auto' (the documents' own) or a code "
                                    "such as en, ko")] = "auto"
    timeout: Annotated[float, _about("Seconds one LLM call may take")] = 120.0
    max_retries: Annotated[int, _about("Retries of a call after 429/5xx, timeouts and malformed answers")] = 4
    temperature: Annotated[float | Unset, _about("Sampling temperature; 0 (the default) answers the same "
                                                 "prompt the same way")] = None
    seed: Annotated[int | None, _about("Sampling seed sent with every call, for repeatable answers where the "
                                       "server honours it; null sends none")] = 0
    length: Annotated[str, _about("Length of the final summary: 'auto' (the prompt asks for two bullets "
                                  "per document, 6 to 12), or 'N bullets' or 'N words', held to by cutting bullets")] = "auto"
    cite: Annotated[Literal["docs", "lines"], _about("How bullets name their sources: 'docs' ([D3]) or 'lines' "
                                                     "([D3:12-14], the lines of the document that say it)")] = "docs"
    extra_body: Annotated[dict[str, Any] | Unset, _about(
        "Extra request fields for the server, e.g. llama.cpp's repeat_penalty (the embedded model "
        "gets repeat_penalty 1.1)")] = None
    map_max_tokens: Annotated[int | Unset, _about("Most tokens of one chunk's summary (default 400, 150 "
                                                  "for the embedded model)")] = None
    final_max_tokens: Annotated[int | Unset, _about("Most tokens of the final summary (default 1200, 500 "
                                                    "for the embedded model)")] = None
    memory_limit_mb: Annotated[float | None, _about(
        "Most RSS (MB) the process may reach; calls and documents held are lowered past 85% of the "
        "room above the RSS at start, and the run stops cleanly above it")] = None
    store_path: Annotated[str | None, _about("SQLite result store: finished calls are never paid "
                                             "for twice")] = None
    retry_failed: Annotated[bool, _about("Send again the unchanged documents that failed in an "
                                         "earlier run")] = False
    store_recover: Annotated[bool, _about("A damaged result store is moved aside and a new one begun "
                                          "(its answers are paid for again), rather than stopping the run")] = False
    rpm: Annotated[float | None, _about("Most requests per minute")] = None
    tpm: Annotated[float | None, _about("Most tokens per minute")] = None
    price_in: Annotated[float | None, _about("USD per million prompt tokens")] = None
    price_out: Annotated[float | None, _about("USD per million completion tokens")] = None
    max_cost: Annotated[float | None, _about("Stop before spending more than this many USD")] = None
    dry_run: Annotated[bool, _about("Plan only: count the calls, tokens and cost, call nothing")] = False
    batch: Annotated[bool, _about("Send the calls as Batch API jobs (/v1/files, /v1/batches): half the price, "
                                  "answered within 24 hours")] = False
    batch_wait: Annotated[bool, _about("With batch: wait for the batches; false submits what is due and stops "
                                       "(a later run collects them)")] = True
    wait_lock: Annotated[bool, _about("Wait for another run using the same store to end, rather than stop")] = False
    engine: Annotated[Literal["local", "ray"], _about(
        "Where the map phase runs: 'local' (this process) or 'ray' (Ray Data workers; needs the ray "
        "extra); the reduce always runs here")] = "local"
    ray_address: Annotated[str | None, _about("With engine 'ray': the cluster to join (e.g. auto, "
                                              "ray://head:10001); by default a local Ray instance")] = None
    ray_actors: Annotated[int | None, _about("With engine 'ray': actors making the map calls, the "
                                             "concurrency split among them (default: one per CPU)")] = None
    local_threads: Annotated[int | None, _about("CPU threads of the embedded model (default: cores - 1)")] = None
    instructions: Annotated[str | None, _about("What the summary is for, in your words; added to the "
                                               "instructions of every step")] = None
    focus: Annotated[str | None, _about("A question or topic the summary should answer")] = None
    prompts_dir: Annotated[str | None, _about("A folder of template files (map.txt, collapse.txt, final.txt, "
                                              "document.txt, summaries.txt, instructions.txt, focus.txt) "
                                              "replacing the package's own")] = None
    text_field: Annotated[str | None, _about("JSON Lines, JSON and CSV inputs: the field holding each record's "
                                             "text (a.b for a nested one); each record is then a document")] = None
    id_field: Annotated[str | None, _about("With text_field: the field shown as each record's id")] = None
    include: Annotated[list[str], _about("Only input files whose name (or path, for a pattern with /) "
                                         "matches one of these globs")] = field(default_factory=list)
    exclude: Annotated[list[str], _about("Input files whose name (or path) matches one of these globs "
                                         "are passed over")] = field(default_factory=list)

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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Context:
        """Build a context whose endpoint, key and model default to OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_MODEL.

        `environ` defaults to os.environ. Each setting given in `overrides` (None leaves it
        unset) wins over its variable on its own, as the OpenAI client takes them: a
        base_url given still gets the environment's key. Several endpoints (`base_urls`) or
        a `chat_model` take the place of the environment's endpoint.
        """
        env = os.environ if environ is None else environ
        given = {k: v for k, v in overrides.items() if v is not None}
        named = {"base_url": env.get("OPENAI_BASE_URL"), "api_key": env.get("OPENAI_API_KEY"),
                 "model": env.get("OPENAI_MODEL")}
        if given.get("base_urls") or given.get("chat_model") is not None:
            named.pop("base_url")
        return cls(**{**{k: v for k, v in named.items() if v}, **given})

    @property
    def names_endpoint(self) -> bool:
        """Whether the run says where its calls go: a base URL, several, a key or a chat model."""
        return bool(self.base_url or self.base_urls or self.api_key or self.chat_model is not None)

    @property
    def local(self) -> bool:
        """Whether the embedded model answers: asked for by name, or nothing else named."""
        return self.chat_model is None and (self.model == LOCAL or not self.names_endpoint)

    def resolved(self) -> Context:
        """This context with every setting left unset given its value: the embedded model's own where it runs.

        The calls in flight follow one rule: a pool whose endpoints all give their own
        concurrency takes their sum, which a concurrency given caps; anything else takes
        the concurrency given, else the default.
        """
        defaults = TUNING if self.local else DEFAULTS
        filled = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        if self.chat_model is not None:  # a chat model keeps its own temperature unless one is given
            filled.pop("temperature", None)
        own = [s.concurrency for s in self.endpoints] if self.base_urls and not self.local else []
        if own and all(own):
            total = sum(c or 0 for c in own)
            filled["concurrency"] = total if self.concurrency is None else min(self.concurrency, total)
        if filled.get("concurrency", self.concurrency) == self.concurrency:
            filled.pop("concurrency", None)
        return dataclasses.replace(self, **filled) if filled else self

    def validate(self) -> None:
        """Raise InputError for settings out of range or that cannot work together (unset ones as resolved)."""
        context = self.resolved()
        check_language(context.language)
        parse_length(context.length)
        if context.base_url and context.base_urls:
            raise InputError("give base_url (one endpoint) or base_urls (several), not both")
        for spec in context.endpoints if context.chat_model is None else ():
            check_base_url(spec.url)
            if context.api_key and url_credentials(spec.url):
                raise InputError("the base URL carries credentials (user and password) and an API key is set as well; "
                                 "give one of them (the URL's credentials go as HTTP Basic auth)")
        for name, whole, lowest, inclusive in _RANGES:
            value = getattr(context, name)
            if value is not None:
                check_number(name, value, whole=whole, lowest=lowest, inclusive=inclusive)
        if context.token_max < 4 * context.map_max_tokens:
            raise InputError(f"token max ({context.token_max}) must be at least 4x the per-summary "
                             f"budget ({context.map_max_tokens}) so that collapsing can converge")
        if context.engine == "ray":
            context._check_ray()
        if context.batch:
            context._check_batch()
        context.templates()  # a prompts folder that cannot be used stops the run before it starts

    def check_spending_cap(self) -> None:
        """Raise InputError for a spending cap without prices (the model named, as the run resolved it)."""
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

    def templates(self) -> Templates:
        """The prompt templates of a run, the reader's instructions and focus in them (InputError if unusable)."""
        return prompts.load(self.prompts_dir, instructions=self.instructions, focus=self.focus)

    def _check_batch(self) -> None:
        """Raise InputError unless batch calls can run with these settings."""
        if self.chat_model is not None or self.base_urls or self.engine == "ray":
            raise InputError("batch calls go to one OpenAI-compatible endpoint's Batch API: give base_url (or "
                             "api_key for OpenAI), not chat_model, several base URLs or the ray engine")
        if not self.batch_wait and not self.store_path:
            raise InputError("not waiting for batches needs a result store to find them again: give --out or --store")
    @property
    def endpoints(self) -> list[EndpointSpec]:
        """The endpoints named, base_url's or base_urls' (InputError for a bad one)."""
        return [parse_endpoint(u) for u in self.base_urls] if self.base_urls else \
            [EndpointSpec(self.base_url)] if self.base_url else []

    @property
    def price(self) -> Price | None:
        """Prices per million tokens, given or known for the model; half of them for batch calls."""
        price = price_for(self.model or "", self.price_in, self.price_out)
        return price.batch() if price is not None and self.batch else price

    @property
    def identity(self) -> str:
        """What, besides content and prompt, makes a stored result reusable."""
        model = self.model if self.chat_model is None else repr(self.chat_model._identifying_params)
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.request_body.items()))
        return f"{model}|temperature={self.temperature}|{extra}"

    @property
    def request_body(self) -> dict[str, Any]:
        """Fields every request carries besides the prompt: the seed, then `extra_body`."""
        extra = self.extra_body or {}
        return extra if self.seed is None else {"seed": self.seed, **extra}

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
