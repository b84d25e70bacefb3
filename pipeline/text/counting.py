"""Count tokens offline with a model's BPE encoding, from bpe-openai's compiled core where it can."""

from __future__ import annotations

import functools
import gzip
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]
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
        # Python itself lists the loaded extension in sys.modules, so an import of the package
        # later finds it there rather than loading it twice.
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


def _core_encoder(core: Any, model: str) -> tuple[Callable[[str], list[int]], bool, Callable[[str], int]]:
    """The compiled core's encode for `model`, as the package calls it, whether the core knows the model, and its count.

    A model outside the families it knows gets o200k_base: an estimate, as documented.
    The count is the length of what encode gives, without the list of tokens.
    """
    try:
        tokenizer, known = core.tokenizer_for_model(model), True
    except ValueError:
        log.debug("no tokenizer known for model %r; estimating with %s", model, FALLBACK_ENCODING)
        tokenizer, known = core.tokenizer_for_encoding(FALLBACK_ENCODING), False
    encode, count = tokenizer.encode, tokenizer.count

    def encode_ordinary(text: str) -> list[int]:
        try:
            return encode(text)
        except UnicodeEncodeError:  # lone surrogates, replaced as the package's wrapper does
            return encode(_without_surrogates(text))

    def count_ordinary(text: str) -> int:
        try:
            return count(text)
        except UnicodeEncodeError:
            return count(_without_surrogates(text))

    return encode_ordinary, known, count_ordinary


def _without_surrogates(text: str) -> str:
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class BpeCounter:
    """Count tokens with a model's BPE encoding, giving the encoder pieces it accepts.

    The tokenizer is built on first use, not at import, and from bpe-openai's compiled
    core alone (see `_compiled_core`): a run of small documents needs no count before
    its first calls. `load` may also run in a worker thread meanwhile; a count that
    comes first waits for it. The chunker's token byte lengths, needed only for a
    document longer than one chunk, are read from the rank file of the same encoding;
    the package's Python encoding is built only if that cannot be done.
    """

    __slots__ = ("model", "_encoding", "_encode", "_count", "_known", "_too_long", "_byte_lengths", "_lock")

    def __init__(self, model: str) -> None:
        self.model = model
        self._encoding: Any = None
        self._encode: Callable[[str], list[int]] | None = None
        self._count: Callable[[str], int] | None = None  # the compiled core's count, where it counts
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
                    encode, self._known, self._count = _core_encoder(core, self.model)
                    self._encode = encode  # set last: a thread that sees it finds the count set too
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
        if self._count is not None and len(text) <= PIECE_CHARS:  # the compiled core: no list of tokens made
            return self._count(text)
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
