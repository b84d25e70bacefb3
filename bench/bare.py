"""The bare floors' requests: the two messages the pipeline sends per call, built with `str.format` alone.

Every floor (bench.floor, the `bare` rows of bench.run, bench.pool's) must ask the
server for the same work as the pipeline, or the fake server's own CPU, which grows
with what it reads, flatters the floor: a map call carries its document in the user
message; a collapse call carries its share of the map answers, each as a labelled
block, and a later level the answers of the one before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import prompts

INSTRUCTION = "Write your answer in English."  # what the pipeline says for --language en
T = TypeVar("T")


def map_messages(source: str, text: str) -> list[dict[str, str]]:
    """A map call's messages for one document that fits one chunk."""
    return [{"role": "system", "content": prompts.MAP.format(language_instruction=INSTRUCTION)},
            {"role": "user", "content": prompts.DOCUMENT.format(source=source, part="", document=text)}]


def reduce_messages(blocks: Sequence[str], *, final: bool = False) -> list[dict[str, str]]:
    """A collapse (or the final) call's messages merging `blocks`, tagged [D1], [D2]… in order."""
    system = (prompts.FINAL.format(language_instruction=INSTRUCTION, length_instruction="") if final
              else prompts.COLLAPSE.format(language_instruction=INSTRUCTION))
    joined = "\n\n".join(f"[D{k}] {block}" for k, block in enumerate(blocks, start=1))
    return [{"role": "system", "content": system},
            {"role": "user", "content": prompts.SUMMARIES.format(summaries=joined)}]


def split(items: Sequence[T], parts: int) -> list[Sequence[T]]:
    """`items` in `parts` consecutive groups whose sizes differ by one at most."""
    size, extra = divmod(len(items), max(parts, 1))
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    return [items[bounds[i]:bounds[i + 1]] for i in range(parts)]
