"""Plan documents beside the calls in flight, a batch at a time, and compare them with the store.

Planning shares the process with the calls in flight. Small documents are planned on
the event loop a few at a time, yielding between batches: a worker thread would fight
the loop for the GIL and slow every call. A big one goes to a thread, so that the loop
is never held for long.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pipeline.result_store import ResultStore, count_against_prior, mark_prior_failures
from pipeline.text.chunking import Chunker
from pipeline.text.formats.entries import Fields
from pipeline.text.loading import DocRef, Entry, plan_entries

PLAN_BATCH = 16
PLAN_IN_THREAD_BYTES = 256 * 1024


def _long_text(entry: Entry) -> bool:
    return "text" in entry and len(entry["text"]) > PLAN_IN_THREAD_BYTES


def _most_here(path: str) -> int:
    """The biggest file planned on the event loop: PDF, DOCX and web pages cost far more per byte than text."""
    slow = path.lower().endswith((".pdf", ".docx", ".html", ".htm", ".eml"))
    return PLAN_IN_THREAD_BYTES // (16 if slow else 1)


async def plan_and_compare(batch: Sequence[Entry], chunker: Chunker, store: ResultStore | None, *,
                           guess_language: bool, retry_failed: bool, fields: Fields | None = None,
                           keep: dict[int, str] | None = None) -> tuple[list[DocRef], dict[str, int]]:
    """Read, decode and chunk a few documents while other calls go on; compare them with the store.

    With `keep`, the files' texts stay there for the summarizer that follows.
    """
    options: dict[str, Any] = {"guess_language": guess_language, "keep": keep, "fields": fields}
    if any(map(_long_text, batch)):
        refs = await asyncio.to_thread(plan_entries, batch, chunker, **options)
    else:
        # Each file's size is learnt as it is opened: no stat of its own before.
        refs = plan_entries(batch, chunker, most_bytes=_most_here, **options)
        if len(refs) < len(batch):  # a big file, or a part of one: it and the rest of the batch in a thread
            refs += await asyncio.to_thread(plan_entries, batch[len(refs):], chunker, **options)
        else:
            await asyncio.sleep(0)
    files: dict[str, int] = {}
    if store is not None:
        prior = await store.aprior_documents([r["source"] for r in refs])
        files = count_against_prior(refs, prior)
        mark_prior_failures(refs, prior, retry_failed)
    return refs, files


async def plan_and_compare_all(entries: Sequence[Entry], chunker: Chunker, store: ResultStore | None, *,
                               guess_language: bool, retry_failed: bool,
                               fields: Fields | None = None) -> tuple[list[DocRef], dict[str, int]]:
    """Plan every document of `entries`, a batch at a time; count them against the store."""
    refs: list[DocRef] = []
    files: Counter[str] = Counter()
    for i in range(0, len(entries), PLAN_BATCH):
        batch_refs, batch_files = await plan_and_compare(entries[i:i + PLAN_BATCH], chunker, store,
                                                         guess_language=guess_language, retry_failed=retry_failed,
                                                         fields=fields)
        refs += batch_refs
        files.update(batch_files)
    return refs, dict(files)
