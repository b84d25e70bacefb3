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


def test_map_prompt_puts_the_instruction_before_the_document() -> None:
    assert prompts.MAP.index("Summarize") < prompts.MAP.index("{document}")
