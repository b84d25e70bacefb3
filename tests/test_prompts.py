"""Each prompt file has exactly the placeholders the code fills; a folder of one's own is checked the same way."""

from __future__ import annotations

import string
from pathlib import Path

import pytest

import prompts
from pipeline.errors import InputError


@pytest.mark.parametrize("name", sorted(prompts.PLACEHOLDERS))
def test_template_placeholders_match_the_code(name: str) -> None:
    template = getattr(prompts, name.upper())
    fields = {field for _, field, _, _ in string.Formatter().parse(template) if field}

    assert fields == prompts.PLACEHOLDERS[name]


def test_instructions_and_material_go_in_separate_templates() -> None:
    for instructions in (prompts.MAP, prompts.COLLAPSE, prompts.FINAL):
        assert "<document" not in instructions and "<summaries" not in instructions
    assert prompts.DOCUMENT.startswith("<document") and prompts.SUMMARIES.startswith("<summaries>")


def _folder(tmp_path: Path, **files: str | bytes) -> Path:
    folder = tmp_path / "my-prompts"
    folder.mkdir()
    for name, body in files.items():
        path = folder / f"{name}.txt"
        path.write_bytes(body) if isinstance(body, bytes) else path.write_text(body, encoding="utf-8")
    return folder


def test_a_prompts_folder_replaces_only_the_templates_it_holds(tmp_path: Path) -> None:
    folder = _folder(tmp_path, map="Summarize this memo for the board.\n{language_instruction}\n")

    templates = prompts.load(folder)

    assert templates.map == "Summarize this memo for the board.\n{language_instruction}\n"
    assert (templates.collapse, templates.final, templates.document) == (prompts.COLLAPSE, prompts.FINAL,
                                                                         prompts.DOCUMENT)


@pytest.mark.parametrize(("files", "message"), [
    ({"map": "Summarize it.\n"}, "missing placeholder {language_instruction}"),
    ({"final": "Summarize {language_instruction} in {length} words"}, "unknown placeholder {length}"),
    ({"document": "<document>{document}</document>"}, "missing placeholder {part}, {source}"),
    ({"collapse": "Merge {language_instruction} with {0}"}, "unknown placeholder {0}"),
    ({"map": "Reply as JSON: {\"points\": []} {language_instruction}"}, "unknown placeholder"),
    ({"summaries": "<summaries>{summaries}</summaries> }"}, "Single '}'"),
    ({"map": b"\xff\xfe not text {language_instruction}"}, "not UTF-8 text"),
    ({"focus": "Answer this."}, "missing placeholder {focus}"),
    ({"notes": "anything"}, "holds none of map.txt"),
])
def test_a_template_that_the_code_cannot_fill_is_a_one_line_error_naming_its_file(
        tmp_path: Path, files: dict[str, str | bytes], message: str) -> None:
    folder = _folder(tmp_path, **files)

    with pytest.raises(InputError) as raised:
        prompts.load(folder)

    assert message in str(raised.value) and len(str(raised.value).splitlines()) == 1
    if "none of" not in message:
        assert str(folder / f"{next(iter(files))}.txt") in str(raised.value)


def test_a_missing_or_unreadable_prompts_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        prompts.load(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="not a folder"):
        prompts.load(tmp_path / "file")
    folder = _folder(tmp_path)
    (folder / "map.txt").mkdir()  # a name that cannot be read as a file
    with pytest.raises(InputError, match="cannot read .*map.txt"):
        prompts.load(folder)


def test_without_instructions_the_templates_are_the_packages_own() -> None:
    assert prompts.load() == prompts.DEFAULT
    assert prompts.load(instructions="  ", focus="").reader == ""


def test_instructions_and_focus_are_phrased_by_their_templates_which_a_folder_may_replace(tmp_path: Path) -> None:
    default = prompts.load(instructions="For the board. ", focus="What did it cost?")
    assert default.reader == (prompts.INSTRUCTIONS.format(instructions="For the board.")
                              + prompts.FOCUS.format(focus="What did it cost?"))

    folder = _folder(tmp_path, focus="Answer first: {focus}")
    assert prompts.load(folder, focus="Who decided?").reader == "Answer first: Who decided?\n"
