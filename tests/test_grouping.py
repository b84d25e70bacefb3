"""Documents that share nothing are merged only at the final step; related ones together, and the summary names them."""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from graphs import Context, graph
from pipeline.grouping import (COMMON, MIN_SHARED, MOST_TERMS, OVERLAP, SIMILAR, WINDOW, Group, _name_of,
                               group_documents, in_group_order, overview, prompt_note, terms_of)
from pipeline.summarize import DocResult, pack
from pipeline.prompting import Piece
from tests.fake_openai import FakeOpenAI, default_reply

FERRY = ("harbor ferry passengers pier crossing boat battery captain timetable shelter wharf mooring vessel "
         "deckhands gangway").split()
CITRUS = ("citrus orchard harvest tangerines growers pickers sweetness rainfall crates grove blossom pruning "
          "irrigation packhouse peel").split()


# Each topic has its own ways of saying things, as documents about different things do.
_SENTENCES = {
    "ferry": ("On day {n} the {a} waited by the {b} while the {c} checked the {d} and the {e}.",
              "Crews moved the {a} past the {b} before the {c} closed, and the {d} stayed with the {e} until {n}.",
              "At {n} minutes past six, a {a} and two {b} reached the {c}.",
              "Without the {a}, the {b} would have left the {c} empty for {n} days, said the {d}."),
    "citrus": ("Reports named the {a}, the {b} and the {c} as causes of delay for the {d} after {n} visits.",
               "Nobody expected the {a} to outlast the {b}, yet the {c} kept the {d} busy for {n} hours.",
               "In week {n} the {a} grew faster than any {b} or {c} recorded so far.",
               "Prices for the {a} rose by {n} cents once the {b} and the {c} were counted."),
}


def _document(words: list[str], seed: int, sentences: int = 16) -> str:
    """Sentences of one topic's words, different in each document."""
    rng = random.Random(seed)
    said = _SENTENCES["ferry" if words is FERRY else "citrus"]
    return " ".join(rng.choice(said).format(n=rng.randint(10, 99), **dict(zip("abcde", rng.sample(words, 5))))
                    for _ in range(sentences))


def _two_topics() -> list[dict[str, str]]:
    """Six notes whose names interleave the topics: ferry, citrus, ferry, citrus, ..."""
    return [{"id": f"note-{i}", "text": _document(FERRY if i % 2 else CITRUS, i)} for i in range(1, 7)]


def _echo(messages: list[dict[str, Any]]) -> str:
    """A map answer that is its document, word for word; a reduce answer as the default fake writes it."""
    user = messages[-1]["content"]
    return user.split(">\n", 1)[1].rsplit("\n</", 1)[0] if "<document" in user else default_reply(messages)


def _step(body: dict[str, Any]) -> str:
    system = body["messages"][0]["content"]
    return "collapse" if system.startswith("You merge") else "final" if system.startswith("You write") else "map"


async def test_a_collapse_call_merges_documents_of_one_topic_only(fake_in_loop: FakeOpenAI) -> None:
    fake_in_loop.reply = _echo
    context = Context(base_url=fake_in_loop.base_url, token_max=600, map_max_tokens=150, language="en")

    out = await graph.ainvoke({"texts": _two_topics()}, context=context)

    collapses = [b for b in fake_in_loop.bodies if _step(b) == "collapse"]
    # The first level's calls merge the documents' own summaries, each under its file's label
    # (a later level merges what those calls wrote, which carries no label).
    first = [{int(n) for n in re.findall(r"^\[D\d+\] note-(\d)\b", b["messages"][-1]["content"], re.M)}
             for b in collapses]
    first = [notes for notes in first if notes]
    assert len(first) >= 2  # the summaries did not fit one call
    for notes in first:
        assert len({n % 2 for n in notes}) == 1, notes  # one topic a call
    assert out["stats"]["groups"] == [{"documents": [1, 3, 5], "terms": out["stats"]["groups"][0]["terms"]},
                                      {"documents": [2, 4, 6], "terms": out["stats"]["groups"][1]["terms"]}]
    texts = {k: " ".join(t["text"].lower() for t in _two_topics()[k::2]) for k in (0, 1)}
    for k, group in enumerate(out["stats"]["groups"]):  # words of the group's documents, none of the other's
        assert group["terms"] and all(t in texts[k] and t not in texts[1 - k] for t in group["terms"])


