"""What the Embedder hands back, and what it reports: plain data, no model.

Data flows one way: text -> `Prepared` (word pieces, tokenized once) -> the
model -> `WordVectors` / `WordRows` (contextual), `StaticVectors` (the table),
or (N, H) arrays (sentences). `RuntimeInfo` says what ran, `RunStats` how well
it batched.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.backends.measure import Timings
from bertonnx.batching import BatchStats
from bertonnx.fidelity import GateResult
from bertonnx.tokenize import TextPieces


@dataclass(frozen=True)
class WordVectors:
    """One text's words and their vectors."""

    words: tuple[str, ...]  # (W,)
    vectors: NDArray[np.float32]  # (W, H), or (W, 2H) for first_last
    spans: NDArray[np.int64]  # (W, 2) each word's [start, end) in the text's word pieces
    unknown: NDArray[np.bool_]  # (W,) True where a word contains the unknown token
    truncated: bool = False  # long_text="truncate" dropped words past the maximum


@dataclass
class RunStats:
    """Counters over an Embedder's life, for debugging batching and padding."""

    texts: int = 0
    sequences: int = 0  # model runs per text: more than one for windowed texts
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def padding_ratio(self) -> float:
        return 0.0 if self.padded_tokens == 0 else 1 - self.real_tokens / self.padded_tokens

    def add(self, texts: int, stats: BatchStats) -> None:
        with self.lock:
            self.texts += texts
            self.sequences += stats.n_texts
            self.batches += stats.n_batches
            self.real_tokens += stats.real_tokens
            self.padded_tokens += stats.padded_tokens


USES = ("words", "sentences")
"""What a load serves, each held to its own gate: word and token vectors (contextual, long_text, type-level),
and sentence vectors (`sentences`, `embed --sentences`, /v1/embeddings)."""


@dataclass(frozen=True)
class Serving:
    """What serves one use: the backend, precision and int8 recipe, and the figures held to that use's gate."""

    backend: str
    precision: str
    recipe: str | None  # the int8 recipe's name, where OpenVINO int8 serves
    fidelity: GateResult | None  # against fp32, under this use's gate; None at fp32
    recipe_kind: str | None = None  # the use the int8 recipe was made for (quantize.RECIPE_KINDS), where it serves

    def to_dict(self) -> dict[str, object]:
        return {"backend": self.backend, "precision": self.precision, "int8_recipe": self.recipe,
                "int8_recipe_kind": self.recipe_kind, "fidelity": self.fidelity.to_dict() if self.fidelity else None}

    @property
    def label(self) -> str:
        """A few words for a job's summary line: 'openvino int8, sentences recipe', 'onnxruntime fp32'."""
        kind = f", {self.recipe_kind} recipe" if self.recipe and self.recipe_kind else ""
        return f"{self.backend} {self.precision}{kind}"

    def summary(self) -> str:
        """One line for `bertonnx info`."""
        head = f"{self.backend} {self.precision}" + (f" (recipe {self.recipe})" if self.recipe else "")
        return head + (f"; {self.fidelity.summary()}" if self.fidelity else "; fp32, nothing to gate")


@dataclass(frozen=True)
class RuntimeInfo:
    """What runs a loaded bundle, read off the backend after it opened (never from the request)."""

    backend: str  # onnxruntime | openvino
    device: str
    precision: str
    threads: int
    spin: bool
    chosen_because: str  # why `auto` chose it, or "given"
    fidelity: GateResult | None  # a reduced precision's figures against fp32 and its gate
    timings: Timings | None  # the candidates auto / fastest timed on this machine, where it measured
    details: dict[str, Any]  # versions, caches, providers
    serves: dict[str, Serving] = field(default_factory=dict)  # per use (USES): what serves it, under which gate

    def to_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "threads": self.threads,
            "spin": self.spin,
            "chosen_because": self.chosen_because,
            "fidelity": self.fidelity.to_dict() if self.fidelity else None,
            "timings": self.timings.to_dict() if self.timings else None,
            "serves": {use: serving.to_dict() for use, serving in self.serves.items()},
            **self.details,
        }


@dataclass(frozen=True)
class Prepared:
    """Texts already split into word pieces: tokenize once, then count, queue and embed without tokenizing again."""

    pieces: tuple[TextPieces, ...]
    tokens: NDArray[np.int64]  # (N,) model positions each text takes in one window: pieces + special tokens

    def __len__(self) -> int:
        return len(self.pieces)

    @classmethod
    def join(cls, parts: Sequence[Prepared]) -> Prepared:
        """Several prepared inputs as one, in order: e.g. concurrent requests merged into one call."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            pieces=tuple(text for part in parts for text in part.pieces),
            tokens=np.concatenate([part.tokens for part in parts] or [np.zeros(0, np.int64)]),
        )

    def select(self, keep: NDArray[np.bool_]) -> Prepared:
        """The texts where `keep` is True, still tokenized."""
        return Prepared(pieces=tuple(p for p, k in zip(self.pieces, keep) if k), tokens=self.tokens[keep])


@dataclass(frozen=True)
class WordRows:
    """The words of many texts as flat rows, in text order, then word order."""

    words: tuple[str, ...]  # (W,)
    vectors: NDArray[np.float32]  # (W, H), or (W, 2H) for first_last
    text: NDArray[np.int64]  # (W,) the text each word belongs to
    word: NDArray[np.int64]  # (W,) its index within that text
    spans: NDArray[np.int64]  # (W, 2) [start, end) in its text's word pieces
    unknown: NDArray[np.bool_]  # (W,)
    words_per_text: NDArray[np.int64]  # (N,)
    truncated: NDArray[np.bool_]  # (N,) long_text="truncate" dropped words of this text


@dataclass(frozen=True)
class StaticVectors:
    """Static vectors of a word list, with which words map to the unknown token."""

    vectors: NDArray[np.float32]  # (W, E), or (W, 2E) for first_last
    unknown: NDArray[np.bool_]  # (W,)
