"""bertonnx runtime: static and contextual BERT embeddings from an ONNX bundle.

Needs only numpy, tokenizers and onnxruntime; never torch or transformers.
"""

from __future__ import annotations

from engine.bundle import Bundle, BundleError, load_bundle
from engine.embedder import Embedder, TextTooLongError, UnknownWordError, WordVectors
from engine.session import ProviderError
from engine.tokenize import EmptyWordError

__all__ = [
    "Bundle",
    "BundleError",
    "Embedder",
    "EmptyWordError",
    "ProviderError",
    "TextTooLongError",
    "UnknownWordError",
    "WordVectors",
    "load_bundle",
]
