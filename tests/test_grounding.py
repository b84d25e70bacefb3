"""Every line of the summary stands on the documents' own text, and says where.

The end-to-end test gives three unrelated documents to a fake model that does what a
small model does: it invents a name, tags one document's fact with another's tag, writes
headings, bold labels and a prose paragraph mixing two documents, and hands back the map
summaries in a row under headers of its own, far past the length asked for. None of it
may reach the reader; what does carries the lines of the file that say it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.answers.attribution import check_bullets
from pipeline.answers.citations import retag
from pipeline.answers.evidence import cite_lines, trace
from pipeline.answers.grounding import facts, ground, source_terms
from pipeline.answers.shape import bullets
from pipeline.llm.runner import Completion
from pipeline.summarize import document_result
from pipeline.text.loading import DocRef
from tests.fake_openai import FakeOpenAI

BAKERY = """Bakery Quarterly Report

The Linden Street bakery sold 4,200 loaves in the third quarter.
Rye bread made up a third of sales, and the sourdough starter was replaced in August.

Two new ovens were installed on the upper floor.
"""
FERRY = """Harbor Ferry Pilot

The port authority ran an electric ferry across the harbor for six months.
The authority expected 900 trips a day; ridership reached 1,450 in August.
Passengers crossed in eleven minutes.
"""
RETRO = """Team Retrospective

