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

import asyncio
from typing import Any

from tests.fake_openai import FakeOpenAIProcess, build_parser, default_reply, serve

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


def main(argv: list[str] | None = None) -> None:
    """Serve on 127.0.0.1 until stdin closes; print the port first."""
    p = build_parser()
    p.add_argument("--reduce-reply-chars", type=int, default=600)
    args = p.parse_args(argv)
    asyncio.run(serve(args, reply=fixed_reduce_reply(args.reduce_reply_chars)))


if __name__ == "__main__":
    main()
