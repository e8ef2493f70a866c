"""ONNX Runtime against PyTorch on the same inputs: token- and word-level fidelity.

Kept apart from export so any bundle graph can be checked against any weights.
Names and shapes are checked before values, so a wrong graph fails with a
message about the graph rather than a cosine.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.bundle import CONTEXTUAL_OUTPUT, STATIC_OUTPUT
from engine.pooling import cosine_rows, pool_batch_words
from engine.session import Session
from engine.tokenize import Encoded, Tokenizer

PROBE_TEXTS = (
    "The king is wise.",
    "The queen is one of the great bands in history.",
    "apple",
    "Crème brûlée, naïve café — 東京タワー 🙂 ΑΒΓ ﬁ Ω x²!",
)
"""Fixed probes: padding (mixed lengths), a single word, unusual characters."""


class ValidationError(ValueError):
    """The graph does not reproduce PyTorch."""


class OutputNamesError(ValidationError):
    """The graph lacks an output bertonnx needs."""


class ShapeError(ValidationError):
    """An output's shape differs from PyTorch's."""


class FidelityError(ValidationError):
    """Values differ more than allowed: not exact where they must be, or cosine too low."""


@dataclass(frozen=True)
class OutputFidelity:
    output: str
    token_max_abs_diff: float
    token_min_cosine: float
    token_mean_cosine: float
    word_max_abs_diff: float
    word_min_cosine: float
    word_mean_cosine: float


@dataclass(frozen=True)
class ValidationReport:
    outputs: tuple[OutputFidelity, ...]
    texts: int
    tokens: int
    words: int

    @property
    def min_cosine(self) -> float:
        """The worst cosine over every output, token and word."""
        return min(min(o.token_min_cosine, o.word_min_cosine) for o in self.outputs)

    def output(self, name: str) -> OutputFidelity:
        return next(o for o in self.outputs if o.output == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "texts": self.texts,
            "tokens": self.tokens,
            "words": self.words,
            "min_cosine": self.min_cosine,
            "outputs": {o.output: asdict(o) for o in self.outputs},
        }


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


def torch_outputs(model: Any, encoded: Encoded) -> dict[str, NDArray[np.float32]]:
    """Reference values from the PyTorch model itself."""
    import torch

    ids = torch.from_numpy(encoded.input_ids)
    kwargs = {"input_ids": ids, "attention_mask": torch.from_numpy(encoded.attention_mask)}
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        kwargs["token_type_ids"] = torch.from_numpy(encoded.token_type_ids)
    with torch.inference_mode():
        hidden = model(**kwargs).last_hidden_state
        static = model.get_input_embeddings()(ids)
    return {STATIC_OUTPUT: static.float().numpy(), CONTEXTUAL_OUTPUT: hidden.float().numpy()}


def validate_graph(model_path: Path, model: Any, tokenizer: Tokenizer) -> ValidationReport:
    """Run the probes through the graph (CPU) and through PyTorch and compare.

    Raises:
        OutputNamesError, ShapeError: before any value is compared.
    """
    session = Session(model_path, provider="cpu")
    missing = {STATIC_OUTPUT, CONTEXTUAL_OUTPUT} - set(session.info.outputs)
    if missing:
        raise OutputNamesError(f"{model_path}: graph outputs {session.info.outputs} lack {sorted(missing)}")
    encoded, word_ids = probe_batch(tokenizer)
    expected = torch_outputs(model, encoded)
    feeds = encoded.feeds(session.info.inputs)
    mask = encoded.attention_mask.astype(bool)
    results = []
    for name in (STATIC_OUTPUT, CONTEXTUAL_OUTPUT):
        found = session.run(name, feeds)
        if found.shape != expected[name].shape:
            raise ShapeError(f"{name}: graph gives shape {found.shape}, PyTorch {expected[name].shape}")
        results.append(compare(name, expected[name], found, mask, word_ids))
    return ValidationReport(
        outputs=tuple(results),
        texts=int(mask.shape[0]),
        tokens=int(mask.sum()),
        words=int(pool_batch_words(expected[STATIC_OUTPUT], word_ids)[0].shape[0]),
    )


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


def require(report: ValidationReport, min_cosine: float, static_exact: bool) -> None:
    """Refuse a graph below the bar.

    Raises:
        FidelityError: naming the output, the level and both numbers.
    """
    static = report.output(STATIC_OUTPUT)
    if static_exact and static.token_max_abs_diff != 0.0:
        raise FidelityError(
            f"{STATIC_OUTPUT} must equal the PyTorch embedding rows exactly; "
            f"max abs diff is {static.token_max_abs_diff:.3g}"
        )
    for fidelity in report.outputs:
        for level, value in (("token", fidelity.token_min_cosine), ("word", fidelity.word_min_cosine)):
            if value < min_cosine:
                raise FidelityError(
                    f"{fidelity.output}: {level}-level minimum cosine {value:.6f} is under --min-cosine {min_cosine}"
                )
