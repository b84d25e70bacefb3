"""Naming inputs: folders and globs over link loops, missing names, FIFOs, devices, one expansion everywhere."""

from __future__ import annotations

import faulthandler
import glob
import os
import shutil
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.text import loading
from pipeline.text.loading import expand_inputs, plan_document
from pipeline.text.chunking import Chunker
from pipeline.text.counting import token_counter
from tests.fake_openai import FakeOpenAI

CHUNKER = Chunker(200, token_counter("gpt-4o-mini"))


def _loop_tree(root: Path) -> Path:
    """The tree of the report: two files, a link to its own folder and one to its parent."""
    (root / "L" / "sub").mkdir(parents=True)
    (root / "L" / "a.txt").write_text("A b.", encoding="utf-8")
    (root / "L" / "sub" / "b.txt").write_text("C d.", encoding="utf-8")
    (root / "L" / "sub" / "back").symlink_to(".")
    (root / "L" / "sub" / "up").symlink_to("..")
    return root / "L"


def test_a_recursive_glob_over_link_loops_ends_and_lists_each_file_once(tmp_path: Path) -> None:
    tree = _loop_tree(tmp_path)

    found = expand_inputs([f"{tree}/**/*.txt"])

    assert found == [f"{tree}/a.txt", f"{tree}/sub/b.txt"]


def test_a_relative_glob_keeps_relative_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _loop_tree(tmp_path)
    monkeypatch.chdir(tmp_path)

    assert expand_inputs(["L/**/*.txt"]) == ["L/a.txt", "L/sub/b.txt"]
    assert expand_inputs(["L/*.txt", "./L/sub/*.txt"]) == ["L/a.txt", "./L/sub/b.txt"]


def test_a_file_reached_by_two_names_is_listed_once(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x", encoding="utf-8")
    (tmp_path / "same.txt").symlink_to(tmp_path / "a.txt")

    assert expand_inputs([str(tmp_path)]) == [str(tmp_path / "a.txt")]
    assert expand_inputs([f"{tmp_path}/*.txt", str(tmp_path / "a.txt")]) == [str(tmp_path / "a.txt")]


def test_a_link_beside_its_target_is_listed_under_the_name_that_sorts_first(tmp_path: Path) -> None:
    (tmp_path / "u16nobom.txt").write_text("x", encoding="utf-8")
    (tmp_path / "same-link.txt").symlink_to(tmp_path / "u16nobom.txt")

    assert expand_inputs([str(tmp_path)]) == [str(tmp_path / "same-link.txt")]
    assert expand_inputs([str(tmp_path / "u16nobom.txt"), str(tmp_path)]) == [str(tmp_path / "u16nobom.txt")]


# A generated tree: folders, files, and links to folders (up, down, sideways) or files.
_NAMES = st.sampled_from(["a", "b", "c", ".h"])
_TREE = st.recursive(
    st.sampled_from(["file", "text", "link-up", "link-root", "link-file"]),
    lambda children: st.dictionaries(_NAMES, children, max_size=3),
    max_leaves=12)


def _build(folder: Path, spec: object, root: Path, depth: int = 0) -> None:
    assert isinstance(spec, dict)
    for name, child in spec.items():
        path = folder / name
        if isinstance(child, dict):
            path.mkdir()
            _build(path, child, root, depth + 1)
        elif child == "file":
            path.with_suffix(".txt").write_text(str(path), encoding="utf-8")
        elif child == "text":
            path.write_text(str(path), encoding="utf-8")  # no suffix: found by a glob only
        elif child == "link-up":
            path.symlink_to("..")
        elif child == "link-root":
            path.symlink_to(root)
        else:
            path.with_suffix(".md").symlink_to(root / "target.txt")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=st.dictionaries(_NAMES, _TREE, max_size=4))
