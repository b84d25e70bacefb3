"""Run the systems over the eval set, score them, print a table and write the results as JSON.

    python -m eval.quality [--items ID ...] [--systems pipeline lead tutorial] [--model-path GGUF]
    python -m eval.quality --demo [--model-path GGUF]     # seconds for run.py data/*.txt

One embedded model server is started for the whole run (the shipped model, or the GGUF
given) and shared by the two model systems. Nothing leaves 127.0.0.1 once the documents
are assembled (`python -m eval.assemble`, which this runs first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import glob
import json
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval import grounding, scores, systems
from eval.assemble import DEFAULT_CACHE, EVAL_DIR, assemble, load_manifest

REFERENCES = EVAL_DIR / "references.json"
RESULTS = EVAL_DIR / "results"
SYSTEMS = ("pipeline", "tutorial", "lead")
ROOT = EVAL_DIR.parent

log = logging.getLogger("eval.quality")


def score_item(item: dict[str, Any], ref: dict[str, Any], doc_paths: dict[str, Path],
               out: systems.Output) -> dict[str, Any]:
    """Every metric of one system's summary of one item."""
    docs = item["documents"]
    text = scores.content_text(out.summary)
    texts = {d: doc_paths[d].read_text(encoding="utf-8") for d in docs}
    recall, missed = scores.fact_recall(ref["facts"], text)
    cov, uncovered = scores.coverage(out.summary, docs, ref["document_facts"], out.tag_to_doc)
    fact_cov, _ = scores.coverage(out.summary, docs, ref["document_facts"])
    row: dict[str, Any] = {
        **scores.rouge(text, ref["reference"]),
        "chrf": scores.chrf(text, ref["reference"]),
        "facts": recall, "facts_missed": missed,
        "coverage": cov, "documents_missed": uncovered, "fact_coverage": fact_cov,
        "language": scores.language_of(text), "language_ok": scores.language_of(text) == item["language"],
        "words": scores.words(text), "reference_words": scores.words(ref["reference"]),
        "seconds": round(out.seconds, 1), "calls": out.calls,
    }
    known_tags = {k: (v if v in docs else None) for k, v in out.tag_to_doc.items()} if out.tag_to_doc else None
    row["grounding"] = grounding.grounding(out.summary, texts, known_tags, docs)
    if out.tag_to_doc is not None:
        known = {k: (v if v in docs else None) for k, v in out.tag_to_doc.items()}
        att = scores.attribution(out.summary, known, texts, ref["document_facts"], ref["facts"])
        row.update(tag_pairs=att.pairs, tags_supported=att.supported, invented_tags=att.invented,
                   heading_tags=att.headings, tags={str(k): v for k, v in out.tag_to_doc.items()},
                   attribution=att.precision, attribution_failures=att.failures)
    return row


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over items (attribution over all tagged lines together)."""
    agg: dict[str, Any] = {k: scores.mean(r[k] for r in rows)
                           for k in ("rouge1", "rouge2", "rougeL", "chrf", "facts", "coverage", "fact_coverage")}
    agg["language_ok"] = f"{sum(r['language_ok'] for r in rows if r['item_language'] == 'ko')}/" \
                         f"{sum(r['item_language'] == 'ko' for r in rows)} ko, " \
                         f"{sum(r['language_ok'] for r in rows if r['item_language'] != 'ko')}/" \
                         f"{sum(r['item_language'] != 'ko' for r in rows)} en"
    agg["words"] = round(scores.mean(r["words"] for r in rows) or 0)
    agg["seconds"] = round(sum(r["seconds"] for r in rows), 1)
    agg["grounding"] = grounding.aggregate([r["grounding"] for r in rows])
    if any("tag_pairs" in r for r in rows):
        pairs = sum(r.get("tag_pairs", 0) for r in rows)
        agg["attribution"] = sum(r.get("tags_supported", 0) for r in rows) / pairs if pairs else None
        agg["tag_pairs"] = pairs
        agg["invented_tags"] = sum(r.get("invented_tags", 0) for r in rows)
    return agg


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def table(results: dict[str, Any]) -> str:
    """Markdown tables of the systems' aggregate scores: quality, then grounding in the documents."""
    head = ("| system | code | ROUGE-1 | ROUGE-2 | ROUGE-L | chrF | key facts | coverage (by facts) | attribution "
            "| invented tags | right language | words | seconds |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for name, res in results["systems"].items():
        a = res["aggregate"]
        lines.append(f"| {name} | {res.get('commit', '') if name != 'lead' else ''} | {a['rouge1']:.1f} | {a['rouge2']:.1f} | {a['rougeL']:.1f} | {a['chrf']:.1f} | "
                     f"{_pct(a['facts'])} | {_pct(a['coverage'])} ({_pct(a['fact_coverage'])}) | "
                     f"{_pct(a.get('attribution')) if 'attribution' in a else '—'} | "
                     f"{a.get('invented_tags', '—')} | {a['language_ok']} | {a.get('words', '')} | {a['seconds']:.0f} |")
    grounded = grounding.table({"systems": {name: {"grounding": res["aggregate"].get("grounding")}
                                            for name, res in results["systems"].items()}})
    return "\n".join(lines) + "\n\n" + grounded


def _git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "pipeline", "graphs", "prompts", "run.py")
    return commit + ("+uncommitted" if dirty else "") if commit else "unknown"


