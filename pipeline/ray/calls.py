"""The map phase's second stage on Ray: async actors that ask the model (pipeline/ray/engine.py builds it).

Each `ChatActor` answers the prompts that planning (pipeline/ray/plan.py) left to send,
through the pipeline's own runner (retries with backoff, Retry-After, 429 handling)
over one pooled aiohttp session, or an endpoint pool, sized to its share of the run's
concurrency: the client and runner a local run has, built by the same factory
(pipeline/llm/factory.py). It never opens the store: each answer goes back to the
driver, which commits it.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from pipeline.errors import FatalLLMError, LLMError
from pipeline.llm.factory import ChatSettings, make_runner, open_chat
from pipeline.llm.runner import SUMMED, CallStats, LLMRunner
from pipeline.prompting import Prompt
from pipeline.summarize import ask_in_language

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class CallSettings:
    """What an actor needs to call the model: its share of the run's client settings, and the map's answer size."""

    chat: ChatSettings
    map_max_tokens: int


class ChatActor:
    """Answer the map prompts of each batch of documents, all of them concurrently within the actor's share."""

    def __init__(self, settings: CallSettings) -> None:
        self.settings = settings
        self._runner: LLMRunner | None = None
        self._open_until_closed = AsyncExitStack()  # the session (or pool) the runner calls through
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sent = CallStats()  # what earlier batches already reported
        self._actor = ray.get_runtime_context().get_actor_id() or "driver"

    async def __call__(self, batch: Batch) -> Batch:
        """Answer every prompt of the batch; return each document's outcomes and the calls' counters."""
        runner = await self._open()
        docs = [json.loads(raw) for raw in batch["doc"]]
        answered = await asyncio.gather(*(self._answer(runner, doc["prompts"], doc["language"]) for doc in docs))
        out = [json.dumps({"ref": doc["ref"], "keys": doc["keys"], "language": doc["language"], "outcomes": outcomes})
               for doc, outcomes in zip(docs, answered)]
        counters = [json.dumps(self._counters(runner.stats))] + [""] * (len(out) - 1) if out else []
        return {"doc": np.array(out, dtype=object), "stats": np.array(counters, dtype=object)}

    async def _answer(self, runner: LLMRunner, prompts: list[list[str] | None],
                      language: str | None) -> list[list[Any]]:
        """Each chunk's outcome: stored; ok, with its answer and, if that was in the wrong
        language, the firmer retry's (text and tokens each: summarize.ask's calls, which
        the driver settles); or its error's class and message."""
        max_tokens = self.settings.map_max_tokens

        async def one(raw: list[str] | None) -> list[Any]:
            if raw is None:
                return ["stored"]
            try:
                done, again = await ask_in_language(runner, "map", Prompt(*raw), max_tokens, phase="map",
                                                    language=language)
            except FatalLLMError as exc:
                return ["fatal", type(exc).__name__, str(exc)]
            except LLMError as exc:
                return ["error", type(exc).__name__, str(exc)]
            return ["ok", [[a.text, a.tokens_in, a.tokens_out] for a in (done, again) if a is not None]]

        return list(await asyncio.gather(*(one(p) for p in prompts)))

    def _counters(self, stats: CallStats) -> dict[str, Any]:
        """The counters grown since the last report, and this actor's peak of calls in flight."""
        sent = self._sent
        delta: dict[str, Any] = {name: getattr(stats, name) - getattr(sent, name) for name in SUMMED}
        delta["calls"] = stats.calls["map"] - sent.calls["map"]
        delta["failed_calls"] = stats.failed_calls["map"] - sent.failed_calls["map"]
        delta["actor"], delta["peak_in_flight"] = self._actor, stats.peak_in_flight
        for name in SUMMED:
            setattr(sent, name, getattr(stats, name))
        sent.calls["map"], sent.failed_calls["map"] = stats.calls["map"], stats.failed_calls["map"]
        return delta

    async def _open(self) -> LLMRunner:
        """Open the actor's session (or pool) and runner on its own event loop, once."""
        async with self._lock:
            if self._runner is None:
                self._loop = asyncio.get_running_loop()
                chat = self.settings.chat
                # The driver asked the endpoint already: its model is named, its key known good.
                model, name = await open_chat(chat, self._open_until_closed, probe=False)
                self._runner = make_runner(model, chat, name)
            return self._runner

    async def _close(self) -> None:
        await self._open_until_closed.aclose()

    def __del__(self) -> None:
        # Ray Data drops the actor's instance when the pipeline ends; its session lives on its loop.
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:  # on the loop itself, which cannot wait for its own work
                loop.create_task(self._close())
                return
            try:
                asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=5)
            except Exception:  # noqa: BLE001 - the process is ending anyway
                pass
