"""Every tag in a summary names a document that says what its bullet says.

The end-to-end tests give each document facts no other has, and a fake model that
misattributes on purpose at every reduce call: it tags each point with its neighbour,
adds a point no document makes, and leaves one untagged. What comes out is checked
against the files themselves, through the Sources list.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.answers.attribution import _STOP, check_bullets, terms
from pipeline.answers.citations import retag
from tests.fake_openai import FakeOpenAI

_BLOCK_TAG = re.compile(r"\[D(\d+)\]")
_LEGEND = re.compile(r"^- \[D(\d+)\] (.+)$", re.MULTILINE)
_BULLET_TAGS = re.compile(r"\[(D\d+(?:, D\d+)*)\]\s*$")
_TOWNS = ["Arden", "Brisk", "Calloway", "Dunmore", "Elsworth", "Farrow", "Glenby", "Harlow", "Ivybridge", "Jessop",
          "Kirkwall", "Lanark", "Merrow", "Norcott", "Oakham", "Pellow", "Quarry", "Rushden", "Selby", "Thirsk"]


def _fact(i: int) -> str:
    return f"The {_TOWNS[i % 20]} depot shipped {1000 + 37 * i} crates of {_TOWNS[(i * 7 + 3) % 20].lower()}berries"


def _write(folder: Path, n: int) -> dict[str, str]:
    folder.mkdir()
    texts = {}
    for i in range(n):
        path = folder / f"depot-{i:02d}.txt"
        text = f"{_fact(i)} in week {10 + i}.\n\nThe weather was mild and the roads were clear."
        path.write_text(text, encoding="utf-8")
        texts[str(path)] = text
    return texts


def _misattributing(messages: list[dict[str, Any]]) -> str:
    """Map: the document's first sentence. Reduce: every point tagged with its neighbour, plus two bad ones."""
    user = messages[-1]["content"]
    if "<document" in user:
        body = user.split(">\n", 1)[1].rsplit("\n</document>", 1)[0]
        return "- " + body.split(".")[0] + "."
    body = user.split("<summaries>\n", 1)[1].rsplit("\n</summaries>", 1)[0]
    blocks = [b for b in body.split("\n\n") if b.strip()]
    numbered = {int(n) for b in blocks for n in _BLOCK_TAG.findall(b)}
    top = max(numbered, default=1)
    lines = ["The depots shipped berries all season."]
    for block in blocks:
        for line in block.splitlines():
            point = _BLOCK_TAG.sub("", line).strip(" -")
            if "depot shipped" not in point:
                continue
            own = [int(n) for n in _BLOCK_TAG.findall(line)] or [int(_BLOCK_TAG.findall(block)[0])]
            wrong = own[0] % top + 1  # the neighbour, never the document itself when there are two or more
            lines.append(f"- {point.split(' [')[0].rstrip('.')}. [D{wrong}]")
    lines.append("- The Zenith depot shipped 987654 crates of moonberries. [D1]")  # no document says it
    lines.append("- Again, " + _BLOCK_TAG.sub("", blocks[0].splitlines()[-1]).strip(" -"))  # a point with no tag
    return "\n".join(lines)


def _precision(summary: str, texts: dict[str, str]) -> tuple[int, int]:
    """Tags checked against the files: (tags whose file says the bullet's fact, all tags)."""
    body, _, legend = summary.partition("**Sources**")
    source_of = {int(n): path for n, path in _LEGEND.findall(legend)}
    right = total = 0
    for line in body.splitlines():
        if not (m := _BULLET_TAGS.search(line)):
            continue
        fact = line[:m.start()].strip(" -.").removeprefix("Again, ").split(" in week")[0]
        for tag in m.group(1).split(", "):
            total += 1
            right += fact in texts[source_of[int(tag[1:])]]
    return right, total


def test_misattributed_points_reach_the_summary_with_the_right_documents(cli, fake: FakeOpenAI,
                                                                          tmp_path: Path) -> None:
    texts = _write(tmp_path / "in", 80)
    fake.reply = _misattributing

    # A small reduce budget: the eighty summaries take a collapse level before the final call.
    result = cli(str(tmp_path / "in"), "--token-max", "1600", "--length", "100 bullets", base_url=fake.base_url)

    assert result.code == 0, result.err
    report = result.report()
    assert report["llm_calls"]["collapse"] >= 2
    right, total = _precision(result.out, texts)
    assert total >= 20 and right == total  # every tag names a document that says the point
    assert "Zenith" not in result.out and "987654" not in result.out
    citations = report["citations"]
    assert citations["moved"] >= 20 and citations["bullets_dropped"] >= 1 and citations["added"] >= 1
    assert citations["kept"] + citations["removed"] == citations["checked"]


