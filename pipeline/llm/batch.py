"""Answer calls through an OpenAI-compatible Batch API: half the price, within a day, in its own rate-limit pool.

    caller = BatchCaller(session, base_url, api_key, model="gpt-4o-mini", journal=store)
    text, usage = await caller.acomplete(prompt, max_tokens)   # as any ChatCaller

The runner's calls arrive one by one; the caller gathers those of a round (the map, a
collapse level, the final call, or the firmer retries of the answers before), and once
no new call has come for `gather` seconds it writes them as JSONL, uploads the file to
`/v1/files` (purpose `batch`), starts a batch on `/v1/chat/completions` and polls it with
backoff. Each answer is matched to its call by `custom_id`, a hash of the request body,
so the same call in a later run has the same id.

Crash-safe: the uploaded file and then the batch are written to the journal (the result
store) and committed before the caller waits, and a later run whose calls are in a
recorded batch collects that batch instead of submitting them again (a file recorded
without its batch is looked for among the server's batches first). With `wait=False`
the caller submits what is due, and then raises BatchPendingError rather than wait, so
that an hourly job walks a run through map, collapse and final. A batch that expired,
failed or was cancelled has only its unanswered requests sent again; a request the
batch answered with an error fails that call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from pipeline.errors import (
    BatchPendingError,
    ConnectError,
    FatalLLMError,
    LLMError,
    MalformedResponseError,
    RetryableLLMError,
    error_for_status,
)
from pipeline.llm.answer import parse_completion
from pipeline.llm.client import Usage, endpoint, redact_url, wire_messages
from pipeline.prompting import Prompt
from pipeline.secrets import Redactor, credential_secrets

log = logging.getLogger(__name__)

DONE = frozenset({"completed", "failed", "expired", "cancelled"})
RESUBMITS = 3  # rounds an unanswered request is sent again after its batch expired, failed or was cancelled


GATHER_S = 2.0  # seconds without a new call that close a round
POLL_FIRST_S, POLL_MAX_S = 10.0, 300.0


@dataclass(frozen=True)
class BatchSettings:
    """How batches are made and watched; the defaults are OpenAI's limits and a patient poll."""

    gather: float = field(default_factory=lambda: GATHER_S)
    poll_first: float = field(default_factory=lambda: POLL_FIRST_S)
    poll_max: float = field(default_factory=lambda: POLL_MAX_S)
    max_requests: int = 50_000  # per file
    max_bytes: int = 190 * 2**20  # per file (the API takes 200 MB)
    wait: bool = True


class BatchJournal(Protocol):
    """Where submitted batches are recorded before they are waited on (the result store)."""

    async def arecord_batch_file(self, file_id: str, custom_ids: Iterable[str]) -> None: ...
    async def arecord_batch(self, file_id: str, batch_id: str) -> None: ...
    async def afinish_batch(self, batch_id: str, status: str, lost: Iterable[str] = ()) -> None: ...
    async def aopen_batch_requests(self, custom_ids: Iterable[str]) -> dict[str, tuple[str, str | None]]: ...


@dataclass
class _Round:
    """The requests of one file, waiting on one batch."""

    file_id: str
    ids: list[str]
    batch_id: str | None = None


@dataclass
class BatchRecord:
    """What report.json says of one batch."""

    id: str
    status: str = "validating"
    requests: int = 0
    completed: int = 0
    failed: int = 0
    submitted_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "status": self.status, "requests": self.requests, "completed": self.completed,
               "failed": self.failed, "submitted_at": _stamp(self.submitted_at)}
        if self.finished_at is not None:
            out["finished_at"] = _stamp(self.finished_at)
        return out


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def custom_id(body: dict[str, Any]) -> str:
    """The id of a request: a hash of its body, the same in every run that makes the same call."""
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:48]


