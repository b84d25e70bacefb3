"""Group a run's documents by the distinctive terms they share, so that a merge combines related ones.

A document's terms are those of its grounded summary and of its file's name (the
folders above it are left out: they are shared by place, not by topic). A term is
distinctive when more than one document holds it but not more than half of them (and
never one of the stop words): words that every document uses say nothing about what a
document is about. A term weighs log(N / documents holding it), so a rare one counts
more than boilerplate that a third of the documents repeat. Two documents are linked
when they share at least MIN_SHARED distinctive terms, and at least OVERLAP of the
smaller one's terms (up to half of MOST_TERMS), whose weight is at least SIMILAR of the
geometric mean of each one's distinctive terms' weight (a cosine); a group is what links
join (union-find). In a small run any two reports share a few ordinary words by chance
("august", "compared", "day"); documents about one thing share a good part of theirs.

The cost is O(N·k): each document looks up at most MOST_TERMS of its rarest terms, and
for each only the WINDOW documents that took it last; a pair already in one group is not
compared again. Everything is ordered by source, then id (the order the reduce takes
documents in), so the same documents give the same groups however they were listed, and
a document added to a run changes only the group it joins.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from typing import TYPE_CHECKING

from typing_extensions import TypedDict

from pipeline.answers.checks import BULLET
from pipeline.answers.citations import cited, retag
from pipeline.answers.grounding import CJK, STOP, TOKEN

if TYPE_CHECKING:
    from pipeline.summarize import DocResult

# A lower-cased ASCII word of three letters or more, folded as grounding folds it: its first six letters.
_ASCII_FOLDED = re.compile(r"(?<![a-z])[a-z]{3,6}")
_STOP = frozenset(word[:6] for word in STOP)
COMMON = 0.5  # a term held by more than this share of the documents (and by more than two) is not distinctive
MOST_TERMS = 32  # a document links by its rarest distinctive terms, at most this many
WINDOW = 16  # and, for each, to the latest documents that hold it
MIN_SHARED = 3  # distinctive terms two linked documents share, at least
SIMILAR = 0.4  # and this share of the geometric mean of their linking terms' weight (a cosine of idf weights)
OVERLAP = 0.15  # and this share of the smaller one's terms (a few words any two reports share are chance)
NAMED = 3  # terms that name a group
QUICK = 4  # latest documents tried first when all that a document's terms meet are in one group (at most WINDOW)


class Group(TypedDict):
    """Documents about the same thing: their ids in reduce order, and the terms they share (as first written)."""

    documents: list[int]
    terms: list[str]


def terms_of(summary: str) -> set[str]:
    """A summary's content terms: words folded as grounding folds them (first six letters), CJK character pairs.

    Numbers are left out: a year or a count shared by two documents says nothing of their topic.
    """
    text = retag(summary, lambda k: None)
    if text.isascii():
        return set(_ASCII_FOLDED.findall(text.lower())) - _STOP
    found: set[str] = set()
    for token in TOKEN.findall(text.lower()):
        if token[0].isdigit():
            continue
        if CJK.search(token):
            found.update(token[i:i + 2] for i in range(max(1, len(token) - 1)))
        elif len(token) >= 3 and token[:6] not in _STOP:
            found.add(token[:6])
    return found


def _name_of(source: str) -> str:
    """A source's own name, which often says what it is about: its last path part, without its extension."""
    last = source[max(source.rfind("/"), source.rfind("\\")) + 1:]
    return last.rsplit(".", 1)[0].replace("_", " ").replace("-", " ")


def _order(result: DocResult) -> tuple[str, int]:
    return result["source"], result["id"]


