"""Split long documents into token-sized chunks, cut at the best break in reach."""

from __future__ import annotations

import re
import unicodedata

from pipeline.text.counting import BpeCounter, TokenCounter

Span = tuple[int, int]


_NON_SPACE = re.compile(r"\S")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Where a span may end, best first: before a blank line, before a newline, after a
# sentence end (Latin, Korean, Devanagari and Arabic ones before a space; CJK ones
# anywhere), before the last whitespace. Span ends are at non-whitespace, so a cut
# never falls inside "\r\n".
_PARAGRAPH = re.compile(r"\n[^\S\n]*\n")
_SENTENCE_END = re.compile(r"[.!?…‼⁇।॥؟۔]+[\"'”’»)\]]*(?=\s)|[。！？｡]+[」』”’）》]*")
_LAST_SPACE = re.compile(r"\s\S*\Z")
# Where an overlap may start: the first character after such a break.
_STARTS = (re.compile(r"\n[^\S\n]*\n\s*"), re.compile(r"\n\s*"),
           re.compile(r"[.!?…‼⁇।॥؟۔]+[\"'”’»)\]]*\s+|[。！？｡]+[」』”’）》]*\s*"), re.compile(r"\s+"))
_MAX_BACKOFF = 16  # characters a forced cut moves to keep a mark with its base character


def _joins(text: str, i: int) -> bool:
    """Tell whether cutting before `text[i]` would split a character from its marks or a ZWJ sequence."""
    return unicodedata.category(text[i])[0] == "M" or "\u200d" in text[i - 1:i + 1]


def _next_solid(text: str, pos: int, end: int | None = None) -> int:
    """Return the offset of the first non-whitespace character in `text[pos:end]`, else `end`."""
    end = len(text) if end is None else end
    found = _NON_SPACE.search(text, pos, end)
    return found.start() if found else end


def _last_non_space_end(text: str) -> int:
    """Return the offset just after the last non-whitespace character (0 if none)."""
    end = len(text)
    while end > 0:  # steps back a block at a time, so a long whitespace tail is not copied
        block = text[max(0, end - 4096):end]
        kept = len(block.rstrip())
        if kept:
            return end - len(block) + kept
        end -= len(block)
    return 0