async def test_the_final_call_is_told_the_groups_and_the_summary_opens_with_them(fake_in_loop: FakeOpenAI) -> None:
    fake_in_loop.reply = _echo

    out = await graph.ainvoke({"texts": _two_topics()}, context=Context(base_url=fake_in_loop.base_url))

    final = next(b for b in fake_in_loop.bodies if _step(b) == "final")
    system, user = final["messages"][0]["content"], final["messages"][-1]["content"]
    order = re.findall(r"^\[D(\d+)\] note-(\d)$", user, re.M)
    assert [int(n) % 2 for _, n in order] == [1, 1, 1, 0, 0, 0]  # each group's summaries in a row
    ferry, citrus = out["stats"]["groups"]
    assert f"{', '.join(ferry['terms'])} [D1, D2, D3]; {', '.join(citrus['terms'])} [D4, D5, D6]" in system
    assert "Write the bullets of one group together" in system
    first, _, rest = out["summary"].partition("\n\n")
    assert first == (f"**6 documents, 2 groups:** {', '.join(ferry['terms'])} [D1, D3, D5]; "
                     f"{', '.join(citrus['terms'])} [D2, D4, D6]")
    assert rest.startswith("- ")


async def test_unrelated_documents_change_no_prompt(fake_in_loop: FakeOpenAI) -> None:
    texts = [{"id": "ferry", "text": _document(FERRY, 1)}, {"id": "citrus", "text": _document(CITRUS, 2)}]
    fake_in_loop.reply = _echo

    out = await graph.ainvoke({"texts": texts}, context=Context(base_url=fake_in_loop.base_url))

    final = next(b for b in fake_in_loop.bodies if _step(b) == "final")
    assert "groups" not in final["messages"][0]["content"] and "groups" not in out["stats"]
    assert out["summary"].startswith("- ")


def _result(doc: int, summary: str, source: str | None = None, **extra: Any) -> DocResult:
    return DocResult(id=doc, source=source or f"doc-{doc:03d}", sha256="", status="ok", chunks=1, tokens_in=0,
                     tokens_out=0, summary=summary, **extra)  # type: ignore[typeddict-item]


def test_groups_are_the_same_for_the_same_documents_however_listed() -> None:
    results = [_result(i, _document(FERRY if i % 3 else CITRUS, i, 4)) for i in range(1, 10)]
    results.append(_result(10, "Nothing here is about boats or fruit at all, only weather words.", "zz"))

    groups = group_documents(results)

    assert [g["documents"] for g in groups] == [[1, 2, 4, 5, 7, 8], [3, 6, 9], [10]]
    assert group_documents(list(reversed(results))) == groups
    assert groups[2]["terms"] == [] and all(len(g["terms"]) == 3 for g in groups[:2])


def test_a_copy_goes_into_the_group_of_the_document_it_copies() -> None:
    results = [_result(i, _document(FERRY if i % 2 else CITRUS, i, 4)) for i in range(1, 7)]
    results.append(_result(7, results[1]["summary"], "doc-000-copy", same_as="doc-002"))

    groups = group_documents(results)

    assert sorted(d for g in groups for d in g["documents"]) == list(range(1, 8))
    assert next(g for g in groups if 2 in g["documents"])["documents"] == [7, 2, 4, 6]  # in source order


def test_a_document_and_its_copies_alone_are_no_group() -> None:
    results = [_result(1, _document(FERRY, 1, 4), "a.txt"), _result(2, _document(CITRUS, 2, 4), "c.txt")]
    results.append(_result(3, results[0]["summary"], "copy-of-a.txt", same_as="a.txt"))

    groups = group_documents(results)

    assert sorted(g["documents"] for g in groups) == [[1], [2], [3]]
    assert overview(groups, [1, 2, 3]) == ""  # no "3 documents, 1 group: related [D1, D3]"


_WORDS = [f"{a}{b}" for a in ("harb", "citr", "bake", "rive", "tran", "scho") for b in ("oval", "ston", "mind")]


