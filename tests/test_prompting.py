"""Prompt rendering: fences hold, labels stay on one line, tags keep naming the right documents."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

import prompts
from pipeline.answers.citations import cited, retag
from pipeline.prompting import Piece, escape_label, fence, map_instructions, map_prompt, reduce_prompt, render_group
from pipeline.text.language import language_instruction

_FENCE = re.compile(r"<\s*/?\s*(document|summaries)\b", re.IGNORECASE)
# Texts rich in what an attacker would type: fence tags in any case and spacing, quotes, controls.
_HOSTILE = st.lists(st.sampled_from(["<", "/", ">", " ", "\t", "\n", '"', "document", "DOCUMENT", "Summaries",
                                     "x", "\x00", "\u202e", "&", "D1", "[", "]"]), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(_HOSTILE)
def test_fenced_text_carries_no_fence_tag(text: str) -> None:
    assert not _FENCE.search(fence(text))


@settings(max_examples=300, deadline=None)
@given(_HOSTILE | st.text(max_size=40) | st.text(st.characters(categories=['Cs', 'Cc', 'Cf', 'Zl']), max_size=5))
def test_an_escaped_label_is_one_line_with_no_controls(source: str) -> None:
    label = escape_label(source)
    assert not set(label) & set('"<>')
    assert not {unicodedata.category(c) for c in label} & {"Cc", "Cf", "Zl", "Zp", "Cs"}


@settings(max_examples=100, deadline=None)
@given(_HOSTILE, _HOSTILE)
def test_a_map_prompt_has_exactly_one_fence_whatever_the_document_and_name(source: str, chunk: str) -> None:
    prompt = map_prompt(source, chunk, 1, 2, "Answer in English.", prompts.DEFAULT).user
    assert len(_FENCE.findall(prompt)) == 2
    assert prompt.startswith("<document ") and prompt.count("<document ") == 1 and prompt.count("\n</document>") == 1


def _merged(docs: list[int], cites: list[list[int]]) -> Piece:
    """A merged summary whose bullets cite its own documents by piece-local number."""
    lines = [f"- point {i} [{', '.join(f'D{docs.index(d) + 1}' for d in ds)}]" for i, ds in enumerate(cites)]
    return Piece(label="", text="\n".join(lines), tokens=10, docs=docs)


@st.composite
def _groups(draw: st.DrawFn) -> list[Piece]:
    group = []
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            doc = draw(st.integers(1, 30))
            group.append(Piece(label=f"doc{doc}.txt", text=f"about doc {doc}", tokens=5, docs=[doc]))
        else:
            docs = draw(st.lists(st.integers(1, 30), min_size=1, max_size=6, unique=True))
            cites = draw(st.lists(st.lists(st.sampled_from(docs), min_size=1, max_size=3, unique=True), max_size=4))
            group.append(_merged(docs, cites))
    return group


@settings(max_examples=200, deadline=None)
@given(_groups())
def test_call_local_tags_name_the_same_documents_as_before(group: list[Piece]) -> None:
    joined, call_docs = render_group(group)
    # Every bullet "point i" in the call's text cites, through call_docs, exactly the
    # run documents its piece cited through the piece's own docs.
    for block, piece in zip(joined.split("\n\n"), group):
        if piece["label"]:
            k = int(re.match(r"\[D(\d+)\]", block).group(1))
            assert call_docs[k - 1] == piece["docs"][0]
            continue
        for before, after in zip(piece["text"].splitlines(), block.splitlines()):
            assert [piece["docs"][k - 1] for k in cited(before)] == [call_docs[k - 1] for k in cited(after)]
    assert len(call_docs) == len(set(call_docs))


def test_invented_tags_are_dropped_and_real_ones_renumbered() -> None:
    answer = "- ferries grew [D2, D9]\n- a made-up point [D7].\n- tides [d1]"
    assert retag(answer, lambda k: {1: 11, 2: 12}.get(k)) == "- ferries grew [D12]\n- a made-up point.\n- tides [D11]"


def test_templates_keep_their_fences_on_lines_of_their_own() -> None:
    assert "\n</document>" in prompts.DOCUMENT and "\n</summaries>" in prompts.SUMMARIES


_READER_TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=60) | \
    st.lists(st.sampled_from(["{", "}", "{focus}", "{language_instruction}", "cost", "\n", " ", "%s"]),
             max_size=12).map("".join)


@settings(max_examples=150, deadline=None)
@given(_READER_TEXT, _READER_TEXT)
def test_the_readers_words_reach_every_steps_system_message_after_its_fixed_text(instructions: str,
                                                                                  focus: str) -> None:
    templates = prompts.load(instructions=instructions, focus=focus)
    english, korean = language_instruction("English"), language_instruction("Korean")
    systems = {
        "map": [map_instructions(english, templates), map_instructions(korean, templates)],
        "collapse": [reduce_prompt("collapse", "x", english, templates).system,
                     reduce_prompt("collapse", "y", korean, templates).system],
        "final": [reduce_prompt("final", "x", english, templates, "Write 6 bullets.").system],
    }
    fixed = {"map": prompts.MAP, "collapse": prompts.COLLAPSE, "final": prompts.FINAL}
    for step, messages in systems.items():
        for system in messages:
            before_language = fixed[step].split("{length_instruction}")[0].split("{language_instruction}")[0]
            assert system.startswith(before_language)  # the template's own text comes first, untouched
            for given_text in (instructions, focus):
                assert given_text.strip() in system  # braces and all, exactly as given
        if step != "final":
            # Only the language instruction, at the end, differs between a step's calls: servers
            # that cache a prompt's start reuse the template and the reader's words.
            shared = templates.map if step == "map" else templates.collapse
            prefix = shared.split("{language_instruction}")[0] + templates.reader
            assert all(system.startswith(prefix) for system in messages)


def test_without_instructions_the_messages_are_exactly_the_templates() -> None:
    english = language_instruction("English")
    assert map_instructions(english, prompts.load()) == prompts.MAP.format(language_instruction=english)
