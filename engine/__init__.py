"""bertonnx: static and contextual BERT embeddings from an ONNX bundle.

`Embedder` is the runtime's one entry point; `bertonnx.export` builds bundles
(it needs the export extra). The runtime needs only numpy, tokenizers and one
backend (onnxruntime, or openvino); never torch or transformers.
"""

from __future__ import annotations

from bertonnx.bundle import Bundle, load_bundle
from bertonnx.embedder import Embedder, WordVectors
from bertonnx.errors import (
    BackendError,
    BertonnxError,
    BundleError,
    EmptyWordError,
    InputError,
    OptionError,
    ProviderError,
    TextTooLongError,
    UnknownWordError,
)
from bertonnx.options import LoadOptions

__all__ = [
    "BackendError",
    "BertonnxError",
    "Bundle",
    "BundleError",
    "Embedder",
    "EmptyWordError",
    "InputError",
    "LoadOptions",
    "OptionError",
    "ProviderError",
    "TextTooLongError",
    "UnknownWordError",
    "WordVectors",
    "load_bundle",
]