def group_documents(results: Iterable[DocResult]) -> list[Group]:
    """Partition the summarized documents into groups, in reduce order: groups by their first document.

    A document that shares the summary of another of the same content (`same_as`) goes
    into that one's group, when it is a group of several documents of their own.
    """
    ok = sorted((r for r in results if r["status"] == "ok"), key=_order)
    own = [r for r in ok if "same_as" not in r]
    canon: dict[str, str] = {}  # one string per term, however many documents hold it
    terms: list[tuple[str, ...]] = []
    names: list[tuple[str, ...]] = []  # the terms of each document's name, which name a group first
    for r in own:
        name = terms_of(_name_of(r["source"]))
        found = terms_of(r.get("summary", "")) | name
        terms.append(tuple(map(canon.setdefault, found, found)))
        names.append(tuple(map(canon.setdefault, name, name)))
    del canon
    held: Counter[str] = Counter()
    for found in terms:
        held.update(found)
    linking = _linking(terms, held, max(2, math.floor(COMMON * len(own))))
    root = _linked(linking, [len(found) for found in terms], held, len(own))
    del terms
    group_of = {r["id"]: root(i) for i, r in enumerate(own)}
    first_of = {r["source"]: r["id"] for r in own}
    members: dict[int, list[DocResult]] = {}
    for r in ok:  # in reduce order, so each group's members are too, and groups go by their first
        doc = first_of.get(r["same_as"], r["id"]) if "same_as" in r else r["id"]
        members.setdefault(group_of.get(doc, -1 - r["id"]), []).append(r)
    index = {r["id"]: i for i, r in enumerate(own)}
    # A document and its copies are one document, no group of related ones: each stands alone.
    runs = [run for docs in members.values()
            for run in ([docs] if sum("same_as" not in r for r in docs) > 1 else [[r] for r in docs])]
    return [Group(documents=[r["id"] for r in docs], terms=_name(docs, index, linking, names, held))
            for docs in runs]


def _linking(terms: Sequence[tuple[str, ...]], held: Counter[str], most: int) -> list[tuple[str, ...]]:
    """Each document's distinctive terms that it links by: its MOST_TERMS rarest, rarest first (ties by term)."""
    rank = {t: k for k, t in enumerate(sorted((t for t, n in held.items() if 2 <= n <= most),
                                              key=lambda t: (held[t], t)))}
    return [tuple(sorted(filter(rank.__contains__, found), key=rank.__getitem__)[:MOST_TERMS]) for found in terms]


