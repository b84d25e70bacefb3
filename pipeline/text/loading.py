"""Find the input files, and plan each document: hash, decode, chunk, guess its language.

Planning keeps only references (path, hash, encoding, chunk spans); the text is read
again when a summarizer gets to the document, so memory follows concurrency rather
than corpus size.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from typing_extensions import NotRequired, TypedDict

from pipeline.errors import InputError
from pipeline.text import formats
from pipeline.text.formats.entries import Fields, read_part, split_name
from pipeline.text.formats.locations import locate
from pipeline.text.language import detect_language
from pipeline.text.chunking import Chunker

log = logging.getLogger(__name__)

# Records files (JSON, CSV) are data as often as documents: they are read when named or globbed.
DIRECTORY_SUFFIXES = formats.DOCUMENT_SUFFIXES
MAX_FILE_BYTES = 64 * 1024 * 1024
_GLOB_CHARS = frozenset("*?[")


class DocRef(TypedDict):
    """A planned document: everything a summarizer needs except the text itself.

    Plain data, so that graph state and checkpoints hold it as they are; the keys that
    are seldom set are left out rather than held as None, since a run keeps one of
    these per document for its whole length.
    """

    id: int
    source: str
    sha256: str
    spans: list[tuple[int, int]]
    tokens: NotRequired[int]  # unless the chunker counts only what it cuts (a run needs only the spans)
    path: NotRequired[str]  # a file, read again when its turn comes
    text: NotRequired[str]  # a document handed over in memory
    encoding: NotRequired[str]
    format: NotRequired[str]  # pdf, html, docx, email, record: not a plain text file
    field: NotRequired[str]  # a record's text field, to read it again
    locations: NotRequired[list[str]]  # where each chunk comes from: "page 3", "lines 1-40", "message 2"
    language: NotRequired[str]
    repaired: NotRequired[bool]  # mis-decoded text (mojibake) was put right
    replaced: NotRequired[int]  # undecodable bytes that became U+FFFD
    skip_reason: NotRequired[str]  # nothing to summarize: empty, binary, unreadable
    plan_error: NotRequired[str]  # reading, decoding or chunking it failed
    prior_error: NotRequired[str]  # failed in an earlier run and not to be retried


def makes_calls(ref: DocRef) -> bool:
    """Whether a planned document is to be summarized: not skipped, failed neither to plan nor before."""
    return not ("skip_reason" in ref or "plan_error" in ref or "prior_error" in ref)


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Resolve files, globs and directories (recursing into *.txt, *.md) to a list of file paths.

    A path the system refuses to look at (too long, no permission) is an InputError.
    Paths stay strings: a folder of 200,000 files would spend a second on Path objects.
    """
    if not patterns:
        raise InputError("no input files given")
    seen: dict[str, None] = {}
    for pattern in patterns:
        try:
            found = _expand_one(pattern)
        except OSError as exc:
            raise InputError(f"cannot look at input {exc.filename or pattern}: {exc.strerror or exc}") from exc
        seen.update(dict.fromkeys(found))  # a path already seen keeps its first place
    return list(seen)


