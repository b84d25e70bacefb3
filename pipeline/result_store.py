"""The result store: a SQLite file that keeps every finished LLM result and each document's outcome.

Each result is committed in the turn of the event loop in which its call returns, so
a run killed at any point and started again pays only for the calls whose answers it
was reading when it died. The writes of one turn (the answers that came back in it and
the document results they completed) share one transaction: a commit per write cost
40 us a document, a sixth of the client's CPU per call. Without a running event loop,
each write is committed at once. A store is written from one thread, one short
statement at a time, so the many tasks of a run never write concurrently; WAL mode and a
busy timeout let separate processes share the file, and stores open on the same file in
one process commit each other's open turn before they begin their own.

Where the event loop refuses blocking calls (`langgraph dev`), a store opened `off_loop`
does all of this on one worker thread of its own (pipeline/store_thread.py): reads are
awaited (`aget`, `aprior_documents`), writes are queued without waiting, and each run of
queued writes is committed as soon as the queue runs dry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import prompts
from pipeline.errors import InputError, StoreError
from pipeline.store_thread import StoreThread
from pipeline.text.loading import DocRef

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY, step TEXT NOT NULL, text TEXT NOT NULL,
    tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    source TEXT PRIMARY KEY, sha256 TEXT NOT NULL, status TEXT NOT NULL, summary TEXT,
    error TEXT, chunks INTEGER, tokens_in INTEGER, tokens_out INTEGER, updated REAL NOT NULL,
    kind TEXT NOT NULL DEFAULT 'file');
CREATE TABLE IF NOT EXISTS batch_files (
    file_id TEXT PRIMARY KEY, batch_id TEXT, status TEXT NOT NULL DEFAULT 'open', created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS batch_requests (
    custom_id TEXT NOT NULL, file_id TEXT NOT NULL, lost INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (custom_id, file_id));
"""
# The writable stores open in this process, by file. One whose turn is still uncommitted
# holds SQLite's write lock, and another on the same file waiting for it in the same
# thread would block the very event loop that is to commit it.
_OPEN: dict[str, weakref.WeakSet[ResultStore]] = {}

# Stores made before documents had a kind (a file, or a text handed over in memory).
_ADD_KIND = "ALTER TABLE documents ADD COLUMN kind TEXT NOT NULL DEFAULT 'file'"


def result_key(*parts: object) -> str:
    """Hash what makes a result reusable: step, content, prompt version, model, parameters."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


def call_key(step: str, identity: str, max_tokens: int, *material: str) -> str:
    """The store key of a call: step, prompt version, model and parameters, and its content."""
    return result_key(step, prompts.PROMPT_VERSION, identity, max_tokens, *material)


@dataclass(frozen=True, slots=True)
class StoredResult:
    """One stored LLM answer."""

    text: str
    tokens_in: int
    tokens_out: int


@dataclass(frozen=True, slots=True)
class PriorDocument:
    """What the previous run recorded for a document."""

    sha256: str
    status: str
    error: str | None
    kind: str = "file"  # or "text": a document handed over in memory, never "removed" from disk


def count_against_prior(docs: Iterable[DocRef], prior: dict[str, PriorDocument]) -> dict[str, int]:
    """Count new, changed and unchanged documents against the previous run."""
    files = {"new": 0, "changed": 0, "unchanged": 0}
    for doc in docs:
        before = prior.get(doc["source"])
        files["new" if before is None else "changed" if before.sha256 != doc["sha256"] else "unchanged"] += 1
    return files


def prior_failure(before: PriorDocument | None, sha256: str, retry_failed: bool) -> str | None:
    """The earlier error of a document unchanged since it failed, unless it is to be retried; else None."""
    if before is None or before.status != "failed" or before.sha256 != sha256 or retry_failed:
        return None
    return before.error or "failed"


def mark_prior_failures(docs: Iterable[DocRef], prior: dict[str, PriorDocument], retry_failed: bool) -> None:
    """Mark each unchanged document that failed before with its earlier error: it is not sent again."""
    for doc in docs:
        if (error := prior_failure(prior.get(doc["source"]), doc["sha256"], retry_failed)) is not None:
            doc["prior_error"] = error


def removed_sources(prior: dict[str, PriorDocument], seen: set[str]) -> list[str]:
    """The documents the store knows that are gone: files, not given this time, gone from disk.

    A document this run was not given but that still exists, or a text handed over in
    memory, may belong to another job sharing the store, and its record is kept.
    """
    return [source for source, before in prior.items()
            if source not in seen and before.kind == "file" and not os.path.lexists(_file_of(source))]


def _file_of(source: str) -> str:
    """The file a document is in: itself, or the mailbox or records file of a message or record."""
    from pipeline.text.formats.entries import split_name

    return part[0] if "#" in source and (part := split_name(source)) else source


class StoreDamagedError(StoreError):
    """The store's file is damaged: SQLite cannot read it as a database."""


