"""Count tokens offline and split long documents into token-sized chunks."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import bpe_openai
from langchain_text_splitters import RecursiveCharacterTextSplitter

log = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]
FALLBACK_ENCODING = "o200k_base"


@functools.cache
def token_counter(model: str) -> TokenCounter:
    """Return a token counter for `model`, falling back to o200k_base for unknown models.

    The BPE tables ship inside the bpe-openai wheel, so this never touches the network.
    For models outside OpenAI's families the count is an estimate, which is all the
    chunking and collapse budgets need.
    """
    try:
        encoding = bpe_openai.encoding_for_model(model)
    except KeyError:
        log.debug("no tokenizer known for model %r; estimating with %s", model, FALLBACK_ENCODING)
        encoding = bpe_openai.get_encoding(FALLBACK_ENCODING)
    encode = encoding.encode_ordinary  # document text may contain special-token strings

    def count(text: str) -> int:
        return len(encode(text))

    return count


Span = tuple[int, int]


class Chunker:
    """Split text into spans of at most `chunk_tokens` tokens, on paragraph and sentence breaks."""

    def __init__(self, chunk_tokens: int, count: TokenCounter, overlap: int | None = None) -> None:
        if chunk_tokens < 16:
            raise ValueError(f"chunk size must be at least 16 tokens, got {chunk_tokens}")
        self.chunk_tokens = chunk_tokens
        self.count = count
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_tokens,
            chunk_overlap=min(chunk_tokens // 10, 200) if overlap is None else overlap,
            length_function=count,
            add_start_index=True,
            strip_whitespace=True,
        )

    def spans(self, text: str) -> tuple[list[Span], int]:
        """Return the chunk spans (character offsets) and the text's token count."""
        tokens = self.count(text)
        if tokens <= self.chunk_tokens:
            return [(0, len(text))], tokens
        spans = [
            (doc.metadata["start_index"], doc.metadata["start_index"] + len(doc.page_content))
            for doc in self._splitter.create_documents([text])
        ]
        return spans, tokens
