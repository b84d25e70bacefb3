"""Grouping's cost per document, and the collapse calls a rerun pays again after one document is added.

    python -m bench.grouping [--n 20000] [--rerun 200]

The cost: `group_documents` over N summaries of documents on N/5 topics (each with its
own words, all sharing common ones), and over N summaries of bench/docs.py's texts,
whose words are all common. The rerun: `--rerun` documents on topics that interleave
by name, summarized against the fake server with a result store and a small
--token-max so that the reduce collapses, then the same run with one document added
(at five places by name, each on an existing topic, then on a topic of its own): the
collapse calls paid again, against those of the first run. Run from another checkout's root with
PYTHONPATH set to it to compare (this file only calls the graph for the rerun).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

_COMMON = "the report said that work on the site went on through the week and the month".split()
_FORMS = ("On day {n} the {a} waited by the {b} while the {c} checked the {d}.",
          "Crews moved the {a} past the {b} before the {c} closed, and the {d} stayed until {n}.",
          "Reports named the {a}, the {b} and the {c} as causes of delay for the {d} after {n} visits.",
          "Nobody expected the {a} to outlast the {b}, yet the {c} kept the {d} busy for {n} hours.",
          "In week {n} the {a} grew faster than any {b} or {c} the {d} had recorded.")


def topic_words(topic: int) -> list[str]:
    """Twelve made-up words of one topic: seven random letters each, so that no two topics share one."""
    rng = random.Random(topic * 7919)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(7)) for _ in range(12)]


def topic_text(topic: int, seed: int, sentences: int = 8) -> str:
    """A document on `topic`: its words in sentences of a few forms."""
    rng = random.Random(seed)
    words = topic_words(topic)
    return " ".join(rng.choice(_FORMS).format(n=rng.randint(10, 99), **dict(zip("abcd", rng.sample(words, 4))))
                    for _ in range(sentences))


def _cost(n: int) -> dict[str, float]:
    from bench.docs import make_text
    from pipeline.grouping import group_documents

    def results(texts: list[str]) -> list[Any]:
        return [{"id": i, "source": f"doc-{i:05d}", "sha256": "", "status": "ok", "chunks": 1, "tokens_in": 0,
                 "tokens_out": 0, "summary": "\n".join(f"- {s}." for s in text.split(". ")[:5])}
                for i, text in enumerate(texts, start=1)]

    out: dict[str, float] = {}
    for name, texts in (("topics", [topic_text(i % max(1, n // 5), i) for i in range(n)]),
                        ("bench_docs", [make_text(i) for i in range(1, n + 1)])):
        docs = results(texts)
        started = time.perf_counter()
        groups = group_documents(docs)
        out[f"{name}_us_per_doc"] = round((time.perf_counter() - started) / n * 1e6, 1)
        out[f"{name}_groups"] = len(groups)
        out[f"{name}_grouped_docs"] = sum(len(g["documents"]) for g in groups if len(g["documents"]) > 1)
    return out


async def _rerun(n: int) -> dict[str, Any]:
    from graphs import Context, graph
    from tests.fake_openai import FakeOpenAI, default_reply

    def echo(messages: list[dict[str, Any]]) -> str:
        user = messages[-1]["content"]
        return user.split(">\n", 1)[1].rsplit("\n</", 1)[0] if "<document" in user else default_reply(messages)

    topics = max(1, n // 5)
    texts = [{"id": f"doc-{i:04d}", "text": topic_text(i % topics, i)} for i in range(n)]
    out: dict[str, Any] = {}
    async with FakeOpenAI() as fake:
        fake.reply = echo
        with tempfile.TemporaryDirectory() as folder:
            context = Context(base_url=fake.base_url, token_max=2000, map_max_tokens=400, language="en",
                              store_path=str(Path(folder) / "store.sqlite"))
            first = await graph.ainvoke({"texts": texts}, context=context)
            out["collapse_first_run"] = first["stats"]["llm_calls"]["collapse"]
            out["levels"] = first["stats"]["collapse_levels"]
            out["groups"] = len(first["stats"].get("groups") or [])
            for case, topic in (("related", lambda k: k), ("unrelated", lambda k: 10**5 + k)):
                paid = []
                for k in range(1, POSITIONS + 1):  # one document added, in turn at each of these places
                    extra = {"id": f"doc-{n * k // (POSITIONS + 1):04d}a", "text": topic_text(topic(k), 10**6 + k)}
                    again = await graph.ainvoke({"texts": sorted([*texts, extra], key=lambda t: t["id"])},
                                                context=context)
                    paid.append(again["stats"]["llm_calls"]["collapse"])
                out[f"{case}_collapse_paid_again"] = paid
    return out


POSITIONS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="documents grouped (0: skip)")
    parser.add_argument("--rerun", type=int, default=200, help="documents of the rerun (0: skip)")
    args = parser.parse_args()
    result: dict[str, Any] = {}
    if args.n:
        result["cost"] = {"n": args.n, **_cost(args.n)}
    if args.rerun:
        result["rerun"] = {"n": args.rerun, **asyncio.run(_rerun(args.rerun))}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
