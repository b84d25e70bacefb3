"""Keep a run's file paths inside one folder: the root a server's operator names.

A path is inside when its real path (every symbolic link followed, `..` resolved) is
the root or below it, so a link inside the root that leads out of it is outside. A
relative path is taken from the root.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from pipeline.errors import InputError


def inside(root: str | os.PathLike[str], paths: Iterable[str]) -> list[str]:
    """Return `paths`, relative ones taken from `root`; raise InputError for the first one outside it."""
    real_root = os.path.realpath(os.fspath(root))
    out: list[str] = []
    for name in paths:
        path = os.path.join(real_root, os.path.expanduser(name))
        if not _within(real_root, path):
            raise InputError(f"refused: {name!r} is outside the folder this server reads; "
                             "give a path relative to that folder")
        out.append(path)
    return out


def found_inside(root: str | os.PathLike[str], paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split the files a walk of folders inside `root` found into those inside it and those a link leads out to."""
    real_root = os.path.realpath(os.fspath(root))
    kept: list[str] = []
    out: list[str] = []
    for path in paths:
        (kept if _within(real_root, path) else out).append(path)
    return kept, out


def _within(real_root: str, path: str) -> bool:
    """Whether `path`, every link followed, is `real_root` (a real path) or below it."""
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def refuse_paths(paths: list[str]) -> None:
    """Raise InputError when there are paths: this server takes documents as texts only."""
    if paths:
        raise InputError(f"refused: {paths[0]!r}: this server reads no files (its operator named no folder); "
                         "send the documents as `texts`")
