"""The command line's options: `run.py --help`, a TOML config file under them, their checks.

Numeric options are held to the bounds graphs.Context gives its settings, so that an
option out of range fails as a usage error naming the option, before anything runs.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE = 1  # as every other error of this tool (pipeline.outcome.EXIT_ERROR)


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1 with one line, like every other error of this tool (JSON with --log-json)."""

    as_json = False

    def error(self, message: str) -> Any:
        from pipeline.logs import error_line

        self.exit(EXIT_USAGE, error_line(f"{message} (see --help)", as_json=self.as_json) + "\n")


def _setting(name: str) -> Any:
    """An argparse type for the numeric setting `name`, held to the bounds Context gives it."""
    def parse(text: str) -> Any:
        from graphs.context import BOUNDS, check_number
        from pipeline.errors import InputError

        whole, lowest, inclusive = BOUNDS[name]
        try:
            value = (int if whole else float)(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if whole else 'a number'}, "
                                             f"got {text!r}") from None
        try:
            check_number(name, value, whole=whole, lowest=lowest, inclusive=inclusive)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(name.replace("_", "-") + " ")) from None
        return value

    parse.__name__ = name
    parse.setting = name  # type: ignore[attr-defined]  # its kind, for a config file's values
    return parse


class _AppendOver(argparse.Action):
    """Collect each use of the option into a list that replaces the default (environment, config file)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        items = getattr(namespace, self.dest, None)
        fresh = items is self.default or not isinstance(items, list)  # the first use on this command line
        setattr(namespace, self.dest, [*([] if fresh else items), values])


def given_urls(value: Any) -> list[Any]:
    """The base URLs given: none, one (a config string) or a list."""
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
               "1 bad usage or nothing summarized, 75 batches submitted and not yet answered (--no-wait: run "
               "again later), 130 interrupted, 143 terminated.")
    p.add_argument("inputs", nargs="*", metavar="PATH_OR_GLOB",
                   help="files, globs (quote them to recurse with **), directories (every document below: "
                        "text, Markdown, PDF, HTML, DOCX, e-mail), "
                        "or - for a document on standard input (read without - when it is piped in and "
                        "nothing else is given)")
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
                   help=f"most LLM requests in flight (default 256, {TUNING['concurrency']} for the embedded model, "
                        f"or the sum of the endpoints' own concurrencies, which a value given caps); below it the "
                        f"calls in flight start at a few and follow what the server can take, from its latency "
                        f"and its 429s")
    g.add_argument("--no-adapt", action="store_true",
                   help="keep --concurrency requests in flight from the start (lowered only after 429s) instead of "
                        "finding the server's capacity")
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
                        "two bullets per document, 6 to 12, held to by cutting bullets (default auto)")
    s.add_argument("--cite", choices=("docs", "lines"), default="docs",
                   help="how bullets name their sources: 'docs' ([D3]) or 'lines' ([D3:12-14], the lines that say it)")
    s.add_argument("--seed", type=int,
                   help="sampling seed sent with every call, so that the same files give the same summary "
                        "where the server honours it (default 0)")
    s.add_argument("--instructions", metavar="TEXT|@FILE",
                   help="what the summary is for, in your words, or @FILE to read them from a file; added to "
                        "the instructions of every step (a changed text never reuses a stored summary)")
    s.add_argument("--focus", metavar="TEXT", help="a question or topic the summary should answer")
    s.add_argument("--prompts", metavar="DIR",
                   help="a folder of template files replacing the package's own: any of map.txt, collapse.txt, "
                        "final.txt, document.txt, summaries.txt, instructions.txt, focus.txt, each with the "
                        "placeholders of the one it replaces")
    g.add_argument("--local-threads", type=_setting("local_threads"),
                   help="CPU threads for the embedded model (default: cores - 1; on 2 cores, 2 threads are "
                        "faster when idle but stall when anything else runs)")
    b = p.add_argument_group("batch runs")
    b.add_argument("--out", type=Path, help="write summary.md, summaries.jsonl and report.json here")
    b.add_argument("--store", type=Path,
                   help="SQLite result store; finished calls are never paid for twice (default: OUT/store.sqlite)")
    b.add_argument("--no-store", action="store_true", help="keep no result store")
    b.add_argument("--store-recover", action="store_true",
                   help="if the result store is damaged, move it aside (to STORE.damaged-TIME) and start a new "
                        "one; its answers are paid for again, and report.json says how many")
    b.add_argument("--retry-failed", action="store_true",
                   help="send again the unchanged documents that failed in an earlier run")
    b.add_argument("--batch", action="store_true",
                   help="send the calls as Batch API jobs (/v1/files + /v1/batches): half the price, answered "
                        "within 24 hours; the store records each batch, so a rerun collects rather than resubmits")
    b.add_argument("--no-wait", action="store_true",
                   help="with --batch: submit what is due, record it and exit 75; run the same command again "
                        "(e.g. hourly from cron) to collect it and go on to the next step")
    b.add_argument("--wait-lock", action="store_true",
                   help="wait for another run using the same store to end (default: stop with one line naming it)")
    b.add_argument("--skipped-ok", action="store_true",
                   help="exit 0 when inputs were only skipped (empty or binary files), none failed")
    b.add_argument("--dry-run", action="store_true",
                   help="read and chunk everything, print the calls, tokens and cost it would take; call nothing")
    b.add_argument("--price-in", type=_setting("price_in"),
                   help="USD per million prompt tokens (known for some OpenAI models)")
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
    i = p.add_argument_group("inputs")
    i.add_argument("--text-field", metavar="FIELD",
                   help="JSON Lines, JSON and CSV inputs: each record is a document, its text in FIELD (a.b if nested)")
    i.add_argument("--id-field", metavar="FIELD", help="with --text-field: the field shown as each record's id")
    i.add_argument("--include", action=_AppendOver, metavar="GLOB",
                   help="only input files whose name (or path, for a GLOB with /) matches; repeatable")
    i.add_argument("--exclude", action=_AppendOver, metavar="GLOB", help="pass over input files that match; repeatable")
    b.add_argument("--log-json", action="store_true", help="log JSON lines to stderr, for machines")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress, warnings and errors only")
    b.add_argument("-v", "--verbose", action="store_true", help="debug logs, with tracebacks of unexpected errors")
    return p


def parse_args(argv: Sequence[str] | None, env: dict[str, str]) -> argparse.Namespace:
    """Parse the command line over the config file's settings over the environment."""
    from pipeline.config_file import load_settings, option_kinds

    parser = build_parser(env)
    parser.as_json = "--log-json" in (sys.argv[1:] if argv is None else argv)
    first, _ = parser.parse_known_args(argv)
    if first.config:
        from graphs.context import BOUNDS

        actions = [a for a in parser._actions if a.dest not in ("help", "config", "version")]
        known = option_kinds(actions)
        for action in actions:  # a numeric setting's kind is Context's
            if (setting := getattr(action.type, "setting", None)) is not None:
                known[action.dest] = "whole number" if BOUNDS[setting][0] else "number"
        try:
            settings = load_settings(first.config, known)
        except Exception as exc:  # noqa: BLE001 - shown to the user as a usage error
            parser.error(str(exc))
        parser.set_defaults(**settings)
        parser.as_json = parser.as_json or bool(settings.get("log_json"))
    args = parser.parse_args(argv)
    if not args.inputs and not stdin_piped(sys.stdin):
        parser.error("give at least one PATH_OR_GLOB, '-' for standard input, or pipe a document in "
                     "(or `inputs` in the config file)")
    return args


def stdin_piped(stdin: Any) -> bool:
    """Whether standard input is a pipe or a file, to be read when no input is named.

    A terminal, /dev/null (a job started by cron), a closed stream or one without a file
    descriptor (a test runner's) is not: the run then asks for its inputs rather than wait.
    """
    try:
        mode = os.fstat(stdin.fileno()).st_mode
    except (AttributeError, OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def instructions_text(value: Any) -> Any:
    """The --instructions given, or the text of the file named by `@FILE`; InputError if unreadable."""
    from pipeline.errors import InputError

    if not isinstance(value, str) or not value.startswith("@"):
        return value
    path = Path(value[1:]).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read the instructions file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"cannot read the instructions file {path}: not UTF-8 text") from None
    if not text.strip():
        raise InputError(f"the instructions file {path} is empty")
    return text