def test_sources_list_and_inline_tags_agree(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    _write(tmp_path / "in", 6)
    fake.reply = _misattributing

    result = cli(str(tmp_path / "in"), base_url=fake.base_url)

    body, _, legend = result.out.partition("**Sources**")
    legend = legend.split("**Summarized but not cited above:**")[0]
    inline = {int(n) for n in re.findall(r"D(\d+)", body)}
    listed = {int(n) for n, _ in _LEGEND.findall(legend)}
    assert inline == listed and inline


_WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=4, max_size=9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_WORDS, min_size=4, max_size=8, unique=True), min_size=2, max_size=8, unique_by=tuple),
       st.randoms(use_true_random=False))
def test_a_kept_or_moved_tag_always_names_a_document_that_holds_the_bullets_words(
        vocab: list[list[str]], rng: Any) -> None:
    # Documents with disjoint words; bullets made of one document's words, tagged at random.
    seen: set[str] = set()
    docs = []
    for words in vocab:
        own = [w for w in words if w not in seen]
        seen.update(own)
        docs.append(own)
    if any(len(d) < 4 for d in docs):
        return
    summaries = {100 + i: " ".join(d) for i, d in enumerate(docs)}
    call_docs = list(summaries)
    lines = []
    for i, words in enumerate(docs):
        tag = rng.randint(1, len(docs) + 2)  # sometimes a tag the call was never shown
        lines.append(f"- {' '.join(rng.sample(words, 3))} [D{tag}]")
    counts: Counter[str] = Counter()

    checked = check_bullets("\n".join(lines), call_docs, summaries.__getitem__, counts)

    for line in checked.splitlines():
        words = set(line.split(" [")[0].strip("- ").split())
        for n in re.findall(r"D(\d+)", line):
            assert words <= set(summaries[call_docs[int(n) - 1]].split())
    assert counts["bullets_dropped"] == 0


def test_korean_bullets_are_checked_by_their_characters() -> None:
    summaries = {1: "제주 감귤 수확이 11월 초에 시작되었다. 당도는 11.8브릭스였다.",
                 2: "부산 여객선 이용객이 지난해보다 12% 늘었다."}

    checked = check_bullets("- 감귤 수확은 11월에 시작되었다 [D2]\n- 여객선 이용객이 12% 늘었다", [1, 2],
                            summaries.__getitem__)

    assert checked == "- 감귤 수확은 11월에 시작되었다 [D1]\n- 여객선 이용객이 12% 늘었다 [D2]"


def test_a_bullet_with_a_number_no_document_holds_is_dropped() -> None:
    counts: Counter[str] = Counter()
    summaries = {1: "The survey ran in August and covered ferry riders on the north route."}

    checked = check_bullets("Overview.\n- The survey ran from 9 to 18 August 2009 on the north route [D1]",
                            [1], summaries.__getitem__, counts)

    assert checked == ""  # and the overview, which no document supports, went too: no line goes unchecked
    assert counts["invented_numbers"] == 1


_ENGLISH = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=200) | st.lists(
    st.sampled_from(["1,234", "3.5", "12:30", "..3", "3.", "1..2", "007", "x9y", "before", "beforehand", "documents",
                     "summarize", "Ab", "The", "[D3]", "Ferries", "\n", "-", "2009."]), max_size=30).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(_ENGLISH)
def test_an_english_texts_terms_are_its_words_past_the_stop_list_and_its_numbers(text: str) -> None:
    low = retag(text, lambda k: None).lower()
    words = {word[:6] for word in re.findall(r"[a-z]{3,}", low) if word not in _STOP}
    numbers = {number.replace(",", "") for number in re.findall(r"\d+(?:[.,:]\d+)*", low)}

    assert terms(text) == words | numbers


def checked_digest(calls: int = 1500) -> str:
    """A digest of checking many generated answers: what must not depend on the process's string hashing."""
    import hashlib
    import random

    words = ("harbor ferry battery council budget ridership schedule 감귤 수확 여객선 이용객 "
             "the and 12% 2009 1,234 3.5 ferries loaves").split()
    rng = random.Random(1)
    digest = hashlib.sha256()
    for _ in range(calls):
        n = rng.choice([2, 3, 5, 20, 130])
        summaries = {100 + i: " ".join(rng.choices(words, k=rng.randint(0, 25))) for i in range(n)}
        lines = [rng.choice(["- ", "* ", ""]) + " ".join(rng.choices(words, k=rng.randint(0, 12)))
                 + ("" if rng.random() < 0.2 else f" [D{rng.randint(1, n)}]") for _ in range(rng.randint(1, 8))]
        digest.update(check_bullets("\n".join(lines), list(summaries), summaries.__getitem__).encode())
    return digest.hexdigest()


def test_checked_tags_do_not_depend_on_the_hash_seed() -> None:
    # Scores summed in a set's order gave ties that fell one way or the other per process.
    root = Path(__file__).resolve().parent.parent
    code = "from tests.test_attribution import checked_digest; print(checked_digest())"
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root,
                              env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
               for seed in ("1", "2", "3")}
    assert len(digests) == 1
