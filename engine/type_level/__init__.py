"""Type-level word vectors: the computation (vectors), the bulk job with checkpoints (job), and Ray (distributed).

Only the computation's names are re-exported here, so that importing the package stays as light as it is.
"""

from __future__ import annotations

from bertonnx.type_level.vectors import DEFAULT_MAX_CONTEXTS, DEFAULT_TEMPLATES, METHODS, TypeVectors

__all__ = ["DEFAULT_MAX_CONTEXTS", "DEFAULT_TEMPLATES", "METHODS", "TypeVectors"]
