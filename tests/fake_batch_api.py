"""Fake OpenAI Batch API (`/v1/files`, `/v1/batches`) on 127.0.0.1, for tests.

    async with FakeBatchAPI(polls_per_status=1) as api:
        ...  # point the client at api.base_url; api.answered counts each custom_id answered

A batch moves validating -> in_progress -> finalizing -> completed, one status per
`polls_per_status` polls of `GET /v1/batches/{id}`, so a client must poll to see it end.
Answers come from the same reply function as the chat fake (`default_reply`), so a batch
run and a synchronous run against the same fake model give the same summary. `outcome`
makes the next batches end otherwise: "expired" or "cancelled" (the first half of the
requests answered, the rest not), or "failed" (nothing answered, validation errors).
A request whose messages hold `fail_marker` gets a per-request error in the error file.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from typing import Any

from aiohttp import web

from tests.fake_openai import HOST, ReplyFn, default_reply

_STEPS = ("validating", "in_progress", "finalizing", "completed")


class FakeBatchAPI:
    """In-process fake of the Batch API; every option is a public attribute that may change while it runs."""

    def __init__(self, *, reply: ReplyFn | None = None, polls_per_status: int = 1, fail_marker: str | None = None,
                 max_requests_per_file: int = 50_000, max_file_bytes: int = 200 * 2**20) -> None:
        self.reply = reply or default_reply
        self.polls_per_status = polls_per_status
        self.fail_marker = fail_marker
        self.outcome = "completed"  # the end of batches created from now on
        self.max_requests_per_file, self.max_file_bytes = max_requests_per_file, max_file_bytes
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.answered: collections.Counter[str] = collections.Counter()  # custom_id -> answers given
        self.bodies: list[dict[str, Any]] = []  # every request line submitted, in order
        self.polls = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    async def __aenter__(self) -> FakeBatchAPI:
        app = web.Application(client_max_size=self.max_file_bytes + 2**20)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{id}", self._get)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):04d}"

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-batch-model", "object": "model"}]})

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("purpose") not in ("batch", "batch_output"):
            return _error(400, "purpose must be 'batch'")
        upload = form.get("file")
        data = upload.file.read() if hasattr(upload, "file") else str(upload or "").encode()
        if len(data) > self.max_file_bytes:
            return _error(400, f"file is larger than {self.max_file_bytes} bytes")
        lines = [line for line in data.decode("utf-8").splitlines() if line.strip()]
        if len(lines) > self.max_requests_per_file:
            return _error(400, f"file has more than {self.max_requests_per_file} requests")
        file_id = self._id("file")
        self.files[file_id] = {"id": file_id, "bytes": len(data), "data": data, "purpose": form.get("purpose")}
        return web.json_response({"id": file_id, "object": "file", "bytes": len(data), "purpose": "batch",
                                  "filename": getattr(upload, "filename", "batch.jsonl")})

    async def _content(self, request: web.Request) -> web.Response:
        file = self.files.get(request.match_info["id"])
        if file is None:
            return _error(404, "no such file")
        return web.Response(body=file["data"], content_type="application/jsonl")

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        file = self.files.get(body.get("input_file_id", ""))
        if file is None:
            return _error(400, "input_file_id names no uploaded file")
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return _error(400, "endpoint must be /v1/chat/completions and completion_window 24h")
        lines = [json.loads(line) for line in file["data"].decode("utf-8").splitlines() if line.strip()]
        self.bodies += lines
        batch_id = self._id("batch")
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "status": "validating",
            "input_file_id": file["id"], "completion_window": "24h", "created_at": int(time.time()),
            "output_file_id": None, "error_file_id": None, "metadata": body.get("metadata"),
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "_lines": lines, "_polls": 0, "_outcome": self.outcome}
        return web.json_response(_public(self.batches[batch_id]))

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [_public(b) for b in reversed(self.batches.values())]})

    async def _get(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "no such batch")
        self.polls += 1
        batch["_polls"] += 1
        if batch["status"] in _STEPS[:-1] and batch["_polls"] >= self.polls_per_status:
            batch["_polls"] = 0
            self._advance(batch)
        elif batch["status"] == "cancelling":
            self._finish(batch, "cancelled")
        return web.json_response(_public(batch))

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "no such batch")
        if batch["status"] in _STEPS[:-1]:
            batch["status"] = "cancelling"
        return web.json_response(_public(batch))

    def _advance(self, batch: dict[str, Any]) -> None:
        following = _STEPS[_STEPS.index(batch["status"]) + 1]
        if following == "in_progress" and batch["_outcome"] == "failed":
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": "fake failure"}]}
            return
        if following == "completed":
            self._finish(batch, "expired" if batch["_outcome"] == "expired" else
                         "cancelled" if batch["_outcome"] == "cancelled" else "completed")
            return
        batch["status"] = following

    def _finish(self, batch: dict[str, Any], status: str) -> None:
        """End a batch: answer its requests (the first half only unless completed) into output and error files."""
        lines = batch["_lines"]
        answered = lines if status == "completed" else lines[:len(lines) // 2]
        out, err = [], []
        for line in answered:
            messages = line["body"]["messages"]
            if self.fail_marker and any(self.fail_marker in str(m.get("content")) for m in messages):
                err.append({"id": self._id("req"), "custom_id": line["custom_id"], "response": None,
                            "error": {"code": "server_error", "message": "the fake failed this request"}})
                continue
            text = self.reply(messages)
            self.answered[line["custom_id"]] += 1
            usage = {"prompt_tokens": sum(len(str(m.get("content"))) for m in messages) // 4,
                     "completion_tokens": max(1, len(text) // 4)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            out.append({"id": self._id("req"), "custom_id": line["custom_id"], "error": None, "response": {
                "status_code": 200, "request_id": self._id("rid"), "body": {
                    "id": self._id("chatcmpl"), "object": "chat.completion", "model": line["body"].get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": usage}}})
        if out:
            batch["output_file_id"] = self._store_file(out)
        if err:
            batch["error_file_id"] = self._store_file(err)
        batch["status"] = status
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
        batch["completed_at" if status == "completed" else f"{status}_at"] = int(time.time())

    def _store_file(self, rows: list[dict[str, Any]]) -> str:
        data = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
        file_id = self._id("file")
        self.files[file_id] = {"id": file_id, "bytes": len(data), "data": data, "purpose": "batch_output"}
        return file_id

    async def settle(self, rounds: int = 10) -> None:
        """Let the event loop run a few turns (for tests that stop a client between two steps)."""
        for _ in range(rounds):
            await asyncio.sleep(0)


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=status)
