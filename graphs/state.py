"""Graph state: what goes in, what flows between nodes, what comes out."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from pipeline.loading import DocRef
from pipeline.summarize import DocResult, Piece


class TextInput(TypedDict):
    """A document handed over in memory."""

    id: str
    text: str


class InputState(TypedDict, total=False):
    """Give file paths, in-memory texts, or both."""

    paths: list[str]
    texts: list[TextInput]


class OutputState(TypedDict, total=False):
    """The final summary, one result per document, and the run's counters."""

    summary: str
    results: list[DocResult]
    stats: dict[str, Any]


class State(InputState, OutputState, total=False):
    """Everything the nodes share."""

    run_id: str
    docs: list[DocRef]
    results: Annotated[list[DocResult], operator.add]
    pieces: list[Piece]
    level: int
    max_levels: int


class ShardState(TypedDict):
    """The payload of one map `Send`: references to a shard of documents, never their text."""

    run_id: str
    docs: list[DocRef]
