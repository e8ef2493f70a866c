"""Type-level word vectors: one vector per vocabulary word, distilled from the contexts it appears in.

The static table knows only what the input layer learned; a contextual vector
belongs to one sentence. A type-level vector pools a word's contextual vectors
over many contexts (Bommasani et al., ACL 2020):

    templates  the word in a few neutral sentences (DEFAULT_TEMPLATES, or your own),
               its pooled vector averaged over them;
    corpus     the word's occurrences in real texts, up to `max_contexts` each,
               averaged; a word never seen falls back to templates (and is flagged).

A vocabulary entry is one word as the static path takes it (no whitespace
inside). The tokenizer's pre-tokenizer may still split it ("U.S." -> U . S .):
its pieces are pooled as one word, in templates and in the corpus, where it is
matched as that run of words. Matching uses the model's own word split and
normaliser: an entry and a corpus word are the same word when they give the
same word pieces ("Apple" and "apple" for an uncased model, not for a cased one).

The corpus pass keeps running float64 sums per vocabulary word, never the
vectors of each occurrence, so memory does not grow with the corpus; lines
holding no vocabulary word that still wants contexts never reach the model.
Post-processing (`postprocess`) then centres the table, or removes the top
principal directions as well ("all-but-the-top", Mu and Viswanath, ICLR 2018).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from bertonnx.errors import EmptyWordError, InputError, OptionError, UnknownWordError
from bertonnx.options import (
    DEFAULT_CHUNK_LINES,
    UNKNOWN_POLICIES,
    WORD_POOLING_MODES,
    check_choice,
    check_positive,
)
from bertonnx.pooling import pool_pieces, pooled_width
from bertonnx.tokenize import TextPieces, Tokenizer, preview
from bertonnx.type_level.postprocess import check_postprocess_rows, parse_postprocess, postprocess

if TYPE_CHECKING:
    from bertonnx.runner import Runner

METHODS = ("templates", "corpus")
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "{}",
    "The word is {}.",
    "This is about {}.",
    "I thought of {} today.",
    "Here is a sentence with {} in it.",
    "What does {} mean?",
)
"""Neutral sentences, `{}` where the word goes: the word alone, then five plain frames around it."""
DEFAULT_MAX_CONTEXTS = 100
TEMPLATE_WORDS = 256
"""Vocabulary words per model call of the templates pass (each with every template): its memory unit."""


@dataclass(frozen=True)
class TypeLevelOptions:
    """Everything that shapes type-level vectors, and how often a job of them checkpoints (the one carrier the
    library, the CLI and Ray pass)."""

    templates: tuple[str, ...] | None = None  # None: type_level.DEFAULT_TEMPLATES
    max_contexts: int = DEFAULT_MAX_CONTEXTS
    postprocess: str | None = None  # none | center | abtt:D
    pooling: str = "mean"
    unknown: str = "error"
    chunk_lines: int = DEFAULT_CHUNK_LINES  # corpus lines (or template texts) between checkpoints

    def __post_init__(self) -> None:
        check_choice(self.pooling, WORD_POOLING_MODES)
        check_choice(self.unknown, UNKNOWN_POLICIES, "unknown policy")
        check_positive("max_contexts", self.max_contexts)
        check_positive("chunk_lines", self.chunk_lines)

    def numbers(self) -> dict[str, object]:
        return {name: value for name, value in asdict(self).items() if name != "chunk_lines"}


@dataclass(frozen=True)
class TypeVectors:
    """One vector per vocabulary word and what it was made of."""

    words: tuple[str, ...]
    vectors: NDArray[np.float32]  # (N, H), or (N, 2H) for first_last
    counts: NDArray[np.int64]  # (N,) contexts averaged: corpus occurrences, or the templates
    fallback: NDArray[np.bool_]  # (N,) corpus method: never seen in the corpus, so templates
    unknown: NDArray[np.bool_]  # (N,) maps to the unknown token


@dataclass(frozen=True)
class Vocabulary:
    """Vocabulary entries as the model splits them; entries the model cannot tell apart share one slot."""

    words: tuple[str, ...]
    slot: NDArray[np.int64]  # (N,) each entry's slot; equal slots <=> equal word pieces
    keys: tuple[bytes, ...]  # (U,) a slot's pieces and word lengths, as corpus runs are keyed
    first: tuple[bytes, ...]  # (U,) its first word's pieces: the corpus scan's first test
    n_words: NDArray[np.int64]  # (U,) pre-tokenizer words a slot spans
    unknown: NDArray[np.bool_]  # (U,)

    @classmethod
    def of(cls, tokenizer: Tokenizer, words: Sequence[str], name: Callable[[int], str] = "word {}".format
           ) -> Vocabulary:
        """Split every entry as the corpus will be split.

        Args:
            name: how an error names entry i ("word 3"; the CLI says "vocab.txt: line 4").

        Raises:
            InputError: an entry holds whitespace (several words), repeats an earlier one, or is not text.
            EmptyWordError: an entry gives no word pieces.
        """
        if isinstance(words, str):
            raise TypeError("type_vectors() takes a list of words, not one string")
        words = tuple(words)
        seen: dict[str, int] = {}
        for index, word in enumerate(words):
            if not isinstance(word, str):
                raise InputError(f"{name(index)} is {type(word).__name__}; expected str")
            if len(word.split()) > 1:
                raise InputError(
                    f"{name(index)} ({preview(word.strip())}) holds {len(word.split())} words; type-level vectors "
                    "are one word each, as static vectors are"
                )
            if word in seen:  # a table keyed by words cannot hold one twice (gensim loads a broken one)
                raise InputError(f"{name(index)} ({preview(word)}) repeats {name(seen[word])}; give each word once")
            seen[word] = index
        pieces = tokenizer.split(list(words))
        slot_of: dict[bytes, int] = {}
        slot = np.empty(len(words), dtype=np.int64)
        keys: list[bytes] = []
        first: list[bytes] = []
        n_words: list[int] = []
        unknown: list[bool] = []
        for index, text in enumerate(pieces):
            if text.ids.size == 0:
                raise EmptyWordError(
                    f"{name(index)} ({preview(words[index])}) has no word pieces: it is empty or blank"
                )
            key = run_key(text.ids, text.piece_word)
            if key not in slot_of:
                slot_of[key] = len(keys)
                keys.append(key)
                first.append(text.ids[text.piece_word == 0].tobytes())
                n_words.append(int(text.piece_word[-1]) + 1)
                unknown.append(bool((text.ids == tokenizer.unk_id).any()))
            slot[index] = slot_of[key]
        return cls(words, slot, tuple(keys), tuple(first), np.array(n_words, dtype=np.int64),
                   np.array(unknown, dtype=bool))

    def __len__(self) -> int:
        return len(self.keys)


def run_key(ids: NDArray[np.int64], piece_word: NDArray[np.int64]) -> bytes:
    """A run of words keyed by its pieces and its word lengths: equal keys, the same words to the model."""
    lengths = np.bincount(piece_word - piece_word[0]).astype(np.int64)
    return ids.astype(np.int64).tobytes() + b"|" + lengths.tobytes()


@dataclass(frozen=True)
class Templates:
    """Templates split once: the words left and right of `{}` in each."""

    texts: tuple[str, ...]
    left: tuple[tuple[str, ...], ...]
    right: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, tokenizer: Tokenizer, templates: Sequence[str] | None,
           name: Callable[[int], str] = "template {}".format) -> Templates:
        texts = tuple(DEFAULT_TEMPLATES if templates is None else templates)
        if not texts:
            raise OptionError("templates: give at least one, each with {} where the word goes")
        left: list[tuple[str, ...]] = []
        right: list[tuple[str, ...]] = []
        for index, template in enumerate(texts):
            if not isinstance(template, str) or template.count("{}") != 1:
                raise OptionError(
                    f"{name(index)} ({preview(str(template))}) must hold {{}} exactly once, where the word goes"
                )
            before, after = template.split("{}")
            left.append(tokenizer.split([before])[0].words)
            right.append(tokenizer.split([after])[0].words)
        return cls(texts, tuple(left), tuple(right))


class Matcher:
    """Finds vocabulary slots in tokenized texts: runs of words whose pieces and word lengths are a slot's."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self._by_first: dict[bytes, list[int]] = {}
        for index, key in enumerate(vocabulary.first):
            if not vocabulary.unknown[index]:  # [UNK] in the key would match unrelated words
                self._by_first.setdefault(key, []).append(index)
        self._first_ids = np.array(sorted({np.frombuffer(k, dtype=np.int64)[0] for k in self._by_first}),
                                   dtype=np.int64)

    def find(self, pieces: Sequence[TextPieces], wanted: NDArray[np.bool_] | None = None) -> NDArray[np.int64]:
        """(M, 4) slot, text, first piece, end piece of every occurrence, in input order; only `wanted` slots."""
        found: list[tuple[int, int, int, int]] = []
        n_words = self.vocabulary.n_words
        for text_index, text in enumerate(pieces):
            if text.ids.size == 0:
                continue
            starts = np.flatnonzero(np.diff(text.piece_word, prepend=-1) != 0)  # (W,) each word's first piece
            ends = np.append(starts[1:], text.ids.size)
            for word in np.flatnonzero(np.isin(text.ids[starts], self._first_ids)).tolist():
                for slot in self._by_first.get(text.ids[starts[word] : ends[word]].tobytes(), ()):
                    last = word + int(n_words[slot]) - 1
                    if last >= starts.size or (wanted is not None and not wanted[slot]):
                        continue
                    start, end = int(starts[word]), int(ends[last])
                    if n_words[slot] == 1 or (
                        run_key(text.ids[start:end], text.piece_word[start:end]) == self.vocabulary.keys[slot]
                    ):
                        found.append((slot, text_index, start, end))
        return np.array(found, dtype=np.int64).reshape(-1, 4)


