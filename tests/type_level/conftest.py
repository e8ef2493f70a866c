"""Fixtures the type-level job tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertonnx import Embedder


@pytest.fixture(scope="module")
def embedder(tiny_bundle: Path) -> Embedder:
    """The tiny bundle on ONNX Runtime, one thread: the job tests' reference and their jobs' embedder."""
    return Embedder.load(tiny_bundle, backend="onnxruntime", threads=1)