def test_folders_and_globs_over_any_tree_end_list_real_files_once(tmp_path_factory: pytest.TempPathFactory,
                                                                  spec: dict[str, object]) -> None:
    root = tmp_path_factory.mktemp("tree")
    (root / "target.txt").write_text("target", encoding="utf-8")
    _build(root, spec, root)
    # What a walk that follows no link sees: every file below root, by its real path.
    real_files = {os.path.realpath(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs}

    for pattern in (str(root), f"{root}/**/*.txt", f"{root}/**", f"{root}/*/*"):
        found = [p for p in expand_inputs([pattern], must_find=False) if p != pattern]
        reals = [os.path.realpath(p) for p in found]
        assert len(reals) == len(set(reals)), pattern  # never the same file twice
        assert set(reals) <= real_files | {str(root)}, pattern  # nothing from outside the tree
    walked = {os.path.realpath(p) for p in expand_inputs([str(root)], must_find=False) if p != str(root)}
    assert walked == {p for p in real_files if p.endswith((".txt", ".md"))}
    # Without links to folders in the way, a glob finds what glob.glob finds.
    if "link-up" not in repr(spec) and "link-root" not in repr(spec):
        for pattern in (f"{root}/**/*.txt", f"{root}/*/*", f"{root}/**"):
            expected = {os.path.realpath(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)}
            got = {os.path.realpath(p) for p in expand_inputs([pattern], must_find=False) if p != pattern}
            assert got == expected, pattern


# A generated tree with links of every kind: to files (inside and outside it), to folders and
# ancestors, to nothing, and rings of 1 to 3 links that lead only to each other.
_LINK_NAMES = st.sampled_from(["a.txt", "b.md", "c", ".h.txt"])
_LINK_TREE = st.recursive(
    st.sampled_from(["file", "link-file", "link-outside", "link-folder", "link-up", "link-root", "dangling",
                     "ring-1", "ring-2", "ring-3"]),
    lambda children: st.dictionaries(_LINK_NAMES, children, max_size=3),
    max_leaves=14)


def _build_links(folder: Path, spec: object, root: Path, outside: Path) -> None:
    assert isinstance(spec, dict)
    for name, child in spec.items():
        path = folder / name
        if isinstance(child, dict):
            path.mkdir()
            _build_links(path, child, root, outside)
        elif child == "file":
            path.write_text(str(path), encoding="utf-8")
        elif child.startswith("ring-"):  # a.txt -> 1a.txt -> 2a.txt -> a.txt
            ring = [path] + [folder / f"{i}{name}" for i in range(1, int(child[-1]))]
            for link, target in zip(ring, ring[1:] + ring[:1]):
                link.symlink_to(target.name)
        else:
            path.symlink_to({"link-file": root / "target.txt", "link-outside": outside,
                             "link-folder": root / "shelf", "link-up": Path(".."), "link-root": root,
                             "dangling": root / "gone.txt"}[child])


def _entries_below(root: Path) -> tuple[dict[str, str], set[str]]:
    """Every entry below root that is not a folder, seen without following links, by the path that identifies it.

    A regular file is itself; a link to a file is the file it leads to; a link to a folder is
    left out; a link that leads nowhere is itself, and is also in the set returned beside.
    """
    found: dict[str, str] = {}
    unreadable: set[str] = set()
    pending = [str(root)]
    while pending:
        folder = pending.pop()
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if stat.S_ISDIR(os.lstat(path).st_mode):
                pending.append(path)
            elif not os.path.islink(path):
                found[path] = path
            else:
                try:
                    if stat.S_ISDIR(os.stat(path).st_mode):
                        continue
                except OSError:
                    unreadable.add(path)
                    found[path] = path
                    continue
                found[path] = os.path.realpath(path)
    return found, unreadable


def _glob_matches(rel: str, pattern: str) -> bool:
    """Whether a root-relative path matches one of the test's glob patterns, hidden names never matching."""
    parts = rel.split(os.sep)
    if any(part.startswith(".") for part in parts):
        return False
    return {"*": len(parts) == 1, "**": True, "**/*.txt": rel.endswith(".txt")}[pattern]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=st.dictionaries(_LINK_NAMES, _LINK_TREE, max_size=4))