@st.composite
def _runs(draw: st.DrawFn) -> list[DocResult]:
    n = draw(st.integers(1, 30))
    results = []
    for i in range(1, n + 1):
        status = draw(st.sampled_from(["ok", "ok", "ok", "failed"]))
        words = draw(st.lists(st.sampled_from(_WORDS), max_size=12))
        result = _result(i, "- " + " ".join(words) + ".", f"src-{draw(st.integers(0, 5))}-{i}")
        result["status"] = status
        results.append(result)
    return results


@settings(max_examples=150, deadline=None)
@given(_runs(), st.randoms(use_true_random=False))
def test_grouping_partitions_the_summarized_documents_whatever_their_order(results: list[DocResult],
                                                                          rng: random.Random) -> None:
    groups = group_documents(results)

    ids = [d for g in groups for d in g["documents"]]
    assert sorted(ids) == sorted(r["id"] for r in results if r["status"] == "ok") and len(set(ids)) == len(ids)
    shuffled = results[:]
    rng.shuffle(shuffled)
    assert group_documents(shuffled) == groups
    firsts = [min((r["source"], r["id"]) for r in results if r["id"] in g["documents"]) for g in groups]
    assert firsts == sorted(firsts)  # groups go by their first document, in reduce order
    assert all(len(g["documents"]) > 1 or not g["terms"] for g in groups)


_TOPICS = [[f"{a}{b}" for b in ("oval", "ston", "mind", "reef", "gate", "lume")] for a in ("harb", "citr", "bake")]
_TOPICS.append(["지방공무원법", "육아휴직", "연령을", "감귤은", "수확을", "시작한다"])
_SHARED = ["ferry", "budget", "council", "survey", "market", "station", "weather", "bridge"]


@st.composite
def _related(draw: st.DrawFn) -> list[DocResult]:
    """Up to 60 documents on a few topics, all drawing on a few shared words: more than a window's worth each."""
    results = []
    for i in range(1, draw(st.integers(2, 60)) + 1):
        words = draw(st.lists(st.sampled_from(draw(st.sampled_from(_TOPICS))), max_size=10))
        words += draw(st.lists(st.sampled_from(_SHARED), max_size=8))
        results.append(_result(i, "- " + " ".join(words) + ".", f"notes/{draw(st.sampled_from(['a', 'b']))}-{i}"))
    return results


def _every_pair_compared(results: list[DocResult]) -> set[frozenset[int]]:
    """The groups by the rule grouping states, every pair that a window holds compared: slow, plain, for reference."""
    own = sorted(results, key=lambda r: (r["source"], r["id"]))
    terms = [terms_of(r["summary"]) | terms_of(_name_of(r["source"])) for r in own]
    held = Counter(t for found in terms for t in found)
    most = max(2, math.floor(COMMON * len(own)))
    rare = [sorted((t for t in found if 2 <= held[t] <= most), key=lambda t: (held[t], t))[:MOST_TERMS]
            for found in terms]
    weight = {t: math.log(len(own) / held[t]) for t in held}
    holders: dict[str, list[int]] = {}
    group = {i: frozenset([own[i]["id"]]) for i in range(len(own))}
    for i in range(len(own)):
        for j in range(i):
            common = [t for t in rare[i] if j in holders.get(t, [])[-WINDOW:]]
            similar = 0.0
            for t in common:
                similar += weight[t]
            enough = max(MIN_SHARED, min(MOST_TERMS // 2, math.ceil(OVERLAP * min(len(terms[i]), len(terms[j])))))
            mass_i, mass_j = (sum(weight[t] for t in rare[k]) for k in (i, j))
            if len(common) >= enough and similar > 0 and similar >= SIMILAR * math.sqrt(mass_i * mass_j):
                joined = group[i] | group[j]
                group.update({k: joined for k in group if group[k] in (group[i], group[j])})
        for t in rare[i]:
            holders.setdefault(t, []).append(i)
    return set(group.values())


@settings(max_examples=100, deadline=None)
@given(_related())
def test_grouping_links_every_pair_the_rule_links(results: list[DocResult]) -> None:
    # Grouping skips pairs already in one group and tries the latest documents first; the groups
    # are those of comparing every pair.
    assert {frozenset(g["documents"]) for g in group_documents(results)} == _every_pair_compared(results)


def _pieces(topics: list[int], tokens: int = 100) -> list[Piece]:
    return [Piece(label=f"d{i}", text=f"summary {i}", tokens=tokens, docs=[i], topic=t) for i, t in enumerate(topics)]


def test_pack_gives_a_big_topic_calls_of_its_own_and_lets_small_ones_share() -> None:
    topics = [0, 0, 0, 1, 1, 1, 2, 3, 4, 5]

    def calls(budget: int) -> list[list[int]]:
        return [[p["topic"] for p in g] for g in pack(_pieces(topics), budget)]

    assert calls(500) == [[0, 0, 0], [1, 1, 1], [2, 3, 4, 5]]  # 300 tokens: a big topic at 500
    assert calls(700) == [[0, 0, 0, 1, 1, 1, 2], [3, 4, 5]]  # small at 700: they share, none split


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=40), st.integers(300, 1500))
def test_pack_never_splits_a_topic_that_a_call_could_hold_whole(topics: list[int], budget: int) -> None:
    topics = sorted(topics)  # a topic's pieces in a row, as collect orders them
    groups = pack(_pieces(topics), budget)

    assert [p for g in groups for p in g] == _pieces(topics) and all(sum(p["tokens"] for p in g) <= budget
                                                                       for g in groups)
    for topic in set(topics):
        holding = [k for k, g in enumerate(groups) if any(p["topic"] == topic for p in g)]
        if topics.count(topic) * 100 <= budget:
            assert len(holding) == 1


