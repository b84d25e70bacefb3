"""Summarize many documents into one: `python run.py data/*.txt`.

The only module that reads argv and the environment, prints, or exits. Exit codes:
0 every input summarized; 3 some inputs failed or were skipped (the rest summarized);
1 bad usage, or nothing could be summarized; 130 interrupted (143 on SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_PARTIAL, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 3, 130, 143
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULTS = {"concurrency": 16, "chunk_tokens": 2000, "token_max": 8000}
# The embedded model is small: short chunks, short answers, greedy decoding with a
# repetition penalty (it loops at higher temperatures), one request per server slot.
LOCAL_DEFAULTS = {"concurrency": 4, "chunk_tokens": 800, "token_max": 2000}
LOCAL_SETTINGS = {"temperature": 0.0, "extra_body": {"repeat_penalty": 1.1},
                  "map_max_tokens": 100, "final_max_tokens": 500}

log = logging.getLogger("run")


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1 with one line, like every other error of this tool."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_ERROR, f"error: {message} (see --help)\n")


def _number(convert: type, lowest: float, inclusive: bool) -> Any:
    """An argparse type: a `convert` number at or above `lowest` (Context.validate checks again)."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if convert is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if value < lowest or (value == lowest and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {'at least' if inclusive else 'more than'} {lowest:g}, "
                                             f"got {text!r}")
        return value

    parse.__name__ = convert.__name__
    return parse


COUNT, RETRIES, POSITIVE, AMOUNT = _number(int, 1, True), _number(int, 0, True), _number(float, 0, False), \
    _number(float, 0, True)


def build_parser(env: dict[str, str]) -> argparse.ArgumentParser:
    """The command line; environment variables supply the endpoint defaults."""
    p = _Parser(
        prog="run.py",
        description="Summarize documents with a map-reduce over any OpenAI-compatible chat endpoint.",
        epilog="Exit codes: 0 all inputs summarized, 3 some failed or were skipped, "
               "1 bad usage or nothing summarized, 130 interrupted, 143 terminated.")
    p.add_argument("inputs", nargs="*", metavar="PATH_OR_GLOB",
                   help="files, globs (quote them to recurse with **) or directories (*.txt, *.md inside)")
    p.add_argument("--config", type=Path, help="TOML file with any of these options; the command line wins")
    g = p.add_argument_group("endpoint")
    g.add_argument("--model", default=env.get("OPENAI_MODEL"),
                   help=f"model name (default: $OPENAI_MODEL, else the endpoint's first model, else {DEFAULT_MODEL}); "
                        "'local' runs the embedded model, as happens when no endpoint or key is set")
    g.add_argument("--base-url", default=env.get("OPENAI_BASE_URL"),
                   help="OpenAI-compatible base URL ending in /v1 (default: $OPENAI_BASE_URL)")
    g.add_argument("--api-key", default=env.get("OPENAI_API_KEY"),
                   help="API key (default: $OPENAI_API_KEY; never logged or written to reports)")
    g.add_argument("--concurrency", type=COUNT,
                   help=f"most LLM requests in flight (default {DEFAULTS['concurrency']}, "
                        f"{LOCAL_DEFAULTS['concurrency']} for the embedded model); lowered for a while after 429s")
    g.add_argument("--timeout", type=POSITIVE, default=120.0, help="seconds one LLM call may take (default 120)")
    g.add_argument("--max-retries", type=RETRIES, default=4,
                   help="retries of a call after 408/409/429/5xx, timeouts, resets or malformed answers (default 4)")
    g.add_argument("--rpm", type=POSITIVE, help="most requests per minute")
    g.add_argument("--tpm", type=POSITIVE, help="most tokens per minute (prompt estimate plus max answer)")
    s = p.add_argument_group("summarizing")
    s.add_argument("--chunk-tokens", type=COUNT,
                   help=f"split documents longer than this many tokens into chunks (default "
                        f"{DEFAULTS['chunk_tokens']}, {LOCAL_DEFAULTS['chunk_tokens']} for the embedded model)")
    s.add_argument("--token-max", type=COUNT,
                   help=f"most tokens one reduce call may take in; summaries are collapsed until they fit "
                        f"(default {DEFAULTS['token_max']}, {LOCAL_DEFAULTS['token_max']} for the embedded model)")
    s.add_argument("--language", default="auto",
                   help="language of the summaries: 'auto' answers in the documents' own language, "
                        "or give a code such as en, ko (default auto)")
    g.add_argument("--local-threads", type=COUNT,
                   help="CPU threads for the embedded model (default: cores - 1; on 2 cores, 2 threads are "
                        "faster when idle but stall when anything else runs)")
    b = p.add_argument_group("batch runs")
    b.add_argument("--out", type=Path, help="write summary.md, summaries.jsonl and report.json here")
    b.add_argument("--store", type=Path,
                   help="SQLite result store; finished calls are never paid for twice (default: OUT/store.sqlite)")
    b.add_argument("--no-store", action="store_true", help="keep no result store")
    b.add_argument("--retry-failed", action="store_true",
                   help="send again the unchanged documents that failed in an earlier run")
    b.add_argument("--dry-run", action="store_true",
                   help="read and chunk everything, print the calls, tokens and cost it would take; call nothing")
    b.add_argument("--price-in", type=AMOUNT, help="USD per million prompt tokens (known for some OpenAI models)")
    b.add_argument("--price-out", type=AMOUNT, help="USD per million completion tokens")
    b.add_argument("--max-cost", type=AMOUNT, help="stop cleanly before spending more than this many USD")
    b.add_argument("--memory-limit-mb", type=POSITIVE,
                   help="stop cleanly above this RSS; new calls pause above 85%% of it")
    b.add_argument("--log-json", action="store_true", help="log JSON lines to stderr, for machines")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress, warnings and errors only")
    b.add_argument("-v", "--verbose", action="store_true", help="debug logs, with tracebacks of unexpected errors")
    return p


