"""Build side: BERT-family model -> validated ONNX bundle. Needs bertonnx[export]."""

from __future__ import annotations

from bertonnx.errors import missing_extra

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised in environments without the extra
    raise missing_extra("exporting", "export", error) from error

from bertonnx.export.bundle import DEFAULT_MIN_COSINE, DEFAULT_OPSET, ExportResult, export_bundle
from bertonnx.export.convert import ExportError
from bertonnx.export.validate import ValidationError, ValidationReport

__all__ = [
    "DEFAULT_MIN_COSINE",
    "DEFAULT_OPSET",
    "ExportError",
    "ExportResult",
    "ValidationError",
    "ValidationReport",
    "export_bundle",
]
