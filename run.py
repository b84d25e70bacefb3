"""Summarize many documents into one: `python run.py data/*.txt`.

The only module that reads argv and the environment, prints, or exits. Exit codes:
0 every input summarized; 3 some inputs failed or were skipped (the rest summarized);
1 bad usage, or nothing could be summarized; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 3, 130
OPENAI_BASE_URL = "https://api.openai.com/v1"  # used only when an API key and no base URL are set
DEFAULT_MODEL = "gpt-4o-mini"

log = logging.getLogger("run")


def parse_args(argv: Sequence[str] | None, env: dict[str, str]) -> argparse.Namespace:
    """Parse the command line; environment variables supply the endpoint defaults."""
    p = argparse.ArgumentParser(
        prog="run.py",
        description="Summarize documents with a map-reduce over any OpenAI-compatible chat endpoint.",
        epilog="Exit codes: 0 all inputs summarized, 3 some failed or were skipped, "
               "1 bad usage or nothing summarized, 130 interrupted.")
    p.add_argument("inputs", nargs="+", metavar="PATH_OR_GLOB",
                   help="files, globs (quote them to recurse with **) or directories (*.txt, *.md inside)")
    g = p.add_argument_group("endpoint")
    g.add_argument("--model", default=env.get("OPENAI_MODEL"),
                   help="model name (default: $OPENAI_MODEL, else the endpoint's first model, else "
                        f"{DEFAULT_MODEL})")
    g.add_argument("--base-url", default=env.get("OPENAI_BASE_URL"),
                   help="OpenAI-compatible base URL ending in /v1 (default: $OPENAI_BASE_URL)")
    g.add_argument("--api-key", default=env.get("OPENAI_API_KEY"),
                   help="API key (default: $OPENAI_API_KEY; never logged or written to reports)")
    g.add_argument("--concurrency", type=int, default=16, help="most LLM requests in flight (default 16)")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds one LLM call may take (default 120)")
    g.add_argument("--max-retries", type=int, default=4,
                   help="retries of a call after 429, 5xx, timeouts or malformed answers (default 4)")
    s = p.add_argument_group("summarizing")
    s.add_argument("--chunk-tokens", type=int, default=2000,
                   help="split documents longer than this many tokens into chunks (default 2000)")
    s.add_argument("--token-max", type=int, default=8000,
                   help="most tokens one reduce call may take in; summaries are collapsed until "
                        "they fit (default 8000)")
    s.add_argument("--language", default="auto",
                   help="language of the summaries: 'auto' answers in the documents' own language, "
                        "or give a code such as en, ko (default auto)")
    o = p.add_argument_group("output and limits")
    o.add_argument("--out", type=Path, help="write summary.md, summaries.jsonl and report.json here")
    o.add_argument("--memory-limit-mb", type=float,
                   help="stop cleanly above this RSS; new calls pause above 85%% of it")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings and errors only")
    return p.parse_args(argv)


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "aiohttp", "langchain", "langgraph"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _preflight(base_url: str, api_key: str | None, model: str | None) -> str:
    """Check the endpoint answers and accepts the key; return the model to use."""
    import aiohttp

    from pipeline.errors import AuthError, EndpointError

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = base_url.rstrip("/") + "/models"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            async with session.get(url, headers=headers) as resp:
                if resp.status in (401, 403):
                    raise AuthError(f"the endpoint at {base_url} rejected the API key (HTTP {resp.status})")
                listed = (await resp.json(content_type=None)).get("data") if resp.status == 200 else None
    except (aiohttp.ClientConnectorError, aiohttp.InvalidURL, TimeoutError) as exc:
        raise EndpointError(f"cannot reach the LLM endpoint at {base_url} ({exc.__class__.__name__}); "
                            "is the server running?") from exc
    except (aiohttp.ClientError, ValueError, AttributeError):
        listed = None  # some servers have no /models; the first real call will tell
    if model:
        return model
    if listed and isinstance(listed, list) and isinstance(listed[0], dict) and listed[0].get("id"):
        return str(listed[0]["id"])
    return DEFAULT_MODEL


class _Collector:
    """Keep what the run reports as it goes, so that an interrupted run still writes it."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.stats: dict[str, Any] = {}

    def on_result(self, result: Any) -> None:
        self.results.append(result)

    def on_stats(self, stats: dict[str, Any]) -> None:
        self.stats = stats


