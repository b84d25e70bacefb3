"""A lean LangChain chat model for any OpenAI-compatible chat-completions endpoint.

It speaks HTTP through one shared aiohttp session (one pooled connector per run), so
a call costs about what `BaseChatModel.ainvoke` itself costs; the openai SDK path of
ChatOpenAI costs roughly ten times more client CPU per call. Any other LangChain chat
model can stand in for it through the run context.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import re
from collections.abc import Callable
from typing import Any, TypedDict
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field, SecretStr

from pipeline.errors import (
    AnswerTooLargeError,
    ConnectError,
    EndpointError,
    InputError,
    RetryableLLMError,
    error_for_status,
    retry_after,
)
from pipeline.llm.answer import HTML_HINT, Answer, answer_cap, load_json, looks_html, parse_completion, parse_models
from pipeline.llm.wire import RequestEncoder, json_body, payload, wire_messages
from pipeline.prompting import Prompt
from pipeline.secrets import Redactor, credential_secrets, url_credentials

__all__ = ["OpenAICompatChat", "Usage", "check_base_url", "endpoint", "open_session", "probe_endpoint",
           "read_capped", "redact_url", "wire_messages"]

log = logging.getLogger(__name__)

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)?[^/@]*@")
ERROR_BODY_BYTES = 64 * 1024  # of an error answer, all that is read: its message is cut to 200 characters
MODELS_BYTES = 4 * 2**20  # of a /models answer
READ_SEEN_BYTES = 2**20  # a body read is told to the memory watcher every this many bytes
_UNCOUNTED: set[str] = set()  # endpoints already said to give no token counts


class Usage(TypedDict):
    """What one answer cost, and why it ended ("length": cut off by max_tokens)."""

    input_tokens: int
    output_tokens: int
    finish_reason: str | None


def open_session(connections: int, timeout: float) -> aiohttp.ClientSession:
    """Open the run's one HTTP session: a pooled connector sized to the concurrency."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections,
                                     keepalive_timeout=60, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0)),
    )