def parse_args(argv: Sequence[str] | None, env: dict[str, str]) -> argparse.Namespace:
    """Parse the command line over the config file's settings over the environment."""
    from pipeline.config import load_settings

    parser = build_parser(env)
    first, _ = parser.parse_known_args(argv)
    if first.config:
        known = {a.dest for a in parser._actions if a.dest not in ("help", "config")}
        try:
            parser.set_defaults(**load_settings(first.config, known))
        except Exception as exc:  # noqa: BLE001 - shown to the user as a usage error
            parser.error(str(exc))
    args = parser.parse_args(argv)
    if not args.inputs:
        parser.error("give at least one PATH_OR_GLOB (or `inputs` in the config file)")
    if args.store is None and args.out is not None and not args.no_store:
        args.store = args.out / "store.sqlite"
    if args.no_store:
        args.store = None
    return args


class _Collector:
    """Keep what the run reports as it goes, so that an interrupted run still writes it."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.stats: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}
        self.model: str | None = None

    def on_result(self, result: Any) -> None:
        self.results.append(result)

    def on_stats(self, stats: dict[str, Any]) -> None:
        self.stats = stats


def _context(args: argparse.Namespace, collector: _Collector, local: bool = False, **overrides: Any) -> Any:
    from graphs import Context

    defaults = LOCAL_DEFAULTS if local else DEFAULTS
    sized = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    return Context(**{
        "model": args.model or DEFAULT_MODEL, "base_url": args.base_url, "api_key": args.api_key, **sized,
        **(LOCAL_SETTINGS if local else {}),
        "language": args.language, "timeout": args.timeout, "max_retries": args.max_retries,
        "memory_limit_mb": args.memory_limit_mb, "store_path": str(args.store) if args.store else None,
        "retry_failed": args.retry_failed, "rpm": args.rpm, "tpm": args.tpm, "price_in": args.price_in,
        "price_out": args.price_out, "max_cost": args.max_cost,
        "on_result": collector.on_result, "on_stats": collector.on_stats, **overrides})


def _writable(folder: Path, what: str) -> None:
    """Make `folder` and prove that files can be created in it, or raise InputError."""
    from pipeline.errors import InputError

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"cannot write to {what} {folder}: {exc.strerror or exc}") from exc


def _preflight(args: argparse.Namespace) -> None:
    """Check every setting and every place the run will write, before anything is read or called."""
    from graphs.context import check_number
    from pipeline.errors import InputError

    local = _wants_local(args)
    _context(args, _Collector(), local=local, base_url=args.base_url or "http://127.0.0.1/v1").validate()
    if args.local_threads is not None:
        check_number("local_threads", args.local_threads, whole=True, lowest=1, inclusive=True)
    if args.out is not None:
        _writable(args.out, "--out")
    if args.store is not None and not args.dry_run:
        if args.store.is_dir():
            raise InputError(f"the store {args.store} is a folder; give a file such as {args.store / 'store.sqlite'}")
        _writable(args.store.parent, "the store's folder")
        if args.store.exists() and not os.access(args.store, os.R_OK | os.W_OK):
            raise InputError(f"cannot write to the store {args.store}: permission denied")


def _wants_local(args: argparse.Namespace) -> bool:
    return args.model == "local" or (not args.base_url and not args.api_key)


def _openai_chat(args: argparse.Namespace) -> Any:
    """OpenAI itself, for a key without a base URL: langchain-openai's ChatOpenAI and its endpoint."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=args.model, api_key=args.api_key, temperature=0.2, timeout=args.timeout,
                      max_retries=0)  # the pipeline retries, with backoff and adaptive concurrency