def test_links_of_any_kind_neither_hang_a_listing_nor_lose_a_file(tmp_path_factory: pytest.TempPathFactory,
                                                                    spec: dict[str, object]) -> None:
    root = Path(os.path.realpath(tmp_path_factory.mktemp("links")))
    outside = Path(os.path.realpath(tmp_path_factory.mktemp("outside"))) / "far.txt"
    outside.write_text("far", encoding="utf-8")
    (root / "target.txt").write_text("target", encoding="utf-8")
    (root / "shelf").mkdir()
    (root / "shelf" / "kept.md").write_text("kept", encoding="utf-8")
    _build_links(root, spec, root, outside)
    entries, unreadable = _entries_below(root)

    def identity(path: str) -> str:
        try:
            return os.path.realpath(path, strict=True)
        except OSError:
            return path

    cases = {str(root): {entry for entry in entries if loading._has_input_suffix(os.path.basename(entry))}}
    cases |= {f"{root}/{pattern}": {entry for entry in entries if _glob_matches(entry[len(str(root)) + 1:], pattern)}
              for pattern in ("*", "**", "**/*.txt")}
    for name, expected in cases.items():
        faulthandler.dump_traceback_later(60, exit=True)  # a listing that never ends fails the run, not hangs it
        try:
            found = [path for path in expand_inputs([name], must_find=False) if path != name]
        finally:
            faulthandler.cancel_dump_traceback_later()
        keys = [identity(path) for path in found]
        assert len(keys) == len(set(keys)), name  # each file once
        assert set(keys) == {entries[entry] for entry in expected}, name  # every one reachable
        for link in unreadable & expected:  # each link that leads nowhere is listed, and skipped with why
            assert link in found, name
            reason = plan_document(1, link, CHUNKER, path=link).get("skip_reason", "")
            assert "symbolic link" in reason, (link, reason)


