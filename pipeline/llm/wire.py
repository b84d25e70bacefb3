"""Encode a chat-completion request's JSON body, the run's fixed parts once rather than every call.

A call's body is the same bytes `json.dumps(payload).encode()` gives (aiohttp's `json=`),
built from pieces: the fields every call of a client carries (its `extra_body`, model,
temperature) and the instructions most calls share are encoded once and kept; only the
material and max_tokens are encoded per call. That is a quarter of json.dumps' CPU, and
aiohttp is handed the bytes, so it encodes nothing itself.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

from aiohttp.payload import BytesPayload

from pipeline.prompting import Prompt

# The fields a call sets itself; an `extra_body` that names one of them moves it in json.dumps'
# order (a dict keeps its first position), so such a body is left to json.dumps.
OWN_FIELDS = frozenset({"model", "messages", "temperature", "stream", "max_tokens", "stop"})
_SCALARS = (str, int, float, bool, type(None))  # values a field can hold that cannot change in place
KEPT_INSTRUCTIONS = 16  # distinct system messages kept encoded (a run has a few: map, collapse, final, firmer)


def wire_messages(prompt: Prompt | str) -> list[dict[str, str]]:
    """The chat messages of a prompt: its instructions as the system message, its material as the user's."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if not prompt.system:
        return [{"role": "user", "content": prompt.user}]
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}]


def payload(extra_body: dict[str, Any], model: str, messages: list[dict[str, Any]], temperature: Any,
            max_tokens: Any = None, stop: list[str] | None = None) -> dict[str, Any]:
    """The request of one chat completion, as a dict in the order its fields are sent."""
    body: dict[str, Any] = {**extra_body, "model": model, "messages": messages, "temperature": temperature,
                            "stream": False}
    if max_tokens:
        body["max_tokens"] = max_tokens
    if stop:
        body["stop"] = stop
    return body


def json_body(data: bytes) -> BytesPayload:
    """Hand encoded JSON to aiohttp as its `json=` would: the same bytes and Content-Type."""
    return BytesPayload(data, content_type="application/json", encoding="utf-8")


class RequestEncoder:
    """Encode requests of one client; its fixed fields are compared every call, so a changed one counts.

    An `extra_body` holding a list or an object (which could change in place, unseen by
    the comparison) has its fields encoded anew every call.
    """

    __slots__ = ("_fixed", "_head", "_tail", "_instructions")

    def __init__(self) -> None:
        self._fixed: tuple[Any, ...] | None = None
        self._head = self._tail = ""
        self._instructions: dict[str, str] = {}

    def encode(self, extra_body: dict[str, Any], model: str, temperature: Any, prompt: Prompt | str,
               max_tokens: Any) -> bytes:
        """The body `json.dumps(payload(extra_body, model, wire_messages(prompt), temperature, max_tokens))` gives."""
        # By type and repr, not by ==: 1, 1.0 and True are equal, -0.0 and 0.0 too, and each is written its own way.
        fixed = (model, type(temperature), repr(temperature),
                 *[(type(k), repr(k), type(v), repr(v)) for k, v in extra_body.items()])
        if fixed != self._fixed:
            if not self._prepare(extra_body, model, temperature, fixed):
                return _dumps(payload(extra_body, model, wire_messages(prompt), temperature, max_tokens))
        if type(max_tokens) is not int and max_tokens:  # a bool, a float: as json.dumps writes it
            return _dumps(payload(extra_body, model, wire_messages(prompt), temperature, max_tokens))
        if isinstance(prompt, str):
            messages = '[{"role": "user", "content": ' + encode_basestring_ascii(prompt) + "}]"
        elif not prompt.system:
            messages = '[{"role": "user", "content": ' + encode_basestring_ascii(prompt.user) + "}]"
        else:
            messages = ('[{"role": "system", "content": ' + self._instruction(prompt.system)
                        + '}, {"role": "user", "content": ' + encode_basestring_ascii(prompt.user) + "}]")
        end = ', "max_tokens": ' + str(max_tokens) + "}" if max_tokens else "}"
        return (self._head + messages + self._tail + end).encode("ascii")

    def _prepare(self, extra_body: dict[str, Any], model: str, temperature: Any, fixed: tuple[Any, ...]) -> bool:
        """Encode the fixed fields; False when json.dumps must write the whole body (see OWN_FIELDS)."""
        if not isinstance(model, str) or OWN_FIELDS.intersection(extra_body):
            return False
        head = json.dumps({**extra_body, "model": model})
        self._head = head[:-1] + ', "messages": '
        self._tail = ', "temperature": ' + json.dumps(temperature) + ', "stream": false'
        self._fixed = fixed if all(type(value) in _SCALARS for value in extra_body.values()) else None
        return True

    def _instruction(self, system: str) -> str:
        encoded = self._instructions.get(system)
        if encoded is None:
            if len(self._instructions) >= KEPT_INSTRUCTIONS:
                self._instructions.clear()
            encoded = self._instructions[system] = encode_basestring_ascii(system)
        return encoded


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode("utf-8")
