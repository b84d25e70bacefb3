"""Count tokens offline and split long documents into token-sized chunks."""

from __future__ import annotations

import functools
import gzip
import importlib.machinery
import importlib.util
import logging
import re
import sys
import threading
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]
Span = tuple[int, int]
FALLBACK_ENCODING = "o200k_base"
# The encoder refuses 1,000,000 characters or 200,000 tokens at once. A character is at
# most four tokens (one per UTF-8 byte), so a piece of 40,000 characters always passes.
PIECE_CHARS = 40_000


def _pieces(text: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """Yield consecutive pieces of `text` of at most `size` characters, cut before a space or newline if any."""
    start, n = 0, len(text)
    while n - start > size:  # every cut moves at least size // 2 further
        end = start + size
        # Cutting before " word" keeps the encoder's pre-tokens as they are in the whole text.
        cut = max(text.rfind(" ", start + size // 2, end), text.rfind("\n", start + size // 2, end))
        cut = cut if cut > start else end
        yield text[start:cut]
        start = cut
    yield text[start:]


class _NeverRaised(Exception):
    """Stands for the package's too-long error where the compiled core counts: it has no such limit."""


_CORE_LOCK = threading.Lock()


def _compiled_core() -> Any | None:
    """bpe-openai's compiled tokenizer module, loaded without running the package around it; None if it cannot be.

    Importing `bpe_openai` parses the rank tables of all three encodings it ships, in
    Python: 0.36 s of CPU, taken from the event loop in short turns of the GIL. Its
    compiled core builds one encoding's tokenizer in 0.05 s and encodes exactly as the
    package does (the package's `encode_ordinary` calls it). Should a release of
    bpe-openai move or rename the core, counting goes through the package as before.
    """
    with _CORE_LOCK:  # one load whichever threads ask
        return _load_core()


def _package_folders() -> list[Path]:
    """Where the bpe_openai package's files are, found without running the package."""
    spec = importlib.util.find_spec("bpe_openai")  # a top-level package: found, not run
    return [Path(folder) for folder in (spec.submodule_search_locations or [])] if spec else []


@functools.cache
def _load_core() -> Any | None:
    name = "bpe_openai._bindings"
    if name in sys.modules:  # the package was imported after all: its module is this one
        return sys.modules[name]
    try:
        path = next(p for folder in _package_folders() for suffix in importlib.machinery.EXTENSION_SUFFIXES
                    if (p := folder / f"_bindings{suffix}").is_file())
        loader = importlib.machinery.ExtensionFileLoader(name, str(path))
        module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, path, loader=loader))
        loader.exec_module(module)
        module.tokenizer_for_encoding, module.tokenizer_for_model, module.supported_encodings  # noqa: B018 - API used
        sys.modules[name] = module  # an import of the package later finds it, rather than loading it twice
        return module
    except Exception:  # noqa: BLE001 - any failure here means: use the package
        log.debug("bpe-openai's compiled core could not be loaded alone; using the package", exc_info=True)
        return None


# Text in several scripts: two encodings that give it the same tokens are the same encoding.
_PROBE = "Ferry timetable, 14 Nov 2026: 42 crossings. 회의는 3시입니다. 東京駅 → 大阪 ✓ naïve café"


@functools.cache
def _rank_file_lengths(encoding_name: str) -> list[int] | None:
    """Each token's length in bytes, from the rank file bpe-openai ships; None if it is not as expected.

    A line is "<the token's bytes in base64> <rank>"; the length follows from the base64
    text, so nothing is decoded: 0.06-0.12 s and a list of ints, where the package's
    encoding object parses all three encodings' tables (0.36 s, ~70 MB).
    """
    files = [folder / "data" / f"{encoding_name}.tiktoken.gz" for folder in _package_folders()]
    path = next((p for p in files if p.is_file()), None)
    if path is None:
        return None
    lengths = []
    for rank, line in enumerate(gzip.decompress(path.read_bytes()).splitlines()):
        token, _, number = line.partition(b" ")
        if int(number) != rank:  # not in rank order: leave it to the package
            return None
        lengths.append(len(token) * 3 // 4 - token.count(b"=", len(token) - 2))
    return lengths


def _core_byte_lengths(core: Any, encode: Callable[[str], list[int]], known: bool) -> list[int] | None:
    """Token byte lengths for the core's encode function, or None to ask the package instead."""
    try:
        probe = encode(_PROBE)
        names = [FALLBACK_ENCODING] if not known else sorted(
            core.supported_encodings(), key=lambda name: name != FALLBACK_ENCODING)  # o200k_base is built already
        name = next((n for n in names if core.tokenizer_for_encoding(n).encode(_PROBE) == probe), None)
        lengths = _rank_file_lengths(name) if name else None
        if lengths is None or sum(map(lengths.__getitem__, probe)) != len(_PROBE.encode()):
            return None
        return lengths
    except Exception:  # noqa: BLE001 - anything unexpected: the package's tables answer instead
        log.debug("token byte lengths not read from the rank file; using the package", exc_info=True)
        return None


def _core_encoder(core: Any, model: str) -> tuple[Callable[[str], list[int]], bool]:
    """The compiled core's encode for `model`, as the package calls it, and whether the core knows the model.

    A model outside the families it knows gets o200k_base: an estimate, as documented.
    """
    try:
        tokenizer, known = core.tokenizer_for_model(model), True
    except ValueError:
        log.debug("no tokenizer known for model %r; estimating with %s", model, FALLBACK_ENCODING)
        tokenizer, known = core.tokenizer_for_encoding(FALLBACK_ENCODING), False
    encode = tokenizer.encode

    def encode_ordinary(text: str) -> list[int]:
        try:
            return encode(text)
        except UnicodeEncodeError:  # lone surrogates, replaced as the package's wrapper does
            return encode(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))

    return encode_ordinary, known


class BpeCounter:
    """Count tokens with a model's BPE encoding, giving the encoder pieces it accepts.

    The tokenizer is built on first use, not at import, and from bpe-openai's compiled
    core alone (see `_compiled_core`): a run of small documents needs no count before
    its first calls. `load` may also run in a worker thread meanwhile; a count that
    comes first waits for it. The chunker's token byte lengths, needed only for a
    document longer than one chunk, are read from the rank file of the same encoding;
    the package's Python encoding is built only if that cannot be done.
    """

    __slots__ = ("model", "_encoding", "_encode", "_known", "_too_long", "_byte_lengths", "_lock")

    def __init__(self, model: str) -> None:
        self.model = model
        self._encoding: Any = None
        self._encode: Callable[[str], list[int]] | None = None
        self._known: bool | None = None  # whether the compiled core knows the model; None if it has not said
        self._too_long: type[Exception] = _NeverRaised  # bpe_openai's TokenLimitError when its package counts
        self._byte_lengths: list[int] | None = None
        self._lock = threading.Lock()

    @property
    def encoding(self) -> Any:
        """The bpe_openai package's encoding for the model, built on first use."""
        if self._encode is None and _compiled_core() is not None:
            self.load()  # the core says whether it knows the model; this encoding must be the count's
        with self._lock:
            if self._encoding is None:
                import bpe_openai

                try:
                    if self._known is False:
                        raise KeyError(self.model)
                    self._encoding = bpe_openai.encoding_for_model(self.model)
                # ValueError: a model the Rust backend does not know (gpt-4); OSError: one whose
                # tables the package would download (gpt2), which a run offline cannot
                except (KeyError, ValueError, OSError):
                    log.debug("no tokenizer known for model %r; estimating with %s", self.model, FALLBACK_ENCODING)
                    self._encoding = bpe_openai.get_encoding(FALLBACK_ENCODING)
        return self._encoding

    def load(self) -> Callable[[str], list[int]]:
        """Build the tokenizer now (once, whichever thread asks first); return its encode function."""
        with self._lock:
            if self._encode is None and (core := _compiled_core()) is not None:
                try:
                    self._encode, self._known = _core_encoder(core, self.model)
                except Exception:  # noqa: BLE001 - a core that does not answer as expected: use the package
                    log.debug("bpe-openai's compiled core failed for %r; using the package", self.model, exc_info=True)
        if self._encode is None:
            import bpe_openai

            encoding = self.encoding
            self._too_long = bpe_openai.TokenLimitError
            self._encode = encoding.encode_ordinary  # document text may contain special-token strings
        return self._encode

    def preload(self) -> None:
        """Build the tokenizer, for a worker thread: a failure is left for the first count to raise."""
        try:
            self.load()
        except Exception:  # noqa: BLE001 - the first count loads again and raises it where it matters
            log.debug("loading the tokenizer for %r failed", self.model, exc_info=True)

    def __call__(self, text: str) -> int:
        encode = self._encode or self.load()
        if len(text) <= PIECE_CHARS:  # the common small document: one encoder call, as before
            try:
                return len(encode(text))
            except self._too_long:
                return sum(map(len, self._encode_split(text)))
        return sum(len(tokens) for piece in _pieces(text) for tokens in self._encode_split(piece))

    def encode(self, text: str) -> list[int]:
        """Return the tokens of `text` of any length, encoded piece by piece."""
        parts = [tokens for piece in _pieces(text) for tokens in self._encode_split(piece)]
        return parts[0] if len(parts) == 1 else [token for tokens in parts for token in tokens]

    def byte_lengths(self) -> list[int]:
        """Return the UTF-8 length of every token id, built on first use (for a document longer than a chunk)."""
        if self._byte_lengths is None:
            encode = self.load()
            core = _compiled_core() if self._known is not None else None  # None: the package counts
            lengths = _core_byte_lengths(core, encode, self._known) if core is not None else None
            if lengths is None:
                lengths = [len(b) for b in self.encoding.token_byte_values()]
            self._byte_lengths = lengths
        return self._byte_lengths

    def _encode_split(self, piece: str) -> Iterator[list[int]]:
        # Some models' encoders refuse far fewer tokens (2,048 for gpt2, 8,192 for the
        # embedding models); halving the piece is deterministic, so counts stay stable.
        encode = self._encode or self.load()
        try:
            yield encode(piece)
        except self._too_long:
            if len(piece) < 2:
                raise
            half = len(piece) // 2
            cut = piece.rfind(" ", half // 2, half + 1)
            cut = cut if cut > 0 else half
            yield from self._encode_split(piece[:cut])
            yield from self._encode_split(piece[cut:])


@functools.cache
def token_counter(model: str) -> BpeCounter:
    """Return a token counter for `model`, falling back to o200k_base for unknown models.

    The BPE tables ship inside the bpe-openai wheel, so this never touches the network;
    they are read on the first count (or `preload`), not here.
    For models outside OpenAI's families the count is an estimate, which is all the
    chunking and collapse budgets need. Texts of any length are counted: long ones in
    pieces cut before whitespace, so their count may differ from one encoder call by a
    token or so per 40,000 characters.
    """
    return BpeCounter(model)


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
