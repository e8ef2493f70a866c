"""The study's heatmaps: one panel per kind of vector, a colour scale a metric shares, laid out in even rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bertonnx.errors import missing_extra
from bertonnx.study.compute import StudyResult


def grid_shape(panels: int, widest: int = 3) -> tuple[int, int]:
    """(rows, columns) for `panels` heatmaps: as few rows as `widest` columns allow, then the columns they need,
    so rows are as even as they can be (4 panels: 2 + 2, not 3 + 1)."""
    rows = -(-panels // widest)
    return rows, -(-panels // rows)


def plot_heatmaps(result: StudyResult, metric: str, path: Path, dpi: int = 110) -> Path:
    """One figure, one annotated heatmap per kind.

    Cosine panels share one colour scale, so a colour means the same number in
    every panel. Euclidean panels get one scale each: static vectors are an
    order of magnitude shorter than contextual ones, and a shared scale would
    paint the static panel one flat colour. Every cell prints its value.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise missing_extra("drawing heatmaps", "compare", error) from error

    n_words, n_panels = len(result.words), len(result.panels)
    grid_rows, columns = grid_shape(n_panels)
    side = max(3.2, 0.62 * n_words + 1.3)  # inches per panel: room for labels and a readable value per cell
    matrices = np.stack([panel.matrix(metric) for panel in result.panels])  # (K + 1, W, W)
    low, high = color_range(matrices, metric)  # (K + 1,) each
    shared = metric == "cosine"
    cmap = plt.get_cmap("viridis" if metric == "cosine" else "magma_r")
    tilt = n_words > 6 or max(len(word) for word in result.words) > 8
    figure, axes = plt.subplots(
        grid_rows, columns, figsize=(side * columns + 0.8, side * grid_rows + 1.0), squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    image = None
    for ax, panel, matrix, vmin, vmax in zip(axes.flat, result.panels, matrices, low, high):
        image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(panel.kind, fontsize=12)
        ax.set_xticks(range(n_words), result.words, rotation=40 if tilt else 0, ha="right" if tilt else "center")
        ax.set_yticks(range(n_words), result.words)
        ax.tick_params(length=0, labelsize=10)
        shade = np.clip((matrix - vmin) / max(vmax - vmin, 1e-12), 0, 1)  # (W, W) position on the colour map
        for (i, j), value in np.ndenumerate(matrix):
            red, green, blue, _ = cmap(shade[i, j])
            ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
            ax.text(j, i, _cell(value, metric), ha="center", va="center", fontsize=9, color=ink)
        if not shared:
            figure.colorbar(image, ax=ax, shrink=0.8)
    if shared and image is not None:
        figure.colorbar(image, ax=list(axes.flat[:n_panels]), shrink=0.8, label=metric)
    scale = (f"one colour scale, {low[0]:g} to {high[0]:g}" if shared else "colour scale per panel, from 0")
    runtime = result.runtime
    ran = f"{runtime.get('backend', '?')} {runtime.get('precision', '?')}" if runtime else "runtime not recorded"
    figure.suptitle(
        f"{metric} between word vectors · {result.model}\n{result.pooling} pooling · {ran} · {scale}", fontsize=11
    )
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def color_range(matrices: NDArray[np.float64], metric: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Fixed, documented colour ranges, so that a colour means the same number wherever it is seen.

    cosine: 0 to 1 for every panel, or -1 to 1 when any value is negative.
    euclidean: 0 to the panel's largest distance, per panel (static vectors are an order of
    magnitude shorter than contextual ones: one scale would paint the static panel one colour).
    """
    panels = matrices.shape[0]
    if metric == "cosine":
        low = -1.0 if (matrices < 0).any() else 0.0
        return np.full(panels, low), np.ones(panels)
    return np.zeros(panels), np.maximum(matrices.reshape(panels, -1).max(axis=1), 1e-12)


def _cell(value: float, metric: str) -> str:
    return f"{value:.2f}" if metric == "cosine" or abs(value) < 10 else f"{value:.1f}"