def pool_ranges(
    runner: Runner, pieces: Sequence[TextPieces], ranges: NDArray[np.int64], pooling: str
) -> NDArray[np.float32]:
    """Final states of `pieces` pooled over each (text, start, end) piece range: (M, H)."""
    from bertonnx.results import Prepared

    special = runner.tokenizer.n_special
    sizes = np.array([p.ids.size + special for p in pieces], dtype=np.int64)
    hidden = runner.piece_states(Prepared(tuple(pieces), sizes))  # (P, H) every piece, in order
    offsets = np.cumsum([0] + [p.ids.size for p in pieces])[:-1]
    first = offsets[ranges[:, 0]] + ranges[:, 1]
    lengths = ranges[:, 2] - ranges[:, 1]
    starts = np.cumsum(lengths) - lengths
    index = np.repeat(first - starts, lengths) + np.arange(int(lengths.sum()))
    return pool_pieces(hidden, starts, pooling, index=index)


LONG_LINE_PIECES = 1 << 14
"""A corpus line of more pieces is read as parts of at most this many, cut between words, so that its states
stay small (the model sees a window around each word either way; only words near a cut see less context)."""


def cut_long(text: TextPieces, limit: int = LONG_LINE_PIECES) -> list[TextPieces]:
    """`text` as parts of at most `limit` pieces, each cut at a word's first piece (a longer word stays whole)."""
    if text.ids.size <= limit:
        return [text]
    starts = np.flatnonzero(np.diff(text.piece_word, prepend=-1) != 0)  # (W,) each word's first piece
    parts = []
    begin = 0
    while begin < text.ids.size:
        # the last word start at or before begin + limit (past begin), else the next one: a word is never split
        stop = starts[np.searchsorted(starts, begin + limit, side="right") - 1] if begin + limit < text.ids.size \
            else text.ids.size
        if stop <= begin:
            after = starts[starts > begin]
            stop = int(after[0]) if after.size else text.ids.size
        word = text.piece_word[begin:stop]
        parts.append(TextPieces(ids=text.ids[begin:stop], piece_word=word - word[0], words=()))
        begin = int(stop)
    return parts


