"""Pure numpy pooling: word pieces -> words, tokens -> sentences.

Everything here works on flat, contiguous runs of pieces so that a whole batch
is pooled with one `reduceat` (or one fancy index) per call, never a Python
loop per word.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from bertonnx.batching import run_starts
from bertonnx.options import SENTENCE_POOLING_MODES, WORD_POOLING_MODES, check_choice


def pooled_width(width: int, pooling: str) -> int:
    """Width of a word vector pooled by `pooling` from pieces `width` wide: first_last concatenates two."""
    return 2 * width if pooling == "first_last" else width


def pool_pieces(
    pieces: NDArray[np.floating],
    starts: NDArray[np.int64],
    mode: str = "mean",
    index: NDArray[np.int64] | None = None,
) -> NDArray[np.float32]:
    """Pool contiguous runs of piece vectors into one vector per word.

    Args:
        pieces: (P, H) piece vectors; word w owns rows starts[w]:starts[w+1].
        starts: (W,) strictly increasing, starts[0] == 0 when P > 0.
        mode: one of WORD_POOLING_MODES. first_last concatenates to (W, 2H).
        index: (P,) optional; pool pieces[index] without materialising that
            gather (the static path pools table rows straight from the table).

    Returns:
        (W, H) float32, or (W, 2H) for first_last.
    """
    check_choice(mode, WORD_POOLING_MODES)
    position = np.arange(pieces.shape[0]) if index is None else index  # (P,) row of each piece
    n_pieces, dim = position.shape[0], pieces.shape[1]
    n_words = starts.shape[0]
    if n_words == 0:
        return np.zeros((0, pooled_width(dim, mode)), dtype=np.float32)
    ends = np.append(starts[1:], n_pieces)  # (W,) one past each word's last piece
    if mode in ("first", "last", "first_last"):
        first, last = pieces[position[starts]], pieces[position[ends - 1]]  # (W, H) each
        chosen = {"first": first, "last": last}.get(mode)
        pooled = np.concatenate([first, last], axis=1) if chosen is None else chosen
        return np.ascontiguousarray(pooled, dtype=np.float32)
    # Words with the same number of pieces form one dense (n, k, H) block, reduced along k:
    # a loop over the few distinct lengths, not over words. Faster than reduceat on axis 0.
    counts = ends - starts  # (W,)
    pooled = np.empty((n_words, dim), dtype=np.float32)
    for k in np.unique(counts).tolist():
        words = np.flatnonzero(counts == k)  # (n,)
        if k == 1:
            pooled[words] = pieces[position[starts[words]]]
            continue
        block = pieces[position[starts[words][:, None] + np.arange(k)]]  # (n, k, H)
        if mode == "max":
            pooled[words] = block.max(axis=1)
        elif mode == "sum":
            pooled[words] = block.sum(axis=1, dtype=np.float32)
        else:
            pooled[words] = block.mean(axis=1, dtype=np.float32)
    return pooled


def pool_batch_words(
    hidden: NDArray[np.floating], word_ids: NDArray[np.int64], mode: str = "mean"
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Pool a padded batch of token vectors into word vectors, all rows at once.

    Args:
        hidden: (B, T, H) token vectors.
        word_ids: (B, T) word index of each token, -1 for special tokens and padding.
            The pieces of one word must be adjacent within their row.
        mode: one of WORD_POOLING_MODES.

    Returns:
        vectors: (W, H) words of row 0, then row 1, ... in order of appearance.
        words_per_row: (B,) how many of those words belong to each row.
    """
    batch, length = word_ids.shape
    rows, cols = np.nonzero(word_ids >= 0)  # (P,) each, row-major order
    key = rows.astype(np.int64) * (length + 1) + word_ids[rows, cols]  # unique per (row, word)
    starts = run_starts(key)
    vectors = pool_pieces(hidden[rows, cols], starts, mode)
    words_per_row = np.bincount(rows[starts], minlength=batch).astype(np.int64)
    return vectors, words_per_row


def pool_sentences(
    hidden: NDArray[np.floating], attention_mask: NDArray[np.integer], mode: str = "mean"
) -> NDArray[np.float32]:
    """Sentence vectors the way sentence-transformers makes them.

    mean averages every attended token, [CLS] and [SEP] included, which is
    what sentence-transformers' Pooling module does; cls takes position 0.

    Args:
        hidden: (B, T, H) token vectors.
        attention_mask: (B, T) 1 for real tokens, 0 for padding.
        mode: "mean" or "cls".
    """
    check_choice(mode, SENTENCE_POOLING_MODES)
    if mode == "cls":
        return np.ascontiguousarray(hidden[:, 0], dtype=np.float32)
    mask = attention_mask.astype(np.float32)[:, :, None]  # (B, T, 1)
    summed = (hidden * mask).sum(axis=1, dtype=np.float32)  # (B, H)
    counts = np.maximum(mask.sum(axis=1), 1e-9)  # (B, 1)
    return summed / counts


def l2_normalize(vectors: NDArray[np.floating]) -> NDArray[np.float32]:
    """Scale rows to unit length; all-zero rows stay zero instead of becoming NaN."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def cosine_rows(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """Row-wise cosine similarity of two (N, H) arrays, computed in float64."""
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    dot = (a64 * b64).sum(axis=-1)
    norm = np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1)
    return dot / np.maximum(norm, 1e-300)


def fold_windows(
    seq_sentence: NDArray[np.float32],
    seq_tokens: NDArray[np.int64],
    owner: NDArray[np.int64],
    n_texts: int,
    pooling: str | None,
) -> NDArray[np.float32]:
    """Sentence vectors of windows (S, H) folded back into one per text (N, H): cls takes a text's first window,
    mean averages its windows weighted by their tokens; None pools nothing (zeros)."""
    if pooling is None:
        return np.zeros((n_texts, seq_sentence.shape[1]), dtype=np.float32)
    starts = run_starts(owner)
    if starts.size == owner.size:
        return seq_sentence
    if pooling == "cls":
        return seq_sentence[starts]
    weights = seq_tokens.astype(np.float32)[:, None]
    summed = np.add.reduceat(seq_sentence * weights, starts, axis=0)
    return summed / np.add.reduceat(weights, starts, axis=0)
