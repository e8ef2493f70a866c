"""What every benchmarked system is and gives: its spec (plain data), the two calls it answers, its outputs.

Every system runs timed (`run`) and untimed for fidelity (`outputs`): token
vectors (N, H) of every real token, and mean-pooled word vectors (W, H), both
compared with PyTorch's on identical token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from bertonnx.pooling import pool_pieces, run_starts

BASELINE_BATCH = 32
"""Texts per batch for the PyTorch and sentence-transformers baselines (both libraries' default)."""
FIDELITY_CHUNK = 64
"""Inputs per untimed call while collecting a system's outputs for fidelity."""


@dataclass(frozen=True)
class Outputs:
    """What a system produced for some inputs, for comparison with PyTorch."""

    tokens: NDArray[np.float32]  # (N, H) every real token of every input, in order (static: word pieces)
    words: NDArray[np.float32]  # (W, H) mean-pooled words, in order


@dataclass(frozen=True)
class SystemSpec:
    """How to build one system; plain data so a subprocess can build it too."""

    kind: str  # pytorch | sentence-transformers | bertonnx | pytorch-embedding | numpy | bertonnx-static
    label: str  # name in tables, e.g. "bertonnx int8"
    path: str  # "contextual" or "static"
    source: str  # bundle directory (bertonnx, numpy) or Hugging Face model folder (torch, ST)
    provider: str  # "cpu" or "cuda"
    threads: int
    backend: str = ""  # bertonnx: onnxruntime | openvino (auto until built); sentence-transformers: "" (torch) |
    # onnx | openvino
    precision: str = ""  # bertonnx: fp32 | bf16 | fp16 | int8 (auto until built); ST openvino: "" (its default
    # until loaded) | fp32 | bf16
    backend_requested: str = ""  # bertonnx: what the bench asked for (auto, onnxruntime, openvino); "" for peers
    recipe: str = ""  # bertonnx OpenVINO int8: the recipe kind ("sentences": every MatMul int8); "" the default

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class System(Protocol):
    spec: SystemSpec

    def run(self, inputs: Sequence[str]) -> object:
        """The timed call: the whole job, tokenization included, results on the host."""

    def outputs(self, inputs: Sequence[str], token_word: NDArray[np.int64]) -> Outputs:
        """Untimed: vectors for fidelity. token_word: (N,) word of each token, -1 for special tokens."""

    def cannot_run(self, longest: int) -> str | None:
        """Why a case whose longest text has `longest` tokens cannot run here, or None."""


def pool_words(tokens: NDArray[np.float32], token_word: NDArray[np.int64]) -> NDArray[np.float32]:
    """Mean of each word's tokens; token_word (N,) numbers words globally, -1 on special tokens."""
    keep = token_word >= 0
    return pool_pieces(tokens[keep], run_starts(token_word[keep]), "mean")
