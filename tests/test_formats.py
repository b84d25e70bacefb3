"""PDF, HTML, DOCX, e-mail and records reach the model as their text, and only their text.

Every file here is built by the test; what is checked is what the fake model RECEIVED.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.text.chunking import Chunker
from pipeline.text.formats import extract
from pipeline.text.loading import load_text, plan_document
from tests import format_files as ff
from tests.fake_openai import FakeOpenAI
from tests.test_chunking import COUNT, assert_invariants

_DOCUMENT = re.compile(r'<document source="([^"]*)"[^>]*>\n(.*?)\n</document>', re.DOTALL)
EXIT_PARTIAL = 3


def received(fake: FakeOpenAI) -> dict[str, list[str]]:
    """Each source's chunks as the model received them (a language retry counted once)."""
    out: dict[str, list[str]] = {}
    for body in fake.bodies:
        for source, text in _DOCUMENT.findall(body["messages"][-1]["content"]):
            if text not in out.setdefault(source, []):
                out[source].append(text)
    return out


def flat(text: str) -> str:
    return " ".join(text.split())


def by_name(lines: list[dict], name: str) -> dict:
    return next(line for line in lines if line["source"].endswith(name))


def test_each_format_sends_its_text_and_only_its_text(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    ff.write_all(folder)

    result = cli(str(folder), str(folder / "*.jsonl"), "--text-field", "body", "--id-field", "id",
                 base_url=fake.base_url)

    assert result.code == 0, result.err
    sent = {Path(source).name: "\n".join(chunks) for source, chunks in received(fake).items()}
    assert sorted(sent) == ["ferry.docx", "inbox.mbox#msg1", "inbox.mbox#msg2", "library.eml", "notes.jsonl#rec1",
                            "notes.jsonl#rec2", "notes.jsonl#rec3", "rates.html", "report.pdf"]
    assert flat(sent["report.pdf"]) == flat("\n\n".join(ff.PAGES))
    page = sent["rates.html"]
    assert page.startswith("Water rates rise") and all(p in page for p in ff.ARTICLE)
    assert not any(w in page for w in (*ff.NAV_WORDS, ff.SCRIPT_WORD, ff.STYLE_WORD, "Copyright", "{", "<"))
    word = sent["ferry.docx"]
    order = [ff.DOCX_HEADING, ff.DOCX_PARAGRAPHS[0], "Month | Trips", "January | 1210", "February | 1380",
             ff.DOCX_PARAGRAPHS[1]]
    assert [word.index(part) for part in order] == sorted(word.index(part) for part in order)
    korean = sent["inbox.mbox#msg1"]
    assert ff.KOREAN_BODY in korean and "Subject: 감귤 수확" in korean and "Farmer Kim" in korean
    assert not any(w in korean for w in ("base64", "Content-Type", "ks_c", "=?utf-8?"))
    for mail in (sent["inbox.mbox#msg2"], sent["library.eml"]):
        assert ff.ENGLISH_BODY in mail and ff.ATTACHED_TEXT in mail and "Attachments: minutes.txt" in mail
        assert "boundary" not in mail and "MIME-Version" not in mail
    assert [sent[f"notes.jsonl#rec{i}"] for i in (1, 2, 3)] == [r["body"] for r in ff.RECORDS]

    lines = result.lines()
    assert by_name(lines, "report.pdf")["locations"] == ["pages 1-2"]
    assert by_name(lines, "report.pdf")["format"] == "pdf"
    assert by_name(lines, "inbox.mbox#msg2")["locations"] == ["message 2"]
    assert by_name(lines, "notes.jsonl#rec2")["locations"] == ["record 2, id b2"]
    assert by_name(lines, "rates.html")["format"] == "html"


def test_each_pdf_chunk_names_the_pages_it_was_cut_from(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    said = ff.sentences(120)
    name, data = ff.long_document("pdf", said)
    (tmp_path / name).write_bytes(data)
    pages = [flat(t) for t in extract(data, name).text.split("\n\n")]

    result = cli(str(tmp_path / name), "--chunk-tokens", "120", base_url=fake.base_url)

    assert result.code == 0, result.err
    whole = " ".join(pages)
    # In the document's order: the calls of one document go out together, not always in order.
    chunks = sorted(received(fake)[str(tmp_path / name)], key=lambda chunk: whole.find(flat(chunk)[:120]))
    locations = result.lines()[0]["locations"]
    assert len(chunks) == len(locations) > 5
    for chunk, where in zip(chunks, locations):
        first, _, last = where.removeprefix("pages ").removeprefix("page ").partition("-")
        named = " ".join(pages[int(first) - 1:int(last or first)])
        assert flat(chunk) in named, (where, chunk[:80])


@pytest.mark.parametrize("kind", ["pdf", "html", "docx", "eml", "mbox", "jsonl", "txt"])
def test_every_sentence_of_every_format_reaches_the_model(cli, fake: FakeOpenAI, tmp_path: Path, kind: str) -> None:
    said = ff.sentences(160, seed=kind)
    name, data = ff.long_document(kind, said)
    (tmp_path / name).write_bytes(data)

    result = cli(str(tmp_path / name), "--chunk-tokens", "150", "--text-field", "text", base_url=fake.base_url)

    assert result.code == 0, result.err
    got = flat("\n".join(chunk for chunks in received(fake).values() for chunk in chunks))
    missing = [s for s in said if s not in got]
    assert not missing, f"{len(missing)} of {len(said)} sentences never reached the model: {missing[:2]}"
    assert ff.SCRIPT_WORD not in got and "Home" not in got


@pytest.mark.parametrize("kind", ["pdf", "html", "docx", "eml", "mbox", "txt"])
def test_chunk_spans_keep_their_invariants_on_every_format(tmp_path: Path, kind: str) -> None:
    name, data = ff.long_document(kind, ff.sentences(90, seed=kind))
    (tmp_path / name).write_bytes(data)
    chunker = Chunker(64, COUNT)
    path = str(tmp_path / name) + ("#msg1" if kind == "mbox" else "")

    ref = plan_document(1, name, chunker, path=path)

    assert "skip_reason" not in ref and "plan_error" not in ref, ref
    text = load_text(ref)
    assert assert_invariants(text, chunker) == ref["spans"]
    assert len(ref["locations"]) == len(ref["spans"])


def test_files_that_cannot_be_read_fail_or_skip_alone(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    folder = tmp_path / "drive"
    folder.mkdir()
    (folder / "locked.pdf").write_bytes(ff.pdf_bytes(password="secret"))
    (folder / "scan.pdf").write_bytes(ff.pdf_bytes((), image_page=True))
    (folder / "torn.pdf").write_bytes(ff.pdf_bytes()[:600])
    (folder / "bomb.docx").write_bytes(ff.zip_bomb(40 * 2**20))
    (folder / "torn.docx").write_bytes(ff.zip_bomb(2**20)[:300])  # a ZIP cut short in a copy
    (folder / "really_text.pdf").write_text("The minutes were typed in a text editor and saved as a PDF name.")
    (folder / "stray_nuls.txt").write_bytes(b"The ferry ran\x00 on time every day\x00 in May and June.\x00\n" * 3)
    (folder / "noise.txt").write_bytes(bytes(range(128, 256)) * 40)
    (folder / "good.txt").write_text(ff.ENGLISH_BODY)

    result = cli(str(folder), base_url=fake.base_url, quiet=False)

    assert result.code == EXIT_PARTIAL, result.err
    lines = {Path(r["source"]).name: r for r in result.lines()}
    assert (lines["locked.pdf"]["status"], lines["locked.pdf"]["error"]) == ("failed", "encrypted PDF: it needs a password")
    assert (lines["scan.pdf"]["status"], lines["scan.pdf"]["error"]) == ("skipped", "no text layer: scanned?")
    assert lines["torn.pdf"]["status"] == "failed" and "damaged PDF" in lines["torn.pdf"]["error"]
    assert lines["bomb.docx"]["status"] == "failed" and "ZIP bomb" in lines["bomb.docx"]["error"]
    assert (lines["torn.docx"]["status"], lines["torn.docx"]["error"]) == (
        "failed", "damaged DOCX: its ZIP archive cannot be opened")
    assert lines["noise.txt"]["status"] == "skipped" and "noise" in lines["noise.txt"]["error"]
    for name in ("really_text.pdf", "stray_nuls.txt", "good.txt"):
        assert lines[name]["status"] == "ok", lines[name]
    assert "named .pdf but is text" in result.err and "9 stray NUL byte(s) dropped" in result.err
    sent = received(fake)
    assert set(map(lambda s: Path(s).name, sent)) == {"really_text.pdf", "stray_nuls.txt", "good.txt"}
    assert [t.strip() for t in sent[str(folder / "stray_nuls.txt")]] == [
        ("The ferry ran on time every day in May and June.\n" * 3).strip()]


def test_a_folder_of_other_formats_is_read_and_the_log_counts_what_was_passed_over(
        cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    folder = tmp_path / "drive"
    folder.mkdir()
    (folder / "report.pdf").write_bytes(ff.pdf_bytes())
    (folder / "rates.html").write_text(ff.html_page())
    (folder / "ferry.docx").write_bytes(ff.docx_bytes())
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (folder / "archive.zip").write_bytes(b"PK\x05\x06" + bytes(18))

    result = cli(str(folder), base_url=fake.base_url, quiet=False)

    assert result.code == 0, result.err
    assert sorted(Path(r["source"]).name for r in result.lines()) == ["ferry.docx", "rates.html", "report.pdf"]
    assert "passed over 2 file(s) of types not read (1 .png, 1 .zip)" in result.err or \
        "passed over 2 file(s) of types not read (1 .zip, 1 .png)" in result.err


def test_include_and_exclude_narrow_the_inputs(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    folder = tmp_path / "drive"
    (folder / "drafts").mkdir(parents=True)
    (folder / "report.pdf").write_bytes(ff.pdf_bytes())
    (folder / "rates.html").write_text(ff.html_page())
    (folder / "drafts" / "old.pdf").write_bytes(ff.pdf_bytes(("An old draft of the report.",)))

    result = cli(str(folder), "--include", "*.pdf", "--exclude", "*/drafts/*", base_url=fake.base_url, quiet=False)

    assert result.code == 0, result.err
    assert [Path(r["source"]).name for r in result.lines()] == ["report.pdf"]
    assert "passed over 2 input file(s): 1 excluded by --exclude, 1 not named by --include" in result.err


def test_records_without_their_text_field_are_skipped_saying_so(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("id,note\n1,The pool reopens in May.\n2,\n", encoding="utf-8")

    result = cli(str(rows), "--text-field", "note", base_url=fake.base_url)

    lines = result.lines()
    assert [line["status"] for line in lines] == ["ok", "skipped"]
    assert lines[1]["error"] == "empty 'note' field in record 2"
    assert received(fake) == {f"{rows}#rec1": ["The pool reopens in May."]}


def test_a_jsonl_file_without_a_text_field_is_one_text_document(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    notes = tmp_path / "notes.jsonl"
    notes.write_text(ff.jsonl_text(), encoding="utf-8")

    result = cli(str(notes), base_url=fake.base_url)

    assert result.code == 0, result.err
    assert {s: [t.strip() for t in c] for s, c in received(fake).items()} == {str(notes): [ff.jsonl_text().strip()]}
    assert json.loads(json.dumps(result.lines()[0]["locations"])) == ["lines 1-3"]


def test_a_pdf_past_the_page_or_time_bounds_is_that_files_failure(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.text.formats import pdf

    data = ff.pdf_bytes()
    monkeypatch.setattr(pdf, "MAX_PAGES", 1)
    assert extract(data, "big.pdf").skip_reason == "PDF of 2 pages, over the 1-page limit"
    monkeypatch.setattr(pdf, "MAX_PAGES", 10)
    monkeypatch.setattr(pdf, "MAX_SECONDS", -1.0)
    assert (extract(data, "slow.pdf").failure or "").startswith("reading its text took over")


def test_an_mbox_with_many_messages_is_indexed_once(tmp_path: Path) -> None:
    box = tmp_path / "many.mbox"
    box.write_bytes(b"".join(b"From a@example.org Mon Nov  2 10:00:00 2026\nSubject: n%d\n\nNote number %d.\n\n" % (i, i)
                             for i in range(1, 301)))
    from pipeline.text.formats.entries import Fields, _parts, expand

    names = expand([str(box)], Fields(), 2**26)
    _parts.cache_clear()
    refs = [plan_document(i, n, Chunker(64, COUNT), path=n) for i, n in enumerate(names, start=1)]

    assert len(refs) == 300 and _parts.cache_info().misses == 1
    assert load_text(refs[41]).endswith("Note number 42.\n") and refs[41]["locations"] == ["message 42"]


def test_a_json_file_gives_a_document_per_record_from_a_nested_field(tmp_path: Path) -> None:
    data = tmp_path / "export.json"
    data.write_text(json.dumps({"items": [{"key": "k1", "post": {"body": "Ferries run late on Sundays."}},
                                          {"key": "k2", "post": {"body": "The pier lights were repaired."}}]}))
    from pipeline.text.formats.entries import Fields
    from pipeline.text.selecting import select_inputs

    fields = Fields("post.body", "key")
    names = select_inputs([str(data)], fields=fields)
    refs = [plan_document(i, n, Chunker(64, COUNT), path=n, fields=fields) for i, n in enumerate(names, start=1)]

    assert names == [f"{data}#rec1", f"{data}#rec2"]
    assert [load_text(r) for r in refs] == ["Ferries run late on Sundays.", "The pier lights were repaired."]
    assert refs[1]["locations"] == ["record 2, id k2"] and refs[1]["format"] == "record"


@pytest.mark.parametrize(("name", "data", "kind"), [
    ("notes.txt", ff.pdf_bytes(), "pdf"),
    ("report.pdf", b"Plain words saved under a PDF name.", "text"),
    ("page.txt", ff.html_page().encode(), "html"),
    ("letter.docx", ff.docx_bytes(), "docx"),
    ("letter.pdf", ff.docx_bytes(), "docx"),
    ("mail.txt", ff.messages()[1].as_bytes(), "email"),
    ("inbox", ff.mbox_bytes(), "mbox"),
    ("MZ.txt", b"MZ Smith wrote the minutes of the ferry meeting.", "text"),
    ("photo.pdf", b"\x89PNG\r\n\x1a\n" + bytes(32), "a PNG image"),
])
def test_content_decides_the_format_whatever_the_name_says(name: str, data: bytes, kind: str) -> None:
    from pipeline.text.formats import sniff

    assert sniff(data, name) == kind


def test_include_keeps_a_mailbox_as_its_messages(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    ff.write_all(tmp_path)

    result = cli(str(tmp_path), "--include", "*.mbox", base_url=fake.base_url)

    assert result.code == 0, result.err
    assert [Path(r["source"]).name for r in result.lines()] == ["inbox.mbox#msg1", "inbox.mbox#msg2"]


@settings(max_examples=60, deadline=None)
@given(text=st.text(st.sampled_from("ab .\n"), min_size=1, max_size=600), budget=st.integers(16, 80),
       overlap=st.none() | st.integers(0, 20))
def test_each_chunk_names_the_lines_it_spans(text: str, budget: int, overlap: int | None) -> None:
    from pipeline.text.formats.locations import locate

    spans, _ = Chunker(budget, COUNT, overlap).spans(text)

    expected = []
    for start, end in spans:
        first, last = text.count("\n", 0, start) + 1, text.count("\n", 0, max(end - 1, start)) + 1
        expected.append(f"line {first}" if first == last else f"lines {first}-{last}")
    assert locate(text, spans, [], "") == expected
