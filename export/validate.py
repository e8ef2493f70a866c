"""ONNX Runtime against PyTorch on the same inputs: token- and word-level fidelity.

Kept apart from bertonnx.export so any bundle graph can be checked against any weights.
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

from bertonnx.backends.onnxruntime import OnnxRuntimeBackend
from bertonnx.bundle import CONTEXTUAL_OUTPUT, STATIC_OUTPUT
from bertonnx.errors import BertonnxError
from bertonnx.fidelity import OutputFidelity, compare, probe_batch
from bertonnx.pooling import pool_batch_words
from bertonnx.tokenize import Encoded, Tokenizer


class ValidationError(BertonnxError, ValueError):
    """The graph does not reproduce PyTorch."""


class OutputNamesError(ValidationError):
    """The graph lacks an output bertonnx needs."""


class ShapeError(ValidationError):
    """An output's shape differs from PyTorch's."""


class FidelityError(ValidationError):
    """Values differ more than allowed: not exact where they must be, or cosine too low."""


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
    session = OnnxRuntimeBackend(model_path, provider="cpu")
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
                    f"{fidelity.output}: {level}-level minimum cosine {value:.6f} is under {{min_cosine}}",
                    min_cosine=min_cosine,
                )
