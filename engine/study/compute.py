"""The static-versus-contextual study: the same words, alone and in sentences.

A word's static vector is its pieces' rows of the embedding table, pooled; in
each context it is the final hidden state of its pieces at its position in the
sentence, pooled the same way. Comparing the words' cosine and Euclidean
matrices per kind ("static", "context 1", "context 2", ...) shows what context
changes: queen the band drifts away from king, Apple the company from apple the
fruit. `bertonnx compare` is a thin layer over `run_study` and bertonnx.study_files
(contexts in, study.json and heatmaps out).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.embedder import Embedder
from bertonnx.errors import InputError, OptionError
from bertonnx.pooling import cosine_rows
from bertonnx.type_level.vectors import TypeLevelOptions, type_vectors

# The seed document's words, each in two sentences: queen is the band in
# context 2, apple the company.
DEFAULT_CONTEXTS: dict[str, list[str]] = {
    "king": ["The king is wise.", "The king and queen rule the kingdom."],
    "queen": ["The queen is kind.", "The queen is one of the great bands in history."],
    "man": ["The man is strong.", "The man and woman are friends."],
    "woman": ["The woman is smart.", "The woman and man are friends."],
    "apple": ["The king eats apple every day.", "How much is an Apple music account?"],
}
METRICS: tuple[str, ...] = ("cosine", "euclidean")
ANALOGY_WORDS: tuple[str, ...] = ("king", "queen", "man", "woman")  # queen − king ≈ woman − man
STATIC = "static"
TYPE_LEVEL = "type-level"


@dataclass(frozen=True)
class Analogy:
    """How well queen − king ≈ woman − man holds for one kind of vector."""

    royal: float  # ‖queen − king‖
    gender: float  # ‖woman − man‖
    gap: float  # ‖(queen − king) − (woman − man)‖
    cosine: float  # cos(queen − king, woman − man); 1 when the offsets point the same way


@dataclass(frozen=True)
class Panel:
    """One kind of vector for every word, and the words' pairwise comparisons."""

    kind: str  # "static", "context 1", "context 2", ...
    sentences: tuple[str, ...] | None  # (W,) the sentence each word was read in; None for static
    vectors: NDArray[np.float32]  # (W, H), or (W, 2H) for first_last
    cosine: NDArray[np.float64]  # (W, W)
    euclidean: NDArray[np.float64]  # (W, W)
    analogy: Analogy | None  # None unless king, queen, man and woman are all studied

    def matrix(self, metric: str) -> NDArray[np.float64]:
        """The (W, W) matrix of one of METRICS."""
        return {"cosine": self.cosine, "euclidean": self.euclidean}[metric]