async def _run(args: argparse.Namespace, paths: list[Path], collector: _Collector) -> str:
    from graphs import Context, graph, recursion_limit
    from pipeline.progress import BarProgress, LogProgress, NoProgress

    base_url, api_key = args.base_url, args.api_key
    if not base_url and not api_key:
        from pipeline.errors import InputError

        raise InputError("no LLM endpoint configured: pass --base-url (or set OPENAI_BASE_URL) for a "
                         "local server such as llama.cpp, vLLM or Ollama, or set OPENAI_API_KEY for OpenAI")
    base_url = base_url or OPENAI_BASE_URL
    model = await _preflight(base_url, api_key, args.model)
    progress = NoProgress() if args.quiet else BarProgress() if sys.stderr.isatty() else LogProgress()
    context = Context(model=model, base_url=base_url, api_key=api_key, concurrency=args.concurrency,
                      chunk_tokens=args.chunk_tokens, token_max=args.token_max, language=args.language,
                      timeout=args.timeout, max_retries=args.max_retries,
                      memory_limit_mb=args.memory_limit_mb, progress=progress,
                      on_result=collector.on_result, on_stats=collector.on_stats)
    log.info("summarizing %d files with %s at %s, %d calls at a time", len(paths), model,
             base_url, args.concurrency)
    try:
        out = await graph.ainvoke({"paths": [str(p) for p in paths]}, context=context,
                                  config={"recursion_limit": recursion_limit(len(paths))})
    finally:
        progress.close()
    return out.get("summary", "")


def _report(args: argparse.Namespace, total: int, collector: _Collector, status: str,
            error: str | None, exit_code: int, started: datetime) -> dict[str, Any]:
    from pipeline.report import document_counts, redact_url

    return {
        "status": status,
        "exit_code": exit_code,
        "error": error,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "documents": document_counts(collector.results, total),
        "base_url": redact_url(args.base_url or (OPENAI_BASE_URL if args.api_key else None)),
        **collector.stats,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    args = parse_args(argv, dict(os.environ))
    _setup_logging(args.quiet)
    from pipeline.errors import InputError, SummarizerError
    from pipeline.loading import expand_inputs
    from pipeline.report import write_outputs

    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    try:
        paths = expand_inputs(args.inputs)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    collector = _Collector()
    summary, error, status = "", None, "ok"
    try:
        summary = asyncio.run(_run(args, paths, collector))
    except KeyboardInterrupt:
        error, status = "interrupted", "interrupted"
    except SummarizerError as exc:
        error, status = str(exc), "error"
    counts = {s: sum(r["status"] == s for r in collector.results) for s in ("ok", "failed", "skipped")}
    if status == "interrupted":
        code = EXIT_INTERRUPTED
    elif status == "error" or not summary or counts["ok"] == 0:
        code = EXIT_ERROR
        if status == "ok":
            status, error = "error", "nothing could be summarized: every input failed or was skipped"
    elif counts["ok"] < len(paths):
        code = EXIT_PARTIAL
    else:
        code = EXIT_OK
    if args.out:
        report = _report(args, len(paths), collector, status, error, code, started)
        report["wall_seconds"] = round(time.monotonic() - t0, 3)
        with contextlib.suppress(OSError):
            write_outputs(args.out, summary, collector.results, report)
    for r in sorted(collector.results, key=lambda r: r["id"]):
        if r["status"] != "ok":
            log.warning("%s %s: %s", r["status"], r["source"], r["error"])
    if error:
        print(f"error: {error}", file=sys.stderr)
    if summary:
        sys.stdout.write(summary if summary.endswith("\n") else summary + "\n")
    if code == EXIT_PARTIAL:
        print(f"warning: {counts['failed']} failed and {counts['skipped']} skipped of {len(paths)} inputs"
              + (f"; see {args.out / 'summaries.jsonl'}" if args.out else ""), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
