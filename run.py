"""Summarize many documents into one: `python run.py data/*.txt`.

The only module that reads argv and the environment, prints, or exits. Exit codes:
0 every input summarized; 3 some inputs failed or were skipped (the rest summarized);
1 bad usage, or nothing could be summarized; 130 interrupted (143 on SIGTERM).
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

from pipeline.outcome import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, Outcome

log = logging.getLogger("run")


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1 with one line, like every other error of this tool (JSON with --log-json)."""

    as_json = False

    def error(self, message: str) -> Any:
        from pipeline.logs import error_line

        self.exit(EXIT_ERROR, error_line(f"{message} (see --help)", as_json=self.as_json) + "\n")


def _setting(name: str) -> Any:
    """An argparse type for the numeric setting `name`, held to the bounds Context gives it."""
    def parse(text: str) -> Any:
        from graphs.context import BOUNDS, check_number
        from pipeline.errors import InputError

        whole, lowest, inclusive = BOUNDS[name]
        try:
            value = (int if whole else float)(text)
            check_number(name, value, whole=whole, lowest=lowest, inclusive=inclusive)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if whole else 'a number'}, "
                                             f"got {text!r}") from None
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(name.replace("_", "-") + " ")) from None
        return value

    parse.__name__ = name
    return parse


class _AppendOver(argparse.Action):
    """Collect each use of the option into a list that replaces the default (environment, config file)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        items = getattr(namespace, self.dest, None)
        fresh = items is self.default or not isinstance(items, list)  # the first use on this command line
        setattr(namespace, self.dest, [*([] if fresh else items), values])


def _urls(value: Any) -> list[Any]:
    """The base URLs given: none, one (the environment, a config string) or a list."""
    return [] if not value else list(value) if isinstance(value, list) else [value]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mapreduce-summarizer")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser(env: dict[str, str]) -> argparse.ArgumentParser:
    """The command line; `env` gives --ray-address its default (the endpoint's come from Context.from_env)."""
    from pipeline.llm.local_model import TUNING

    p = _Parser(
        prog="summarize" if Path(sys.argv[0]).name == "summarize" else "run.py",
        description="Summarize documents with a map-reduce over any OpenAI-compatible chat endpoint.",
        epilog="Exit codes: 0 all inputs summarized, 3 some failed or were skipped, "
               "1 bad usage or nothing summarized, 130 interrupted, 143 terminated.")
    p.add_argument("inputs", nargs="*", metavar="PATH_OR_GLOB",
                   help="files, globs (quote them to recurse with **), directories (*.txt, *.md inside), "
                        "or - for a document on standard input")
    p.add_argument("--config", type=Path, help="TOML file with any of these options; the command line wins")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    g = p.add_argument_group("endpoint")
    g.add_argument("--model",
                   help="model name (default: $OPENAI_MODEL, else the endpoint's first model, else gpt-4o-mini); "
                        "'local' runs the embedded model, as happens when no endpoint or key is set")
    g.add_argument("--base-url", action=_AppendOver, metavar="URL[=OPTIONS]",
                   help="OpenAI-compatible base URL ending in /v1 (default: $OPENAI_BASE_URL); give it several "
                        "times to spread calls over several servers, each optionally with a weight and its own "
                        "concurrency: http://a:8000/v1=weight:3,concurrency:64 (weight 1 and a share of "
                        "--concurrency by weight unless given); calls go to the least-loaded server for its "
                        "weight, and one that keeps failing is taken out until it answers again")
    g.add_argument("--api-key",
                   help="API key (default: $OPENAI_API_KEY; never logged or written to reports)")
    g.add_argument("--concurrency", type=_setting("concurrency"),
                   help=f"most LLM requests in flight (default 16, "
                        f"{TUNING['concurrency']} for the embedded model); lowered for a while after 429s")
    g.add_argument("--timeout", type=_setting("timeout"), help="seconds one LLM call may take (default 120)")
    g.add_argument("--max-retries", type=_setting("max_retries"),
                   help="retries of a call after 408/409/429/5xx, timeouts, resets or malformed answers (default 4)")
    g.add_argument("--rpm", type=_setting("rpm"), help="most requests per minute")
    g.add_argument("--tpm", type=_setting("tpm"), help="most tokens per minute (prompt estimate plus max answer)")
    s = p.add_argument_group("summarizing")
    s.add_argument("--chunk-tokens", type=_setting("chunk_tokens"),
                   help=f"split documents longer than this many tokens into chunks (default "
                        f"2000, {TUNING['chunk_tokens']} for the embedded model)")
    s.add_argument("--token-max", type=_setting("token_max"),
                   help=f"most tokens one reduce call may take in; summaries are collapsed until they fit "
                        f"(default 8000, {TUNING['token_max']} for the embedded model)")
    s.add_argument("--language", default="auto",
                   help="language of the summaries: 'auto' answers in the documents' own language, "
                        "or give a code such as en, ko (default auto)")
    s.add_argument("--length", default="auto",
                   help="length of the final summary: 'N bullets' (or Nb), 'N words' (or Nw), or 'auto': "
                        "the prompt asks for two bullets per document, 6 to 12, and nothing is cut (default auto)")
    s.add_argument("--seed", type=int,
                   help="sampling seed sent with every call, so that the same files give the same summary "
                        "where the server honours it (default 0)")
    g.add_argument("--local-threads", type=_setting("local_threads"),
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
    b.add_argument("--price-in", type=_setting("price_in"), help="USD per million prompt tokens (known for some OpenAI models)")
    b.add_argument("--price-out", type=_setting("price_out"), help="USD per million completion tokens")
    b.add_argument("--max-cost", type=_setting("max_cost"), help="stop cleanly before spending more than this many USD")
    b.add_argument("--memory-limit-mb", type=_setting("memory_limit_mb"),
                   help="most resident memory (MB) the process may reach, counted absolutely; it must leave "
                        "at least 32 MB above what the process uses at start. Past 85%% of the way from "
                        "the start RSS to it, fewer calls and documents are held at once; above it the "
                        "run stops cleanly")
    r = p.add_argument_group("engine")
    r.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where the map phase runs: local (this process, the default) or ray (Ray Data workers "
                        "read the files and make the calls; needs pip install -e '.[ray]'); the reduce runs here")
    r.add_argument("--ray-address", default=env.get("RAY_ADDRESS"),
                   help="with --engine ray: the Ray cluster to join, e.g. auto or ray://head:10001 "
                        "(default: $RAY_ADDRESS, else a local Ray instance started for the run)")
    r.add_argument("--ray-actors", type=_setting("ray_actors"),
                   help="with --engine ray: actors making the map calls, --concurrency split among them "
                        "(default: one per CPU of the cluster, each with at least 8 calls)")
    b.add_argument("--log-json", action="store_true", help="log JSON lines to stderr, for machines")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress, warnings and errors only")
    b.add_argument("-v", "--verbose", action="store_true", help="debug logs, with tracebacks of unexpected errors")
    return p


def parse_args(argv: Sequence[str] | None, env: dict[str, str]) -> argparse.Namespace:
    """Parse the command line over the config file's settings over the environment."""
    from pipeline.config_file import load_settings

    parser = build_parser(env)
    parser.as_json = "--log-json" in (sys.argv[1:] if argv is None else argv)
    first, _ = parser.parse_known_args(argv)
    if first.config:
        known = {a.dest for a in parser._actions if a.dest not in ("help", "config", "version")}
        try:
            settings = load_settings(first.config, known)
        except Exception as exc:  # noqa: BLE001 - shown to the user as a usage error
            parser.error(str(exc))
        parser.set_defaults(**settings)
        parser.as_json = parser.as_json or bool(settings.get("log_json"))
    args = parser.parse_args(argv)
    if not args.inputs:
        parser.error("give at least one PATH_OR_GLOB, '-' for standard input (or `inputs` in the config file)")
    return args


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

    urls = _urls(args.base_url)
    # One plain URL is one endpoint; several, or one with options, make a pool.
    one = len(urls) == 1 and isinstance(urls[0], str) and parse_endpoint(urls[0]) == EndpointSpec(urls[0])
    endpoint = {"base_url": urls[0]} if one else {"base_urls": urls} if urls else {}
    store = None if args.no_store else args.store or (args.out / "store.sqlite" if args.out else None)
    context = Context.from_env(
        {} if env is None else env, model=args.model, api_key=args.api_key, **endpoint,
        **{k: getattr(args, k) for k in _TUNING}, language=args.language, length=args.length,
        store_path=str(store) if store else None, retry_failed=args.retry_failed, dry_run=args.dry_run,
        engine=args.engine, ray_address=args.ray_address or None, ray_actors=args.ray_actors)
    check_writable(args.out, None if args.dry_run else store)
    return Job(context, args.out, store)


def graph_input(patterns: Sequence[str], stdin: Any) -> tuple[dict[str, Any], int]:
    """The graph's input for the command line's inputs ('-' reads a document from standard input).

    Standard input is read as bytes and decoded as a file is, whatever the locale says.
    """
    from pipeline.text.decoding import decode_bytes
    from pipeline.text.loading import expand_inputs

    paths = expand_inputs([p for p in patterns if p != "-"]) if set(patterns) - {"-"} else []
    texts = []
    if "-" in patterns:
        decoded = decode_bytes(stdin.buffer.read())
        if decoded.warning:
            log.warning("<stdin>: %s", decoded.warning)
        texts.append({"id": "<stdin>", "text": decoded.text})
    return {"paths": paths, "texts": texts}, len(paths) + len(texts)


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
    from pipeline.errors import InputError, SummarizerError
    from pipeline.logs import setup_logging
    from pipeline.progress import BarView
    from pipeline.report import atomic_write, write_outputs
    from pipeline.secrets import Redactor, credential_secrets

    # Whatever a server echoes, the keys and the URLs' credentials leave this process in no text.
    urls = [u for u in [*_urls(args.base_url), env.get("OPENAI_BASE_URL")] if isinstance(u, str)] or [None]
    redact = Redactor([s for key in (args.api_key, env.get("OPENAI_API_KEY")) for url in urls
                       for s in credential_secrets(key, url)])
    setup_logging(quiet=args.quiet, verbose=args.verbose, as_json=args.log_json,
                  redact=redact.text if redact else None)
    content = redact.long_only()  # for what the model wrote
    fail = functools.partial(_say, "error", as_json=args.log_json, redact=redact.text)
    try:
        job = settings(args, env)
        inputs, total = graph_input(args.inputs, sys.stdin)
    except InputError as exc:
        fail(str(exc))
        return EXIT_ERROR
    outcome, view = Outcome(total, base_url=job.context.base_url), _view(args)
    if argv is None:  # a program run: one batch in a process of its own (in-process callers pass argv)
        _batch_gc()
    log.info("summarizing %d inputs", total)
    try:
        # With a bar on screen, log lines go above it rather than through it.
        with logging_redirect_tqdm() if isinstance(view, BarView) else contextlib.nullcontext():
            outcome.finish(_run_async(run_with_progress(inputs, context=job.context, view=view,
                                                        on_result=outcome.results.append, on_event=outcome.on_event)))
    except KeyboardInterrupt:
        outcome.stop("interrupted", "interrupted")
    except asyncio.CancelledError:
        outcome.stop("terminated", "terminated by SIGTERM")
    except SummarizerError as exc:
        outcome.stop("error", str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug: one line for the user, the traceback in the log
        log.debug("unexpected error", exc_info=True)
        outcome.stop("error", f"unexpected {type(exc).__name__}: {exc} (rerun with --verbose for the traceback)")
    if outcome.preview is not None:
        return _print_preview(outcome.preview, job, atomic_write, redact)
    code = outcome.return_code
    if job.out:
        try:
            write_outputs(job.out, content.text(outcome.summary), [_redacted(r, redact, content) for r in outcome.results],
                          redact.data(outcome.report()))
        except OSError as exc:
            fail(f"cannot write to {job.out}: {exc.strerror or exc}")
            code = code or EXIT_ERROR
    for r in sorted(outcome.results, key=lambda r: r["id"]):
        if r["status"] != "ok":
            log.warning("%s %s: %s", r["status"], r["source"], r.get("error"))
    if outcome.message:
        fail(outcome.message)
    if outcome.summary:
        summary = content.text(outcome.summary)
        sys.stdout.write(summary if summary.endswith("\n") else summary + "\n")
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


def _print_preview(estimate: dict[str, Any], job: Job, atomic_write: Any, redact: Any) -> int:
    text = redact.text(json.dumps(estimate, indent=2, ensure_ascii=False))
    print(text)
    if job.out:
        atomic_write(job.out / "preview.json", text + "\n")
    if "estimated_cost_usd" not in estimate:
        print(f"no price known for {estimate.get('model')!r}: pass --price-in and --price-out for a cost",
              file=sys.stderr)
    return EXIT_OK


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
