"""Graph state: what a run takes in, what it gives back, and what the map-reduce steps share.

Plain data only (typed dicts, lists, numbers, strings), so that LangGraph's default
serializer checkpoints it as it is.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langgraph.channels import EphemeralValue
from typing_extensions import NotRequired, TypedDict

from graphs.documents import DocumentsChannel
from pipeline.grouping import Group
from pipeline.prompting import Piece
from pipeline.summarize import DocResult


def add_counts(left: dict[str, int] | None, right: dict[str, int] | None) -> dict[str, int]:
    """Merge the shards' file counts."""
    out = dict(left or {})
    for key, n in (right or {}).items():
        out[key] = out.get(key, 0) + n
    return out


class TextInput(TypedDict):
    """A document handed over in memory."""

    id: str
    text: str
    location: NotRequired[str]  # where in its source it comes from ("page 3"), kept in its result


class DocumentInput(TypedDict, total=False):
    """A LangChain Document (langchain_core.documents.Document), or a mapping of its keys as JSON gives it.

    `metadata["source"]` labels it and its page is kept as its location (graphs/documents.py).
    """

    page_content: str
    metadata: dict[str, Any]
    id: str | None


class InputState(TypedDict, total=False):
    """Give file paths, in-memory texts, LangChain Documents, or any of them together.

    A path may also be a folder (every document below it: text, Markdown, PDF, HTML, DOCX, e-mail) or a glob
    ("notes/**/*.md"), as on the command line. Documents become texts as the run starts.

    Each run takes only the inputs it is given: on a reused thread, the previous run's
    paths and texts are gone (an ephemeral channel holds them for one step).
    """

    paths: Annotated[list[str], EphemeralValue(list[str])]
    texts: Annotated[list[TextInput], EphemeralValue(list[TextInput])]
    documents: Annotated[list[DocumentInput], DocumentsChannel(list[DocumentInput])]  # held as TextInputs


class OutputState(TypedDict, total=False):
    """The final summary, one result per document, the run's counters, and a dry run's preview."""

    summary: str
    results: list[DocResult]
    stats: dict[str, Any]
    preview: dict[str, Any] | None  # None unless the run was a dry run
    evidence: list[dict[str, Any]]  # per bullet of the summary: its documents and their supporting lines


class State(InputState, OutputState, total=False):
    """The outer graph's state: one run's input and output."""


class RunState(TypedDict, total=False):
    """What the map-reduce steps share within one run."""

    paths: list[str]  # numbered from 1, then the texts after them; each shard plans its own
    texts: list[TextInput]
    files: Annotated[dict[str, int], add_counts]  # new, changed, unchanged (and removed, from collect)
    reduce_language: str | None  # what the collapse and final calls answer in
    results: Annotated[list[DocResult], operator.add]
    pieces: list[Piece]
    groups: list[Group]  # the groups of several related documents (any other summarized document stands alone)
    level: int
    max_levels: int
    started_at: float
    mapped_at: float
    summary: str
    stats: dict[str, Any]
    preview: dict[str, Any]
    evidence: list[dict[str, Any]]


class ShardState(TypedDict):
    """The payload of one map `Send`: a run of consecutive inputs, files by name (never their text)."""

    first_id: int  # the number of the shard's first input
    paths: list[str]
    texts: list[TextInput]
