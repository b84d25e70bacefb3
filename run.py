"""Summarize many documents into one: `python run.py data/*.txt`.

Parse the options (pipeline/cli_options.py), build the run's Context over the
environment's OpenAI variables, run the graph once, write the outputs and exit with
the code pipeline/outcome.py gives: 0 every input summarized; 3 some inputs failed or
were skipped (the rest summarized); 1 bad usage, or nothing could be summarized;
75 batches submitted and not waited for (run the same command later); 130 interrupted (143 on SIGTERM). The only module that reads argv, prints, or exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.cli_options import build_parser, given_urls, instructions_text, parse_args, stdin_piped
from pipeline.outcome import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, Outcome

__all__ = ["build_parser", "graph_input", "main", "parse_args", "settings", "stdin_piped"]

log = logging.getLogger("run")

_TUNING = ("concurrency", "chunk_tokens", "token_max", "timeout", "max_retries", "memory_limit_mb", "rpm", "tpm",
           "price_in", "price_out", "max_cost", "seed", "local_threads")


@dataclass(frozen=True)
class Job:
    """What one invocation does: the run context, and what only the command line knows."""

    context: Any  # graphs.Context
    out: Path | None
    store: Path | None


def settings(args: argparse.Namespace, env: dict[str, str] | None = None) -> Job:
    """Turn the parsed options (over `env`'s OpenAI variables) into the run's settings; InputError for unusable ones.

    Options left unset stay unset: the run gives them their defaults, the embedded model's own where it runs.
    """
    from graphs import Context
    from pipeline.llm.pool import EndpointSpec, parse_endpoint
    from pipeline.report import check_writable

    urls = given_urls(args.base_url)
    # One plain URL is one endpoint; several, or one with options, make a pool.
    one = len(urls) == 1 and isinstance(urls[0], str) and parse_endpoint(urls[0]) == EndpointSpec(urls[0])
    endpoint = {"base_url": urls[0]} if one else {"base_urls": urls} if urls else {}
    store = None if args.no_store else args.store or (args.out / "store.sqlite" if args.out else None)
    context = Context.from_env(
        {} if env is None else env, model=args.model, api_key=args.api_key, **endpoint,
        **{k: getattr(args, k) for k in _TUNING}, language=args.language, length=args.length, cite=args.cite,
        store_path=str(store) if store else None, retry_failed=args.retry_failed, dry_run=args.dry_run,
        store_recover=args.store_recover,
        engine=args.engine, ray_address=args.ray_address or None, ray_actors=args.ray_actors,
        instructions=instructions_text(args.instructions), focus=args.focus, prompts_dir=args.prompts,
        batch=args.batch, batch_wait=not args.no_wait, wait_lock=args.wait_lock, adapt_concurrency=not args.no_adapt,
        text_field=args.text_field, id_field=args.id_field, include=args.include or [], exclude=args.exclude or [])
    check_writable(args.out, None if args.dry_run else store)
    return Job(context, args.out, store)


def graph_input(patterns: Sequence[str], stdin: Any) -> tuple[dict[str, Any], int]:
    """The graph's input for the command line's inputs ('-' reads a document from standard input).

    Standard input is read as bytes and decoded as a file is, whatever the locale says.
    """
    from pipeline.text.decoding import decode_bytes
    from pipeline.text.loading import expand_inputs

    paths = expand_inputs([p for p in patterns if p != "-"], must_find="-" not in patterns)
    texts = []
    if "-" in patterns:
        decoded = decode_bytes(stdin.buffer.read())
        if decoded.warning:
            log.warning("<stdin>: %s", decoded.warning)
        texts.append({"id": "<stdin>", "text": decoded.text})
    return {"paths": paths, "texts": texts}, len(paths) + len(texts)


def _selected(inputs: dict[str, Any], context: Any) -> tuple[dict[str, Any], int]:
    """The inputs narrowed by --include/--exclude, mailboxes and records files listed as their parts, and their count.

    The graph does the same to whatever it is given; done here, the count says how many documents there are.
    """
    from pipeline.text.formats.entries import Fields
    from pipeline.text.selecting import select_inputs

    paths = select_inputs(inputs["paths"], context.include, context.exclude, Fields(context.text_field, context.id_field))
    return {**inputs, "paths": paths}, len(paths) + len(inputs["texts"])


def _run_async(coro: Any) -> Any:
    """Run `coro`, turning SIGTERM into the same clean stop as Ctrl-C."""
    async def wrapper() -> Any:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None and sys.platform != "win32":
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro

    return asyncio.run(wrapper())


def _view(args: argparse.Namespace) -> Any:
    from pipeline.progress import BarView, LogView, NoView

    if args.quiet:
        return NoView()
    return BarView() if sys.stderr.isatty() and not args.log_json else LogView()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code: parse, settle the settings, run the graph once, report."""
    env = dict(os.environ)
    args = parse_args(argv, env)
    from tqdm.contrib.logging import logging_redirect_tqdm

    from graphs import run_with_progress
    from pipeline.errors import BatchPendingError, InputError, NothingSummarizedError, SummarizerError
    from pipeline.logs import setup_logging
    from pipeline.progress import BarView
    from pipeline.report import atomic_write, write_outputs
    from pipeline.secrets import Redactor, credential_secrets
    from pipeline.tracing import settle_tracing

    # Whatever a server echoes, the keys and the URLs' credentials leave this process in no text.
    urls = [u for u in [*given_urls(args.base_url), env.get("OPENAI_BASE_URL")] if isinstance(u, str)] or [None]
    redact = Redactor([s for key in (args.api_key, env.get("OPENAI_API_KEY")) for url in urls
                       for s in credential_secrets(key, url)])
    setup_logging(quiet=args.quiet, verbose=args.verbose, as_json=args.log_json,
                  redact=redact.text if redact else None)
    if warning := settle_tracing():  # a tracer that cannot reach its endpoint would hold the run at exit
        log.warning("%s", warning)
    content = redact.long_only()  # for what the model wrote
    fail = functools.partial(_say, "error", as_json=args.log_json, redact=redact.text)
    try:
        job = settings(args, env)
        inputs, total = graph_input(args.inputs or ["-"], sys.stdin)  # none named: stdin is piped in
        inputs, total = _selected(inputs, job.context)
    except InputError as exc:
        fail(str(exc))
        return EXIT_ERROR
    outcome, view = Outcome(total, skipped_ok=args.skipped_ok, base_url=job.context.base_url), _view(args)
    if argv is None:  # a program run: one batch in a process of its own (in-process callers pass argv)
        _batch_gc()
    log.info("summarizing %d input%s", total, "" if total == 1 else "s")
    try:
        # With a bar on screen, log lines go above it rather than through it.
        with logging_redirect_tqdm() if isinstance(view, BarView) else contextlib.nullcontext():
            outcome.finish(_run_async(run_with_progress(inputs, context=job.context, view=view,
                                                        on_result=outcome.results.append, on_event=outcome.on_event)))
    except KeyboardInterrupt:
        outcome.stop("interrupted", "interrupted")
    except asyncio.CancelledError:
        outcome.stop("terminated", "terminated by SIGTERM")
    except BatchPendingError as exc:
        outcome.stop("pending", str(exc))
    except NothingSummarizedError:
        pass  # each input's reason came with its result: the exit code and its message follow below
    except SummarizerError as exc:
        outcome.stop("error", str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug: one line for the user, the traceback in the log
        log.debug("unexpected error", exc_info=True)
        outcome.stop("error", f"unexpected {type(exc).__name__}: {exc} (rerun with --verbose for the traceback)")
    if outcome.stopped in ("interrupted", "terminated") and (running := outcome.batches_running):
        log.warning("%d batch%s still running at the server, recorded in the store: run the same command again "
                    "to collect %s", running, "" if running == 1 else "es", "it" if running == 1 else "them")
    if outcome.preview is not None:
        return _print_preview(outcome.preview, job, atomic_write, redact, as_json=args.log_json)
    code = outcome.return_code
    if job.out:
        try:
            results = [_redacted(r, redact, content) for r in outcome.results]
            write_outputs(job.out, content.text(outcome.summary), results, redact.data(outcome.report()),
                          evidence=content.data(outcome.evidence))
        except OSError as exc:
            fail(f"cannot write to {job.out}: {exc.strerror or exc}")
            code = code or EXIT_ERROR
    for r in sorted(outcome.results, key=lambda r: r["id"]):
        if r["status"] != "ok":
            log.warning("%s %s: %s", r["status"], r["source"], r.get("error"),
                        extra={"event": "document", "document": r["source"], "status": r["status"]})
    stats = outcome.stats
    calls = sum((stats.get("llm_calls") or {}).values())
    log.info("finished: %s, %d call%s, %d tokens, %.1f s", outcome.status, calls, "" if calls == 1 else "s",
             (stats.get("prompt_tokens") or 0) + (stats.get("completion_tokens") or 0), outcome.seconds,
             extra={"event": "finished", "status": outcome.status, "exit_code": code, "calls": calls,
                    "tokens": (stats.get("prompt_tokens") or 0) + (stats.get("completion_tokens") or 0),
                    "seconds": round(outcome.seconds, 3)})
    if job.store is None and not args.no_store and calls:
        log.info("no answer was kept: give --out DIR (or --store FILE) and a rerun pays only for what changed")
    if outcome.message and outcome.stopped == "pending":  # not an error: the work goes on at the server
        _say("pending", outcome.message, as_json=args.log_json, redact=redact.text)
    elif outcome.message:
        fail(outcome.message)
    if outcome.summary:
        summary = content.text(outcome.summary)
        _to_stdout(summary if summary.endswith("\n") else summary + "\n")
    if code == EXIT_PARTIAL:
        failed = sum(r["status"] == "failed" for r in outcome.results)
        skipped = sum(r["status"] == "skipped" for r in outcome.results)
        where = f"; see {job.out / 'summaries.jsonl'}" if job.out else ""
        _say("warning", f"{failed} failed and {skipped} skipped of {total} inputs{where}", as_json=args.log_json,
             redact=redact.text)
    return code


def _batch_gc() -> None:
    """Set the garbage collector up for one long batch: 20,000 calls spent 1.3 s of CPU in it, now 0.17 s."""
    # What the imports built (LangChain, LangGraph, pydantic) lives as long as the process;
    # frozen, no full collection walks it again.
    gc.freeze()
    # A young collection every 10,000 allocations rather than 700: each one also walks the
    # tasks and buffers of every call in flight.
    gc.set_threshold(10_000, 10, 10)


def _redacted(result: dict[str, Any], redact: Any, content: Any) -> dict[str, Any]:
    """A result as written: its error (server text) fully redacted, its summary (model text) for long secrets."""
    return {**content.data(result), **({"error": redact.text(result["error"])} if "error" in result else {})}


def _print_preview(estimate: dict[str, Any], job: Job, atomic_write: Any, redact: Any, *,
                   as_json: bool = False) -> int:
    """Print a dry run's estimate; one over --max-cost exits 1, as the run would, stopped at the cap."""
    text = redact.text(json.dumps(estimate, indent=2, ensure_ascii=False))
    _to_stdout(text + "\n")
    if job.out:
        atomic_write(job.out / "preview.json", text + "\n")
    if "estimated_cost_usd" not in estimate:
        print(f"no price known for {estimate.get('model')!r}: pass --price-in and --price-out for a cost",
              file=sys.stderr)
    if estimate.get("over_max_cost"):
        def usd(amount: float) -> str:
            return "$" + f"{amount:.6f}".rstrip("0").rstrip(".")

        _say("error", f"the estimated cost, {usd(estimate['estimated_cost_usd'])}, passes --max-cost "
             f"{usd(estimate['max_cost_usd'])}: a run would stop before the call that could pass it, keeping what "
             "it finished, and exit 1", as_json=as_json, redact=redact.text)
        return EXIT_ERROR
    return EXIT_OK


def _to_stdout(text: str) -> None:
    """Write `text` to standard output; a reader that went away (`| head`) ends the output quietly."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # What is still buffered would fail again at exit, with a traceback: it goes nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _say(level: str, message: str, *, as_json: bool, redact: Any) -> None:
    """Print the run's closing error or warning as one line: plain text, or a JSON object with --log-json."""
    from pipeline.logs import error_line

    print(error_line(redact(message), as_json=as_json, level=level), file=sys.stderr)


if __name__ == "__main__":
    code = main()
    # Everything is written and closed: spare the interpreter's last garbage collections
    # the hundreds of thousands of objects LangChain and LangGraph leave (0.1-0.25 s at exit).
    gc.freeze()
    sys.exit(code)