def first_per_slot(found: NDArray[np.int64], room: NDArray[np.int64]) -> NDArray[np.int64]:
    """The occurrences (rows of `found`, slot first) that are among the first `room[slot]` of their slot."""
    slots = found[:, 0]
    order = np.argsort(slots, kind="stable")
    group_start = np.searchsorted(slots[order], slots[order])
    rank = np.empty_like(slots)
    rank[order] = np.arange(slots.size) - group_start  # each occurrence's place among its slot's
    return found[rank < room[slots]]


class TypeSums:
    """Running sums of pooled contextual vectors per vocabulary slot: what a corpus pass updates and a
    checkpoint saves. float64, added in input order, so a resumed pass gives the same bits."""

    def __init__(self, runner: Runner, vocabulary: Vocabulary, pooling: str = "mean",
                 max_contexts: int = DEFAULT_MAX_CONTEXTS) -> None:
        check_choice(pooling, WORD_POOLING_MODES)
        check_positive("max_contexts", max_contexts)
        self.runner, self.vocabulary, self.pooling, self.max_contexts = runner, vocabulary, pooling, max_contexts
        width = pooled_width(runner.dim, pooling)
        self.sums = np.zeros((len(vocabulary), width), dtype=np.float64)  # (U, H)
        self.counts = np.zeros(len(vocabulary), dtype=np.int64)  # (U,)
        self.matcher = Matcher(vocabulary)
        self._entry = np.unique(vocabulary.slot, return_index=True)[1]  # (U,) each slot's first entry

    @property
    def wanting(self) -> int:
        """Slots the corpus can still add to (known words under max_contexts)."""
        return int(((self.counts < self.max_contexts) & ~self.vocabulary.unknown).sum())

    def add_corpus(self, texts: Sequence[str]) -> int:
        """Add the occurrences in `texts` (in order) of every slot still under max_contexts; the number added.

        Raises:
            InputError: a text the tokenizer refuses (not valid Unicode).
        """
        if not self.wanting:
            return 0
        pieces = [part for text in self.runner.tokenizer.split(list(texts)) for part in cut_long(text)]
        found = self.matcher.find(pieces, self.counts < self.max_contexts)  # (M, 4) in input order
        if not found.size:
            return 0
        found = first_per_slot(found, self.max_contexts - self.counts)
        texts_used = np.unique(found[:, 1])
        remap = np.full(len(pieces), -1, dtype=np.int64)
        remap[texts_used] = np.arange(texts_used.size)
        vectors = self._pool([pieces[i] for i in texts_used.tolist()],
                             np.column_stack([remap[found[:, 1]], found[:, 2:]]))
        np.add.at(self.sums, found[:, 0], vectors.astype(np.float64))
        np.add.at(self.counts, found[:, 0], 1)
        return int(found.shape[0])

    def add_templates(self, slots: NDArray[np.int64], templates: Templates) -> None:
        """Add each slot's vector in every template; counts += the number of templates."""
        for start in range(0, slots.size, TEMPLATE_WORDS):
            chunk = slots[start : start + TEMPLATE_WORDS]
            texts: list[list[str]] = []
            ranges: list[tuple[int, int]] = []  # (text, word index of the entry)
            for slot in chunk.tolist():
                word = self._word_of(slot)
                for left, right in zip(templates.left, templates.right):
                    ranges.append((len(texts), len(left)))
                    texts.append([*left, word, *right])
            pieces = self.runner.tokenizer.split(texts)
            spans = np.array([_word_span(pieces[t], w) for t, w in ranges], dtype=np.int64).reshape(-1, 2)
            vectors = self._pool(pieces, np.column_stack([np.array([t for t, _ in ranges]), spans]))
            k = len(templates.texts)
            self.sums[chunk] += vectors.astype(np.float64).reshape(chunk.size, k, -1).sum(axis=1)
            self.counts[chunk] += k

    def _word_of(self, slot: int) -> str:
        return self.vocabulary.words[int(self._entry[slot])]

    def _pool(self, pieces: Sequence[TextPieces], ranges: NDArray[np.int64]) -> NDArray[np.float32]:
        if not len(ranges):
            return np.zeros((0, self.sums.shape[1]), dtype=np.float32)
        return pool_ranges(self.runner, pieces, ranges, self.pooling)

    def means(self) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """(U, H) means and (U,) counts; a slot with no context is zero."""
        return (self.sums / np.maximum(self.counts, 1)[:, None]).astype(np.float32), self.counts.copy()