def test_a_loop_of_links_in_a_folder_is_skipped_and_the_rest_summarized(cli, fake: FakeOpenAI,
                                                                        tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("The pier opened in May with forty berths. Fishing boats moved in first.",
                                  encoding="utf-8")
    (folder / "loopa").symlink_to("loopb")
    (folder / "loopb").symlink_to("loopa")
    (folder / "self.md").symlink_to("self.md")

    for name in (str(folder), f"{folder}/*"):
        fake.reset_stats()
        shutil.rmtree(tmp_path / "out", ignore_errors=True)  # a fresh run, not one resumed
        result = cli(name, base_url=fake.base_url)

        by_name = {Path(line["source"]).name: line for line in result.lines()}
        assert result.code == 3, result.err  # some inputs skipped, the rest summarized
        assert by_name["a.txt"]["status"] == "ok"
        looped = ["self.md", "loopa", "loopb"] if "*" in name else ["self.md"]  # a folder reads documents only
        assert sorted(by_name) == sorted(["a.txt", *looped])
        for link in looped:
            assert by_name[link]["status"] == "skipped" and "a loop of links" in by_name[link]["error"]
        assert fake.chat_calls == 1  # one document, its own summary
        assert "forty berths" in fake.bodies[0]["messages"][-1]["content"]


# What the help says a folder gives, by the suffixes that give it.
_FOLDER_KINDS = {"text": (".txt", ".text", ".rst"), "Markdown": (".md", ".markdown"), "PDF": (".pdf",),
                 "HTML": (".html", ".htm", ".xhtml"), "DOCX": (".docx",), "e-mail": (".eml", ".mbox")}


def test_the_help_says_which_documents_a_folder_gives(tmp_path: Path) -> None:
    from pipeline.cli_options import build_parser
    from pipeline.text.formats import DOCUMENT_SUFFIXES

    suffixes = [suffix for kinds in _FOLDER_KINDS.values() for suffix in kinds]
    for suffix in [*suffixes, ".csv", ".jsonl"]:
        (tmp_path / f"doc{suffix}").write_bytes(b"x")
    help_text = build_parser({}).format_help()
    inputs_help = help_text[help_text.index("positional arguments:"):help_text.index("\noptions:")]
    words = "".join(inputs_help.split())  # as wrapped, a line may break at a hyphen

    assert sorted(suffixes) == sorted(DOCUMENT_SUFFIXES)
    assert expand_inputs([str(tmp_path)]) == sorted(str(tmp_path / f"doc{suffix}") for suffix in suffixes)
    assert all(kind in words for kind in _FOLDER_KINDS)
    assert "*.md" not in words


def test_missing_names_fifos_and_devices_get_their_own_lines(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_text("The ferry ran at dawn.", encoding="utf-8")
    os.mkfifo(tmp_path / "pipe.txt")
    names = [str(tmp_path / "real.txt"), str(tmp_path / "gone.txt"), str(tmp_path / "pipe.txt"), "/dev/zero",
             str(tmp_path / "none-*.txt"), str(tmp_path / "gone")]

    found = expand_inputs(names)
    reasons = {name: plan_document(i, name, CHUNKER, path=name).get("skip_reason")
               for i, name in enumerate(found, 1)}

    assert found == names  # each kept, in order
    assert reasons[names[0]] is None
    assert "no such file or directory" in reasons[names[1]]
    assert "named pipe (FIFO)" in reasons[names[2]]  # and reading it did not block
    assert "a device" in reasons[names[3]]
    assert "no files match" in reasons[names[4]]
    assert "no such file or directory" in reasons[names[5]]


@pytest.mark.parametrize(("name", "message"), [
    ("gone.txt", "no such file or directory"),
    ("none-*.txt", "no files match"),
    ("empty", "a folder with no documents in it"),
])
def test_only_names_that_give_nothing_are_an_input_error(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "empty").mkdir()

    with pytest.raises(InputError, match=message):
        expand_inputs([str(tmp_path / name)])
    assert expand_inputs([str(tmp_path / name)], must_find=False) == [str(tmp_path / name)]


def test_a_stale_name_in_a_nightly_list_is_its_own_failure(cli, fake: FakeOpenAI, docs: Path) -> None:
    result = cli(str(docs / "ferry.txt"), str(docs / "renamed-yesterday.txt"), base_url=fake.base_url)

    assert result.code == 3
    by_name = {Path(r["source"]).name: r for r in result.lines()}
    assert by_name["ferry.txt"]["status"] == "ok"
    assert "no such file or directory" in by_name["renamed-yesterday.txt"]["error"]
    assert fake.chat_calls == 1  # the one document alone is its own summary


def test_a_typo_in_the_only_input_exits_1_before_any_call(cli, fake: FakeOpenAI, docs: Path) -> None:
    result = cli(str(docs / "ferry.tx"), base_url=fake.base_url)

    assert result.code == 1 and "no such file or directory" in result.err
    assert fake.chat_calls == 0 and fake.total_requests == 0


def test_the_cli_and_the_graph_expand_alike(tmp_path: Path) -> None:
    tree = _loop_tree(tmp_path)
    import run

    inputs, total = run.graph_input([f"{tree}/**/*.txt", str(tree / "missing.txt")], None)

    assert inputs["paths"] == expand_inputs([f"{tree}/**/*.txt", str(tree / "missing.txt")])
    assert total == 3


def test_a_name_under_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")

    assert expand_inputs(["~/notes.txt", str(tmp_path / "notes.txt")]) == [str(tmp_path / "notes.txt")]
    with pytest.raises(InputError, match="no such file or directory: ~/gone.txt"):
        expand_inputs(["~/gone.txt"])