def test_the_overview_and_the_prompt_name_only_groups_of_several() -> None:
    groups = [Group(documents=[1, 3], terms=["ferry", "harbor"]), Group(documents=[2], terms=[]),
              Group(documents=[4, 5, 6, 7, 8, 9, 10, 11], terms=["citrus"])]

    assert overview(groups, list(range(1, 12))) == ("**11 documents, 2 groups:** ferry, harbor [D1, D3]; "
                                "citrus [D4, D5, D6, D7, D8, D9] and 2 more; 1 on its own [D2]")
    assert overview(groups[:1], [1, 3]) == "" and overview([groups[1], Group(documents=[5], terms=[])], [2, 5]) == ""
    assert overview(groups[::2], list(range(1, 12))) == overview(groups, list(range(1, 12)))  # the alone are implied
    note = prompt_note(groups, [3, 1, 2, 11, 10])
    assert "ferry, harbor [D1, D2]; citrus [D4, D5]; any other stands alone" in note
    assert prompt_note(groups, [1, 2]) == ""  # only one of the group's documents is in the call


async def test_a_dry_run_after_a_grouped_run_finds_every_call_in_the_store(fake_in_loop: FakeOpenAI,
                                                                          tmp_path: Path) -> None:
    fake_in_loop.reply = _echo
    context = Context(base_url=fake_in_loop.base_url, token_max=600, map_max_tokens=150, language="en",
                      store_path=str(tmp_path / "store.sqlite"))
    first = await graph.ainvoke({"texts": _two_topics()}, context=context)
    fake_in_loop.reset_stats()

    preview = (await graph.ainvoke({"texts": _two_topics()}, context=replace(context, dry_run=True)))["preview"]

    assert len(first["stats"]["groups"]) == 2 and first["stats"]["llm_calls"]["collapse"] >= 2
    assert preview["from_store"] == {"map": 6, "collapse": first["stats"]["llm_calls"]["collapse"], "final": 1}
    assert preview["llm_calls"] == {"map": 0, "collapse": 0, "final": 0} and fake_in_loop.chat_calls == 0