def _word_span(text: TextPieces, word: int) -> tuple[int, int]:
    where = np.flatnonzero(text.piece_word == word)
    return int(where[0]), int(where[-1]) + 1


def type_vectors(
    runner: Runner,
    words: Sequence[str],
    options: TypeLevelOptions,
    method: str = "templates",
    corpus: Iterable[str] | None = None,
) -> TypeVectors:
    """The in-memory form of a type-level job (Embedder.type_vectors documents the arguments)."""
    check_choice(method, METHODS, "method")
    unknown = options.unknown
    vocabulary = Vocabulary.of(runner.tokenizer, words)
    check_unknown(vocabulary, unknown)
    frames = Templates.of(runner.tokenizer, options.templates)
    sums = TypeSums(runner, vocabulary, options.pooling, options.max_contexts)
    spec = parse_postprocess(options.postprocess, sums.sums.shape[1])
    check_postprocess_rows(spec, kept_slots(vocabulary, unknown))
    if method == "corpus":
        if corpus is None or isinstance(corpus, str):
            raise OptionError("method='corpus' needs corpus: an iterable of texts")
        seen_any = False
        batch: list[str] = []
        for text in corpus:
            seen_any = True
            batch.append(text)
            if len(batch) >= 512:
                sums.add_corpus(batch)
                batch = []
                if not sums.wanting:
                    break
        if batch:
            sums.add_corpus(batch)
        if not seen_any:
            raise InputError("the corpus is empty: give at least one text")
    need = template_slots(sums, method, unknown)
    from_corpus = sums.counts > 0
    sums.add_templates(need, frames)
    return finish(vocabulary, sums, method, from_corpus, unknown, spec)


