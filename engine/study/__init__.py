"""The seed article's study: static vs contextual (and type-level) vectors of the same words, side by side.

compute.py  the computation: panels of vectors, pairwise matrices, analogies (numpy only)
files.py    contexts read from JSON or YAML; study.json and the heatmaps written
plots.py    the heatmaps (matplotlib, imported only when they are drawn)
"""

from __future__ import annotations

from bertonnx.study.compute import (
    DEFAULT_CONTEXTS,
    METRICS,
    STATIC,
    TYPE_LEVEL,
    StudyResult,
    check_contexts,
    match_word,
    run_study,
)
from bertonnx.study.files import load_contexts, write_outputs

__all__ = [
    "DEFAULT_CONTEXTS", "METRICS", "STATIC", "TYPE_LEVEL", "StudyResult", "check_contexts", "load_contexts",
    "match_word", "run_study", "write_outputs",
]