def expand_named(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The graph's `paths` as files: a folder or a glob among them becomes the files it names.

    The CLI expands its arguments before the run; a notebook or a server client may pass
    "data/" or "notes/*.md" as well. Only a name that may be one is looked at (glob
    characters, or no .txt/.md ending), so a listing of 200,000 files costs no stat. A
    folder or glob that names nothing stays as it is and is reported as that input's
    failure, never the run's.
    """
    out: list[str] = []
    expanded = False
    for name in map(str, paths):
        if ("*" in name or "?" in name or "[" in name or not name.lower().endswith(DIRECTORY_SUFFIXES)) and (
                found := _named(name)):
            out.extend(found)
            expanded = True
        else:
            out.append(name)
    return list(dict.fromkeys(out)) if expanded else out


def _named(name: str) -> list[str] | None:
    """The files a folder or a glob names, or None when `name` is to be read as a file (or names nothing)."""
    if not os.path.isdir(name) and not (_GLOB_CHARS & set(name) and not os.path.lexists(name)):
        return None
    try:
        return list(_expand_one(name))
    except (InputError, OSError):  # a folder without documents, a glob without matches
        return None


def _expand_one(pattern: str) -> Iterable[str]:
    path = Path(pattern).expanduser()
    if path.is_dir():
        found = _documents_in(pattern, sorted(_walk(path)))
        if not found:
            raise InputError(f"no documents under directory {pattern} (read: {', '.join(DIRECTORY_SUFFIXES)})")
        return found
    if path.is_file():
        return [str(path)]
    if _GLOB_CHARS & set(pattern):
        matches = sorted(m for m in glob.glob(str(path), recursive=True) if _is_input(Path(m)))
        if not matches:
            raise InputError(f"no files match {pattern!r}")
        return matches
    if path.is_symlink():  # a link to nothing, named or expanded by the shell: reported, not fatal
        return [str(path)]
    raise InputError(f"no such file or directory: {pattern}")


def _walk(folder: Path) -> list[str]:
    """The *.txt and *.md files below `folder`, and links among them to nothing.

    Through os.scandir, whose entries know their own type: no stat per file, so a
    folder of 200,000 files is listed in well under a second.
    """
    found: list[str] = []
    pending = [str(folder)]
    while pending:
        where = pending.pop()
        try:
            entries = os.scandir(where)
        except PermissionError as exc:
            if where == str(folder):
                raise
            log.warning("skipping folder %s: %s", where, exc.strerror)
            continue
        with entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):  # a link to a folder is not walked: no loops, no twins
                    pending.append(entry.path)
                elif entry.is_file() or (entry.is_symlink() and not os.path.exists(entry.path)):
                    found.append(entry.path)
    return found


def _has_input_suffix(name: str) -> bool:
    """Tell whether os.path.splitext(name)[1].lower() is one of DIRECTORY_SUFFIXES, at a third of its cost.

    As for splitext, a name of dots and the suffix alone (".txt") has no suffix.
    """
    low = name.lower()
    return low.endswith(DIRECTORY_SUFFIXES) and "." in low.lstrip(".")


def _documents_in(folder: str, listed: Sequence[str]) -> list[str]:
    """The files of a folder's listing whose names say they are documents; the log counts the others by type."""
    kept = [path for path in listed if _has_input_suffix(os.path.basename(path))]
    if len(kept) < len(listed):
        passed = Counter(os.path.splitext(path)[1].lower() or "no suffix" for path in listed
                         if not _has_input_suffix(os.path.basename(path)))
        shown = ", ".join(f"{n} {kind}" for kind, n in passed.most_common(6))
        hint = "; name records files (.jsonl, .json, .csv) or a glob of them, with --text-field" if any(
            kind in formats.RECORD_SUFFIXES for kind in passed) else ""
        log.info("%s: passed over %d file(s) of types not read (%s)%s", folder, len(listed) - len(kept), shown, hint)
    return kept


def _is_input(path: Path) -> bool:
    """A file, or a link to nothing: found by a glob or in a folder, it is reported, not dropped."""
    return path.is_file() or (path.is_symlink() and not path.exists())


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise InputError(f"file is {size // 2**20} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit")
        return fh.read()


def plan_document(doc_id: int, source: str, chunker: Chunker, *, path: str | None = None,
                  text: str | None = None, guess_language: bool = True,
                  keep: dict[int, str] | None = None, fields: Fields | None = None) -> DocRef:
    """Plan one document given either its path or its text; whatever goes wrong is its own failure.

    A file that cannot be read or holds nothing to summarize is marked skipped; any
    other error while decoding or chunking it marks it failed, and planning goes on.
    With `keep`, a file's decoded text is left there under its id, for a summarizer that
    comes right after and need not read it again.
    """
    ref = DocRef(id=doc_id, source=source, sha256="", spans=[], tokens=0)
    if path is not None:
        ref["path"] = path
    try:
        _plan(ref, chunker, text, guess_language, keep, fields or Fields())
    except MemoryError:
        ref["plan_error"] = "out of memory while reading and chunking it"
    except Exception as exc:  # noqa: BLE001 - one file's failure, never the batch's
        log.debug("planning %s failed", source, exc_info=True)
        ref["plan_error"] = f"cannot be planned: {type(exc).__name__}: {exc}"
    if "plan_error" in ref:
        ref["spans"], ref["tokens"] = [], 0
    return ref


def _plan(ref: DocRef, chunker: Chunker, text: str | None, guess_language: bool,
          keep: dict[int, str] | None, fields: Fields) -> None:
    where = ""
    if text is None:
        path = ref["path"]
        try:
            ref["sha256"], decoded, where = _read_document(path, fields)
        except (OSError, InputError, ValueError) as exc:
            ref["skip_reason"] = f"unreadable: {_read_error(path, exc)}"
            return
        if decoded.encoding:
            ref["encoding"] = decoded.encoding
        if decoded.format not in ("text", "binary"):
            ref["format"] = decoded.format
        if decoded.format == "record" and fields.text:
            ref["field"] = fields.text
        if decoded.repaired:
            ref["repaired"] = True
        if decoded.replaced:
            ref["replaced"] = decoded.replaced
        if decoded.warning:
            log.warning("%s: %s", ref["source"], decoded.warning)
        if decoded.failure:
            ref["plan_error"] = decoded.failure
            return
        if decoded.skip_reason:
            ref["skip_reason"] = decoded.skip_reason
            return
        body = decoded.text
        marks, unit = decoded.marks, decoded.unit
    else:
        ref["text"] = body = text
        ref["sha256"] = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        if not text or text.isspace():
            ref["skip_reason"] = "empty document"
            return
        marks, unit = [], ""
    ref["spans"], tokens = chunker.spans(body)
    if tokens is None:  # a chunker that counts only what it must to cut
        del ref["tokens"]
    else:
        ref["tokens"] = tokens
    if not ref["spans"]:
        ref["skip_reason"] = "nothing to summarize (whitespace only)"
        return
    ref["locations"] = [where] * len(ref["spans"]) if where else locate(body, ref["spans"], marks, unit)
    if guess_language and (language := detect_language(body)):
        ref["language"] = language
    if keep is not None and text is None:
        keep[ref["id"]] = body


def _read_document(path: str, fields: Fields,
                   encoding: str | None = None) -> tuple[str, formats.Extracted, str]:
    """Read a file, or a message or record of one: its hash, its text (or why none) and its location if a part."""
    if part := split_name(path):
        return read_part(path, *part, fields, MAX_FILE_BYTES)
    data = _read_bytes(path)
    return hashlib.sha256(data).hexdigest(), formats.extract(data, path, encoding), ""


def _read_error(path: str, exc: Exception) -> str:
    if os.path.islink(path) and not os.path.exists(path):
        return f"broken symbolic link to {os.readlink(path)}"
    return str(getattr(exc, "strerror", None) or exc)


class Entry(TypedDict):
    """One input as listed, before it is planned: a number, a name, and a path or a text."""

    id: int
    source: str
    path: NotRequired[str]
    text: NotRequired[str]


def list_inputs(paths: Sequence[str], texts: Sequence[Mapping[str, str]], first_id: int = 1) -> list[Entry]:
    """Number files and in-memory texts from `first_id`, in that order; nothing is read yet."""
    entries = [Entry(id=i, source=name, path=name) for i, name in enumerate(map(str, paths), start=first_id)]
    entries += [Entry(id=i, source=t["id"], text=t["text"]) for i, t in enumerate(texts, start=first_id + len(entries))]
    return entries


def plan_entries(entries: Sequence[Entry], chunker: Chunker, guess_language: bool = True,
                 keep: dict[int, str] | None = None, fields: Fields | None = None) -> list[DocRef]:
    """Plan listed inputs (read, hash, decode, chunk each), one failure at a time never stopping the rest.

    `guess_language=False` skips detection when the answer language is fixed anyway;
    `keep` collects the files' texts (see plan_document).
    """
    return [plan_document(e["id"], e["source"], chunker, path=e.get("path"), text=e.get("text"),
                          guess_language=guess_language, keep=keep, fields=fields) for e in entries]


def load_text(ref: DocRef) -> str:
    """Read a planned document's text again, checking it has not changed since planning."""
    if "text" in ref:
        return ref["text"]
    fields = Fields(ref.get("field"))
    try:
        sha256, found, _ = _read_document(ref["path"], fields, None if "format" in ref else ref.get("encoding"))
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable: {getattr(exc, 'strerror', None) or exc}") from exc
    if sha256 != ref["sha256"]:
        raise InputError("file changed while the run was in progress")
    return found.text
