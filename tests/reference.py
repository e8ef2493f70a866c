"""Obvious, slow reference implementations the fast paths are tested against."""

from __future__ import annotations

import numpy as np


def pool_block(block: np.ndarray, mode: str) -> np.ndarray:
    """One word's (k, H) piece vectors -> its vector, the plain way."""
    if mode == "first_last":
        return np.concatenate([block[0], block[-1]])
    return {
        "mean": lambda b: b.mean(0),
        "sum": lambda b: b.sum(0),
        "max": lambda b: b.max(0),
        "first": lambda b: b[0],
        "last": lambda b: b[-1],
    }[mode](block)
