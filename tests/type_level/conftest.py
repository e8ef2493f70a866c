"""Fixtures the type-level job tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertonnx import Embedder


@pytest.fixture(scope="module")
def embedder(tiny_bundle: Path) -> Embedder:
    """The tiny bundle on ONNX Runtime, one thread: the job tests' reference and their jobs' embedder."""
    return Embedder.load(tiny_bundle, backend="onnxruntime", threads=1)


@pytest.fixture(scope="session")
def roberta(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """A tiny random RoBERTa (byte-level BPE: a space folded into the word after it), exported as bertonnx exports
    any model, on ONNX Runtime with one thread."""
    from helpers.models import build_tiny_roberta

    from bertonnx.export import export_bundle

    folder = build_tiny_roberta(tmp_path_factory.mktemp("models") / "roberta")
    bundle = export_bundle(str(folder), tmp_path_factory.mktemp("bundles") / "roberta").path
    return Embedder.load(bundle, backend="onnxruntime", threads=1)