def check_unknown(vocabulary: Vocabulary, unknown: str, name: Callable[[int], str] = "word {}".format,
                  remedy: str = "pass {unknown} to embed it anyway") -> None:
    """Refuse a word that maps to the unknown token under unknown="error"; `remedy` words the fix ({unknown})."""
    if unknown == "error" and vocabulary.unknown.any():
        first = int(np.flatnonzero(vocabulary.unknown[vocabulary.slot])[0])
        found = f"{name(first)} ({preview(vocabulary.words[first])}) maps to the unknown token; "
        raise UnknownWordError(found + remedy, unknown=("unk", "zero"))


def kept_slots(vocabulary: Vocabulary, unknown: str) -> int:
    """Distinct vectors post-processing works on: zeroed unknown words take no part."""
    return int((~vocabulary.unknown).sum()) if unknown == "zero" else len(vocabulary)


def template_slots(sums: TypeSums, method: str, unknown: str) -> NDArray[np.int64]:
    """Slots the templates pass fills: all (templates), or those the corpus never saw; never zeroed unknowns."""
    need = np.ones(len(sums.vocabulary), dtype=bool) if method == "templates" else sums.counts == 0
    if unknown == "zero":
        need &= ~sums.vocabulary.unknown
    return np.flatnonzero(need)


def finish(vocabulary: Vocabulary, sums: TypeSums, method: str, from_corpus: NDArray[np.bool_], unknown: str,
           spec: tuple[str, int] | None) -> TypeVectors:
    """Means per slot, spread back to the entries, post-processed."""
    means, counts = sums.means()
    if unknown == "zero":
        means[vocabulary.unknown] = 0.0
        counts[vocabulary.unknown] = 0
    vectors = means[vocabulary.slot]
    is_unknown = vocabulary.unknown[vocabulary.slot]
    postprocess(vectors, spec, ~(is_unknown & (unknown == "zero")))
    fallback = (~from_corpus[vocabulary.slot] & (method == "corpus")) & ~(is_unknown & (unknown == "zero"))
    return TypeVectors(words=vocabulary.words, vectors=vectors, counts=counts[vocabulary.slot], fallback=fallback,
                       unknown=is_unknown)
