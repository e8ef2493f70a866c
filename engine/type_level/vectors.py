"""Type-level word vectors: one vector per vocabulary word, distilled from the contexts it appears in.

The static table knows only what the input layer learned; a contextual vector
belongs to one sentence. A type-level vector pools a word's contextual vectors
over many contexts (Bommasani et al., ACL 2020):

    templates  the word in a few neutral sentences (DEFAULT_TEMPLATES, or your own),
               its pooled vector averaged over them: t;
    corpus     the word's occurrences in real texts, up to `max_contexts` each, each
               read in its context (type_level.contexts: its sentence by default),
               with the templates as a prior worth `prior` = k contexts:
               v = (sum of its n corpus vectors + k * t) / (n + k); a word never seen
               gets t (and is flagged); k = 0 is the plain corpus mean.

Why DEFAULT_PRIOR = 5: the templates should outweigh one or two odd sentences
and give way to a few dozen real ones. With k = 5 one corpus context moves the
vector a sixth of the way from t, two contexts two sevenths; at five contexts
corpus and templates weigh the same; from 45 contexts on the corpus holds 90%.

Words are found by the model's own split (type_level.matching). The corpus pass
keeps running float64 sums per vocabulary word (the corpus's and the templates'
apart), never the vectors of each occurrence, so memory does not grow with the
corpus; only contexts of words that still want some reach the model.
Post-processing (`postprocess`) then centres the table, or removes the top
principal directions as well ("all-but-the-top", Mu and Viswanath, ICLR 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.errors import InputError, OptionError, UnknownWordError
from bertonnx.options import (
    DEFAULT_CHUNK_LINES,
    UNKNOWN_POLICIES,
    WORD_POOLING_MODES,
    check_choice,
    check_positive,
)
from bertonnx.pooling import pooled_width
from bertonnx.tokenize import TextPieces, Tokenizer, preview
from bertonnx.type_level.contexts import (
    CONTEXT_RULE,
    DEFAULT_CONTEXT,
    cut_long,
    parse_context,
    pool_contexts,
    pool_ranges,
    word_spans,
)
from bertonnx.type_level.matching import Matcher, Vocabulary, first_per_slot
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
DEFAULT_PRIOR = 5.0
"""The templates' weight, in contexts, in a corpus word's vector (the module docstring says why 5)."""
TEMPLATE_WORDS = 256
"""Vocabulary words per model call of the templates pass (each with every template): its memory unit."""


@dataclass(frozen=True)
class TypeLevelOptions:
    """Everything that shapes type-level vectors, and how often a job of them checkpoints (the one carrier the
    library, the CLI and Ray pass)."""

    templates: tuple[str, ...] | None = None  # None: type_level.DEFAULT_TEMPLATES
    max_contexts: int = DEFAULT_MAX_CONTEXTS  # corpus contexts per word at most
    postprocess: str | None = None  # none | center | abtt:D
    pooling: str = "mean"
    unknown: str = "error"
    chunk_lines: int = DEFAULT_CHUNK_LINES  # corpus lines (or template texts) between checkpoints
    prior: float = DEFAULT_PRIOR  # the templates' weight in contexts beside a word's corpus contexts; 0: none
    context: str = DEFAULT_CONTEXT  # sentence | window:N | line (type_level.contexts)

    def __post_init__(self) -> None:
        check_choice(self.pooling, WORD_POOLING_MODES)
        check_choice(self.unknown, UNKNOWN_POLICIES, "unknown policy")
        check_positive("max_contexts", self.max_contexts)
        check_positive("chunk_lines", self.chunk_lines)
        if isinstance(self.prior, bool) or not isinstance(self.prior, (int, float)) or not (
                math.isfinite(self.prior) and self.prior >= 0):
            raise OptionError(f"prior must be a number >= 0 (the templates' weight in contexts), got {self.prior!r}")
        parse_context(self.context)

    def numbers(self) -> dict[str, object]:
        """What shapes the vectors (a job's fingerprint): every field but how often it checkpoints."""
        found = {name: value for name, value in asdict(self).items() if name != "chunk_lines"}
        return {**found, "prior": float(self.prior), "context_rule": CONTEXT_RULE}


@dataclass(frozen=True)
class TypeVectors:
    """One vector per vocabulary word and what it was made of."""

    words: tuple[str, ...]
    vectors: NDArray[np.float32]  # (N, H), or (N, 2H) for first_last
    counts: NDArray[np.int64]  # (N,) contexts averaged: corpus occurrences, or the templates
    fallback: NDArray[np.bool_]  # (N,) corpus method: never seen in the corpus, so templates
    unknown: NDArray[np.bool_]  # (N,) maps to the unknown token
    method: str = "templates"
    options: TypeLevelOptions = field(default_factory=TypeLevelOptions)  # how they were made

    def record(self) -> dict[str, Any]:
        """How the vectors were made, as plain values: what an output file and study.json say about them. A
        corpus word's vector is (its `counts` contexts + `prior` x the templates' mean) / (counts + prior)."""
        return method_record(self.method, self.options)


def method_record(method: str, options: TypeLevelOptions) -> dict[str, Any]:
    """The method and the options that shaped it; `prior`, `context` and `max_contexts` act on the corpus alone."""
    return {
        "method": method, "prior": float(options.prior), "context": options.context, "context_rule": CONTEXT_RULE,
        "max_contexts": options.max_contexts, "postprocess": options.postprocess or "none",
        "pooling": options.pooling, "templates": list(options.templates or DEFAULT_TEMPLATES),
    }


@dataclass(frozen=True)
class Templates:
    """Templates split once: the words left and right of `{}` in each.

    A word is read in a template as the text the template makes of it ("The word is apple."), so that a
    tokenizer that spells words by place (byte-level BPE: "Ġapple" after a space) reads it as it reads prose;
    where the word would merge with the template's characters ("{}." with "u.s."), it is read as a word of
    its own between the template's words, as before.
    """

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


class TypeSums:
    """Running sums of pooled contextual vectors per vocabulary slot, the corpus's and the templates' apart: what a
    corpus pass updates and a checkpoint saves. float64, added in input order, so a resumed pass gives the same
    bits."""

    def __init__(self, runner: Runner, vocabulary: Vocabulary, pooling: str = "mean",
                 max_contexts: int = DEFAULT_MAX_CONTEXTS, context: str = DEFAULT_CONTEXT) -> None:
        check_choice(pooling, WORD_POOLING_MODES)
        check_positive("max_contexts", max_contexts)
        self.runner, self.vocabulary, self.pooling, self.max_contexts = runner, vocabulary, pooling, max_contexts
        self.rule = parse_context(context)
        width = pooled_width(runner.dim, pooling)
        self.sums = np.zeros((len(vocabulary), width), dtype=np.float64)  # (U, H) corpus contexts
        self.counts = np.zeros(len(vocabulary), dtype=np.int64)  # (U,) corpus contexts
        self.template_sums = np.zeros((len(vocabulary), width), dtype=np.float64)  # (U, H)
        self.template_counts = np.zeros(len(vocabulary), dtype=np.int64)  # (U,) templates added
        self.matcher = Matcher(vocabulary)
        self._entry = np.unique(vocabulary.slot, return_index=True)[1]  # (U,) each slot's first entry

    @property
    def wanting(self) -> int:
        """Slots the corpus can still add to (known words under max_contexts)."""
        return int(((self.counts < self.max_contexts) & ~self.vocabulary.unknown).sum())

    def add_corpus(self, texts: Sequence[str]) -> int:
        """Add the occurrences in `texts` (in order) of every slot still under max_contexts, each pooled in its
        context; the number added.

        Raises:
            InputError: a text the tokenizer refuses (not valid Unicode).
        """
        if not self.wanting:
            return 0
        texts = list(texts)
        line = self.rule.kind == "line"
        split = self.runner.tokenizer.split(texts, words=not line)  # a sentence is cut on the words' characters
        pieces = [part for text in split for part in cut_long(text)] if line else split
        found = self.matcher.find(pieces, self.counts < self.max_contexts)  # (M, 4) in input order
        if not found.size:
            return 0
        found = first_per_slot(found, self.max_contexts - self.counts)
        vectors = pool_contexts(self.runner, self.rule, None if line else texts, pieces, found, self.pooling)
        np.add.at(self.sums, found[:, 0], vectors.astype(np.float64))
        np.add.at(self.counts, found[:, 0], 1)
        return int(found.shape[0])

    def add_templates(self, slots: NDArray[np.int64], templates: Templates) -> None:
        """Add each slot's vector in every template to the template sums."""
        for start in range(0, slots.size, TEMPLATE_WORDS):
            chunk = slots[start : start + TEMPLATE_WORDS]
            pieces, spans = self._in_templates(chunk, templates)
            vectors = pool_ranges(self.runner, pieces, np.column_stack([np.arange(len(pieces)), spans]),
                                  self.pooling)
            k = len(templates.texts)
            self.template_sums[chunk] += vectors.astype(np.float64).reshape(chunk.size, k, -1).sum(axis=1)
            self.template_counts[chunk] += k

    def _in_templates(self, chunk: NDArray[np.int64], templates: Templates
                      ) -> tuple[list[TextPieces], NDArray[np.int64]]:
        """Every slot of `chunk` in every template (slot-major), and (T, 2) the entry's pieces in each."""
        tokenizer = self.runner.tokenizer
        texts: list[str] = []
        places: list[tuple[int, int, int]] = []  # the entry's first and end character, its words
        for slot in chunk.tolist():
            word = self._word_of(slot)
            for template in templates.texts:
                before, after = template.split("{}")
                texts.append(before + word + after)
                places.append((len(before), len(before) + len(word), int(self.vocabulary.n_words[slot])))
        pieces = tokenizer.split(texts)
        spans = np.empty((len(texts), 2), dtype=np.int64)
        merged: list[int] = []
        for index, (text, piece, (a, b, n)) in enumerate(zip(texts, pieces, places)):
            chars = word_spans(text, piece.words)  # (W, 2)
            inside = np.flatnonzero((chars[:, 0] >= a) & (chars[:, 1] <= b))
            straddle = ((chars[:, 0] < a) & (chars[:, 1] > a)) | ((chars[:, 0] < b) & (chars[:, 1] > b))
            if inside.size != n or straddle.any() or chars[inside[0], 0] != a or chars[inside[-1], 1] != b:
                merged.append(index)
                continue
            spans[index] = np.searchsorted(piece.piece_word, [inside[0], inside[-1] + 1])
        k = len(templates.texts)
        split = tokenizer.split([[*templates.left[i % k], self._word_of(int(chunk[i // k])), *templates.right[i % k]]
                                 for i in merged])
        for index, piece in zip(merged, split):
            pieces[index] = piece
            spans[index] = _word_span(piece, len(templates.left[index % k]))
        return pieces, spans

    def _word_of(self, slot: int) -> str:
        return self.vocabulary.words[int(self._entry[slot])]

    def means(self, prior: float = 0.0) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """(U, H) vectors and (U,) counts: (corpus sum + prior x templates' mean) / (corpus count + prior) for a
        slot the corpus saw (templates, when it has them, as `prior` contexts), the templates' mean for one it did
        not; a slot with neither is zero. Counts are corpus contexts, or the templates for a templates-only slot."""
        seen = self.counts > 0
        template_mean = self.template_sums / np.maximum(self.template_counts, 1)[:, None]
        weight = np.where(self.template_counts > 0, float(prior), 0.0)  # (U,) templates' weight, in contexts
        corpus = (self.sums + weight[:, None] * template_mean) / np.maximum(self.counts + weight, 1.0)[:, None]
        vectors = np.where(seen[:, None], corpus, template_mean).astype(np.float32)
        return vectors, np.where(seen, self.counts, self.template_counts)


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
    sums = TypeSums(runner, vocabulary, options.pooling, options.max_contexts, options.context)
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
    sums.add_templates(template_slots(sums, method, options), frames)
    return finish(vocabulary, sums, method, options, spec)


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


def template_slots(sums: TypeSums, method: str, options: TypeLevelOptions) -> NDArray[np.int64]:
    """Slots the templates pass fills: all (templates, or corpus with a prior), else those the corpus never saw;
    never zeroed unknowns."""
    every = method == "templates" or options.prior > 0
    need = np.ones(len(sums.vocabulary), dtype=bool) if every else sums.counts == 0
    if options.unknown == "zero":
        need &= ~sums.vocabulary.unknown
    return np.flatnonzero(need)


def finish(vocabulary: Vocabulary, sums: TypeSums, method: str, options: TypeLevelOptions,
           spec: tuple[str, int] | None) -> TypeVectors:
    """Vectors per slot (the prior applied), spread back to the entries, post-processed."""
    unknown = options.unknown
    means, counts = sums.means(options.prior if method == "corpus" else 0.0)
    if unknown == "zero":
        means[vocabulary.unknown] = 0.0
        counts[vocabulary.unknown] = 0
    vectors = means[vocabulary.slot]
    is_unknown = vocabulary.unknown[vocabulary.slot]
    postprocess(vectors, spec, ~(is_unknown & (unknown == "zero")))
    from_corpus = sums.counts[vocabulary.slot] > 0
    fallback = (~from_corpus & (method == "corpus")) & ~(is_unknown & (unknown == "zero"))
    return TypeVectors(words=vocabulary.words, vectors=vectors, counts=counts[vocabulary.slot], fallback=fallback,
                       unknown=is_unknown, method=method, options=options)
