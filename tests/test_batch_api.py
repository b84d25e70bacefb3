"""The Batch API caller against a fake Batch API: one submission per call, across restarts and failed batches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from pipeline.errors import BatchPendingError, LLMError
from pipeline.llm.batch import BatchCaller, BatchSettings, custom_id
from pipeline.prompting import Prompt
from pipeline.result_store import ResultStore
from tests.fake_batch_api import FakeBatchAPI
from tests.fake_openai import default_reply

FAST = BatchSettings(gather=0.05, poll_first=0.01, poll_max=0.02)


def prompt(n: int) -> Prompt:
    return Prompt("Summarize the document.", f'<document id="D1">\nDocument number {n} says {n * 7} boats sailed.\n'
                                             "</document>")


def expected(n: int) -> str:
    p = prompt(n)
    return default_reply([{"role": "system", "content": p.system}, {"role": "user", "content": p.user}])


async def answers(caller: BatchCaller, ns: range) -> list[object]:
    return await asyncio.wait_for(asyncio.gather(*(caller.acomplete(prompt(n), 100) for n in ns),
                                                 return_exceptions=True), timeout=20)


def make(session: aiohttp.ClientSession, api: FakeBatchAPI, journal: ResultStore | None = None,
         **settings: object) -> BatchCaller:
    return BatchCaller(session, api.base_url, "sk-test", model="m", journal=journal,
                       settings=BatchSettings(**{**FAST.__dict__, **settings}))


async def test_calls_of_a_round_go_out_as_one_batch_and_come_back_matched() -> None:
    async with FakeBatchAPI(polls_per_status=2) as api, aiohttp.ClientSession() as session:
        caller = make(session, api)
        out = await answers(caller, range(5))
        await caller.aclose()
    assert [text for text, _usage in out] == [expected(n) for n in range(5)]  # type: ignore[misc]
    assert len(api.batches) == 1 and len(api.bodies) == 5
    assert sorted(api.answered.values()) == [1] * 5
    assert all(usage["input_tokens"] > 0 for _text, usage in out)  # type: ignore[misc]
    batch = caller.report()[0]
    assert batch["status"] == "completed" and batch["requests"] == 5 and batch["completed"] == 5


async def test_files_are_split_under_the_request_limit() -> None:
    async with FakeBatchAPI() as api, aiohttp.ClientSession() as session:
        caller = make(session, api, max_requests=2)
        out = await answers(caller, range(5))
        await caller.aclose()
    assert all(isinstance(o, tuple) for o in out)
    assert sorted(len(f["data"].splitlines()) for f in api.files.values() if f["purpose"] == "batch") == [1, 2, 2]
    assert sum(api.answered.values()) == 5


async def test_no_wait_records_the_batch_and_a_later_run_collects_it_without_submitting_again(tmp_path: Path) -> None:
    async with FakeBatchAPI(polls_per_status=3) as api, aiohttp.ClientSession() as session:
        store = ResultStore(tmp_path / "store.sqlite")
        first = make(session, api, store, wait=False)
        out = await answers(first, range(4))
        await first.aclose()
        assert all(isinstance(o, BatchPendingError) for o in out)
        assert "run the same command again" in str(out[0])
        store.close()
        # A new process: a new store object on the same file, a new caller.
        store = ResultStore(tmp_path / "store.sqlite")
        assert len(store.open_batches()) == 1
        second = make(session, api, store)
        again = await answers(second, range(4))
        await second.aclose()
        assert store.open_batches() == []
        store.close()
    assert [t for t, _u in again] == [expected(n) for n in range(4)]  # type: ignore[misc]
    assert len(api.batches) == 1 and len(api.bodies) == 4  # submitted once
    assert sorted(api.answered.values()) == [1] * 4


@pytest.mark.parametrize("outcome", ["expired", "cancelled", "failed"])
async def test_an_unfinished_batch_has_only_its_unanswered_requests_sent_again(outcome: str) -> None:
    async with FakeBatchAPI() as api, aiohttp.ClientSession() as session:
        api.outcome = outcome
        caller = make(session, api)
        task = asyncio.ensure_future(answers(caller, range(6)))
        for _ in range(400):  # bounded: until the first batch exists
            if api.batches:
                break
            await asyncio.sleep(0.01)
        api.outcome = "completed"  # the next batch completes
        out = await task
        await caller.aclose()
    assert [t for t, _u in out] == [expected(n) for n in range(6)]  # type: ignore[misc]
    assert len(api.batches) == 2
    assert sorted(api.answered.values()) == [1] * 6  # every call answered once
    second = list(api.batches.values())[1]
    assert second["request_counts"]["total"] == (6 if outcome == "failed" else 3)


async def test_a_request_the_batch_failed_fails_that_call_only() -> None:
    async with FakeBatchAPI(fail_marker="number 2 ") as api, aiohttp.ClientSession() as session:
        caller = make(session, api)
        out = await answers(caller, range(4))
        await caller.aclose()
    assert isinstance(out[2], LLMError) and "failed this request" in str(out[2])
    assert [isinstance(o, tuple) for o in out] == [True, True, False, True]


async def _uploaded_and_recorded(crashed: BatchCaller, store: ResultStore, n: int) -> str:
    """Upload the request file of prompt `n` and record it, as a run does before it creates the batch."""
    body = crashed.request(prompt(n), 100)
    part = crashed._files({custom_id(body): body})[0]
    file_id = await crashed._upload(part)
    store.record_batch_file(file_id, part)
    return file_id


async def test_a_file_uploaded_before_a_crash_is_made_a_batch_without_uploading_again(tmp_path: Path) -> None:
    async with FakeBatchAPI() as api, aiohttp.ClientSession() as session:
        store = ResultStore(tmp_path / "s.sqlite")
        # The run died after the upload was recorded and before the batch was created.
        await _uploaded_and_recorded(make(session, api, store), store, 1)
        uploads = len(api.files)
        later = make(session, api, store)
        (text, _usage), = await answers(later, range(1, 2))
        await later.aclose()
        store.close()
    assert text == expected(1)
    assert len(api.files) == uploads + 1  # only the output file is new: no second upload
    assert len(api.batches) == 1


async def test_a_batch_created_but_not_recorded_is_found_rather_than_made_again(tmp_path: Path) -> None:
    async with FakeBatchAPI() as api, aiohttp.ClientSession() as session:
        store = ResultStore(tmp_path / "s.sqlite")
        crashed = make(session, api, store)
        file_id = await _uploaded_and_recorded(crashed, store, 3)
        await crashed._create(file_id)  # created at the server; the run died before recording it
        later = make(session, api, store)
        (text, _usage), = await answers(later, range(3, 4))
        await later.aclose()
        store.close()
    assert text == expected(3)
    assert len(api.batches) == 1 and sum(api.answered.values()) == 1


async def test_answers_read_back_but_not_stored_are_read_again_not_paid_again(tmp_path: Path) -> None:
    async with FakeBatchAPI() as api, aiohttp.ClientSession() as session:
        store = ResultStore(tmp_path / "s.sqlite")
        first = make(session, api, store)
        await answers(first, range(3))  # the run died here, before the runner stored the answers
        await first.aclose()
        later = make(session, api, store)
        again = await answers(later, range(3))
        await later.aclose()
        store.close()
    assert [t for t, _u in again] == [expected(n) for n in range(3)]  # type: ignore[misc]
    assert len(api.batches) == 1 and sorted(api.answered.values()) == [1] * 3


async def test_a_request_failed_by_its_batch_is_asked_again_by_a_later_run(tmp_path: Path) -> None:
    async with FakeBatchAPI(fail_marker="number 1 ") as api, aiohttp.ClientSession() as session:
        store = ResultStore(tmp_path / "s.sqlite")
        first = make(session, api, store)
        out = await answers(first, range(2))
        await first.aclose()
        assert isinstance(out[1], LLMError)
        api.fail_marker = None
        later = make(session, api, store)
        again = await answers(later, range(2))
        await later.aclose()
        store.close()
    assert not any(isinstance(o, Exception) for o in again), again
    assert [t for t, _u in again] == [expected(n) for n in range(2)]  # type: ignore[misc]
    assert len(api.batches) == 2 and api.answered[max(api.answered, key=api.answered.get)] == 1
    assert len(api.bodies) == 3  # the failed request alone went out again
