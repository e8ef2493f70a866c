"""Obvious, slow reference implementations the fast paths are tested against."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bertonnx import Embedder
from bertonnx.batching import WindowPlan


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


def slow_pool(pieces: np.ndarray, groups: list[list[int]], mode: str) -> np.ndarray:
    """Each group of piece rows pooled with `pool_block`: (len(groups), H) or (len(groups), 2H)."""
    return np.array([pool_block(pieces[rows], mode) for rows in groups], dtype=np.float32)


def reference_words(model, folder: Path, text: str, mode: str = "mean") -> tuple[list[str], np.ndarray]:
    """transformers on its own: fast tokenizer word ids, last_hidden_state, a Python loop per word."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoding = tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
    offsets = encoding.pop("offset_mapping")[0].tolist()
    with torch.inference_mode():
        hidden = model(**encoding).last_hidden_state[0].numpy()
    word_ids = encoding.word_ids(0)
    words, vectors = [], []
    for word in sorted({w for w in word_ids if w is not None}):
        positions = [i for i, w in enumerate(word_ids) if w == word]
        block = hidden[positions]
        words.append(text[offsets[positions[0]][0] : offsets[positions[-1]][1]])
        vectors.append(pool_block(block, mode))
    return words, np.array(vectors)


def restore_order(batches: Sequence[NDArray[np.int64]]) -> NDArray[np.int64]:
    """Permutation that puts per-batch results back in the caller's order.

    If `results` is the concatenation of the batches' outputs (batch 0's rows,
    then batch 1's, ...), then `results[restore_order(batches)]` has row i for
    text i. It is np.argsort(np.concatenate(batches)): the position, in the
    concatenation, of each original index.
    """
    if not batches:
        return np.zeros(0, dtype=np.int64)
    return np.argsort(np.concatenate(batches), kind="stable").astype(np.int64)


def stitch(window_hidden: Sequence[NDArray[np.float32]], plan: WindowPlan) -> NDArray[np.float32]:
    """Reassemble one text's piece vectors from its windows' outputs with one gather.

    Args:
        window_hidden: K arrays; window k's is (ends[k] - starts[k], H), the
            hidden states of its content pieces with special tokens removed.
        plan: the plan the windows were cut with.

    Returns:
        (n, H) float32: row i is piece i's vector from its assigned window.

    Raises:
        ValueError: the number or row counts of the arrays do not match the plan.
    """
    n_windows = plan.starts.shape[0]
    if len(window_hidden) != n_windows:
        raise ValueError(f"expected {n_windows} window outputs, got {len(window_hidden)}")
    for k, (hidden, rows) in enumerate(zip(window_hidden, (plan.ends - plan.starts).tolist())):
        if hidden.ndim != 2 or hidden.shape[0] != rows:
            raise ValueError(f"window {k}: expected shape ({rows}, H), got {hidden.shape}")
    flat = np.concatenate(window_hidden, axis=0)  # (sum of window lengths, H)
    return flat[plan.flat_index].astype(np.float32, copy=False)


def context_bound(first: int, end: int, n: int, window: int, stride: int) -> int:
    """Context a fitting word [first, end) is guaranteed on both sides of its window.

    Window starts are at most `stride` apart, so one lies within stride / 2 of
    the word's ideal (centred) start, unless the text edge is closer: then the
    edge itself limits the context.
    """
    size = end - first
    return min(first, n - end, (window - stride - size + 1) // 2)  # last term: ceil((w - s - L) / 2)


def run_alone(embedder: Embedder, ids: NDArray[np.int64]) -> NDArray[np.float32]:
    """(T, H) final states of `ids` run as one sequence on its own, special tokens included."""
    encoded = embedder.tokenizer.pack([ids])
    return embedder.backend.run("last_hidden_state", encoded.feeds(embedder.backend.info.inputs))[0]
