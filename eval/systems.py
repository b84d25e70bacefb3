"""The systems compared: the pipeline as the command line runs it, a lead-N baseline, and the tutorial shape.

Each takes an item's document files and gives back an `Output`. The two model systems
talk to one embedded server that the harness starts once (`pipeline.llm.embedded`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval import scores

log = logging.getLogger(__name__)


@dataclass
class Output:
    """One system's answer for one item."""

    summary: str
    seconds: float
    tag_to_doc: dict[int, str | None] | None = None  # tag number -> eval document id; None: the system cites nothing
    calls: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


def _doc_id(source: str) -> str:
    return Path(source).stem


# --- lead-N ------------------------------------------------------------------------------


def lead_n(paths: list[Path], reference: str) -> Output:
    """The first N words of each document, N chosen so the total matches the reference's length."""
    n = max(1, math.ceil(scores.words(reference) / len(paths)))
    parts = [" ".join(p.read_text(encoding="utf-8").split()[:n]) for p in paths]
    return Output(summary="\n\n".join(parts), seconds=0.0, detail={"words_per_document": n})


# --- the pipeline --------------------------------------------------------------------------


def _cli_job(paths: list[Path], out: Path, base_url: str, model: str) -> tuple[Any, dict[str, Any]]:
    """The job `run.py PATHS --out OUT` builds with no endpoint configured, pointed at our running server."""
    import run

    args = run.parse_args([*map(str, paths), "--out", str(out), "--no-store", "-q"], env={})
    job = run.settings(args, env={})
    # Settled as for the embedded model (its tuning), then pointed at our server.
    context = dataclasses.replace(job.context.resolved(), base_url=base_url, model=model)
    inputs, _ = run.graph_input(args.inputs, sys.stdin)
    return dataclasses.replace(job, context=context), inputs


async def pipeline(paths: list[Path], out: Path, base_url: str, model: str) -> Output:
    """Run the pipeline once, the way `run.py PATHS --out OUT` does with the embedded model's settings.

    The outputs (summary.md, summaries.jsonl, report.json) are written to `out` as the
    command line writes them, and the tags are read back from the Sources list and
    summaries.jsonl.
    """
    from graphs import run_with_progress
    from pipeline.outcome import Outcome
    from pipeline.progress import NoView
    from pipeline.report import write_outputs

    job, inputs = _cli_job(paths, out, base_url, model)
    outcome = Outcome(len(paths))
    started = time.monotonic()
    outcome.finish(await run_with_progress(inputs, context=job.context, view=NoView(),
                                           on_result=outcome.results.append, on_event=outcome.on_event))
    seconds = time.monotonic() - started
    report = {"wall_seconds": round(seconds, 3), **outcome.stats}
    write_outputs(out, outcome.summary, outcome.results, report)
    return Output(summary=outcome.summary, seconds=seconds, tag_to_doc=read_tags(out, outcome.summary),
                  calls=sum((outcome.stats.get("llm_calls") or {}).values()),
                  detail={"map_summaries": {_doc_id(r["source"]): r.get("summary", r.get("error"))
                                            for r in outcome.results},
                          "stats": outcome.stats})


def read_tags(out: Path, summary: str) -> dict[int, str | None]:
    """Tag number -> eval document id, from the Sources list, else the n-th line of summaries.jsonl."""
    _, legend = scores.split_summary(summary)
    mapping: dict[int, str | None] = {k: _doc_id(v) for k, v in scores.sources_map(legend).items()}
    jsonl = out / "summaries.jsonl"
    if jsonl.is_file():
        for n, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), start=1):
            mapping.setdefault(n, _doc_id(json.loads(line)["source"]))
    return mapping


# --- the tutorial's shape ------------------------------------------------------------------

TUTORIAL_MAP = "Write a short summary of this text:\n\n{text}"
TUTORIAL_REDUCE = ("Below are summaries of parts of a collection:\n\n{summaries}\n\n"
                   "Condense them into one final summary of the main themes.")
TUTORIAL_TOKEN_MAX = 1000  # the tutorial's collapse threshold
TUTORIAL_CHUNK_TOKENS = 1000


async def tutorial(paths: list[Path], base_url: str, model: str, *, map_max_tokens: int, final_max_tokens: int,
                   temperature: float, extra_body: dict[str, Any], concurrency: int = 4) -> Output:
    """LangChain's map-reduce summarization tutorial, in outline, on the same server and decoding settings.

    Split documents into chunks of 1,000 tokens; summarize each chunk briefly (map); while
    the summaries together exceed 1,000 tokens, merge them in groups that fit (collapse);
    then condense what is left into one summary of the main themes (reduce). No tags, no
    language instruction: the tutorial has neither.
    """
    from langchain_openai import ChatOpenAI
    from langchain_text_splitters import CharacterTextSplitter

    from pipeline.text.counting import token_counter

    count = token_counter(model)
    llm = ChatOpenAI(base_url=base_url, api_key="local", model=model, temperature=temperature,
                     extra_body=extra_body or None, max_retries=2, timeout=600)
    gate = asyncio.Semaphore(concurrency)
    calls = 0

    async def ask(prompt: str, max_tokens: int) -> str:
        nonlocal calls
        async with gate:
            calls += 1
            reply = await llm.ainvoke(prompt, max_tokens=max_tokens)
        return str(reply.content).strip()

    started = time.monotonic()
    splitter = CharacterTextSplitter(separator="\n\n", chunk_size=TUTORIAL_CHUNK_TOKENS, chunk_overlap=0,
                                     length_function=count)
    chunks = [c for p in paths for c in splitter.split_text(p.read_text(encoding="utf-8"))]
    summaries = list(await asyncio.gather(*(ask(TUTORIAL_MAP.format(text=c), map_max_tokens) for c in chunks)))
    levels = 0
    while sum(count(s) for s in summaries) > TUTORIAL_TOKEN_MAX and len(summaries) > 1 and levels < 5:
        groups: list[list[str]] = [[]]
        for s in summaries:
            if groups[-1] and sum(count(x) for x in groups[-1]) + count(s) > TUTORIAL_TOKEN_MAX:
                groups.append([])
            groups[-1].append(s)
        summaries = list(await asyncio.gather(
            *(ask(TUTORIAL_REDUCE.format(summaries="\n\n".join(g)), final_max_tokens) for g in groups)))
        levels += 1
    final = await ask(TUTORIAL_REDUCE.format(summaries="\n\n".join(summaries)), final_max_tokens)
    return Output(summary=final, seconds=time.monotonic() - started, calls=calls,
                  detail={"chunks": len(chunks), "collapse_levels": levels})
