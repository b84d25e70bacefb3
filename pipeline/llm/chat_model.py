"""A chat model brought by the caller: the model it calls, and the sampling settings its calls carry.

The model's own settings come first. The run adds what the model leaves unset, and only
settings the model has a field for, so that each provider puts them where its API wants
them (ChatOpenAI in the request body, others in their own options): a temperature
only when one is given (the default, 0, is refused by some models, such as OpenAI's
reasoning ones), the seed (0 unless given otherwise) and extra request fields. The
caller's object is never changed; the run calls a copy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sampling:
    """What a chat model's calls carry; None where nothing is sent and the server's own default applies."""

    model: str
    temperature: float | None
    seed: int | None
    extra_body: dict[str, Any] = field(default_factory=dict)


def model_name(model: object) -> str | None:
    """The name of the model `model` calls, as the model gives it (ChatOpenAI's `model_name`), if it gives one."""
    for attribute in ("model_name", "model"):
        name = getattr(model, attribute, None)
        if isinstance(name, str) and name:
            return name
    return None


def _own(model: BaseChatModel, name: str) -> Any:
    """The model's own value of setting `name`: its field, else its `model_kwargs` entry; None if unset."""
    value = getattr(model, name, None) if name in type(model).model_fields else None
    extra = getattr(model, "model_kwargs", None)
    return value if value is not None or not isinstance(extra, dict) else extra.get(name)


def _number(value: Any) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def fit_chat_model(model: BaseChatModel, *, temperature: float | None, seed: int | None,
                   extra_body: dict[str, Any] | None = None) -> tuple[BaseChatModel, Sampling]:
    """Return the model the run calls (`model`, given what it leaves unset) and what its calls carry.

    `temperature` None leaves the model's own; a value the model cannot take, or that it
    sets differently itself, is not sent, and the log says so.
    """
    fields = type(model).model_fields
    update: dict[str, Any] = {}
    for name, wanted in (("temperature", temperature), ("seed", seed)):
        own = _own(model, name)
        if wanted is None or own == wanted:
            continue
        # A temperature here was asked for; the seed always has a value (0 unless given), so
        # that one left out is only noted.
        level = logging.WARNING if name == "temperature" else logging.INFO
        if name not in fields:
            log.log(level, "the chat model (%s) has no %s setting: the run's %s %r is not sent",
                    type(model).__name__, name, name, wanted)
        elif own is not None:
            log.log(level, "the chat model's own %s %r is used, not the run's %r", name, own, wanted)
        else:
            update[name] = wanted
    own_body = getattr(model, "extra_body", None) if "extra_body" in fields else None
    if extra_body and "extra_body" in fields:
        update["extra_body"] = {**extra_body, **(own_body or {})}
    elif extra_body:
        log.warning("the chat model (%s) takes no extra request fields: extra_body is not sent",
                    type(model).__name__)
    called = model.model_copy(update=update) if update else model
    body = getattr(called, "extra_body", None) if "extra_body" in fields else None
    name = model_name(called) or (model.name if isinstance(model.name, str) else None) or type(model).__name__
    return called, Sampling(model=name, temperature=_number(_own(called, "temperature")),
                            seed=_number(_own(called, "seed")), extra_body=dict(body or {}))