def test_each_groups_bullets_come_together_in_the_order_the_summary_first_names_them() -> None:
    groups = [Group(documents=[1, 3], terms=["ferry"]), Group(documents=[2, 4], terms=["citrus"]),
              Group(documents=[5], terms=[])]
    summary = "\n".join(["- Pickers came early. [D4]", "- The ferry ran late. [D1]", "- Rain fell. [D5]",
                         "- Crates were short. [D2, D1]", "- The pier closed. [D3]", "- A line with no tag."])

    assert in_group_order(summary, groups, [1, 2, 3, 4, 5]).splitlines() == [
        "- Pickers came early. [D4]", "- Crates were short. [D2, D1]", "- The ferry ran late. [D1]",
        "- The pier closed. [D3]", "- Rain fell. [D5]", "- A line with no tag."]
    assert in_group_order(summary, groups[:1], [1, 3]) == summary  # one group: nothing to bring together


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 8)), max_size=20), st.integers(1, 8))
def test_bringing_groups_together_only_reorders_bullets(lines: list[tuple[bool, int]], cut: int) -> None:
    groups = [Group(documents=list(range(1, cut + 1)), terms=["a"]), Group(documents=list(range(cut + 1, 9)),
                                                                           terms=["b"])]
    summary = "\n".join(f"- point {k} [D{doc}]" if bullet else f"note {k}" for k, (bullet, doc) in enumerate(lines))

    out = in_group_order(summary, [g for g in groups if g["documents"]], list(range(1, 9))).splitlines()

    assert sorted(out) == sorted(summary.splitlines()) if summary else out == []
    assert [i for i, line in enumerate(out) if not line.startswith("- ")] == \
        [i for i, (bullet, _) in enumerate(lines) if not bullet]  # lines that are no bullet stay in place
    sides = [int(re.findall(r"D(\d+)", line)[0]) > cut for line in out if line.startswith("- ")]
    assert sides == sorted(sides) or sides == sorted(sides, reverse=True)  # one group's bullets, then the other's


async def test_a_document_added_to_a_grouped_run_pays_about_one_collapse_call_a_level(fake_in_loop: FakeOpenAI,
                                                                                     tmp_path: Path) -> None:
    from bench.grouping import topic_text

    fake_in_loop.reply = _echo
    texts = [{"id": f"doc-{i:03d}", "text": topic_text(i % 20, i)} for i in range(100)]  # topics interleave by name
    context = Context(base_url=fake_in_loop.base_url, token_max=2000, map_max_tokens=400, language="en",
                      store_path=str(tmp_path / "store.sqlite"))
    first = await graph.ainvoke({"texts": texts}, context=context)
    added = {"id": "doc-050a", "text": topic_text(7, 10**6)}  # on the topic of doc-007, doc-027, ...

    again = await graph.ainvoke({"texts": [*texts, added]}, context=context)

    assert len(first["stats"]["groups"]) == 20 and first["stats"]["collapse_levels"] >= 2
    assert again["stats"]["llm_calls"]["map"] == 1
    assert again["stats"]["llm_calls"]["collapse"] <= first["stats"]["collapse_levels"] + 1
    assert again["stats"]["from_store"]["collapse"] >= first["stats"]["llm_calls"]["collapse"] - 3


def test_a_korean_group_is_named_by_its_words_not_by_particles() -> None:
    bills = ["지방공무원법 일부개정법률안은 2010년의 육아휴직 연령을 만 8세로 올린다.",
             "국가공무원법 일부개정법률안은 2010년의 육아휴직 연령을 만 8세로 올린다.",
             "제주 감귤은 11월 초에 수확을 시작한다."]
    groups = group_documents([_result(k + 1, f"- {text}") for k, text in enumerate(bills)])

    named = [g for g in groups if len(g["documents"]) > 1]
    assert [g["documents"] for g in named] == [[1, 2]]
    assert named[0]["terms"] and all(len(t) >= 2 and t[-1] not in "의은는" for t in named[0]["terms"])


def test_reports_that_share_a_few_ordinary_words_stay_apart() -> None:
    """The sample documents' own summaries: a bakery, a ferry trial and a team retro share words
    such as "august", "compared", "day", "fell", "half" by chance, and nothing of their topics."""
    from pathlib import Path

    data = Path(__file__).resolve().parent.parent / "data"
    results = [_result(k + 1, "- " + "\n- ".join(
        line.strip() for line in (data / name).read_text(encoding="utf-8").splitlines()[2:] if line.strip()),
        source=f"data/{name}") for k, name in enumerate(sorted(p.name for p in data.glob("*.txt")))]
    assert len(results) >= 5

    assert [g for g in group_documents(results) if len(g["documents"]) > 1] == []
