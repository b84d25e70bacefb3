"""Reading documents: encodings, mojibake, binary and empty files, chunking, input expansion."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.text.decoding import decode_bytes
from pipeline.errors import InputError
from pipeline.text.loading import expand_inputs, load_text, plan_document
from pipeline.text.chunking import Chunker
from pipeline.text.counting import token_counter
from tests.conftest import KOREAN

CHUNKER = Chunker(200, token_counter("gpt-4o-mini"))


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32", "cp949", "euc-kr"])
def test_korean_text_decodes_from_common_encodings(encoding: str) -> None:
    decoded = decode_bytes(KOREAN.encode(encoding))

    assert decoded.skip_reason is None
    assert decoded.text == KOREAN


def test_utf8_read_as_cp1252_is_repaired() -> None:
    mojibake = "café – naïve ‘quotes’".encode("utf-8").decode("cp1252")

    assert decode_bytes(mojibake.encode("utf-8")).text == "café – naïve ‘quotes’"


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty"),
    (b"  \n\t\n", "empty"),
    (bytes(range(256)) * 4, "binary"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200), "binary"),
])
def test_unusable_bytes_are_skipped_with_a_reason(data: bytes, reason: str) -> None:
    assert reason in (decode_bytes(data).skip_reason or "")


def test_plan_keeps_references_and_load_reads_the_same_text(tmp_path: Path) -> None:
    path = tmp_path / "ko.txt"
    path.write_bytes(KOREAN.encode("cp949"))

    ref = plan_document(1, "ko.txt", CHUNKER, path=str(path))

    assert "text" not in ref and ref["encoding"] == "cp949" and ref["language"] == "Korean"
    assert load_text(ref) == KOREAN


def test_a_file_changed_after_planning_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("first version", encoding="utf-8")
    ref = plan_document(1, "a.txt", CHUNKER, path=str(path))
    path.write_text("second version", encoding="utf-8")

    with pytest.raises(InputError, match="changed"):
        load_text(ref)


def test_chunk_spans_cover_the_text_within_the_token_budget() -> None:
    text = "\n\n".join(f"Paragraph {i}. " + "Sentences follow one another here. " * 15 for i in range(20))

    spans, tokens = CHUNKER.spans(text)

    assert len(spans) > 5 and tokens > 200 * 5
    assert all(CHUNKER.count(text[a:b]) <= 200 for a, b in spans)
    assert spans[0][0] == 0 and spans[-1][1] == len(text.rstrip())


def test_expand_inputs_dedups_and_keeps_order(tmp_path: Path) -> None:
    for name in ("b.txt", "a.txt"):
        (tmp_path / name).write_text("x", encoding="utf-8")

    paths = expand_inputs([str(tmp_path / "b.txt"), str(tmp_path / "*.txt")])

    assert [Path(p).name for p in paths] == ["b.txt", "a.txt"]


def test_an_empty_directory_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="a folder with no documents in it"):
        expand_inputs([str(tmp_path)])


def test_a_folder_is_walked_without_following_links_to_folders(tmp_path: Path) -> None:
    (tmp_path / "2024").mkdir()
    (tmp_path / "2024" / "a.txt").write_text("x", encoding="utf-8")
    (tmp_path / "latest").symlink_to(tmp_path / "2024")  # a twin of 2024
    (tmp_path / "2024" / "up").symlink_to(tmp_path)  # a loop

    assert expand_inputs([str(tmp_path)]) == [str(tmp_path / "2024" / "a.txt")]


async def test_a_batch_with_big_files_parts_and_texts_is_planned_as_one_reading_of_each(tmp_path: Path) -> None:
    # Small files are planned on the event loop, and each learns its size as it is opened; from the first
    # file too big for the loop (or a part of a file), the rest of the batch is planned in a thread.
    from pipeline.planning import PLAN_IN_THREAD_BYTES, plan_and_compare
    from pipeline.text.loading import list_inputs, plan_entries

    sentence = "The ferry leaves the harbour at dawn and returns before dusk. "
    (tmp_path / "inbox.mbox").write_text("From a@b Mon Jan  1 00:00:00 2024\nFrom: a@b\nTo: c@d\nSubject: Ferry\n\n"
                                         + sentence * 3 + "\n", encoding="utf-8")
    files = {"a.txt": sentence * 4, "big.txt": sentence * (PLAN_IN_THREAD_BYTES // len(sentence) + 1),
             "b.txt": sentence * 2, "page.html": "<html><body><p>" + sentence * 400 + "</p></body></html>"}
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    orders = [["a.txt", "big.txt", "b.txt"], ["a.txt", "inbox.mbox#msg1", "b.txt"], ["page.html", "a.txt"],
              ["a.txt", "missing.txt", "b.txt"]]
    for names in orders:
        entries = list_inputs([str(tmp_path / n) for n in names], [{"id": "memo", "text": sentence}])
        kept: dict[int, str] = {}
        refs, _ = await plan_and_compare(entries, CHUNKER, None, guess_language=True, retry_failed=False,
                                         keep=kept)
        expected_kept: dict[int, str] = {}
        assert refs == plan_entries(entries, CHUNKER, keep=expected_kept)
        assert kept == expected_kept and len(refs) == len(entries)
        assert not any("plan_error" in r for r in refs)
