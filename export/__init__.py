"""Build side: BERT-family model -> validated ONNX bundle. Needs bertonnx[export]."""

from __future__ import annotations

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised in environments without the extra
    raise ImportError(
        f"exporting needs the export extra ({error.name} is missing): pip install 'bertonnx[export]'"
    ) from error

from export.bundle import DEFAULT_MIN_COSINE, DEFAULT_OPSET, ExportResult, export_bundle
from export.convert import ExportError
from export.validate import ValidationError, ValidationReport

__all__ = [
    "DEFAULT_MIN_COSINE",
    "DEFAULT_OPSET",
    "ExportError",
    "ExportResult",
    "ValidationError",
    "ValidationReport",
    "export_bundle",
]