class BatchCaller:
    """A ChatCaller that sends its calls as Batch API jobs; see the module docstring."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str | None, *, model: str,
                 temperature: float = 0.0, extra_body: dict[str, Any] | None = None,
                 settings: BatchSettings = BatchSettings(), journal: BatchJournal | None = None,
                 on_status: Callable[[BatchRecord], None] | None = None) -> None:
        self.session = session
        self.model = model
        self.settings = settings
        self.journal = journal
        self.on_status = on_status
        self._fields = {**(extra_body or {}), "temperature": temperature}
        base, self._headers = endpoint(base_url, api_key)
        self._base = base.rstrip("/")
        self._redact = Redactor(credential_secrets(api_key, base_url))
        self._queue: dict[str, dict[str, Any]] = {}
        self._waiting: dict[str, asyncio.Future[tuple[str, Usage]]] = {}
        self._bodies: dict[str, dict[str, Any]] = {}  # of the calls waiting, to send again if need be
        self._members: dict[str, list[str]] = {}  # batch id -> the calls sent in it
        self._errors: set[str] = set()  # calls a batch answered with an error
        self._resent: dict[str, int] = {}
        self._following: dict[str, asyncio.Task[None]] = {}  # by batch id
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches: dict[str, BatchRecord] = {}

    # -- the ChatCaller side ---------------------------------------------------------------

    def request(self, prompt: Prompt | str, max_tokens: int) -> dict[str, Any]:
        """The body of one call as a batch line carries it (its hash is the call's custom_id)."""
        return {**self._fields, "model": self.model, "messages": wire_messages(prompt), "max_tokens": max_tokens}

    async def acomplete(self, prompt: Prompt | str, max_tokens: int) -> tuple[str, Usage]:
        """Queue one call for the next batch and wait for its answer."""
        body = self.request(prompt, max_tokens)
        cid = custom_id(body)
        future = self._waiting.get(cid)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[cid] = future
            self._bodies[cid] = body
            self._queue[cid] = body
            self._kick()
        return await asyncio.shield(future)

    def report(self) -> list[dict[str, Any]]:
        """Every batch this caller submitted or collected, for report.json."""
        return [b.as_dict() for b in self.batches.values()]

    async def aclose(self) -> None:
        """Stop watching (the batches go on at the server; a later run collects them)."""
        if self._timer is not None:
            self._timer.cancel()
        for task in [*self._tasks, *self._following.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._following.values(), return_exceptions=True)

    # -- rounds ----------------------------------------------------------------------------

    def _kick(self) -> None:
        """Close the round `gather` seconds after its last call, or at once when a file is full."""
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay = 0.0 if len(self._queue) >= self.settings.max_requests else self.settings.gather
        self._timer = loop.call_later(delay, self._spawn)

    def _spawn(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self._flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        queue, self._queue = self._queue, {}
        if not queue:
            return
        try:
            await self._submit(queue)
        except Exception as exc:  # noqa: BLE001 - a store that cannot record the batch, or a bug: stop the run
            log.debug("batch round failed", exc_info=True)
            self._fail(queue, exc if isinstance(exc, FatalLLMError) else FatalLLMError(f"{type(exc).__name__}: {exc}"))

    async def _submit(self, queue: dict[str, dict[str, Any]]) -> None:
        """Collect the calls already in a recorded batch, and submit the others in new ones."""
        known = await self.journal.aopen_batch_requests(queue) if self.journal is not None else {}
        by_file: dict[str, _Round] = {}
        for cid, (file_id, batch_id) in known.items():
            by_file.setdefault(file_id, _Round(file_id, [], batch_id)).ids.append(cid)
        fresh = {cid: body for cid, body in queue.items() if cid not in known}
        if by_file:
            log.info("batch: %d of %d calls are in %d batches submitted earlier; collecting them",
                     len(known), len(queue), len(by_file))
        for round_ in by_file.values():
            await self._start(round_)
        for part in self._files(fresh):
            try:
                file_id = await self._upload(part)
            except LLMError as exc:
                self._fail(part, exc)
                continue
            if self.journal is not None:
                await self.journal.arecord_batch_file(file_id, part)
            await self._start(_Round(file_id, list(part)))

    def _files(self, bodies: dict[str, dict[str, Any]]) -> list[dict[str, bytes]]:
        """Split the requests into JSONL files within the provider's limits (requests and bytes)."""
        files: list[dict[str, bytes]] = []
        current: dict[str, bytes] = {}
        size = 0
        for cid, body in bodies.items():
            line = json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body},
                              ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"
            if current and (len(current) >= self.settings.max_requests or size + len(line) > self.settings.max_bytes):
                files.append(current)
                current, size = {}, 0
            current[cid] = line
            size += len(line)
        if current:
            files.append(current)
        return files

    async def _start(self, round_: _Round) -> None:
        """Make sure `round_`'s batch exists, then follow it (once per batch, however many rounds wait on it)."""
        if round_.batch_id is None:
            try:
                round_.batch_id = await self._find_batch(round_.file_id) or await self._create(round_.file_id)
            except LLMError as exc:
                self._fail(round_.ids, exc)
                return
            if self.journal is not None:
                await self.journal.arecord_batch(round_.file_id, round_.batch_id)
        self._members.setdefault(round_.batch_id, []).extend(round_.ids)
        if round_.batch_id not in self._following:
            task = asyncio.ensure_future(self._follow(round_.batch_id))
            self._following[round_.batch_id] = task

    async def _follow(self, batch_id: str) -> None:
        """Poll a batch with backoff until it ends, then hand out its answers (or raise pending, not waiting)."""
        delay = self.settings.poll_first
        record = self.batches.setdefault(batch_id, BatchRecord(batch_id))
        try:
            while True:
                batch = await self._request("GET", f"/batches/{batch_id}")
                self._note(record, batch)
                if batch.get("status") in DONE:
                    break
                if not self.settings.wait:
                    self._pending(batch_id, batch)
                    return
                await asyncio.sleep(delay)
                delay = min(self.settings.poll_max, delay * 1.5)
            await self._collect(batch_id, batch)
        except LLMError as exc:
            self._fail(self._members.get(batch_id, ()), exc)
        finally:
            self._following.pop(batch_id, None)

    def _note(self, record: BatchRecord, batch: dict[str, Any]) -> None:
        counts = batch.get("request_counts") or {}
        if batch.get("status") != record.status or int(counts.get("completed") or 0) != record.completed:
            log.info("batch %s: %s, %s of %s answered, %s failed", record.id, batch.get("status"),
                     counts.get("completed", 0), counts.get("total", "?"), counts.get("failed", 0))
        record.status = str(batch.get("status"))
        record.requests = int(counts.get("total") or record.requests)
        record.completed = int(counts.get("completed") or 0)
        record.failed = int(counts.get("failed") or 0)
        if isinstance(created := batch.get("created_at"), (int, float)):
            record.submitted_at = float(created)
        if record.status in DONE and record.finished_at is None:
            record.finished_at = time.time()
        if self.on_status is not None:
            self.on_status(record)

    def _pending(self, batch_id: str, batch: dict[str, Any]) -> None:
        """Leave the batch running: every call waiting on it ends with BatchPendingError."""
        counts = batch.get("request_counts") or {}
        error = BatchPendingError(
            f"batch {batch_id} is {batch.get('status')} ({counts.get('completed', 0)} of "
            f"{counts.get('total', '?')} answered); run the same command again to collect it")
        for cid in self._members.get(batch_id, ()):
            if (future := self._waiting.get(cid)) is not None and not future.done():
                future.set_exception(error)

    async def _collect(self, batch_id: str, batch: dict[str, Any]) -> None:
        """Read the batch's output and error files; resolve each waiting call; send the unanswered again."""
        answered: set[str] = set()
        members = set(self._members.get(batch_id, ()))  # an older batch may hold an old answer to a call resent since
        for name in ("output_file_id", "error_file_id"):
            if file_id := batch.get(name):
                for row in await self._jsonl(file_id):
                    cid = row.get("custom_id") if isinstance(row, dict) else None
                    if isinstance(cid, str) and cid in members:
                        answered.add(cid)
                        self._answer(cid, row)
        lost = [cid for cid in self._members.get(batch_id, ()) if cid not in answered or cid in self._errors]
        if self.journal is not None:
            await self.journal.afinish_batch(batch_id, str(batch.get("status")), lost)
        if batch.get("status") != "completed":
            unanswered = [cid for cid in lost if cid not in answered]
            log.warning("batch %s %s with %d requests unanswered", batch_id, batch.get("status"), len(unanswered))
            self._resend(unanswered, str(batch.get("status")))

    def _resend(self, ids: list[str], why: str) -> None:
        for cid in ids:
            self._resent[cid] = self._resent.get(cid, 0) + 1
            future = self._waiting.get(cid)
            if future is None or future.done():
                continue
            if self._resent[cid] > RESUBMITS:
                future.set_exception(LLMError(f"the batch {why} {RESUBMITS + 1} times without answering it"))
                continue
            body = self._bodies.get(cid)
            if body is not None:
                self._queue[cid] = body
        if self._queue:
            self._kick()

    def _answer(self, cid: str, row: dict[str, Any]) -> None:
        future = self._waiting.pop(cid, None)
        self._bodies.pop(cid, None)
        if future is None or future.done():
            return
        response = row.get("response") if isinstance(row.get("response"), dict) else None
        error = row.get("error")
        if response is not None and response.get("status_code") == 200 and isinstance(response.get("body"), dict):
            try:
                text, usage = parse_answer(response["body"], self._redact)
            except LLMError as exc:
                self._errors.add(cid)
                future.set_exception(exc)
            else:
                future.set_result((text, usage))
            return
        self._errors.add(cid)  # not to be read back by a later run: it asks again
        if response is not None and isinstance(response.get("status_code"), int):
            detail = json.dumps(response.get("body"))[:200]
            future.set_exception(error_for_status(response["status_code"], self._redact.text(detail)))
            return
        message = error.get("message") if isinstance(error, dict) else error
        future.set_exception(LLMError(self._redact.text(f"the batch API failed this request: {message}")))

    def _fail(self, ids: Iterable[str], exc: LLMError) -> None:
        for cid in list(ids):
            future = self._waiting.get(cid)
            if future is not None and not future.done():
                future.set_exception(exc)
                self._waiting.pop(cid, None)
                self._bodies.pop(cid, None)

    # -- HTTP --------------------------------------------------------------------------------

    async def _upload(self, part: dict[str, bytes]) -> str:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", b"".join(part.values()), filename="requests.jsonl", content_type="application/jsonl")
        answer = await self._request("POST", "/files", data=form)
        if not isinstance(file_id := answer.get("id"), str):
            raise MalformedResponseError("the file upload's answer has no id")
        log.info("batch: uploaded %d requests (%d bytes) as %s", len(part), sum(map(len, part.values())), file_id)
        return file_id

    async def _create(self, file_id: str) -> str:
        answer = await self._request("POST", "/batches", json={
            "input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h",
            "metadata": {"source": "mapreduce-summarizer"}})
        if not isinstance(batch_id := answer.get("id"), str):
            raise MalformedResponseError("the batch's answer has no id")
        log.info("batch: %s submitted for %s", batch_id, file_id)
        self.batches[batch_id] = BatchRecord(batch_id, status=str(answer.get("status", "validating")))
        return batch_id

    async def _find_batch(self, file_id: str) -> str | None:
        """A batch the server already made of `file_id` (a run stopped between creating it and recording it)."""
        if self.journal is None:
            return None
        try:
            listing = await self._request("GET", "/batches?limit=100")
        except LLMError:
            return None
        for batch in listing.get("data") or []:
            if isinstance(batch, dict) and batch.get("input_file_id") == file_id and isinstance(batch.get("id"), str):
                return batch["id"]
        return None

    async def _jsonl(self, file_id: str) -> list[Any]:
        raw = await self._request("GET", f"/files/{file_id}/content", raw=True)
        rows = []
        for line in raw.decode("utf-8", "replace").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a damaged line leaves its call unanswered, to be sent again
        return rows

    async def _request(self, method: str, path: str, *, raw: bool = False, **kwargs: Any) -> Any:
        url = self._base + path
        try:
            async with self.session.request(method, url, headers=self._headers, **kwargs) as resp:
                body = await resp.read()
                if resp.status != 200:
                    detail = self._redact.text(body[:300].decode("utf-8", "replace"))
                    raise error_for_status(resp.status, detail, where=redact_url(url) or url, model=self.model)
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
            raise ConnectError(f"cannot connect to {redact_url(url)}: {type(exc).__name__}") from exc
        except TimeoutError as exc:
            raise RetryableLLMError(f"no answer from {redact_url(url)} before the timeout") from exc
        except aiohttp.ClientError as exc:
            raise RetryableLLMError(self._redact.text(f"connection failed: {type(exc).__name__}: {exc}")) from exc
        if raw:
            return body
        try:
            answer = json.loads(body)
        except ValueError as exc:
            raise MalformedResponseError(f"{redact_url(url)} answered something that is not JSON") from exc
        if not isinstance(answer, dict):
            raise MalformedResponseError(f"{redact_url(url)} answered JSON that is not an object")
        return answer


def parse_answer(body: dict[str, Any], redact: Redactor, max_tokens: int | None = None) -> tuple[str, Usage]:
    """The text and usage of one chat completion read back from a batch's output file (as a direct answer is read)."""
    answer = parse_completion(json.dumps(body).encode("utf-8"), redact.text, max_tokens)
    return answer.text, {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens,
                         "finish_reason": answer.finish_reason}