def redact_url(url: str | None) -> str | None:
    """Drop any user:password part of a URL, so that a report never carries credentials."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]  # as given: a port out of range is shown, not raised on
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_base_url(url: str) -> None:
    """Raise InputError unless `url` is an http(s) URL that names a host."""
    shown = _USERINFO.sub(r"\1", url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise InputError(f"base URL {shown!r} is not a valid URL: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        hint = f", e.g. 'http://{shown}'" if "://" not in url else ""
        raise InputError(f"base URL {shown!r} must start with http:// or https://{hint}")
    if not parts.hostname:
        raise InputError(f"base URL {shown!r} names no host, e.g. 'http://localhost:8000/v1'")


def endpoint(base_url: str, api_key: str | None) -> tuple[str, dict[str, str]]:
    """The base URL without credentials, and the headers that authenticate to it.

    A key goes as a bearer token. A `user:password@` written into the URL goes as HTTP
    Basic auth instead, taken out of the URL: aiohttp refuses a URL's credentials beside
    an Authorization header, and the bare URL is what error messages may show.
    """
    creds = url_credentials(base_url)
    if creds is not None:
        parts = urlsplit(base_url)
        base_url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if api_key:
        return base_url, {"Authorization": f"Bearer {api_key}"}
    if creds is not None:
        token = base64.b64encode(":".join(creds).encode("utf-8")).decode("ascii")
        return base_url, {"Authorization": f"Basic {token}"}
    return base_url, {}


async def read_capped(resp: aiohttp.ClientResponse, cap: int, on_read: Callable[[int], None] | None = None,
                      *, cut: bool = False) -> bytes:
    """Read a body of at most `cap` bytes; past it, raise AnswerTooLargeError (or, with `cut`, keep the head).

    Nothing beyond the cap is read: a declared length over it is refused before the
    first byte, and the connection of a body cut short is closed rather than drained.
    `on_read` is told of every READ_SEEN_BYTES read, so that a memory guard sees big reads.
    """
    declared = resp.content_length
    if declared is not None and declared > cap and not cut:
        resp.close()
        raise AnswerTooLargeError(f"the answer is {declared} bytes, over the {cap}-byte cap of one answer")
    if declared is not None and declared <= cap:  # the usual answer: its length known and within the cap
        if on_read is not None and declared >= READ_SEEN_BYTES:
            on_read(declared)
        return await resp.read()
    chunks: list[bytes] = []
    size = told = 0
    async for chunk in resp.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if on_read is not None and size - told >= READ_SEEN_BYTES:
            on_read(size - told)
            told = size
        if size > cap:
            resp.close()
            if cut:
                return b"".join(chunks)[:cap]
            raise AnswerTooLargeError(f"the answer passed the {cap}-byte cap of one answer; "
                                      "read no further")
    return b"".join(chunks)


def _error_detail(body: bytes, redact: Redactor) -> str:
    if looks_html(body):
        return f"an HTML page, not the OpenAI API; {HTML_HINT}"
    try:
        data = load_json(body)
        err = data.get("error") if isinstance(data, dict) else None
        message = err.get("message") if isinstance(err, dict) else err
    except ValueError:
        message = body[:1000].decode("utf-8", "replace")
    # Redacted before it is cut short, so that no head of an echoed key survives the cut.
    return redact.text(" ".join(str(message or "").split()))[:200]


async def probe_endpoint(base_url: str, api_key: str | None, timeout: float = 15.0,
                         session: aiohttp.ClientSession | None = None) -> list[str]:
    """Check that the endpoint answers and accepts the key before any work; return its model ids.

    Raises EndpointError when nothing answers or a web page answers, and AuthError for a
    refused key; a server without a usable /models list yields an empty list (the first
    real call will tell). Given the run's `session`, the probe's connection is reused.
    """
    shown = redact_url(base_url)
    url, headers = endpoint(base_url, api_key)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if session is None:
                session = await stack.enter_async_context(aiohttp.ClientSession())
            async with session.get(url.rstrip("/") + "/models", headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                body = await read_capped(resp, MODELS_BYTES if resp.status == 200 else ERROR_BODY_BYTES, cut=True)
                if resp.status in (401, 403):  # other statuses: a server without /models, the calls will tell
                    raise error_for_status(resp.status, _error_detail(body, Redactor(credential_secrets(
                        api_key, base_url))))
                if resp.status == 200 and looks_html(body, resp.content_type):
                    raise EndpointError(f"the base URL {shown} answers with an HTML page, not the OpenAI "
                                        f"API (a web UI or a login page?); {HTML_HINT}")
                return parse_models(body) if resp.status == 200 else []
    except (aiohttp.ClientConnectorError, aiohttp.InvalidURL, TimeoutError) as exc:
        raise EndpointError(f"cannot reach the LLM endpoint at {shown} ({exc.__class__.__name__}); "
                            "is the server running?") from exc
    except aiohttp.ClientError:
        return []


@functools.lru_cache(maxsize=64)
def _timeout(total: float) -> aiohttp.ClientTimeout:
    """A call's own timeout; one object per value, since a run's calls mostly share a few (it is immutable)."""
    return aiohttp.ClientTimeout(total=total, sock_connect=min(total, 10.0))


class OpenAICompatChat(BaseChatModel):
    """Chat completions over aiohttp against OpenAI, vLLM, llama.cpp, Ollama and the like."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str
    base_url: str = Field(repr=False)  # it may carry user:password
    api_key: SecretStr | None = None
    temperature: float = 0.2
    max_tokens: int | None = None
    extra_body: dict[str, Any] = Field(default_factory=dict)  # server-specific fields, e.g. repeat_penalty
    session: aiohttp.ClientSession | None = Field(default=None, exclude=True)
    on_read: Callable[[int], None] | None = Field(default=None, exclude=True)  # told of big reads (memory guard)

    @property
    def _llm_type(self) -> str:
        return "openai-compatible-aiohttp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url, "temperature": self.temperature}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        raise NotImplementedError("OpenAICompatChat is async only: use `await model.ainvoke(...)`")

    async def acomplete(self, prompt: Prompt | str, max_tokens: int | None = None,
                        timeout: float | None = None) -> tuple[str, Usage]:
        """Answer one prompt (instructions and material, or a bare user message) skipping LangChain's machinery.

        The pipeline's runner calls this directly (it is the runner's `ChatCaller`): it
        does its own accounting, so `BaseChatModel.ainvoke` (callback managers, run ids,
        a task per call) and the message objects are pure overhead on its hot path.
        `timeout`: this call's own, in seconds, instead of the session's.
        """
        if self.session is None:
            body = await self._send(wire_messages(prompt), max_tokens=max_tokens, timeout=timeout)
        else:
            body = await self._post(self.session, self.encoder.encode(
                self.extra_body, self.model, self.temperature, prompt, max_tokens), max_tokens, timeout)
        answer = self._read(body, max_tokens)
        return answer.text, {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens,
                             "finish_reason": answer.finish_reason}

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        wire = [{"role": _ROLES.get(m.type, m.type), "content": m.content} for m in messages]
        return self._parse(await self._send(wire, stop=stop, **kwargs), kwargs.get("max_tokens", self.max_tokens))

    async def _send(self, messages: list[dict[str, Any]], stop: list[str] | None = None,
                    timeout: float | None = None, **kwargs: Any) -> bytes:
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        body = json.dumps(payload(self.extra_body, self.model, messages, kwargs.get("temperature", self.temperature),
                                  max_tokens, stop)).encode("utf-8")
        if self.session is None:
            async with aiohttp.ClientSession() as session:
                return await self._post(session, body, max_tokens, timeout)
        return await self._post(self.session, body, max_tokens, timeout)

    @functools.cached_property
    def encoder(self) -> RequestEncoder:
        """What encodes this client's requests, keeping what every call repeats."""
        return RequestEncoder()

    @functools.cached_property
    def wire(self) -> tuple[str, dict[str, str], Redactor]:
        """The chat URL, its auth headers and what hides the credentials: worked out once.

        A cached property, read from the instance's dict: a pydantic private attribute
        costs a slow attribute lookup on every read (about 6 us, twice a call).
        """
        key = self.api_key.get_secret_value() if self.api_key else None
        base, headers = endpoint(self.base_url, key)
        return base.rstrip("/") + "/chat/completions", headers, Redactor(credential_secrets(key, self.base_url))

    async def _post(self, session: aiohttp.ClientSession, body: bytes, max_tokens: int | None,
                    timeout: float | None = None) -> bytes:
        """Send an encoded request; return the answer's body, or raise the error its status or failure means."""
        url, headers, redact = self.wire
        # The timeout is left out unless given: aiohttp reads timeout=None as no timeout at all, not as the session's.
        request = (session.post(url, data=json_body(body), headers=headers) if timeout is None else
                   session.post(url, data=json_body(body), headers=headers, timeout=_timeout(timeout)))
        try:
            async with request as resp:
                status = resp.status
                if status == 200:
                    # The request's max_tokens: the call's, else one the extra body sets.
                    return await read_capped(resp, answer_cap(max_tokens or self.extra_body.get("max_tokens")),
                                             self.on_read)
                said = await read_capped(resp, ERROR_BODY_BYTES, cut=True)
                raise error_for_status(status, _error_detail(said, redact), retry_after(resp.headers),
                                       where=redact_url(url) or url, model=self.model)
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
            raise ConnectError(f"cannot connect to {redact_url(url)}: {exc.__class__.__name__}") from exc
        except TimeoutError as exc:
            raise RetryableLLMError("no answer before the timeout") from exc
        except aiohttp.ClientError as exc:
            raise RetryableLLMError(redact.text(f"connection failed: {exc.__class__.__name__}: {exc}")) from exc

    def _read(self, body: bytes, max_tokens: int | None) -> Answer:
        """Read a chat completion; say once per endpoint when its server gives no usable token counts."""
        answer = parse_completion(body, self.wire[2].text, max_tokens)
        if not answer.counted and self.base_url not in _UNCOUNTED:
            _UNCOUNTED.add(self.base_url)
            log.warning("%s gives no usable token counts (`usage`); tokens are estimated from the text",
                        redact_url(self.base_url))
        return answer

    def _parse(self, body: bytes, max_tokens: int | None) -> ChatResult:
        answer = self._read(body, max_tokens)
        model = answer.model or self.model
        message = AIMessage(content=answer.text, response_metadata={
            "model_name": model, "finish_reason": answer.finish_reason})
        usage = {"prompt_tokens": answer.input_tokens, "completion_tokens": answer.output_tokens,
                 "total_tokens": answer.input_tokens + answer.output_tokens} if answer.counted else {}
        if usage:
            message.usage_metadata = {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens,
                                      "total_tokens": usage["total_tokens"]}
        return ChatResult(generations=[ChatGeneration(message=message)],
                          llm_output={"token_usage": usage, "model_name": model})
