"""The bare floor as a process: list a folder, send each file's map prompt, then the reduce calls.

    python -m bench.floor FOLDER --base-url URL --c 256 --phases 20000,120,20,3,1

What the CLI's process must do at the least, with nothing but asyncio and aiohttp: one
semaphore of C, one pooled TCPConnector, each file read when its call's turn comes, the
same number of calls per phase (map, each collapse level, final) carrying the same
messages (bench.bare: each file's text, then its answers merged level by level). `bench.process` times
it from start to exit beside the CLI; it prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Sequence

import aiohttp

from bench.bare import map_messages, reduce_messages, split

MODEL = "fake-model"


def list_folder(folder: str) -> list[str]:
    """The .txt files below `folder`, sorted, as the CLI lists a directory."""
    found: list[str] = []
    pending = [folder]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.name.endswith(".txt"):
                    found.append(entry.path)
    return sorted(found)


async def run(folder: str, base_url: str, concurrency: int, phases: list[int]) -> int:
    """Make the calls phase by phase; return how many were answered."""
    paths = list_folder(folder)
    url = base_url + "/chat/completions"
    semaphore = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def call(messages: list[dict[str, str]], max_tokens: int) -> str:
            payload = {"model": MODEL, "messages": messages, "temperature": 0.0, "seed": 0, "stream": False,
                       "max_tokens": max_tokens}
            async with session.post(url, json=payload) as resp:
                body = await resp.read()
            return json.loads(body)["choices"][0]["message"]["content"]

        async def map_call(path: str) -> str:
            async with semaphore:  # the file is read when its call's turn comes, as the pipeline does
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
                return await call(map_messages(path, text), 400)

        async def reduce_call(blocks: Sequence[str], final: bool) -> str:
            async with semaphore:
                return await call(reduce_messages(blocks, final=final), 1200)

        answers = await asyncio.gather(*(map_call(p) for p in paths[:phases[0]]))
        done = len(answers)
        blocks: list[str] = [f"{path}\n{answer}" for path, answer in zip(paths, answers)]
        for level, calls in enumerate(phases[1:], start=2):
            final = level == len(phases)
            blocks = await asyncio.gather(*(reduce_call(group, final) for group in split(blocks, calls)))
            done += len(blocks)
    return done


def main(argv: list[str] | None = None) -> int:
    """Run the floor and print how many calls it made."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--base-url", required=True)
    p.add_argument("--c", type=int, default=256)
    p.add_argument("--phases", required=True, help="calls per phase: map, each collapse level, final")
    args = p.parse_args(argv)
    phases = [int(n) for n in args.phases.split(",")]
    print(json.dumps({"calls": asyncio.run(run(args.folder, args.base_url, args.c, phases))}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
