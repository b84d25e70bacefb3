"""Each prompt file has exactly the placeholders the code fills."""

from __future__ import annotations

import string

import pytest

import prompts


@pytest.mark.parametrize("name", sorted(prompts.PLACEHOLDERS))
def test_template_placeholders_match_the_code(name: str) -> None:
    template = getattr(prompts, name.upper())
    fields = {field for _, field, _, _ in string.Formatter().parse(template) if field}

    assert fields == prompts.PLACEHOLDERS[name]


def test_instructions_and_material_go_in_separate_templates() -> None:
    for instructions in (prompts.MAP, prompts.COLLAPSE, prompts.FINAL):
        assert "<document" not in instructions and "<summaries" not in instructions
    assert prompts.DOCUMENT.startswith("<document") and prompts.SUMMARIES.startswith("<summaries>")
