"""Fidelity on fixed probes: how close one run of a graph comes to another, at token and word level.

Export compares the ONNX graph with PyTorch here; the runtime compares a reduced
precision (bf16, fp16, int8) with the bundle's fp32 outputs, and refuses it
below its gate (`GATES`). Everything is numpy over one padded probe batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.errors import FidelityGateError
from bertonnx.pooling import cosine_rows, pool_batch_words, pool_sentences
from bertonnx.tokenize import Encoded, Tokenizer

PROBE_TEXTS = (
    "The king is wise.",
    "The queen is one of the great bands in history.",
    "apple",
    "Crème brûlée, naïve café — 東京タワー 🙂 ΑΒΓ ﬁ Ω x²!",
    "How much is an Apple music account?",
    "She sat on the river bank and watched the boats go by, while the bank across town raised its rates.",
    "Transformers compute contextual embeddings: every token attends to every other token in the sentence.",
    "In 1969, 600 million people watched Neil Armstrong step onto the Moon; the broadcast lasted hours.",
)
"""Fixed probes: padding (mixed lengths), a single word, unusual characters, ordinary prose."""

HELD_OUT_PROSE = (
    "The committee postponed its decision until the auditors had finished reviewing the accounts.",
    "A light rain fell over the harbour as the fishing boats returned with their morning catch.",
    "Children in the village learn to swim in the lake long before they learn to ride a bicycle.",
    "The new bridge cut the commute across the river from forty minutes to less than ten.",
    "She played the cello in an orchestra for twenty years before she began to compose.",
    "Prices for wheat rose sharply after the drought destroyed much of the southern harvest.",
    "The museum's oldest map shows the coastline as sailors imagined it five centuries ago.",
    "He forgot his umbrella on the train and spent the afternoon drying his coat by the fire.",
    "Volcanic soil is fertile, which is why farms cluster on the slopes despite the danger.",
    "The doctor asked how long the cough had lasted and whether it was worse at night.",
    "Our neighbours planted an apple tree the year their daughter was born.",
    "Engineers tested the turbine for weeks before allowing it to feed power into the grid.",
    "Is the library open on Sundays, or only during the week?",
    "The novel follows three sisters who inherit a failing hotel on a remote island.",
    "Heavy snow closed the mountain pass, so the trucks waited in the valley for two days.",
    "A good teacher notices when a quiet student has stopped asking questions.",
)
"""Everyday prose that int8 is never calibrated on (calibration reads the standard library's docstrings): the
sentence gate judges sentence vectors on these and on the probes."""


@dataclass(frozen=True)
class Gate:
    metric: str  # a field of OutputFidelity
    minimum: float

    def describe(self) -> str:
        """The gate as a user reads it: 'word mean cosine >= 0.99'."""
        return f"{self.metric.replace('_', ' ')} >= {self.minimum:g}"


GATES: dict[str, Gate] = {
    "bf16": Gate("token_min_cosine", 0.999),
    "fp16": Gate("token_min_cosine", 0.999),
    "int8": Gate("word_mean_cosine", 0.99),
}
"""A reduced precision runs only at or above its gate, measured against fp32 on the probes."""
SENTENCE_GATE = Gate("sentence_min_cosine", 0.99)
"""What may serve mean-pooled sentence vectors under `fastest` (an int8 recipe too rough for words, say): the least
cosine of a sentence vector against fp32's, over the probes and HELD_OUT_PROSE."""


@dataclass(frozen=True)
class OutputFidelity:
    output: str
    token_max_abs_diff: float
    token_min_cosine: float
    token_mean_cosine: float
    word_max_abs_diff: float
    word_min_cosine: float
    word_mean_cosine: float
    sentence_min_cosine: float | None = None  # mean-pooled sentence vectors; None where not measured (export)
    sentence_mean_cosine: float | None = None


@dataclass(frozen=True)
class GateResult:
    """A precision's fidelity against fp32, and the gate it was held to."""

    precision: str
    reference: str  # what gave the fp32 outputs
    fidelity: OutputFidelity
    gate: Gate

    @property
    def figure(self) -> float:
        """The gated figure; NaN (never passing) where it was not measured."""
        value = getattr(self.fidelity, self.gate.metric)
        return float("nan") if value is None else float(value)

    @property
    def passed(self) -> bool:
        return self.figure >= self.gate.minimum

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "reference": self.reference,
            "gate": asdict(self.gate),
            "passed": self.passed,
            **asdict(self.fidelity),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateResult:
        fields = {name: data[name] for name in OutputFidelity.__dataclass_fields__ if name in data}
        return cls(data["precision"], data["reference"], OutputFidelity(**fields), Gate(**data["gate"]))

    def summary(self) -> str:
        """One line for `bertonnx info`: the figures, the gate and its verdict."""
        f = self.fidelity
        return (
            f"vs {self.reference}: token cosine min {f.token_min_cosine:.5f} / mean {f.token_mean_cosine:.5f}, "
            f"word cosine min {f.word_min_cosine:.5f} / mean {f.word_mean_cosine:.5f}"
            + ("" if f.sentence_min_cosine is None else f", sentence cosine min {f.sentence_min_cosine:.5f}")
            + f"; gate {self.gate.describe()}: "
            + ("passed" if self.passed else "FAILED")
        )

    def check(self) -> None:
        """Raises FidelityGateError, with the figure, when the precision is under its gate."""
        if not self.passed:
            raise FidelityGateError(
                f"{self.precision} is refused on this bundle: {self.gate.metric.replace('_', ' ')} "
                f"{self.figure:.5f} against {self.reference}, under the gate {self.gate.minimum:g} "
                "(use {precision}, or lower the gate with {min_fidelity})",
                precision="fp32", min_fidelity=...,
            )


def probe_batch(tokenizer: Tokenizer) -> tuple[Encoded, NDArray[np.int64]]:
    """The probes plus one text of exactly the maximum length, packed with padding.

    Returns:
        The batch, and (B, T) word ids (-1 on special tokens and padding).
    """
    filler = "the king and queen rule the kingdom of apples . " * tokenizer.max_length
    pieces = tokenizer.split([*PROBE_TEXTS, filler])
    # Every probe, the filler above all, is cut to the model's window at a word boundary: a model with a short
    # maximum or a small vocabulary (many pieces a word) would otherwise be fed more positions than it has.
    keep = [
        int(np.searchsorted(p.piece_word, p.piece_word[tokenizer.window])) if p.ids.size > tokenizer.window
        else p.ids.size
        for p in pieces
    ]
    sequences = [p.ids[:k] for p, k in zip(pieces, keep)]
    piece_words = [p.piece_word[:k] for p, k in zip(pieces, keep)]
    encoded = tokenizer.pack(sequences)
    word_ids = np.full(encoded.input_ids.shape, -1, dtype=np.int64)
    word_ids[encoded.content_rows, encoded.content_cols] = np.concatenate(piece_words)
    return encoded, word_ids


def compare(
    name: str,
    expected: NDArray[np.float32],
    found: NDArray[np.float32],
    mask: NDArray[np.bool_],
    word_ids: NDArray[np.int64],
) -> OutputFidelity:
    """Fidelity of one (B, T, H) output: real tokens only, then mean-pooled words."""
    tokens_e, tokens_f = expected[mask], found[mask]  # (N, H)
    words_e = pool_batch_words(expected, word_ids, "mean")[0]
    words_f = pool_batch_words(found, word_ids, "mean")[0]
    token_cos = cosine_rows(tokens_e, tokens_f)
    word_cos = cosine_rows(words_e, words_f)
    return OutputFidelity(
        output=name,
        token_max_abs_diff=float(np.abs(tokens_e - tokens_f).max()),
        token_min_cosine=float(token_cos.min()),
        token_mean_cosine=float(token_cos.mean()),
        word_max_abs_diff=float(np.abs(words_e - words_f).max()),
        word_min_cosine=float(word_cos.min()),
        word_mean_cosine=float(word_cos.mean()),
    )


def prose_batch(tokenizer: Tokenizer) -> Encoded:
    """HELD_OUT_PROSE, each cut to the model's window, packed with padding."""
    return tokenizer.pack([pieces.ids[: tokenizer.window] for pieces in tokenizer.split(list(HELD_OUT_PROSE))])


def sentence_cosines(
    expected: NDArray[np.float32], found: NDArray[np.float32], attention_mask: NDArray[np.int64]
) -> NDArray[np.float64]:
    """(B,) cosine of each text's mean-pooled sentence vector (as sentence-transformers pools) to the expected one."""
    return cosine_rows(pool_sentences(expected, attention_mask, "mean"), pool_sentences(found, attention_mask, "mean"))


def read_cached(path: Path, key: dict[str, Any]) -> GateResult | None:
    """A gate result measured before under the same key (bundle, backend, versions, CPU), else None."""
    from bertonnx.io.cache import read_entry

    return read_entry(path, key, GateResult.from_dict)


def write_cached(path: Path, key: dict[str, Any], result: GateResult) -> None:
    from bertonnx.io.cache import write_entry

    write_entry(path, key, result.to_dict())