_CORRUPT, _NOTADB = 11, 26  # SQLite's primary result codes for a damaged file


def is_damage(exc: BaseException) -> bool:
    """Whether a SQLite error says the file is damaged, rather than busy, read-only or missing."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_CORRUPT, _NOTADB)
    return isinstance(exc, sqlite3.DatabaseError) and any(
        words in str(exc) for words in ("malformed", "not a database"))


def _damaged(path: Path, what: str, doing: str = "open") -> StoreDamagedError:
    return StoreDamagedError(f"cannot {doing} the result store {path}: it is damaged ({what}); move it aside, "
                             "or run with --no-store, "
                             "or with --store-recover to move it aside and start a new one (its answers are "
                             "paid for again)")


def _check(db: sqlite3.Connection, path: Path) -> None:
    """Raise StoreDamagedError unless SQLite's quick check finds the file sound."""
    rows = [row[0] for row in db.execute("PRAGMA quick_check(1)")]
    if rows != ["ok"]:
        said = " ".join(" ".join(map(str, rows)).replace("*** in database main ***", "").split())
        raise _damaged(path, f"SQLite's check says: {said[:120]}")


def set_aside(path: Path, what: str) -> dict[str, Any]:
    """Move a damaged store (and its WAL files) aside; say where, and how many answers it held if it can tell."""
    lost: int | None
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as old:
            lost = int(old.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except (sqlite3.Error, OSError, ValueError):
        lost = None
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    try:
        for suffix in ("", "-wal", "-shm"):
            if os.path.lexists(f"{path}{suffix}"):
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    except OSError as exc:
        raise StoreError(f"cannot move the damaged result store {path} aside: {exc.strerror or exc}") from exc
    log.warning("the result store %s was damaged (%s): moved to %s; %s", path, what, aside,
                f"its {lost} answers are paid for again" if lost is not None else
                "how many answers it held cannot be told")
    return {"moved_to": str(aside), "answers_lost": lost, "damage": what}


# The reading methods, which a store with its own thread runs there (waiting for them) when called
# from elsewhere. They are replaced on such a store only, so that the usual store pays nothing for it.
_READS = ("get", "count", "keys", "prior_documents", "integrity_ok", "open_batch_requests", "open_batches")


class ResultStore:
    """Read and write finished results and document outcomes."""

    def __init__(self, path: str | Path, *, read_only: bool = False, recover: bool = False,
                 off_loop: bool = False) -> None:
        """Open the store at `path` (created if missing), checking it is not damaged.

        A damaged file is a StoreError that says what to do, or with `recover` it is moved
        aside and a new store begun: `recovered` then says where it went and how many
        answers it held, if it could still tell. With `off_loop`, every statement runs on
        the store's own thread, for a loop that refuses blocking calls; the loop then
        awaits reads (`aget`, `aprior_documents`) and closes it with `aclose`.
        """
        self.path = Path(path)
        self.recovered: dict[str, Any] | None = None
        self._file = os.path.realpath(self.path)
        self._closed = False
        self._commit_on: asyncio.AbstractEventLoop | None = None  # the loop a commit is scheduled on
        self._commit_handle: asyncio.Handle | None = None
        self._writer = 0  # the thread that began the open transaction
        self._failed: StoreError | None = None  # writes were lost: the next write and close raise it
        try:
            self._db = self._open(read_only)
        except StoreDamagedError as exc:
            if read_only or not recover:
                raise
            self.recovered = set_aside(self.path, str(exc.__cause__ or exc))
            self._db = self._open(read_only)
        if not read_only:
            _OPEN.setdefault(self._file, weakref.WeakSet()).add(self)
        self.off_loop = off_loop
        self._thread = StoreThread("result-store", self._commit_now) if off_loop else None
        if off_loop:
            for name in _READS:
                setattr(self, name, self._on_thread(getattr(ResultStore, name)))

    def _on_thread(self, method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def run(*args: Any, **kwargs: Any) -> T:
            self._check_open()
            return self._thread.call(functools.partial(method, self, *args, **kwargs))  # type: ignore[union-attr]
        return run

    def _open(self, read_only: bool) -> sqlite3.Connection:
        """Connect, check the file (PRAGMA quick_check), and make the tables where they are missing."""
        db = None
        try:
            if read_only:  # a dry run looks, and neither creates nor changes anything
                db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0,
                                     isolation_level=None, check_same_thread=False)
                _check(db, self.path)
                return db
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            _check(db, self.path)
            db.executescript(_SCHEMA)
            if not any(row[1] == "kind" for row in db.execute("PRAGMA table_info(documents)")):
                db.execute(_ADD_KIND)
            return db
        except (OSError, sqlite3.Error, StoreDamagedError) as exc:
            if db is not None:
                db.close()
            if isinstance(exc, StoreDamagedError):
                raise
            if is_damage(exc):
                raise _damaged(self.path, str(exc)) from exc
            raise InputError(f"cannot open the result store {self.path}: {exc}") from exc

    def close(self, *, raise_errors: bool = True) -> None:
        """Commit what is written and close; raise if writes were lost, unless `raise_errors` is false
        (another error is on its way out, and this one is logged instead)."""
        if self._closed:
            return
        if self._thread is None:
            self._finish()
        else:  # what is queued is written first
            self._closed = True
            self._thread.stop(self._finish).result()
            self._thread.join()
        self._raise_failed(raise_errors)

    async def aclose(self, *, raise_errors: bool = True) -> None:
        """Close as `close` does, awaiting the store's own thread rather than holding the loop."""
        if self._closed or self._thread is None:
            self.close(raise_errors=raise_errors)
            return
        self._closed = True
        await asyncio.shield(asyncio.wrap_future(self._thread.stop(self._finish)))  # written even if cancelled
        self._thread.join()
        self._raise_failed(raise_errors)

    def _finish(self) -> None:
        try:
            self._commit_now(final=True)
        finally:
            self._closed = True
            if self._commit_handle is not None:
                self._commit_handle.cancel()
            _OPEN.get(self._file, weakref.WeakSet()).discard(self)
            self._db.close()

    def _raise_failed(self, raise_errors: bool) -> None:
        if self._failed is not None:
            if not raise_errors:
                log.error("%s", self._failed)
                return
            raise StoreError(str(self._failed)) from self._failed.__cause__

    def commit(self) -> None:
        """Commit what was written since the last commit (scheduled by every write on a running loop)."""
        if self._here():
            self._commit_now()
        elif not self._closed:
            self._thread.post(self._commit_now)  # type: ignore[union-attr]

    def _here(self) -> bool:
        """Whether SQLite may be called from this thread: the store has no thread, or this is it."""
        return self._thread is None or threading.get_ident() == self._thread.ident

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"cannot use the result store {self.path}: it is closed")

    def _commit_now(self, *, final: bool = False) -> None:
        self._commit_on = self._commit_handle = None
        if (self._closed and not final) or not self._db.in_transaction:
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction and not final:  # nothing lost (the file is busy): the next commit retries
                log.warning("result store %s: commit postponed: %s", self.path, exc)
                return
            failed = StoreError(f"cannot write to the result store {self.path}: {exc}")
            failed.__cause__ = exc
            self._failed = self._failed or failed

    def get(self, key: str) -> StoredResult | None:
        try:
            row = self._db.execute("SELECT text, tokens_in, tokens_out FROM results WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise _damaged(self.path, str(exc), "read") from exc
            raise StoreError(f"cannot read the result store {self.path}: {exc}") from exc
        return StoredResult(*row) if row else None

    async def aget(self, key: str) -> StoredResult | None:
        """`get`, awaited on the store's own thread when it has one."""
        return await self._there(self.get, key)

    async def _there(self, method: Callable[..., T], *args: Any) -> T:
        """Await `method(*args)` on the store's own thread when it has one; else call it here."""
        if self._thread is None:
            return method(*args)
        self._check_open()
        return await self._thread.acall(method, *args)

    def put(self, key: str, step: str, text: str, tokens_in: int, tokens_out: int) -> None:
        """Write one result, committed in this turn of the event loop (at once without one)."""
        self._write("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
                    (key, step, text, tokens_in, tokens_out, time.time()))

    def _write(self, sql: str, args: Any, *, many: bool = False) -> None:
        if self._closed:
            raise StoreError(f"cannot write to the result store {self.path}: it is closed")
        if self._failed is not None:
            raise StoreError(str(self._failed)) from self._failed.__cause__
        thread = self._thread
        if thread is not None and threading.get_ident() != thread.ident:  # queued: a failure is raised by
            thread.post(self._write_queued, sql, list(args) if many else args, many)  # the next write, or close
            return
        self._write_now(sql, args, many)

    def _write_now(self, sql: str, args: Any, many: bool) -> None:
        pending = self._db.in_transaction  # earlier writes of this turn, not yet committed
        try:
            if not pending:
                self._begin()
            if many:
                self._db.executemany(sql, args)
            else:
                self._db.execute(sql, args)
        except sqlite3.Error as exc:  # a full disk, a store deleted under us
            error = StoreError(f"cannot write to the result store {self.path}: {exc}")
            if pending and not self._db.in_transaction:  # SQLite rolled the whole turn back
                self._failed = StoreError(f"{error}; the results written just before it were lost with it")
                self._failed.__cause__ = exc
            raise error from exc
        finally:
            self._schedule_commit()

    def _write_queued(self, sql: str, args: Any, many: bool) -> None:
        if self._failed is not None:  # (raised by the next write on the loop, and by close)
            return
        try:
            self._write_now(sql, args, many)
        except StoreError as exc:
            self._failed = self._failed or exc

    def _begin(self) -> None:
        me = threading.get_ident()
        for other in list(_OPEN.get(self._file, ())):
            if other is not self and other._writer == me and not other._closed and other._db.in_transaction:
                other.commit()  # its turn holds the file's write lock, and its loop is this thread
        self._db.execute("BEGIN")
        self._writer = me

    def _schedule_commit(self) -> None:
        if self._closed or self._thread is not None or not self._db.in_transaction:
            return  # (the store's own thread commits when its queue runs dry)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.commit()
            return
        if self._commit_on is not loop:  # (a loop that closed with a commit pending is not this one)
            self._commit_on = loop
            self._commit_handle = loop.call_soon(self.commit)

    def count(self, step: str | None = None) -> int:
        sql, args = ("SELECT COUNT(*) FROM results", ()) if step is None else (
            "SELECT COUNT(*) FROM results WHERE step = ?", (step,))
        return int(self._db.execute(sql, args).fetchone()[0])

    def keys(self, step: str) -> list[str]:
        """Every key stored for `step`."""
        return [row[0] for row in self._db.execute("SELECT key FROM results WHERE step = ?", (step,))]

    def _has_kind(self) -> bool:
        return any(row[1] == "kind" for row in self._db.execute("PRAGMA table_info(documents)"))

    def prior_documents(self, sources: Sequence[str] | None = None) -> dict[str, PriorDocument]:
        """What the store holds for `sources` (every document when None), by source."""
        kind = "kind" if self._has_kind() else "'file'"
        query = f"SELECT source, sha256, status, error, {kind} FROM documents"
        if sources is None:
            rows = list(self._db.execute(query))
        else:  # in batches: SQLite takes a bounded number of parameters
            rows = [row for i in range(0, len(sources), 500)
                    for row in self._db.execute(f"{query} WHERE source IN ({','.join('?' * len(sources[i:i + 500]))})",
                                                tuple(sources[i:i + 500]))]
        return {source: PriorDocument(sha, status, error, k) for source, sha, status, error, k in rows}

    async def aprior_documents(self, sources: Sequence[str] | None = None) -> dict[str, PriorDocument]:
        """`prior_documents`, awaited on the store's own thread when it has one."""
        return await self._there(self.prior_documents, sources)

    def record_document(self, result: dict[str, Any], kind: str = "file") -> None:
        self._write(
            "INSERT OR REPLACE INTO documents (source, sha256, status, summary, error, chunks, tokens_in, "
            "tokens_out, updated, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (result["source"], result["sha256"], result["status"], result.get("summary"), result.get("error"),
             result["chunks"], result["tokens_in"], result["tokens_out"], time.time(), kind))

    def forget_documents(self, sources: Iterable[str]) -> None:
        self._write("DELETE FROM documents WHERE source = ?", ((s,) for s in sources), many=True)

    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # -- the Batch API's journal (pipeline/llm/batch.py): what was submitted, before it is waited on --

    def record_batch_file(self, file_id: str, custom_ids: Iterable[str]) -> None:
        """Record an uploaded request file and its requests, committed at once."""
        self._write("INSERT OR IGNORE INTO batch_files (file_id, created) VALUES (?, ?)", (file_id, time.time()))
        self._write("INSERT OR IGNORE INTO batch_requests (custom_id, file_id) VALUES (?, ?)",
                    ((c, file_id) for c in custom_ids), many=True)
        self.commit()

    def record_batch(self, file_id: str, batch_id: str) -> None:
        """Record the batch made of a file, committed at once."""
        self._write("UPDATE batch_files SET batch_id = ? WHERE file_id = ?", (batch_id, file_id))
        self.commit()

    def finish_batch(self, batch_id: str, status: str, lost: Iterable[str] = ()) -> None:
        """Record how a batch ended, and which of its requests it left unanswered (to be sent again)."""
        self._write("UPDATE batch_files SET status = ? WHERE batch_id = ?", (status, batch_id))
        self._write("UPDATE batch_requests SET lost = 1 WHERE custom_id = ? AND file_id IN "
                    "(SELECT file_id FROM batch_files WHERE batch_id = ?)", ((c, batch_id) for c in lost), many=True)
        self.commit()

    def open_batch_requests(self, custom_ids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
        """The batch holding an answer to each of `custom_ids`, if one does: custom_id -> (file id, batch id).

        A finished batch counts too: its output stays at the server, and a run stopped
        after reading it and before storing every answer reads it again rather than pay.
        """
        ids = list(custom_ids)
        found: dict[str, tuple[str, str | None]] = {}
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            for cid, file_id, batch_id in self._db.execute(
                    "SELECT r.custom_id, f.file_id, f.batch_id FROM batch_requests r JOIN batch_files f "
                    "ON r.file_id = f.file_id WHERE r.lost = 0 AND f.status NOT IN ('failed', 'expired', 'cancelled') "
                    f"AND r.custom_id IN ({','.join('?' * len(part))}) ORDER BY f.created",
                    tuple(part)):
                found[cid] = (file_id, batch_id)  # the latest batch wins
        return found

    # Awaited: the journal is written (and committed) before the caller goes on to wait on the batch.

    async def arecord_batch_file(self, file_id: str, custom_ids: Iterable[str]) -> None:
        await self._there(self.record_batch_file, file_id, list(custom_ids))

    async def arecord_batch(self, file_id: str, batch_id: str) -> None:
        await self._there(self.record_batch, file_id, batch_id)

    async def afinish_batch(self, batch_id: str, status: str, lost: Iterable[str] = ()) -> None:
        await self._there(self.finish_batch, batch_id, status, list(lost))

    async def aopen_batch_requests(self, custom_ids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
        return await self._there(self.open_batch_requests, list(custom_ids))

    def open_batches(self) -> list[str]:
        """The batches submitted and not yet seen to end."""
        return [row[0] for row in self._db.execute(
            "SELECT batch_id FROM batch_files WHERE status = 'open' AND batch_id IS NOT NULL")]
