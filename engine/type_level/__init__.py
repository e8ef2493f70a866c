"""Type-level word vectors: the computation (vectors), finding words (matching), cutting their contexts (contexts),
the bulk job with checkpoints (job), and Ray (distributed).

Only the computation's names are re-exported here, so that importing the package stays as light as it is.
"""

from __future__ import annotations

from bertonnx.type_level.contexts import CONTEXTS, DEFAULT_CONTEXT
from bertonnx.type_level.vectors import (
    DEFAULT_MAX_CONTEXTS,
    DEFAULT_PRIOR,
    DEFAULT_TEMPLATES,
    METHODS,
    TypeLevelOptions,
    TypeVectors,
)

__all__ = ["CONTEXTS", "DEFAULT_CONTEXT", "DEFAULT_MAX_CONTEXTS", "DEFAULT_PRIOR", "DEFAULT_TEMPLATES", "METHODS",
           "TypeLevelOptions", "TypeVectors"]