@dataclass(frozen=True)
class StudyResult:
    """Every number of one study: a panel per kind, static first."""

    model: str  # the bundle's source model
    pooling: str  # how a word's pieces became one vector
    words: tuple[str, ...]  # (W,)
    panels: tuple[Panel, ...]  # static, context 1, context 2, ...
    runtime: dict[str, Any] = field(default_factory=dict)  # what ran the model: backend, precision, fidelity
    type_level: dict[str, Any] | None = None  # how the type-level panel was made (TypeVectors.record), if there is one

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(panel.kind for panel in self.panels)

    def across_contexts(self, metric: str) -> NDArray[np.float64]:
        """(W, K, K) each word's contextual vectors compared with each other: apple the fruit vs the company.

        Static vectors are left out: the embedding table and the last layer are
        different spaces, so their distances say little.
        """
        contextual = np.stack([panel.vectors for panel in self.panels[1:]], axis=1)  # (W, K, H)
        return pairwise(contextual, metric)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: every number shown (matrices, analogies, each word across contexts), not the vectors."""
        return {
            "model": self.model,
            "pooling": self.pooling,
            "runtime": {key: self.runtime.get(key) for key in ("backend", "device", "precision", "fidelity")},
            "type_level": self.type_level,
            "words": list(self.words),
            "kinds": list(self.kinds),
            "panels": [
                {
                    "kind": panel.kind,
                    "sentences": None if panel.sentences is None else dict(zip(self.words, panel.sentences)),
                    "cosine": panel.cosine.tolist(),
                    "euclidean": panel.euclidean.tolist(),
                    "analogy": None if panel.analogy is None else vars(panel.analogy),
                }
                for panel in self.panels
            ],
            "across_contexts": {
                metric: dict(zip(self.words, self.across_contexts(metric).tolist())) for metric in METRICS
            },
        }


def normalise(word: str) -> str:
    """The form words are matched on: NFKC, case-folded, punctuation (Unicode P*) removed."""
    folded = unicodedata.normalize("NFKC", word).casefold()
    return "".join(char for char in folded if not unicodedata.category(char).startswith("P")).strip()


def match_word(words: Sequence[str], target: str) -> int | None:
    """Index of the first of `words` that is `target` up to case and punctuation ("Apple," is apple)."""
    key = normalise(target)
    return next((index for index, word in enumerate(words) if normalise(word) == key), None)


def check_contexts(contexts: Any, source: str = "contexts") -> dict[str, list[str]]:
    """Check the shape of word -> context sentences and strip surrounding spaces.

    Every word needs the same number of sentences, because panel k compares
    the words' k-th sentences with each other.

    Args:
        contexts: parsed JSON or YAML, or a dict built in code.
        source: what to call it in errors (the file name).

    Raises:
        ValueError: naming the word or sentence at fault.
    """
    if not isinstance(contexts, Mapping):
        raise InputError(
            f"{source}: expected a mapping of word -> list of context sentences, got {type(contexts).__name__}"
        )
    if len(contexts) < 2:
        raise InputError(f"{source}: a comparison needs at least two words, got {len(contexts)}")
    checked: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for word, sentences in contexts.items():
        if not isinstance(word, str):
            raise InputError(
                f"{source}: every word must be a string, got {word!r} (YAML reads yes/no/on/off and numbers "
                "as other types: quote the word)"
            )
        word = word.strip()
        if not normalise(word):
            raise InputError(f"{source}: word {word!r} is empty or only punctuation")
        if normalise(word) in seen:
            raise InputError(f"{source}: {word!r} and {seen[normalise(word)]!r} are the same word up to case")
        seen[normalise(word)] = word
        if not isinstance(sentences, list) or not sentences:
            raise InputError(f"{source}: {word!r} needs a non-empty list of context sentences, got {sentences!r}")
        for index, sentence in enumerate(sentences, start=1):
            if not isinstance(sentence, str):
                raise InputError(f"{source}: context {index} of {word!r} must be a sentence, got {sentence!r}")
            if not sentence.strip():
                raise InputError(f"{source}: context {index} of {word!r} is an empty sentence")
        checked[word] = [sentence.strip() for sentence in sentences]
    counts = {word: len(sentences) for word, sentences in checked.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{word} has {count}" for word, count in counts.items())
        raise InputError(
            f"{source}: every word needs the same number of contexts, so that panel k compares "
            f"the words' k-th sentences; {listed}"
        )
    return checked


def run_study(
    embedder: Embedder, contexts: Mapping[str, list[str]], pooling: str = "mean",
    type_level: bool | TypeLevelOptions = False, corpus: Sequence[str] | None = None,
) -> StudyResult:
    """Static and per-context vectors of every word, and their comparisons.

    All sentences go through the model in one `contextual` call. In each
    sentence a word is found among the words the model's own pre-tokenizer
    splits it into, up to case and punctuation; its first occurrence counts.
    The static vector is of the word as written in `contexts` (which matters
    only for cased models, where "Apple" and "apple" are different pieces).

    Args:
        embedder: an opened bundle.
        contexts: word -> its context sentences, the same number for every word.
        pooling: how a word's pieces become one vector (mean | first | last | first_last | max | sum).
        type_level: add a "type-level" panel after the static one (Embedder.type_vectors: templates, or
            `corpus` texts with templates as the prior); True for the default options, or the options (their
            pooling is the study's). study.json records how the panel was made.

    Raises:
        ValueError: a word is not one word to the model, is missing from one of
            its sentences, or maps to the unknown token.
    """
    contexts = check_contexts(contexts)
    words = tuple(contexts)
    for word in words:
        split = embedder.tokenizer.split([word])[0].words
        if len(split) != 1:
            raise InputError(
                f"{word!r} is {len(split)} words to this model's tokenizer ({', '.join(split)}); give a single word"
            )
    n_contexts = len(contexts[words[0]])
    sentences = [contexts[word][k] for k in range(n_contexts) for word in words]  # context-major: (K * W,)
    read = embedder.contextual(sentences, pooling=pooling)
    rows = []  # (K * W,) each word's vector in its sentence
    for index, (sentence, found) in enumerate(zip(sentences, read)):
        word = words[index % len(words)]
        position = match_word(found.words, word)
        if position is None:
            raise InputError(
                f"{word!r} does not occur in its context {index // len(words) + 1} sentence {sentence!r} "
                f"(the model reads its words as: {' | '.join(found.words)})"
            )
        if found.unknown[position]:
            raise InputError(f"{word!r} maps to the model's unknown token in {sentence!r}: it has no vector of its own")
        rows.append(found.vectors[position])
    contextual = np.stack(rows).reshape(n_contexts, len(words), -1)  # (K, W, H)
    static = embedder.static(list(words), pooling=pooling)  # (W, H)
    panels = [_panel(STATIC, None, static, words)]
    made = None
    if type_level is not False:
        options = replace(TypeLevelOptions() if type_level is True else type_level, pooling=pooling)
        method = "templates" if corpus is None else "corpus"
        found = type_vectors(embedder.runner, list(words), options, method, corpus)
        panels.append(_panel(TYPE_LEVEL, None, found.vectors, words))
        made = found.record()
    panels += [
        _panel(f"context {k + 1}", tuple(contexts[word][k] for word in words), contextual[k], words)
        for k in range(n_contexts)
    ]
    model = embedder.model_name
    return StudyResult(model=model, pooling=pooling, words=words, panels=tuple(panels), runtime=embedder.runtime(),
                       type_level=made)


def pairwise(vectors: NDArray[np.floating], metric: str) -> NDArray[np.float64]:
    """(..., N, N) cosine or Euclidean distance between the rows of (..., N, H), in float64."""
    v64 = vectors.astype(np.float64)
    rows, columns = v64[..., :, None, :], v64[..., None, :, :]  # (..., N, 1, H), (..., 1, N, H)
    if metric == "cosine":
        return cosine_rows(rows, columns)
    if metric == "euclidean":
        return np.linalg.norm(rows - columns, axis=-1)
    raise OptionError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")


def _panel(kind: str, sentences: tuple[str, ...] | None, vectors: NDArray[np.float32], words: tuple[str, ...]) -> Panel:
    return Panel(
        kind=kind,
        sentences=sentences,
        vectors=vectors,
        cosine=pairwise(vectors, "cosine"),
        euclidean=pairwise(vectors, "euclidean"),
        analogy=_analogy(vectors.astype(np.float64), words),
    )


def _analogy(vectors: NDArray[np.float64], words: tuple[str, ...]) -> Analogy | None:
    keys = [normalise(word) for word in words]
    if not all(word in keys for word in ANALOGY_WORDS):
        return None
    king, queen, man, woman = (vectors[keys.index(word)] for word in ANALOGY_WORDS)
    royal, gender = queen - king, woman - man  # (H,), (H,)
    return Analogy(
        royal=float(np.linalg.norm(royal)),
        gender=float(np.linalg.norm(gender)),
        gap=float(np.linalg.norm(royal - gender)),
        cosine=float(cosine_rows(royal[None], gender[None])[0]),
    )
