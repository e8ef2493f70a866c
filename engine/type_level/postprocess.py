"""Post-processing a type-level table: centre it, or also remove its top principal directions.

Contextual vectors of the upper layers share a few dominant directions (Ethayarajh, EMNLP 2019), which
averaging over contexts keeps; "all-but-the-top" (Mu and Viswanath, ICLR 2018) removes them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from bertonnx.errors import OptionError


def parse_postprocess(spec: str | None, width: int) -> tuple[str, int] | None:
    """None | "center" | "abtt:D" -> None, ("center", 0) or ("abtt", D); a OptionError names what is wrong."""
    if spec is None or spec == "none":
        return None
    if spec == "center":
        return ("center", 0)
    name, _, value = spec.partition(":")
    if name == "abtt" and value.isdigit() and 1 <= int(value) < width:
        return ("abtt", int(value))
    raise OptionError(f"postprocess {spec!r}: expected none, center or abtt:D with 1 <= D < {width}")


def check_postprocess_rows(spec: tuple[str, int] | None, rows: int) -> None:
    """Centring one vector, or removing D directions from D + 1 or fewer, leaves nothing: refuse it up front."""
    if spec is None:
        return
    needed = 2 if spec[0] == "center" else spec[1] + 2
    if rows < needed:
        what = "center" if spec[0] == "center" else f"abtt:{spec[1]}"
        raise OptionError(f"postprocess {what} needs at least {needed} distinct words, got {rows}: it would leave "
                          "zero vectors")


def postprocess(vectors: NDArray[np.float32], spec: tuple[str, int] | None, keep: NDArray[np.bool_]) -> None:
    """Centre the rows in `keep` (in place), and for abtt remove their top D principal directions.

    Rows outside `keep` (zero vectors of unknown words) stay as they are.
    """
    if spec is None or not keep.any():
        return
    rows = vectors[keep].astype(np.float64)
    rows -= rows.mean(axis=0)
    if spec[0] == "abtt":
        _, eigvecs = np.linalg.eigh(rows.T @ rows)  # ascending eigenvalues: the top ones are last
        top = eigvecs[:, -spec[1]:]  # (H, D)
        rows -= (rows @ top) @ top.T
    vectors[keep] = rows.astype(np.float32)
