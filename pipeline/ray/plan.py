"""The map phase's first stage on Ray: plan the documents (pipeline/ray/engine.py builds the pipeline).

`plan_batch` runs as Ray tasks: it reads, hashes, decodes and chunks each input
(pipeline/text/loading.py), makes each chunk's map prompt and store key, and leaves out the
prompts whose answers the store already holds. It never opens the store: the driver
reads it before the run and hands the workers a snapshot (the stored map keys, and the
documents that failed before). A row is one document as JSON, so that any file name
(even one with undecodable bytes) crosses Arrow unchanged. This module imports no HTTP
client nor LangChain, so that a planning worker starts quickly.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from pipeline.text.language import answer_language, language_instruction
from pipeline.text.formats.entries import Fields
from pipeline.text.loading import DocRef, makes_calls, plan_document
from pipeline.prompting import chunk_prompt, firmer
from pipeline.result_store import PriorDocument, call_key, prior_failure
from pipeline.text.chunking import Chunker
from pipeline.text.counting import token_counter
from prompts import Templates

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class PlanSettings:
    """What planning needs: how to chunk, which language, the run's templates, and what makes a store key."""

    chunk_tokens: int
    model: str
    language: str
    map_max_tokens: int
    identity: str
    keyed: bool  # a store is kept: compute each prompt's key
    templates: Templates  # with the reader's instructions in them, as the driver read them
    text_field: str | None = None  # records files: the field holding each record's text
    id_field: str | None = None


# NumPy's bytes strings drop trailing NUL bytes, so a digest ending in 0x00 (one key in 256)
# was never found and its chunk was paid for again on every rerun; a byte after each keeps them.
_END = b"\x01"


@dataclass(frozen=True)
class StoreSnapshot:
    """What the driver's store held when the run started: map keys, and documents that failed."""

    digests: np.ndarray  # the stored map keys as sorted 32-byte digests, each with _END after it
    failed: dict[str, PriorDocument]  # the documents that failed before, by source
    retry_failed: bool

    def holds(self, key: str) -> bool:
        """Whether the store held an answer under `key` (a hex digest)."""
        digest = np.bytes_(bytes.fromhex(key) + _END)
        at = int(np.searchsorted(self.digests, digest))
        return at < len(self.digests) and self.digests[at] == digest

    def prior_error(self, ref: DocRef) -> str | None:
        """The earlier error of an unchanged document that is not to be retried."""
        return prior_failure(self.failed.get(ref["source"]), ref["sha256"], self.retry_failed)


def make_snapshot(keys: list[str], failed: dict[str, PriorDocument], retry_failed: bool) -> StoreSnapshot:
    """Pack stored keys compactly (32 bytes each) for the planning workers."""
    digests = np.array(sorted(bytes.fromhex(k) + _END for k in keys), dtype="S33")
    return StoreSnapshot(digests, failed, retry_failed)


@functools.cache
def _chunker(chunk_tokens: int, model: str) -> Chunker:
    return Chunker(chunk_tokens, token_counter(model))  # the BPE tables load once per worker


_snapshots: dict[str, StoreSnapshot] = {}


def _snapshot(ref: Any) -> StoreSnapshot:
    """Fetch the run's snapshot once per worker process."""
    if ref.hex() not in _snapshots:
        _snapshots.clear()
        _snapshots[ref.hex()] = ray.get(ref)
    return _snapshots[ref.hex()]


def plan_batch(batch: Batch, settings: PlanSettings, snapshot: Any = None) -> Batch:
    """Plan a batch of listed inputs: read and chunk each, make its prompts and keys, skip what is stored."""
    snap = _snapshot(snapshot) if snapshot is not None else None
    chunker = _chunker(settings.chunk_tokens, settings.model)
    docs = []
    for raw in batch["entry"]:
        entry = json.loads(raw)
        texts: dict[int, str] = {}
        ref = plan_document(entry["id"], entry["source"], chunker, path=entry.get("path"), text=entry.get("text"),
                            guess_language=settings.language == "auto", keep=texts,
                            fields=Fields(settings.text_field, settings.id_field))  # its warning goes with it
        docs.append(json.dumps(_prompts(ref, texts.get(ref["id"], ref.get("text", "")), settings, snap)))
    return {"doc": np.array(docs, dtype=object)}


def _prompts(ref: DocRef, text: str, settings: PlanSettings, snap: StoreSnapshot | None) -> dict[str, Any]:
    """The document's reference (without its text), each chunk's key, and the prompts to send."""
    if snap is not None and (error := snap.prior_error(ref)):
        ref["prior_error"] = error
    keys: list[list[str]] = []
    prompts: list[list[str] | None] = []
    language = answer_language(settings.language, [ref.get("language")])
    if makes_calls(ref):
        instruction = language_instruction(language)
        for part in range(1, len(ref["spans"]) + 1):
            prompt = chunk_prompt(ref, text, part, instruction, settings.templates)
            # A chunk's key, and its firmer retry's (see summarize.ask), which the driver
            # looks up when the stored answer is in the wrong language.
            key = firm_key = ""
            if settings.keyed:
                key = call_key("map", settings.identity, settings.map_max_tokens, *prompt)
                if language:
                    firm_key = call_key("map", settings.identity, settings.map_max_tokens, *firmer(prompt, language))
            keys.append([key, firm_key])
            prompts.append(None if snap is not None and key and snap.holds(key) else list(prompt))
    return {"ref": {k: v for k, v in ref.items() if k != "text"}, "keys": keys, "prompts": prompts,
            "language": language}