async def _summarize(args: argparse.Namespace, paths: list[Path], collector: _Collector) -> str:
    """Run the graph against the embedded model, a configured endpoint, or OpenAI itself."""
    if _wants_local(args):
        return await _summarize_locally(args, paths, collector)
    if args.base_url:
        from pipeline.client import probe_endpoint

        listed = await probe_endpoint(args.base_url, args.api_key)
        args.model = collector.model = args.model or (listed[0] if listed else DEFAULT_MODEL)
        return await _invoke(args, paths, collector, local=False)
    args.model = collector.model = args.model or DEFAULT_MODEL
    return await _invoke(args, paths, collector, local=False, chat_model=_openai_chat(args))


async def _summarize_locally(args: argparse.Namespace, paths: list[Path], collector: _Collector) -> str:
    from pipeline.embedded import EmbeddedServer, default_settings

    log.info("no endpoint configured: starting the embedded local model, a small demo-grade model "
             "(set OPENAI_BASE_URL or OPENAI_API_KEY to use a real one)")
    concurrency = args.concurrency or LOCAL_DEFAULTS["concurrency"]
    async with EmbeddedServer(default_settings(concurrency, threads=args.local_threads)) as server:
        args.base_url, args.model = server.base_url, server.model
        collector.model = server.model
        try:
            return await _invoke(args, paths, collector, local=True)
        finally:
            if (peak := server.peak_rss_mb()) is not None:
                collector.extra["embedded_server_peak_rss_mb"] = round(peak, 1)


async def _invoke(args: argparse.Namespace, paths: list[Path], collector: _Collector, local: bool,
                  **overrides: Any) -> str:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from graphs import graph
    from pipeline.client import redact_url
    from pipeline.progress import BarProgress, LogProgress, NoProgress

    tty = sys.stderr.isatty() and not args.log_json
    progress = NoProgress() if args.quiet else BarProgress() if tty else LogProgress()
    context = _context(args, collector, local=local, progress=progress, **overrides)
    context.validate()
    log.info("summarizing %d files with %s at %s, up to %d calls at a time", len(paths), args.model,
             redact_url(args.base_url) or "OpenAI", context.concurrency)
    # With a bar on screen, log lines go above it rather than through it.
    quiet_logs = logging_redirect_tqdm() if isinstance(progress, BarProgress) else contextlib.nullcontext()
    try:
        with quiet_logs:
            out = await graph.ainvoke({"paths": [str(p) for p in paths]}, context=context)
    finally:
        progress.close()
    return out.get("summary", "")


