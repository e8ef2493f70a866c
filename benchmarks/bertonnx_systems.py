"""bertonnx's own systems in the bench: `Embedder.contextual` and `Embedder.static` on one bundle."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from bertonnx.backends.onnxruntime import CPU, CUDA
from bertonnx.benchmarks.contract import FIDELITY_CHUNK, Outputs, SystemSpec
from bertonnx.bundle import CONTEXTUAL_OUTPUT
from bertonnx.embedder import Embedder

AUTO_LABEL = "bertonnx auto"


def resolved(spec: SystemSpec, backend: str, precision: str) -> SystemSpec:
    """The spec of what ran: `auto` named by the backend and precision the engine picked, in its label too
    ("bertonnx auto (openvino bf16)"), the request kept in backend_requested."""
    requested = spec.backend_requested or spec.backend
    if spec.backend != "auto":
        return replace(spec, backend_requested=requested)
    label = spec.label.replace(AUTO_LABEL, f"{AUTO_LABEL} ({backend} {precision})", 1)
    return replace(spec, label=label, backend=backend, precision=precision, backend_requested=requested)


class BertonnxContextual:
    """Embedder.contextual on one bundle, one backend and one precision."""

    def __init__(self, spec: SystemSpec) -> None:
        self.spec = spec
        self.embedder = _recipe_embedder(spec) if spec.recipe else Embedder.load(
            spec.source, backend=spec.backend or "onnxruntime", precision=spec.precision or "auto",
            provider="auto" if spec.backend == "auto" else spec.provider, threads=spec.threads,
        )
        wanted = "CPU" if self.embedder.backend.info.backend == "openvino" else CUDA if spec.provider == "cuda" else CPU
        if self.embedder.backend.info.device != wanted:
            raise RuntimeError(
                f"{spec.label}: asked for {wanted}, the session runs on {self.embedder.backend.info.device}"
            )
        self.spec = resolved(spec, self.embedder.backend.info.backend, self.embedder.backend.info.precision)

    def run(self, inputs: Sequence[str]) -> object:
        return self.embedder.contextual(inputs)

    def outputs(self, inputs: Sequence[str], token_word: NDArray[np.int64]) -> Outputs:
        tokenizer, session = self.embedder.tokenizer, self.embedder.backend
        parts = []
        for start in range(0, len(inputs), FIDELITY_CHUNK):
            pieces = tokenizer.split(list(inputs[start : start + FIDELITY_CHUNK]))
            encoded = tokenizer.pack([p.ids for p in pieces])
            hidden = session.run(CONTEXTUAL_OUTPUT, encoded.feeds(session.info.inputs))  # (B, T, H)
            parts.append(hidden[encoded.attention_mask.astype(bool)])
        words = [w.vectors for w in self.embedder.contextual(inputs)]
        return Outputs(tokens=np.concatenate(parts), words=np.concatenate(words))

    def cannot_run(self, longest: int) -> str | None:
        return None  # longer texts are windowed


def _recipe_embedder(spec: SystemSpec) -> Embedder:
    """OpenVINO int8 by a recipe kind named, held to the gate of the use it was made for (the sentence recipe to
    the sentence gate: under `fastest` it serves words only where it passes theirs too)."""
    from bertonnx.backends.choose import Choice
    from bertonnx.backends.open import open_choice
    from bertonnx.bundle import load_bundle
    from bertonnx.options import LoadOptions
    from bertonnx.tokenize import Tokenizer

    bundle = load_bundle(spec.source, verify=False)
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    choice = Choice(spec.backend, spec.precision, f"the {spec.recipe} recipe, by name", spec.recipe)
    gate = "sentences" if spec.recipe == "sentences" else None
    opened = open_choice(bundle, tokenizer, choice, LoadOptions(threads=spec.threads), gate_of=gate)
    return Embedder(bundle, opened.backend, tokenizer, bundle.load_table(), opened=opened)


class BertonnxStatic:
    """Embedder.static: the table lookup, never the transformer."""

    def __init__(self, spec: SystemSpec) -> None:
        self.spec = spec
        self.embedder = Embedder.load(spec.source, provider="cpu", threads=spec.threads)

    def run(self, inputs: Sequence[str]) -> object:
        return self.embedder.static(inputs, unknown="unk")

    def outputs(self, inputs: Sequence[str], token_word: NDArray[np.int64]) -> Outputs:
        ids, _ = self.embedder.tokenizer.split_words(inputs)
        return Outputs(tokens=self.embedder.table[ids], words=self.embedder.static(inputs, unknown="unk"))

    def cannot_run(self, longest: int) -> str | None:
        return None
