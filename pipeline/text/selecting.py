"""Narrow the listed input files with --include/--exclude, and list mailboxes and records files as their parts."""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Sequence

from pipeline.text.formats.entries import Fields, split_name
from pipeline.text.formats.entries import expand as expand_parts
from pipeline.text.loading import MAX_FILE_BYTES

log = logging.getLogger(__name__)


def select_inputs(paths: Sequence[str], include: Sequence[str] = (), exclude: Sequence[str] = (),
                  fields: Fields | None = None) -> list[str]:
    """Keep the listed files that --include names (if given) and --exclude does not; list mailboxes and records.

    A pattern with a "/" is matched against the whole path, any other against the
    file's name ("*.pdf", "*/drafts/*"); a message or record is matched as its file. The
    log says how many were passed over and why.
    """
    kept: list[str] = []
    excluded = not_included = 0
    for path in map(str, paths):
        if include and not _matches(path, include):
            not_included += 1
        elif exclude and _matches(path, exclude):
            excluded += 1
        else:
            kept.append(path)
    if excluded or not_included:
        why = [f"{n} {reason}" for n, reason in ((excluded, "excluded by --exclude"),
                                                 (not_included, "not named by --include")) if n]
        log.info("passed over %d input file(s): %s", excluded + not_included, ", ".join(why))
    return expand_parts(kept, fields or Fields(), MAX_FILE_BYTES)


def _matches(path: str, patterns: Sequence[str]) -> bool:
    if "#" in path and (part := split_name(path)):
        path = part[0]
    name = os.path.basename(path)
    return any(fnmatch.fnmatch(path if "/" in p else name, p) for p in patterns)
