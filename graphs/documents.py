"""Take LangChain `Document`s, what every LangChain loader returns, as in-memory texts.

A Document becomes a plain text input the moment the graph takes it in (its input
channel converts it): its `page_content` is the text, `metadata["source"]` its label,
and its page (PDF loaders give one Document per page) its location, which the
document's result keeps. Only plain data is ever held, so a checkpoint never stores a
LangChain object (which a strict checkpoint serializer refuses to load), nor does a
`Send` carry one. The server's JSON gives a Document as a mapping of the same keys,
taken the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langgraph.channels import EphemeralValue

from pipeline.errors import InputError

if TYPE_CHECKING:
    from graphs.state import TextInput


def as_text(document: Any, index: int) -> TextInput:
    """The in-memory text input for one Document (or a mapping shaped like one); InputError if it has no text.

    `index` (its place in `documents`, from 0) only names it in an error: a label comes
    from the document itself, so that a rerun in another order makes the same calls.
    """
    if isinstance(document, Mapping):
        content, metadata, doc_id = document.get("page_content"), document.get("metadata"), document.get("id")
    else:
        content, metadata = getattr(document, "page_content", None), getattr(document, "metadata", None)
        doc_id = getattr(document, "id", None)
    if not isinstance(content, str):
        raise InputError(f"documents[{index}] has no page_content text (got {type(content).__name__}): give "
                         "LangChain Documents, or mappings with page_content and metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    source = metadata.get("source")
    label = str(source) if source not in (None, "") else str(doc_id) if doc_id not in (None, "") else \
        f"document {hashlib.sha256(content.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"
    text: TextInput = {"id": label, "text": content}
    if (where := _page(metadata)) is not None:
        text["location"] = where
    return text


def _page(metadata: Mapping[str, Any]) -> str | None:
    """Where in its source a Document comes from, as a reader finds it: the page printed, else counted from 1.

    LangChain's PDF loaders number `page` from 0, and give `page_label`, the page's own
    number (iv, 12), where the file has one.
    """
    label, number, page = (metadata.get(key) for key in ("page_label", "page_number", "page"))
    if isinstance(label, (str, int)) and not isinstance(label, bool) and str(label).strip():
        return f"page {str(label).strip()}"
    if isinstance(number, int) and not isinstance(number, bool):
        return f"page {number}"
    if isinstance(page, int) and not isinstance(page, bool):
        return f"page {page + 1}"
    return f"page {page.strip()}" if isinstance(page, str) and page.strip() else None


def as_texts(documents: Iterable[Any]) -> list[TextInput]:
    """The text inputs of a run's `documents`, in order."""
    return [as_text(document, i) for i, document in enumerate(documents)]


class DocumentsChannel(EphemeralValue[Any]):
    """The `documents` input: held for one step, as plain text inputs rather than the Documents given."""

    def update(self, values: Sequence[Any]) -> bool:
        return super().update([as_texts(value or []) for value in values])


def locations(first_id: int, paths: Sequence[str], texts: Sequence[TextInput]) -> dict[int, str]:
    """The location of each in-memory text that has one, by its number in the run (files come first)."""
    start = first_id + len(paths)
    return {start + i: t["location"] for i, t in enumerate(texts) if "location" in t}