@contextlib.asynccontextmanager
async def model_server(model_path: Path | None, alias: str | None, threads: int | None):
    """The embedded server, started once: the shipped model, or the GGUF at model_path."""
    from pipeline.llm.embedded import MODEL_NAME, EmbeddedServer, default_settings

    settings = default_settings(4, threads=threads, model_path=model_path)
    async with EmbeddedServer(settings, model=alias or MODEL_NAME) as server:
        yield server


async def run_items(args: argparse.Namespace) -> dict[str, Any]:
    """Run every chosen system on every chosen item and score them."""
    from pipeline.llm.local_model import TUNING

    manifest, refs = load_manifest(), json.loads(REFERENCES.read_text(encoding="utf-8"))["items"]
    items = [i for i in manifest["items"] if not args.items or i["id"] in args.items]
    wanted_docs = {d for i in items for d in i["documents"]}
    doc_paths = await asyncio.to_thread(assemble, manifest, args.cache, only=wanted_docs)
    runs = args.cache / "runs" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    decoding = {k: TUNING[k] for k in ("map_max_tokens", "final_max_tokens", "temperature", "extra_body")}
    results: dict[str, Any] = {
        "date": args.date, "model": args.model_name, "model_path": str(args.model_path or "shipped"),
        "commit": _git_commit(), "items": [i["id"] for i in items], "decoding": decoding, "systems": {}}
    needs_model = any(s != "lead" for s in args.systems)
    started = time.monotonic()
    async with (model_server(args.model_path, args.alias, args.threads) if needs_model
                else contextlib.nullcontext()) as server:
        if server is not None:
            results["server_start_seconds"] = round(time.monotonic() - started, 1)
        for name in args.systems:
            rows = []
            for item in items:
                paths = [doc_paths[d] for d in item["documents"]]
                ref = refs[item["id"]]
                if name == "lead":
                    out = systems.lead_n(paths, ref["reference"])
                elif name == "pipeline":
                    out = await systems.pipeline(paths, runs / name / item["id"], server.base_url, server.model)
                else:
                    out = await systems.tutorial(paths, server.base_url, server.model, **decoding)
                row = {"item": item["id"], "item_language": item["language"],
                       **score_item(item, ref, doc_paths, out), "summary": out.summary, "detail": out.detail}
                rows.append(row)
                log.info("%s %s: R1 %.1f facts %.0f%% coverage %.0f%% %.0fs", name, item["id"], row["rouge1"],
                         100 * row["facts"], 100 * row["coverage"], row["seconds"])
            results["systems"][name] = {"commit": results["commit"], "aggregate": aggregate(rows), "items": rows}
    if "lead" in args.systems and "pipeline" in results["systems"]:
        results["systems"][LEAD_MATCHED] = lead_matched(items, refs, doc_paths, results["systems"]["pipeline"])
    return results


LEAD_MATCHED = "lead, pipeline's length"


def lead_matched(items: list[dict[str, Any]], refs: dict[str, Any], doc_paths: dict[str, Path],
                 pipeline: dict[str, Any]) -> dict[str, Any]:
    """Lead-N cut to the pipeline's length on each item rather than the reference's: the same words, spent first."""
    words = {r["item"]: r["words"] for r in pipeline["items"]}
    rows = []
    for item in items:
        out = systems.lead_n([doc_paths[d] for d in item["documents"]], " ".join("w" * max(1, words[item["id"]])))
        rows.append({"item": item["id"], "item_language": item["language"],
                     **score_item(item, refs[item["id"]], doc_paths, out), "summary": out.summary,
                     "detail": out.detail})
    return {"commit": "", "aggregate": aggregate(rows), "items": rows}


