"""The static-versus-contextual study: the same words, alone and in sentences.

A word's static vector is its pieces' rows of the embedding table, pooled; in
each context it is the final hidden state of its pieces at its position in the
sentence, pooled the same way. Comparing the words' cosine and Euclidean
matrices per kind ("static", "context 1", "context 2", ...) shows what context
changes: queen the band drifts away from king, Apple the company from apple the
fruit. `bertonnx compare` is a thin layer over `run_study` and `write_outputs`.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.embedder import Embedder
from bertonnx.errors import InputError, OptionError, missing_extra
from bertonnx.pooling import cosine_rows

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
JSON_FILE = "study.json"


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


def load_contexts(path: str | Path) -> dict[str, list[str]]:
    """Read word -> context sentences from a .json, .yaml or .yml file.

    Raises:
        ValueError: unknown suffix, not UTF-8, malformed JSON or YAML, or a wrong shape.
        OSError: the file cannot be read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise InputError(f"{path}: expected a .json, .yaml or .yml file of word -> context sentences")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text (byte {error.start} cannot be decoded)") from None
    if suffix == ".json":
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(
                f"{path}: malformed JSON at line {error.lineno} column {error.colno}: {error.msg}"
            ) from None
    else:
        parsed = _parse_yaml(text, path)
    return check_contexts(parsed, str(path))


def _parse_yaml(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError as error:
        raise missing_extra("reading YAML", "compare", error) from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise InputError(f"{path}: malformed YAML{where}: {problem}") from None


def run_study(embedder: Embedder, contexts: Mapping[str, list[str]], pooling: str = "mean") -> StudyResult:
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
    panels += [
        _panel(f"context {k + 1}", tuple(contexts[word][k] for word in words), contextual[k], words)
        for k in range(n_contexts)
    ]
    model = embedder.model_name
    return StudyResult(model=model, pooling=pooling, words=words, panels=tuple(panels), runtime=embedder.runtime())


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


def write_outputs(result: StudyResult, out_dir: str | Path, metrics: Sequence[str] = METRICS) -> list[Path]:
    """Write `<metric>.png` per metric (a heatmap panel per kind) and study.json (every number).

    Returns:
        The files written, figures first.
    """
    unknown = [metric for metric in metrics if metric not in METRICS]
    if unknown or not metrics:
        raise OptionError(f"unknown metrics {unknown}; expected some of {', '.join(METRICS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plot_heatmaps(result, metric, out_dir / f"{metric}.png") for metric in metrics]
    json_path = out_dir / JSON_FILE
    json_path.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return [*written, json_path]


def plot_heatmaps(result: StudyResult, metric: str, path: Path, dpi: int = 110) -> Path:
    """One figure, one annotated heatmap per kind.

    Cosine panels share one colour scale, so a colour means the same number in
    every panel. Euclidean panels get one scale each: static vectors are an
    order of magnitude shorter than contextual ones, and a shared scale would
    paint the static panel one flat colour. Every cell prints its value.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise missing_extra("drawing heatmaps", "compare", error) from error

    n_words, n_panels = len(result.words), len(result.panels)
    columns = min(n_panels, 3)
    grid_rows = -(-n_panels // columns)
    side = max(3.2, 0.62 * n_words + 1.3)  # inches per panel: room for labels and a readable value per cell
    matrices = np.stack([panel.matrix(metric) for panel in result.panels])  # (K + 1, W, W)
    low, high = color_range(matrices, metric)  # (K + 1,) each
    shared = metric == "cosine"
    cmap = plt.get_cmap("viridis" if metric == "cosine" else "magma_r")
    tilt = n_words > 6 or max(len(word) for word in result.words) > 8
    figure, axes = plt.subplots(
        grid_rows, columns, figsize=(side * columns + 0.8, side * grid_rows + 1.0), squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    image = None
    for ax, panel, matrix, vmin, vmax in zip(axes.flat, result.panels, matrices, low, high):
        image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(panel.kind, fontsize=12)
        ax.set_xticks(range(n_words), result.words, rotation=40 if tilt else 0, ha="right" if tilt else "center")
        ax.set_yticks(range(n_words), result.words)
        ax.tick_params(length=0, labelsize=10)
        shade = np.clip((matrix - vmin) / max(vmax - vmin, 1e-12), 0, 1)  # (W, W) position on the colour map
        for (i, j), value in np.ndenumerate(matrix):
            red, green, blue, _ = cmap(shade[i, j])
            ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
            ax.text(j, i, _cell(value, metric), ha="center", va="center", fontsize=9, color=ink)
        if not shared:
            figure.colorbar(image, ax=ax, shrink=0.8)
    if shared and image is not None:
        figure.colorbar(image, ax=list(axes.flat[:n_panels]), shrink=0.8, label=metric)
    scale = (f"one colour scale, {low[0]:g} to {high[0]:g}" if shared else "colour scale per panel, from 0")
    runtime = result.runtime
    ran = f"{runtime.get('backend', '?')} {runtime.get('precision', '?')}" if runtime else "runtime not recorded"
    figure.suptitle(
        f"{metric} between word vectors · {result.model}\n{result.pooling} pooling · {ran} · {scale}", fontsize=11
    )
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def color_range(matrices: NDArray[np.float64], metric: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Fixed, documented colour ranges, so that a colour means the same number wherever it is seen.

    cosine: 0 to 1 for every panel, or -1 to 1 when any value is negative.
    euclidean: 0 to the panel's largest distance, per panel (static vectors are an order of
    magnitude shorter than contextual ones: one scale would paint the static panel one colour).
    """
    panels = matrices.shape[0]
    if metric == "cosine":
        low = -1.0 if (matrices < 0).any() else 0.0
        return np.full(panels, low), np.ones(panels)
    return np.zeros(panels), np.maximum(matrices.reshape(panels, -1).max(axis=1), 1e-12)


def _cell(value: float, metric: str) -> str:
    return f"{value:.2f}" if metric == "cosine" or abs(value) < 10 else f"{value:.1f}"