def _dry_run(args: argparse.Namespace, paths: list[Path]) -> int:
    from graphs.graph import reduce_budget
    from pipeline.language import dominant_language, language_name
    from pipeline.loading import plan_inputs
    from pipeline.preview import preview
    from pipeline.report import atomic_write
    from pipeline.store import ResultStore
    from pipeline.tokens import Chunker, token_counter

    local = _wants_local(args)
    context = _context(args, _Collector(), local=local, base_url=args.base_url or "http://127.0.0.1/v1",
                       **({"model": "local"} if local else {}))
    context.validate()
    count = token_counter(context.model)
    docs = plan_inputs([str(p) for p in paths], [], Chunker(context.chunk_tokens, count))
    language = language_name(args.language) if args.language != "auto" else None
    store = ResultStore(args.store) if args.store and args.store.exists() else None
    try:
        estimate = preview(docs, count=count, map_max_tokens=context.map_max_tokens,
                           collapse_max_tokens=context.collapse_max_tokens,
                           final_max_tokens=context.final_max_tokens, budget=reduce_budget(context),
                           language=language, identity=context.identity, store=store, price=context.price)
    finally:
        if store is not None:
            store.close()
    estimate["reduce_language"] = language or dominant_language(d.language for d in docs)
    estimate["model"] = context.model
    text = json.dumps(estimate, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        atomic_write(args.out / "preview.json", text + "\n")
    if "estimated_cost_usd" not in estimate:
        print(f"no price known for {context.model!r}: pass --price-in and --price-out for a cost",
              file=sys.stderr)
    return EXIT_OK


def _run_async(coro: Any) -> Any:
    """Run `coro`, turning SIGTERM into the same clean stop as Ctrl-C."""
    async def wrapper() -> Any:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None and sys.platform != "win32":
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro

    return asyncio.run(wrapper())


def _report(args: argparse.Namespace, total: int, collector: _Collector, status: str,
            error: str | None, exit_code: int, started: datetime, wall: float) -> dict[str, Any]:
    from pipeline.client import redact_url
    from pipeline.report import document_counts

    return {
        "status": status,
        "exit_code": exit_code,
        "error": error,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "documents": document_counts(collector.results, total),
        "base_url": redact_url(args.base_url),
        "model": collector.model,
        **collector.stats,
        **collector.extra,
        "wall_seconds": round(wall, 3),
    }


def _exit_code(status: str, summary: str, results: list[Any], total: int) -> int:
    if status == "interrupted":
        return EXIT_INTERRUPTED
    if status == "terminated":
        return EXIT_TERMINATED
    ok = sum(r["status"] == "ok" for r in results)
    if status == "error" or not summary or ok == 0:
        return EXIT_ERROR
    return EXIT_PARTIAL if ok < total else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    args = parse_args(argv, dict(os.environ))
    from pipeline.errors import InputError, SummarizerError
    from pipeline.loading import expand_inputs
    from pipeline.logs import setup_logging
    from pipeline.report import write_outputs
    from pipeline.secrets import Redactor, credential_secrets

    # Whatever a server echoes, the key and the URL's credentials leave this process in no text.
    redact = Redactor(credential_secrets(args.api_key, args.base_url))
    setup_logging(quiet=args.quiet, verbose=args.verbose, as_json=args.log_json,
                  redact=redact.text if redact else None)
    started, t0 = datetime.now(timezone.utc), time.monotonic()
    try:
        _preflight(args)
        paths = expand_inputs(args.inputs)
        if args.dry_run:
            return _dry_run(args, paths)
    except InputError as exc:
        print(f"error: {redact.text(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    collector = _Collector()
    summary, error, status = "", None, "ok"
    try:
        summary = _run_async(_summarize(args, paths, collector))
    except KeyboardInterrupt:
        error, status = "interrupted", "interrupted"
    except asyncio.CancelledError:
        error, status = "terminated by SIGTERM", "terminated"
    except SummarizerError as exc:
        error, status = str(exc), "error"
    except Exception as exc:  # noqa: BLE001 - a bug: one line for the user, the traceback in the log
        log.debug("unexpected error", exc_info=True)
        error, status = f"unexpected {type(exc).__name__}: {exc} (rerun with --verbose for the traceback)", "error"
    code = _exit_code(status, summary, collector.results, len(paths))
    if code == EXIT_ERROR and error is None:
        status, error = "error", "nothing could be summarized: every input failed or was skipped"
    if args.out:
        report = _report(args, len(paths), collector, status, error, code, started, time.monotonic() - t0)
        try:
            write_outputs(args.out, redact.text(summary), redact.data(collector.results), redact.data(report))
        except OSError as exc:
            print(f"error: cannot write to {args.out}: {exc.strerror or exc}", file=sys.stderr)
            code = code or EXIT_ERROR
    for r in sorted(collector.results, key=lambda r: r["id"]):
        if r["status"] != "ok":
            log.warning("%s %s: %s", r["status"], r["source"], r["error"])
    if error:
        print(f"error: {redact.text(error)}", file=sys.stderr)
    if summary:
        summary = redact.text(summary)
        sys.stdout.write(summary if summary.endswith("\n") else summary + "\n")
    if code == EXIT_PARTIAL:
        failed = sum(r["status"] == "failed" for r in collector.results)
        skipped = sum(r["status"] == "skipped" for r in collector.results)
        where = f"; see {args.out / 'summaries.jsonl'}" if args.out else ""
        print(f"warning: {failed} failed and {skipped} skipped of {len(paths)} inputs{where}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