The payments team moved to the new provider in October.
The migration was delayed two days because the provider's certificates changed.
Testing caught three defects before release.
"""
DOCS = {"bakery.txt": BAKERY, "ferry.txt": FERRY, "retro.txt": RETRO}


def _block(user: str) -> str:
    return user.split(">\n", 1)[1].rsplit("\n</", 1)[0]


def _misbehaving(messages: list[dict[str, Any]]) -> str:
    """A model that writes what no document says, in the shape no prompt asked for."""
    user = messages[-1]["content"]
    if "<document" in user:
        body = _block(user)
        said = "\n".join(f"- {s.strip()}" for s in re.split(r"(?<=\.)\s+", body.split("\n", 2)[2]) if s.strip())
        title = body.splitlines()[0]
        return f"### Summary\n- {title}\n- It was written by Jonathan Smith in 1987.\n{said}"
    block = _block(user)
    tag = {name: f"D{k}" for k, name in re.findall(r"^\[D(\d+)\] \S*?([a-z]+\.txt)", block, re.MULTILINE)}
    copied = []
    for i, part in enumerate(block.split("\n\n"), start=1):
        lines = part.splitlines()
        copied += [f"[{i}] {lines[0][5:]}: The first report of the year"] + lines[1:]
    return "\n".join([
        "### Key Points",
        "**Bakery Operations**",
        f"- The authority expected 900 trips a day. [{tag['bakery.txt']}]",
        f"- It was written by Jonathan in 1987. [{tag['ferry.txt']}]",
        "The bakery's migration was delayed two days because the provider's certificates changed. "
        "The Linden Street bakery sold 4,200 loaves in the third quarter.",
        "### Additional Information",
        *copied, *copied[:3],
    ])


def _write(folder: Path) -> None:
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")


def test_nothing_the_documents_do_not_say_reaches_the_summary(cli, fake: FakeOpenAI, tmp_path: Path) -> None:
    _write(tmp_path / "in")
    fake.reply = _misbehaving

    result = cli(str(tmp_path / "in"), "--cite", "lines", base_url=fake.base_url)

    assert result.code == 0, result.err
    body, _, legend = result.out.partition("**Sources**")
    source_of = {int(k): Path(v).name for k, v in re.findall(r"^- \[D(\d+)\] (.+)$", legend, re.MULTILINE)}
    lines = [line for line in body.splitlines() if line.strip()]
    assert lines and all(line.startswith("- ") for line in lines)  # no heading, label, header or paragraph
    assert "Jonathan" not in result.out and "1987" not in result.out and "###" not in body and "**" not in body
    assert "first report" not in result.out and "Quarterly Report" not in body and "[1]" not in body
    assert len(lines) <= 6  # auto: two bullets for each of three documents
    for line in lines:
        cites = re.search(r"\[(D\d+:[^\]]*)\]$", line)
        assert cites, line  # every bullet names its documents and their lines
        claim = facts(line[:cites.start()])
        for cite in cites.group(1).split(", "):
            doc, ranges = cite[1:].split(":")
            text = DOCS[source_of[int(doc)]].splitlines()
            said = "\n".join(line for a, _, b in (r.partition("-") for r in ranges.split(","))
                              for line in text[int(a) - 1:int(b or a)])
            assert claim.numbers <= source_terms(said) and claim.names <= source_terms(said), (line, said)
        if "900" in line or "bakery" in line.lower() and "migration" in line:
            assert "900" not in line or {source_of[int(d)] for d in re.findall(r"D(\d+):", line)} == {"ferry.txt"}
            assert "migration" not in line  # the paragraph giving the retro's facts to the bakery went
    report = result.report()
    assert report["answers"]["heading"] >= 2 and report["answers"]["invented_name"] >= 3
    assert report["answers"]["title_point"] >= 3 and report["answers"]["concatenation"] == 1
    evidence = [json.loads(line) for line in (result.out_dir / "evidence.jsonl").read_text().splitlines()]
    assert len(evidence) == len(lines) and all(e["documents"] and e["documents"][0]["lines"] for e in evidence)
    mapped = result.lines()
    assert all(len(point) >= 4 for r in mapped for point in r["evidence"])  # start, end, first, last line


def test_headings_labels_and_prose_become_bullets_or_go() -> None:
    counts: Counter[str] = Counter()

    shaped = bullets("### Summary\n**Costs**: Power was cheap.\n[1] Jonah 1: The first book\n"
                     "Ridership grew. Fares held.\n- - Two faults stopped service.", counts)

    assert shaped == ["- Power was cheap.", "- Ridership grew.", "- Fares held.", "- Two faults stopped service."]
    assert counts == Counter({"heading": 2, "label": 1, "prose_sentence": 3})


def test_a_map_point_with_a_name_or_number_its_chunk_lacks_is_dropped_and_the_rest_located() -> None:
    counts: Counter[str] = Counter()

    kept, evidence = ground("- Ridership reached 1,450 in August.\n- The ferry was built in 1999.\n"
                            "- It was designed by Jonathan Smith.\n- Harbor Ferry Pilot", FERRY, (0, len(FERRY)), counts)

    assert kept == "- Ridership reached 1,450 in August."
    assert evidence == [[FERRY.index("The authority"), FERRY.index("\nPassengers"), 4, 4]]
    assert counts == Counter({"invented_number": 1, "invented_name": 1, "title_point": 1})


def test_a_sentence_mixing_two_documents_is_dropped_and_a_misplaced_fact_moves() -> None:
    summaries = {1: "- The Linden Street bakery sold 4,200 loaves.", 2: "- The authority expected 900 trips a day.",
                 3: "- The migration was delayed two days because the provider's certificates changed."}
    counts: Counter[str] = Counter()

    checked = check_bullets("- The authority expected 900 trips a day. [D1]\n"
                            "- The bakery's migration was delayed two days because certificates changed. [D1]\n"
                            "- The Linden Street bakery sold 4,200 loaves. It expected 900 trips. [D1]",
                            [1, 2, 3], summaries.__getitem__, counts)

    assert checked.splitlines() == ["- The authority expected 900 trips a day. [D2]",
                                    "- The Linden Street bakery sold 4,200 loaves. [D1]", "- It expected 900 trips. [D2]"]
    assert counts["mixed"] == 1


_WORD = st.sampled_from("harbor ferry bakery loaves ridership budget council migration battery quay".split())
_NAME = st.sampled_from(["Linden", "Arden", "Calloway", "Merrow", "Oakham", "Selby", "Thirsk", "Jonathan"])
_NUMBER = st.integers(min_value=10, max_value=99999).map(str)


@st.composite
def _sentence(draw: Any) -> str:
    words = draw(st.lists(st.one_of(_WORD, _NAME, _NUMBER), min_size=3, max_size=8))
    return "The " + " ".join(words) + "."


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_sentence(), min_size=1, max_size=6), min_size=1, max_size=4),
       st.lists(st.tuples(st.integers(0, 3), _sentence(), st.booleans(), st.integers(1, 5)), max_size=12))
def test_every_kept_bullets_evidence_holds_its_names_and_numbers(docs: list[list[str]], answers: list[Any]) -> None:
    texts = {k: "\n".join(sentences) + "\n" for k, sentences in enumerate(docs, start=1)}
    results = {}
    for k, text in texts.items():
        # Map answers: the document's own sentences, and sentences made up from the same vocabulary.
        own = [s for i, (d, made, real, _) in enumerate(answers) if d + 1 == k for s in
               ([docs[k - 1][i % len(docs[k - 1])]] if real else [made])]
        ref = DocRef(id=k, source=f"d{k}.txt", sha256="", spans=[(0, len(text))])
        results[k] = document_result(ref, [Completion("\n".join(f"- {s}" for s in own), 1, 1)], text=text)
    summary_of = {k: results[k].get("summary", "") for k in texts}
    final = "\n".join(f"- {made} [D{tag}]" if not real else f"- {docs[d % len(docs)][0]} [D{tag}]"
                      for d, made, real, tag in answers)
    checked = retag(check_bullets(final, list(texts), summary_of.__getitem__), lambda k: k)

    for entry in trace(checked, results):
        claim = facts(entry["bullet"])
        for doc in entry["documents"]:
            said = " ".join(texts[doc["id"]][s:e] for s, e in doc["spans"])
            assert claim.required <= source_terms(said), (entry, said)
    assert "[D" in cite_lines(checked, trace(checked, results)) or not checked


def test_a_korean_point_that_only_repeats_the_title_goes_and_the_content_stays() -> None:
    text = "제주 감귤 수확 현황 보고\n\n올해 제주 노지 감귤 수확은 11월 초에 시작되었다. 당도는 평균 11.8브릭스였다.\n"
    counts: Counter[str] = Counter()

    kept, _ = ground("- 제주 노지 감귤 수확 현황 보고\n- 올해 제주 노지 감귤 수확은 11월 초에 시작되었다.\n"
                     "- 당도는 평균 12.5브릭스였다.", text, (0, len(text)), counts)

    assert kept == "- 올해 제주 노지 감귤 수확은 11월 초에 시작되었다."
    assert counts == Counter({"title_point": 1, "invented_number": 1})
