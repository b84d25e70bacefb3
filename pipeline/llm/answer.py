"""Read what an OpenAI-compatible server answers: a chat completion, or its list of models.

Servers that call themselves OpenAI-compatible differ in what they leave out or get
wrong: `usage` missing, null, a string, or with counts that are not numbers; `choices`
empty; a model list of any shape. Whatever the body, reading it either gives an answer
or raises an error of the pipeline's tree (pipeline/errors.py), never anything else.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from pipeline.errors import AnswerTooLargeError, EmptyAnswerError, MalformedResponseError

log = logging.getLogger(__name__)

HTML_HINT = "check the base URL: the API's usually ends in /v1"
# The most bytes of one answer read from the socket: a base for the envelope and a
# reasoning model's extras, and room per token asked for (JSON escapes take up to 12
# bytes a character). An answer without max_tokens gets MAX_ANSWER_BYTES.
ANSWER_BASE_BYTES = 256 * 1024
BYTES_PER_TOKEN = 64
MAX_ANSWER_BYTES = 8 * 2**20
# An answer longer than max_tokens by more than this is refused: the server ignored the cap.
TOKEN_MARGIN, TOKEN_SLACK = 4, 1024
_MOST_TOKENS = 10**9  # a count above this is nonsense, not a count
_DECODER = json.JSONDecoder()  # as json.loads decodes with no options given


class Answer(NamedTuple):
    """One chat completion as read: its text, its counts (0 where the server gave none), why it ended."""

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str | None
    model: str | None
    counted: bool  # the server reported usable token counts


def answer_cap(max_tokens: int | None) -> int:
    """The most bytes an answer to a call asking for `max_tokens` may take."""
    return ANSWER_BASE_BYTES + BYTES_PER_TOKEN * max_tokens if max_tokens else MAX_ANSWER_BYTES


def looks_html(body: bytes, content_type: str = "") -> bool:
    """Whether an answer is a web page (a web UI, a proxy's login page) rather than JSON."""
    if "html" in content_type.lower():
        return True
    head = body[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def load_json(body: bytes) -> Any:
    """Parse JSON, or raise ValueError for anything that is not (too deep included)."""
    try:
        # An object in UTF-8, as json.loads would tell from its first two bytes: decoded here
        # without the search for a byte-order mark and UTF-16/32 that json.loads makes of bytes.
        if body[:1] == b"{" and body[1:2] != b"\x00":
            return _DECODER.decode(body.decode("utf-8", "surrogatepass"))
        return json.loads(body)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(str(exc)) from exc


def parse_completion(body: bytes, redact: Callable[[str], str], max_tokens: int | None = None) -> Answer:
    """Read a chat completion; raise MalformedResponseError (or EmptyAnswerError) if it is none.

    An answer far longer than `max_tokens` asked for is an AnswerTooLargeError.

    Counts that are missing or not numbers are returned as 0 with `counted` false, for
    the caller to estimate: the answer itself is good.
    """
    try:
        data = load_json(body)
    except ValueError as exc:
        if looks_html(body):
            raise MalformedResponseError(f"the endpoint answered with an HTML page, not a chat "
                                         f"completion; {HTML_HINT}") from exc
        shown = redact(body[:1000].decode("utf-8", "replace"))[:80]
        raise MalformedResponseError(f"malformed response (not JSON: {exc}): {shown!r}") from exc
    if not isinstance(data, dict):
        raise MalformedResponseError(f"malformed response: a JSON {type(data).__name__}, not a chat completion")
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise MalformedResponseError("malformed response: no `choices` list" + _said_error(data, redact))
    if not choices:
        raise EmptyAnswerError("the endpoint answered with no choices (`choices: []`)" + _said_error(data, redact))
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    content = _text(message.get("content") if isinstance(message, dict) else None)
    if content is None:
        raise EmptyAnswerError("malformed response: the message has no text content")
    usage = data.get("usage")
    tokens_in = _count(usage.get("prompt_tokens")) if isinstance(usage, dict) else None
    tokens_out = _count(usage.get("completion_tokens")) if isinstance(usage, dict) else None
    reason = choice.get("finish_reason")
    model = data.get("model")
    if max_tokens:
        length = tokens_out if tokens_out is not None else len(content.encode("utf-8", "surrogatepass")) // 4
        if length > TOKEN_MARGIN * max_tokens + TOKEN_SLACK:
            raise AnswerTooLargeError(f"the answer ran to about {length} tokens where {max_tokens} were asked "
                                      "for: the server ignored max_tokens")
    return Answer(content, tokens_in or 0, tokens_out or 0, reason if isinstance(reason, str) else None,
                  model if isinstance(model, str) else None, tokens_in is not None and tokens_out is not None)


def _text(content: Any) -> str | None:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        texts = [p for p in parts if isinstance(p, str)]
        return "".join(texts) if texts else None
    return None


def _said_error(data: dict[str, Any], redact: Callable[[str], str]) -> str:
    """What the server said went wrong, where it said it in a 200 answer."""
    err = data.get("error")
    message = err.get("message") if isinstance(err, dict) else err
    if not isinstance(message, str) or not message.strip():
        return ""
    return ": " + redact(" ".join(message.split()))[:200]


def _count(value: Any) -> int | None:
    """A token count as a whole number, or None for anything that is not one (a string, NaN, a negative)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value.isdigit() or len(value) > 10:
            return None
        value = int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            return None
        value = int(value)
    if isinstance(value, int) and 0 <= value <= _MOST_TOKENS:
        return value
    return None


def parse_models(body: bytes) -> list[str]:
    """The model ids of a /models answer; an empty list for any answer that lists none usably."""
    try:
        data = load_json(body)
    except ValueError:
        return []
    listed = data.get("data") if isinstance(data, dict) else data if isinstance(data, list) else None
    if not isinstance(listed, list):
        return []
    ids = (m.get("id") if isinstance(m, dict) else None for m in listed)
    return [str(i) for i in ids if (isinstance(i, str) and i.strip()) or (isinstance(i, int) and not isinstance(i, bool))]
