"""Find the input files, and plan each document: hash, decode, chunk, guess its language.

Planning keeps only references (path, hash, encoding, chunk spans); the text is read
again when a summarizer gets to the document, so memory follows concurrency rather
than corpus size.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

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
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


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
    warning: NotRequired[str]  # what decoding it noticed (a repaired file, undecodable bytes): see log_warning


class PlanElsewhere(Exception):  # noqa: N818 - a signal to the caller, not an error
    """A file is bigger than its caller plans where it is (on the event loop): the caller plans it elsewhere."""


def makes_calls(ref: DocRef) -> bool:
    """Whether a planned document is to be summarized: not skipped, failed neither to plan nor before."""
    return not ("skip_reason" in ref or "plan_error" in ref or "prior_error" in ref)


def expand_inputs(names: Iterable[str | os.PathLike[str]], *, must_find: bool = True) -> list[str]:
    """Turn named files, folders and globs into the list of files to plan, each listed once.

    The one expansion of every entry point (the CLI's arguments, the graph's `paths`). A
    folder gives the documents below it (DIRECTORY_SUFFIXES), a glob (`**` recursing) what
    it matches. A name that gives no file (missing, a glob that matches nothing, a folder
    without documents, a FIFO or a device) is kept as it is, and planning makes it that
    input's own failure with the reason; but when no name gives anything and `must_find`
    (no other input, such as a text in memory, is given), an InputError says why at once,
    before any call. Links to folders are never followed while walking a folder or a
    glob, so a link loop ends; a link that leads nowhere (dangling, a loop) is listed
    under its own name, for planning to skip with the reason. What walking finds is
    de-duplicated by real path, under the first name met (sorted within a folder). A plain
    file name (with a document's ending and no glob character) is taken without a stat,
    so a listing of 200,000 files costs none. Paths stay strings.
    """
    found: list[tuple[str, Listing | None]] = []
    for name in map(str, names):
        plain = _has_input_suffix(name) and not ("*" in name or "?" in name or "[" in name or name[:1] == "~")
        found.append((name, None if plain else _expand_one(name)))
    named = [name for name, listing in found if listing is None]  # for planning to read or explain
    walked = len(named) < len(found)
    if must_find and not walked and not any(map(_exists, named)):  # stops at the first that exists
        raise InputError(why_unreadable(named[0]) if named else "no input files given")
    here = os.getcwd()
    seen: dict[str, str] = {}  # a file's real path (a named one's absolute path) -> the name listed
    for name, listing in found:
        if listing is None:  # the name itself, compared with the files walked only where there are some
            seen.setdefault(os.path.normpath(os.path.join(here, name)) if walked else name, name)
            continue
        paths, real = listing
        for path in paths:
            seen.setdefault(real(path), path)
    return list(seen.values())


# Files found by walking a folder or a glob, and what gives each one's real path.
Listing = tuple[list[str], Callable[[str], str]]


def _exists(name: str) -> bool:
    """Whether `name` is something planning can read or explain (a file, a FIFO, a broken link, a message of one)."""
    if part := split_name(name):
        name = part[0]
    return os.path.lexists(name) and not os.path.isdir(name)


def _expand_one(name: str) -> Listing | None:
    """The files a folder or glob names; None for a name to be read as it is (or that names nothing)."""
    path = os.path.expanduser(name)
    try:
        if os.path.isdir(path):
            paths, real = _walk(path, input_only=False)
            listing = _documents_in(name, paths), real  # what is passed over is counted in the log
        elif _GLOB_CHARS & set(name) and not os.path.lexists(path):
            listing = _glob(path)
        elif path != name and os.path.lexists(path):  # ~/notes.txt, from a config file
            listing = [path], os.path.realpath
        else:
            return None
    except OSError as exc:
        log.warning("cannot list %s: %s", name, exc.strerror or exc)
        return None
    return listing if listing[0] else None


def _walk(folder: str, *, input_only: bool, depth: int | None = None) -> Listing:
    """The sorted entries below `folder` that are not folders (only documents with `input_only`).

    Through os.scandir, whose entries know their own type: no stat per file, so a
    folder of 200,000 files is listed in well under a second. A link to a folder is not
    walked (no loops, no twins); a link to a file is given its real path, so that a file
    is listed once. `depth` bounds how many folders down it goes (None: all).
    """
    folder = folder.rstrip(os.sep) or os.sep
    found: list[str] = []
    links: dict[str, str] = {}
    pending = [(folder, 0)]
    while pending:
        where, level = pending.pop()
        try:
            entries = os.scandir(where)
        except OSError as exc:
            if where == folder:
                raise
            log.warning("skipping folder %s: %s", where, exc.strerror or exc)
            continue
        with entries:
            for entry in entries:
                if _is_folder(entry, follow_symlinks=False):
                    if depth is None or level < depth:
                        pending.append((entry.path, level + 1))
                elif not input_only or _has_input_suffix(entry.name):
                    if entry.is_symlink():
                        if _is_folder(entry, follow_symlinks=True):
                            continue  # a link to a folder
                        if target := _target(entry.path):
                            links[entry.path] = target
                    found.append(entry.path)
    found.sort()
    # Below a folder reached through no link, a path's real path is the folder's plus the rest.
    real_folder, cut = os.path.realpath(folder).rstrip(os.sep), len(folder.rstrip(os.sep))
    return found, lambda path: links.get(path) or real_folder + path[cut:]


def _is_folder(entry: os.DirEntry[str], *, follow_symlinks: bool) -> bool:
    """Whether an entry is a folder; one that cannot be told (a link loop: ELOOP) is not, and is listed."""
    try:
        return entry.is_dir(follow_symlinks=follow_symlinks)
    except OSError:
        return False  # planning reads it, and records why it cannot


def _target(link: str) -> str | None:
    """The real path a link leads to; None for one that leads nowhere (dangling, a loop), to keep its own name."""
    try:
        return os.path.realpath(link, strict=True)
    except OSError:  # non-strict, two such links could share a made-up path and one would go unlisted
        return None


def _glob(pattern: str) -> Listing:
    """What a glob matches, as glob.glob would (`**` any folders deep, no hidden names), links to folders not walked."""
    parts = pattern.split(os.sep)
    fixed = next(i for i, part in enumerate(parts) if _GLOB_CHARS & set(part))
    root = os.sep.join(parts[:fixed]) or (os.sep if fixed else "")
    rest = parts[fixed:]
    if root and not os.path.isdir(root):
        return [], str
    paths, real = _walk(root or ".", input_only=False, depth=None if "**" in rest else len(rest) - 1)
    base, prefix = os.path.join(root or ".", ""), os.path.join(root, "") if root else ""
    match = re.compile(_translate(rest)).fullmatch
    cut = len(base)
    found = [prefix + path[cut:] for path in paths if match(path, cut)]
    return found, lambda path: real(base + path[len(prefix):])


def _translate(parts: list[str]) -> str:
    """A regular expression for the folder-relative paths that glob components match."""
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(r"(?:(?!\.)[^/]*/)*" if not last else r"(?:(?!\.)[^/]*/)*(?!\.)[^/]*")
            continue
        out.append(("" if part.startswith(".") else r"(?!\.)") + _component(part) + ("" if last else "/"))
    return "".join(out)


def _component(part: str) -> str:
    """A regular expression for one glob component: * and ? stay within a name, [...] is a set."""
    out, i = [], 0
    while i < len(part):
        char = part[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (close := part.find("]", i + 2 if part[i + 1:i + 2] in ("!", "]") else i + 1)) > i:
            body = part[i + 1:close]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = close
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _has_input_suffix(name: str) -> bool:
    """Tell whether os.path.splitext(name)[1].lower() is one of DIRECTORY_SUFFIXES, at a third of its cost.

    As for splitext, a name of dots and the suffix alone (".txt") has no suffix. This is
    the one place that decides which files a folder or a plain name gives as documents.
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


def _read_bytes(path: str, most_bytes: int | None = None) -> bytes:
    """Read a regular file whole; anything else (a FIFO, a device, a folder) is an InputError that says what it is.

    Opened without blocking, so that a FIFO with no writer cannot hold the run. Read
    through the descriptor itself: a file object around it (a buffer, its own size
    check) costs as much as the read of a small file. A file over `most_bytes` is not
    read: PlanElsewhere.
    """
    fd = os.open(path, _READ_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(_kind(info.st_mode))
        if info.st_size > MAX_FILE_BYTES:
            raise InputError(f"file is {info.st_size // 2**20} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit")
        if most_bytes is not None and info.st_size > most_bytes:
            raise PlanElsewhere(path)
        size = info.st_size
        data = os.read(fd, size + 1)  # one byte more than its size: a file that grew since is read on
        if len(data) == size:
            return data
        parts = [data]
        while chunk := os.read(fd, max(size, 2**16)):  # to its end, as a file object's read() does
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    """Say what a file that is not a regular file is."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    if stat.S_ISDIR(mode):
        return f"a folder with no documents in it (read: {', '.join(DIRECTORY_SUFFIXES)})"
    return "not a regular file"


def why_unreadable(name: str, exc: BaseException | None = None) -> str:
    """Say why a named input gives nothing to read: missing, a glob without matches, a broken link, a FIFO..."""
    try:
        info = os.stat(name)
    except OSError as err:
        if os.path.islink(name):
            if err.errno == errno.ELOOP:
                return f"symbolic link to {os.readlink(name)} never reaches a file (a loop of links)"
            return f"broken symbolic link to {os.readlink(name)}"
        if err.errno == errno.ENOENT:
            return f"no files match {name!r}" if _GLOB_CHARS & set(name) else f"no such file or directory: {name}"
        return f"{err.strerror or err}: {name}"
    if stat.S_ISDIR(info.st_mode) and not os.access(name, os.R_OK | os.X_OK):
        return f"cannot list the folder {name}: permission denied"
    if not stat.S_ISREG(info.st_mode):
        return _kind(info.st_mode)
    return str(getattr(exc, "strerror", None) or exc or "unreadable")


def plan_document(doc_id: int, source: str, chunker: Chunker, *, path: str | None = None,
                  text: str | None = None, guess_language: bool = True,
                  keep: dict[int, str] | None = None, fields: Fields | None = None,
                  most_bytes: int | None = None) -> DocRef:
    """Plan one document given either its path or its text; whatever goes wrong is its own failure.

    A file that cannot be read or holds nothing to summarize is marked skipped; any
    other error while decoding or chunking it marks it failed, and planning goes on.
    With `keep`, a file's decoded text is left there under its id, for a summarizer that
    comes right after and need not read it again. With `most_bytes`, a file bigger than
    that, or a part of a file (its first read indexes the whole file), raises
    PlanElsewhere before anything is read or kept.
    """
    ref = DocRef(id=doc_id, source=source, sha256="", spans=[], tokens=0)
    if path is not None:
        ref["path"] = path
    try:
        _plan(ref, chunker, text, guess_language, keep, fields or Fields(), most_bytes)
    except PlanElsewhere:
        raise
    except MemoryError:
        ref["plan_error"] = "out of memory while reading and chunking it"
    except Exception as exc:  # noqa: BLE001 - one file's failure, never the batch's
        log.debug("planning %s failed", source, exc_info=True)
        ref["plan_error"] = f"cannot be planned: {type(exc).__name__}: {exc}"
    if "plan_error" in ref:
        ref["spans"], ref["tokens"] = [], 0
    return ref


def _plan(ref: DocRef, chunker: Chunker, text: str | None, guess_language: bool,
          keep: dict[int, str] | None, fields: Fields, most_bytes: int | None = None) -> None:
    where = ""
    if text is None:
        path = ref["path"]
        try:
            ref["sha256"], decoded, where = _read_document(path, fields, most_bytes=most_bytes)
        except (OSError, InputError, ValueError) as exc:
            ref["skip_reason"] = f"unreadable: {why_unreadable(path, exc)}"
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
            ref["warning"] = decoded.warning
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


def _read_document(path: str, fields: Fields, encoding: str | None = None,
                   most_bytes: int | None = None) -> tuple[str, formats.Extracted, str]:
    """Read a file, or a message or record of one: its hash, its text (or why none) and its location if a part.

    `most_bytes`: see plan_document.
    """
    if part := split_name(path):
        if most_bytes is not None:
            raise PlanElsewhere(path)
        return read_part(path, *part, fields, MAX_FILE_BYTES)
    data = _read_bytes(path, most_bytes)
    return hashlib.sha256(data).hexdigest(), formats.extract(data, path, encoding), ""

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
                 keep: dict[int, str] | None = None, fields: Fields | None = None,
                 most_bytes: Callable[[str], int] | None = None) -> list[DocRef]:
    """Plan listed inputs (read, hash, decode, chunk each), one failure at a time never stopping the rest.

    `guess_language=False` skips detection when the answer language is fixed anyway;
    `keep` collects the files' texts (see plan_document). With `most_bytes`, planning
    stops before the first file bigger than most_bytes(its path), or part of a file:
    fewer refs than entries come back, and the caller plans the rest elsewhere.
    """
    refs: list[DocRef] = []
    for e in entries:
        path = e.get("path")
        try:
            refs.append(plan_document(e["id"], e["source"], chunker, path=path, text=e.get("text"),
                                      guess_language=guess_language, keep=keep, fields=fields,
                                      most_bytes=most_bytes(path) if most_bytes and path is not None else None))
        except PlanElsewhere:
            break
    for ref in refs:
        log_warning(ref)
    return refs


def log_warning(ref: DocRef) -> None:
    """Log what planning noticed about a document, in the process that runs the graph.

    A document planned on a Ray worker carries its warning to the driver, which logs it
    here: a worker's own log lines would reach the terminal through Ray, prefixed and
    coloured, outside `--log-json` and the redaction.
    """
    if warning := ref.get("warning"):
        log.warning("%s: %s", ref["source"], warning)


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