async def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Time the demo: server start plus the pipeline over data/*.txt, as `run.py data/*.txt` runs it."""
    paths = [Path(p) for p in sorted(glob.glob(str(ROOT / "data" / "*.txt")))]
    out = args.cache / "runs" / "demo"
    started = time.monotonic()
    async with model_server(args.model_path, args.alias, args.threads) as server:
        ready = time.monotonic() - started
        result = await systems.pipeline(paths, out, server.base_url, server.model)
        peak = server.peak_rss_mb()
    total = time.monotonic() - started
    return {"date": args.date, "model": args.model_name, "commit": _git_commit(), "documents": len(paths),
            "server_start_seconds": round(ready, 1), "pipeline_seconds": round(result.seconds, 1),
            "total_seconds": round(total, 1), "server_peak_rss_mb": round(peak or 0),
            "calls": (result.detail.get("stats") or {}).get("llm_calls"), "summary": result.summary}


def rescore(path: Path) -> dict[str, Any]:
    """Score the summaries stored in a results file again (after a change to the scorers or references)."""
    manifest, refs = load_manifest(), json.loads(REFERENCES.read_text(encoding="utf-8"))["items"]
    items = {i["id"]: i for i in manifest["items"]}
    results = json.loads(path.read_text(encoding="utf-8"))
    doc_paths = assemble(manifest, DEFAULT_CACHE, only={d for i in results["items"] for d in items[i]["documents"]})
    for name, res in results["systems"].items():
        if name == LEAD_MATCHED:
            continue
        rows = []
        for old in res["items"]:
            item = items[old["item"]]
            tags = None
            if "tag_pairs" in old:
                _, legend = scores.split_summary(old["summary"])
                tags = {int(k): v for k, v in old.get("tags", {}).items()} or \
                    {k: Path(v).stem for k, v in scores.sources_map(legend).items()}
            out = systems.Output(summary=old["summary"], seconds=old["seconds"], tag_to_doc=tags, calls=old["calls"])
            rows.append({"item": item["id"], "item_language": item["language"],
                         **score_item(item, refs[item["id"]], doc_paths, out), "summary": old["summary"],
                         "detail": old.get("detail", {})})
        res["aggregate"], res["items"] = aggregate(rows), rows
    if "lead" in results["systems"] and "pipeline" in results["systems"]:
        chosen = [items[i] for i in results["items"]]
        results["systems"][LEAD_MATCHED] = lead_matched(chosen, refs, doc_paths, results["systems"]["pipeline"])
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", nargs="*", help="item ids (default: all)")
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--model-path", type=Path, help="a GGUF file to serve instead of the shipped model")
    parser.add_argument("--model-name", help="the model's name in the results (default: the file's name)")
    parser.add_argument("--threads", type=int, help="server threads (default: as run.py chooses)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--date", default=dt.date.today().isoformat())
    parser.add_argument("--out", type=Path, help="results file (default: eval/results/<date>-<model>.json)")
    parser.add_argument("--demo", action="store_true", help="only time the pipeline over data/*.txt")
    parser.add_argument("--rescore", type=Path, metavar="RESULTS_JSON",
                        help="score the summaries stored in a results file again, calling no model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "pipeline", "graphs", "run"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from pipeline.llm.embedded import MODEL_NAME

    args.alias = args.model_path.stem.lower() if args.model_path else None
    args.model_name = args.model_name or args.alias or MODEL_NAME
    if args.rescore:
        results = rescore(args.rescore)
        args.rescore.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"{results['model']}, {len(results['items'])} items, {results['date']}")
        print(table(results))
        return 0
    if args.demo:
        demo = asyncio.run(run_demo(args))
        out = args.out or RESULTS / f"{args.date}-{args.model_name}-demo.json"
        print(f"{args.model_name}: server start {demo['server_start_seconds']} s, pipeline over "
              f"{demo['documents']} documents {demo['pipeline_seconds']} s, total {demo['total_seconds']} s")
    else:
        results = asyncio.run(run_items(args))
        out = args.out or RESULTS / f"{args.date}-{args.model_name}.json"
        print(f"{args.model_name}, {len(results['items'])} items, {args.date}, commit {results['commit']}")
        print(table(results))
        demo = results
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(demo, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