class Chunker:
    """Split text into spans of at most `chunk_tokens` tokens, cutting at the best break in reach.

    `spans(text)` returns `(spans, count(text))` (see `count_fitting`). A text that fits in one chunk gives
    `[(0, len(text))]`. Otherwise, with `first`/`last` the offsets of the first and last
    non-whitespace characters (a whitespace-only text gives no spans):
    - each span starts and ends on non-whitespace, so no span is empty or blank and no
      "\\r\\n" is split; `spans[0][0] == first` and `spans[-1][1] == last + 1`;
    - starts and ends strictly increase; between consecutive spans there is either an
      overlap (`next_start < prev_end`) or only whitespace (`text[prev_end:next_start]`);
    - an overlap `text[next_start:prev_end]` counts at most `overlap` tokens and is at
      most half of the previous span, in characters;
    - every span's text counts at most `chunk_tokens` tokens with `count`.
    So every non-whitespace character lies in at least one span.

    A span ends at the last blank line in reach, else the last newline, sentence end,
    whitespace, and only then anywhere (never before a combining mark); "in reach" is the
    second half of what `chunk_tokens` tokens cover. An overlap starts on the same kinds
    of break, best first, within the previous span's last `overlap` tokens.
    """

    def __init__(self, chunk_tokens: int, count: TokenCounter, overlap: int | None = None, *,
                 count_fitting: bool = True) -> None:
        if chunk_tokens < 16:
            raise ValueError(f"chunk size must be at least 16 tokens, got {chunk_tokens}")
        if overlap is not None and overlap < 0:
            raise ValueError(f"overlap must not be negative, got {overlap}")
        self.chunk_tokens = chunk_tokens
        self.count = count
        self.overlap = min(chunk_tokens // 10, 200) if overlap is None else overlap
        self.count_fitting = count_fitting

    def surely_fits(self, text: str) -> bool:
        """Tell, without counting, whether `text` fits one chunk: a byte-level BPE token is at least a byte.

        Lone surrogates count as the 3 bytes of the U+FFFD the encoder puts in their place.
        Any other counter is not bounded so, and gets False.
        """
        limit = self.chunk_tokens
        if len(text) > limit or not isinstance(self.count, BpeCounter):
            return False
        return 4 * len(text) <= limit or len(text.encode("utf-8", "surrogatepass")) <= limit

    def spans(self, text: str) -> tuple[list[Span], int | None]:
        """Return the chunk spans (character offsets) and the text's token count.

        Without `count_fitting`, a text that surely fits one chunk is not counted (None):
        small documents are then planned without the tokenizer, so a run's first calls
        need not wait for its tables.
        """
        if not self.count_fitting and self.surely_fits(text):
            return [(0, len(text))], None
        tokens = self.count(text)
        if tokens <= self.chunk_tokens:
            return [(0, len(text))], tokens
        return _Split(self, text, tokens).run(), tokens


class _Split:
    """One text being cut into spans; holds what the steps share."""

    def __init__(self, chunker: Chunker, text: str, tokens: int) -> None:
        self.text, self.count = text, chunker.count
        self.limit, self.overlap = chunker.chunk_tokens, chunker.overlap
        self.stop = _last_non_space_end(text)
        self.chars_per_token = len(text) / max(tokens, 1)  # refined by every window encoded
        self.bpe = chunker.count if isinstance(chunker.count, BpeCounter) else None

    def run(self) -> list[Span]:
        """Return the spans, one chunk at a time from the first non-whitespace character."""
        start = floor = _next_solid(self.text, 0)
        if start == len(self.text):
            return []
        spans: list[Span] = []
        for _ in range(self.stop):  # every pass ends a span further on, so this bound is never hit
            got = self._end(start, floor)
            if got is None:  # the overlap left no room for new text: start at the new text
                start = floor
                got = self._end(start, floor)
            if got is None:
                raise ValueError(f"one character at offset {floor} counts more than {self.limit} tokens")
            end, tokens = got
            spans.append((start, end))
            if end >= self.stop:
                return spans
            floor = _next_solid(self.text, end)
            start = self._overlap_start(start, end, tokens, floor)
        raise AssertionError("chunking made no progress")

    def _end(self, start: int, floor: int) -> tuple[int, int] | None:
        """Return the end of the span from `start`, past `floor`, and its tokens; None if none fits."""
        text, hi = self.text, self._reach(start)
        if hi <= floor:  # the overlap plus the whitespace after it already fill the budget
            return None
        for attempt in range(64):  # proportional, then halving steps: ~30 at most
            cut = hi if hi == self.stop else self._cut(max(floor, start + (hi - start) // 2), hi)
            end = start + len(text[start:cut].rstrip())
            tokens = self.count(text[start:end])
            if tokens <= self.limit:
                return end, tokens
            if hi <= floor + 1:
                return None
            # A BPE count is not additive at a cut, so the reach can be off by a token or two.
            shrunk = start + (end - start) * self.limit // tokens
            if attempt >= 2:
                shrunk = min(shrunk, start + (hi - start) // 2)
            hi = max(floor + 1, min(end - 1, shrunk))
        raise AssertionError("could not shrink a span under the token budget")

    def _reach(self, start: int) -> int:
        """Return roughly where `limit` tokens from `start` end, or `stop` if the rest fits."""
        if self.bpe is None:
            return self._reach_by_counting(start)
        width = int(self.limit * self.chars_per_token * 1.25) + 64
        for _ in range(64):  # the window doubles until it holds more than `limit` tokens or the rest
            end = min(self.stop, start + width)
            window = self.text[start:end]
            try:
                data = window.encode()
            except UnicodeEncodeError:  # lone surrogates: replace them one for one, as the encoder does
                window = _SURROGATE.sub("\ufffd", window)
                data = window.encode()
            tokens = self.bpe.encode(window)
            if len(tokens) > self.limit:
                self.chars_per_token = len(window) / len(tokens)
                lengths = self.bpe.byte_lengths()
                size = sum(map(lengths.__getitem__, tokens[:self.limit]))
                # Bytes to characters; "ignore" drops a character whose bytes the cut token splits.
                return start + len(data[:size].decode("utf-8", "ignore"))
            if end == self.stop:
                return end
            width *= 2
        raise AssertionError("window did not grow")

    def _reach_by_counting(self, start: int) -> int:
        # For counters that are not BPE: gallop, then bisect on the count of the prefix.
        text, limit, stop = self.text, self.limit, self.stop
        fits, hi = start, min(stop, start + int(limit * self.chars_per_token) + 1)
        for _ in range(64):
            if self.count(text[start:hi]) > limit:
                break
            if hi == stop:
                return stop
            fits, hi = hi, min(stop, start + 2 * (hi - start))
        for _ in range(64):
            if hi - fits <= 1:
                break
            mid = (fits + hi) // 2
            fits, hi = (mid, hi) if self.count(text[start:mid]) <= limit else (fits, mid)
        return max(fits, start + 1)

    def _cut(self, lo: int, hi: int) -> int:
        """Return the best cut in (lo, hi]: paragraph, line, sentence, whitespace, else anywhere."""
        text = self.text
        cut = lo
        for m in _PARAGRAPH.finditer(text, lo + 1, min(len(text), hi + 64)):
            if m.start() > hi:
                break
            cut = m.start()
        if cut > lo:
            return cut
        cut = text.rfind("\n", lo + 1, hi + 1)
        if cut > lo:
            return cut
        cut = lo
        for m in _SENTENCE_END.finditer(text, lo, min(len(text), hi + 1)):
            if m.end() <= hi:
                cut = m.end()
        if cut > lo:
            return cut
        space = _LAST_SPACE.search(text, lo + 1, hi + 1)
        if space:
            return space.start()
        cut = hi
        for _ in range(_MAX_BACKOFF):
            if cut - 1 <= lo or not _joins(text, cut):
                break
            cut -= 1
        return cut

    def _overlap_start(self, start: int, end: int, tokens: int, new: int) -> int:
        """Return where the next span starts: on a break within the last `overlap` tokens, else at `new`."""
        if self.overlap == 0:
            return new
        text = self.text
        # The characters `overlap` tokens take in this span, and never over half of it.
        reach = min((end - start) // 2, self.overlap * (end - start) // max(tokens, 1))
        for pattern in (*_STARTS, None):
            lo = end - reach
            for _ in range(4):  # a start whose tail counts too many tokens moves on
                if pattern is None:
                    p = lo
                    for _ in range(_MAX_BACKOFF):
                        if p >= end or not _joins(text, p):
                            break
                        p += 1
                    p = _next_solid(text, p, end)
                else:
                    m = pattern.search(text, lo, end)
                    p = m.end() if m else end
                if p >= end:
                    break
                if self.count(text[p:end]) <= self.overlap:
                    return p
                lo = p + max(1, (end - p) // 4)
        return new
