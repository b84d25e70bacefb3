"""The tests' fake OpenAI-compatible server, in a child process, with reduce replies of a fixed size.

The stock fake echoes every `[Dn]` tag it sees and ignores `max_tokens`, so a merged
summary grows with the number of documents behind it and collapsing stops converging
past a few thousand documents; a real model's answer is capped by `max_tokens`. Here a
reply to a reduce prompt (one with a `<summaries>` block) is the stock reply cut or
padded to exactly `reduce_reply_chars`, which also fixes how many summaries fit one
reduce call and so how many collapse levels a run needs. Map replies are unchanged.

    python -m bench.fake_server --latency 0.1 --reduce-reply-chars 600
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from tests.fake_openai import FakeOpenAI, FakeOpenAIProcess, default_reply

_FILLER = " The merged points repeat the figures and names given in the summaries above."


def fixed_reduce_reply(reduce_reply_chars: int) -> Any:
    """Return a reply function: the stock reply, with reduce answers cut or padded to a fixed length."""

    def reply(messages: list[dict[str, Any]]) -> str:
        text = default_reply(messages)
        content = messages[-1].get("content")
        if reduce_reply_chars and isinstance(content, str) and "<summaries>" in content:
            pad = _FILLER * (reduce_reply_chars // len(_FILLER) + 1)
            text = (text + pad)[:reduce_reply_chars]
        return text

    return reply


class BenchServer(FakeOpenAIProcess):
    """FakeOpenAIProcess that launches this module instead of the stock CLI."""

    def __init__(self, *, reduce_reply_chars: int, **options: Any) -> None:
        super().__init__(**options)
        self.reduce_reply_chars = reduce_reply_chars

    def _argv(self) -> list[str]:
        argv = super()._argv()
        # [python, -u, tests/fake_openai.py, ...flags] -> [python, -u, -m, bench.fake_server, ...flags]
        return [*argv[:2], "-m", "bench.fake_server", *argv[3:],
                "--reduce-reply-chars", str(self.reduce_reply_chars)]


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeOpenAI(latency=args.latency, port=args.port, record_bodies=args.record_bodies,
                      reply=fixed_reduce_reply(args.reduce_reply_chars))
    async with fake:
        print(fake.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)


def main(argv: list[str] | None = None) -> None:
    """Serve on 127.0.0.1 until stdin closes; print the port first."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--record-bodies", action="store_true")
    p.add_argument("--reduce-reply-chars", type=int, default=600)
    asyncio.run(_serve(p.parse_args(argv)))


if __name__ == "__main__":
    main()