def _linked(linking: Sequence[tuple[str, ...]], sizes: Sequence[int], held: Counter[str],
            n: int) -> Callable[[int], int]:
    """Link each document to those of its terms' last WINDOW holders that it is like; return the root of each.

    A group is what links join, so a pair already in one group is not compared. When all
    the documents a document's terms meet are in one group (a folder whose documents all
    share common words: the costly case), the latest of them are tried first, and one link
    settles the rest.
    """
    parent = list(range(len(linking)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    weight = {t: math.log(n / held[t]) for found in linking for t in found}
    mass = [sum(weight[t] for t in found) for found in linking]
    # Terms two documents must share: what the one of fewer terms needs, the smaller of their two needs.
    need = [max(MIN_SHARED, min(MOST_TERMS // 2, math.ceil(OVERLAP * size))) for size in sizes]
    latest: dict[str, list[int]] = {}  # each term's last WINDOW holders
    run = 0  # the documents from this one on are in one group, as far as is known yet
    for i, rare in enumerate(linking):
        if not rare:  # nothing distinctive: no link, and the run of one group ends here
            run = i
            continue
        windows = [latest.setdefault(t, []) for t in rare]
        at = i
        # A window lists its holders oldest first: when each one's oldest is at `run` or later,
        # every document this one's terms meet lies in the run, all of it one group.
        if run <= min((w[0] for w in windows if w), default=-1):
            # Every document these terms meet is in one group: a link to any one of them settles
            # the rest, and one of the latest is likely to be like this one. Those are still in
            # the window of every term they hold (QUICK < WINDOW), so their terms say what they share.
            mine = set(rare)
            for j in range(i - 1, max(run, i - QUICK) - 1, -1):
                shared = [weight[t] for t in linking[j] if t in mine]  # in the order of i's terms: both go by rank
                if _like(i, j, len(shared), shared, need, mass):
                    at = parent[i] = root(j)
                    break
        if at == i:
            for j, shared in Counter(chain.from_iterable(windows)).items():
                b = parent[j]  # j's root, unless that has a parent of its own: only then is root() called
                if b != at and parent[b] != b:
                    b = root(j)
                if b != at and (shared >= need[i] or shared >= need[j]) and \
                        _like(i, j, shared, [weight[t] for t, w in zip(rare, windows) if j in w], need, mass):
                    parent[max(at, b)] = min(at, b)
                    at = min(at, b)
        for w in windows:
            w.append(i)
            if len(w) > WINDOW:
                del w[0]
        if i and at != root(i - 1):  # not in the group of the one before: a new run starts here
            run = i
    return root


def _like(i: int, j: int, shared: int, weights: Sequence[float], need: Sequence[int], mass: Sequence[float]) -> bool:
    """Whether documents i and j link: `shared` terms, of these weights (in i's order), enough of both."""
    if shared < need[i] and shared < need[j]:
        return False
    similar = 0.0
    for weight in weights:  # one term after the other, so the sum is the same float however it runs
        similar += weight
    return similar > 0 and similar >= SIMILAR * math.sqrt(mass[i] * mass[j])


def _name(docs: Sequence[DocResult], index: dict[int, int], linking: Sequence[Sequence[str]],
          names: Sequence[Sequence[str]], held: Counter[str]) -> list[str]:
    """The terms most of a group's documents share, spelled as the group first writes them.

    Of terms as widely shared, those of the documents' names come first (a name says
    what a document is about), then the rarest in the run.
    """
    mine = [index[r["id"]] for r in docs if r["id"] in index]
    if len(mine) < 2:
        return []
    counts: Counter[str] = Counter()
    for i in mine:
        counts.update(linking[i])
    named = set().union(*(names[index[r["id"]]] if r["id"] in index else terms_of(_name_of(r["source"]))
                          for r in docs))
    top = sorted((t for t, n in counts.items() if n >= 2 and not _no_name(t)),
                 key=lambda t: (-counts[t], t not in named, held[t], t))[:NAMED]
    spelled = {t: t for t in top if CJK.search(t)}  # a CJK character pair stands as it is
    for text in chain((r.get("summary", "") for r in docs), (_name_of(r["source"]) for r in docs)):
        if len(spelled) == len(top):
            break
        for token in TOKEN.findall(retag(text, lambda k: None)):
            if (term := token.lower()[:6]) in top and term not in spelled:
                spelled[term] = token.lower()
    return [spelled.get(t, t) for t in top]


# Korean syllables that end a word as a particle or an ending ("2010년의", "법률은"): a pair of
# characters ending in one is part of a word and its particle, no name for a group.
_PARTICLES = frozenset("의은는이가을를에와과도로서고며다한할된")


def _no_name(term: str) -> bool:
    """Whether a CJK term is no name for a group: one character, or a Hangul pair ending in a particle."""
    if not CJK.match(term):
        return False
    return len(term) < 2 or (term[1] in _PARTICLES and "\uac00" <= term[0] <= "\ud7a3")


def several(groups: Sequence[Group]) -> list[Group]:
    """The groups of more than one document: what a run keeps (any other document stands alone)."""
    return [g for g in groups if len(g["documents"]) > 1]


def _alone(groups: Sequence[Group], documents: Iterable[int]) -> list[int]:
    """The `documents` in no group of several, in id order."""
    listed = {d for g in groups if len(g["documents"]) > 1 for d in g["documents"]}
    return sorted(d for d in documents if d not in listed)


def is_grouped(groups: Sequence[Group], documents: Iterable[int]) -> bool:
    """Whether grouping says anything of `documents`: a group of several, and more than one group."""
    found = several(groups)
    return bool(found) and len(found) + len(_alone(found, documents)) > 1


MOST_LISTED = 8  # groups an overview or a prompt names; the others are counted
MOST_TAGS = 6  # tags spelled out for one group; the others are counted


def _tags(docs: Sequence[int]) -> str:
    shown = "[" + ", ".join(f"D{d}" for d in docs[:MOST_TAGS]) + "]"
    return shown + (f" and {len(docs) - MOST_TAGS:,} more" if len(docs) > MOST_TAGS else "")


def _listed(groups: Sequence[Group], tag: Callable[[int], int | None]) -> tuple[list[str], int]:
    """The groups of several documents as "terms [tags]" (up to MOST_LISTED), and how many more there are."""
    named, more = [], 0
    for group in groups:
        docs = sorted(k for d in group["documents"] if (k := tag(d)) is not None)
        if len(docs) < 2:
            continue
        if len(named) < MOST_LISTED:
            named.append(f"{', '.join(group['terms']) or 'related'} {_tags(docs)}")
        else:
            more += 1
    return named, more


def overview(groups: Sequence[Group], documents: Sequence[int]) -> str:
    """The line that opens a final summary and names its groups by their shared terms and tags; "" if there is one.

    `documents` are the summarized documents' ids. Made by code from the documents' own
    words and the groups' members, so it is no bullet: the length and the checks of the
    model's bullets do not apply to it.
    """
    if not is_grouped(groups, documents):
        return ""
    found = several(groups)
    named, more = _listed(found, lambda d: d)
    alone = _alone(found, documents)
    parts = named + ([f"{more:,} more groups"] if more else []) + \
        ([f"{len(alone):,} on {'its' if len(alone) == 1 else 'their'} own {_tags(alone)}"] if alone else [])
    return f"**{len(documents):,} documents, {len(found):,} group{'' if len(found) == 1 else 's'}:** " + "; ".join(parts)


def prompt_note(groups: Sequence[Group], call_docs: Sequence[int]) -> str:
    """Tell the final call which of its documents form a group and by which terms; "" when nothing is grouped.

    `call_docs` are the documents in the call's own numbering ([Dk] is call_docs[k-1]).
    """
    local = {d: k for k, d in enumerate(call_docs, start=1)}
    in_call = [Group(documents=[d for d in g["documents"] if d in local], terms=g["terms"]) for g in groups]
    if not is_grouped(in_call, call_docs):
        return ""
    named, more = _listed(in_call, local.get)
    more_text = f" and {more:,} more groups" if more else ""
    return (f"The documents form groups by what they share: {'; '.join(named)}{more_text}; any other stands "
            "alone. Write the bullets of one group together, group after group, and merge facts only within "
            "a group.")


def in_group_order(summary: str, groups: Sequence[Group], documents: Sequence[int]) -> str:
    """Bring the bullets of each group together, groups in the order the summary first names them.

    A bullet goes with the group of the first document it cites (a document in no group
    of several is a group of its own); within a group, and for bullets citing none, the
    summary's own order (most important first) holds. Lines that are no bullet stay where
    they are, and so does the whole when nothing is grouped.
    """
    if not is_grouped(groups, documents):
        return summary
    index = {doc: k for k, group in enumerate(several(groups)) for doc in group["documents"]}
    lines = summary.splitlines()
    at = [i for i, line in enumerate(lines) if BULLET.match(line)]
    of: dict[int, int | None] = {}
    for i in at:
        first = next(iter(cited(lines[i])), None)
        of[i] = None if first is None else index.get(first, -first)
    rank: dict[int | None, int] = {}
    for i in at:
        if of[i] is not None:
            rank.setdefault(of[i], len(rank))
    ordered = sorted(at, key=lambda i: rank.get(of[i], len(rank)))
    out = lines[:]
    for slot, i in zip(at, ordered):
        out[slot] = lines[i]
    return "\n".join(out)
