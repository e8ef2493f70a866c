"""Fused pooling against an obvious per-word Python reference."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.reference import slow_pool
from hypothesis import given, settings
from hypothesis import strategies as st

from bertonnx.options import WORD_POOLING_MODES
from bertonnx.pooling import (
    l2_normalize,
    pool_batch_words,
    pool_pieces,
    pool_sentences,
    run_starts,
)


@st.composite
def batch_layouts(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """A padded batch: per row [CLS] words... [SEP] padding, words of 1-4 pieces."""
    rows = draw(st.integers(1, 5))
    layouts = [draw(st.lists(st.integers(1, 4), min_size=0, max_size=6)) for _ in range(rows)]
    width = max(sum(layout) for layout in layouts) + 2
    word_ids = np.full((rows, width + draw(st.integers(0, 3))), -1, dtype=np.int64)
    for row, layout in enumerate(layouts):
        col = 1
        for word, size in enumerate(layout):
            word_ids[row, col : col + size] = word
            col += size
    hidden = np.random.default_rng(draw(st.integers(0, 2**16))).normal(size=word_ids.shape + (3,))
    return hidden.astype(np.float32), word_ids


@pytest.mark.parametrize("mode", WORD_POOLING_MODES)
@settings(max_examples=60, deadline=None)
@given(layout=batch_layouts())
def test_batch_pooling_matches_per_word_reference(mode: str, layout: tuple[np.ndarray, np.ndarray]) -> None:
    hidden, word_ids = layout
    vectors, per_row = pool_batch_words(hidden, word_ids, mode)
    groups, flat = [], hidden.reshape(-1, hidden.shape[-1])
    for row in range(word_ids.shape[0]):
        for word in range(int(word_ids[row].max()) + 1):
            groups.append(list(np.flatnonzero(word_ids[row] == word) + row * word_ids.shape[1]))
    expected = slow_pool(flat, groups, mode)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(groups), hidden.shape[-1] * (2 if mode == "first_last" else 1))
    np.testing.assert_allclose(vectors, expected.reshape(vectors.shape), rtol=1e-5, atol=1e-6)
    assert per_row.tolist() == [int(r.max()) + 1 for r in word_ids]


@pytest.mark.parametrize("mode", WORD_POOLING_MODES)
def test_single_piece_words_pass_through(mode: str) -> None:
    pieces = np.arange(12, dtype=np.float32).reshape(4, 3)
    pooled = pool_pieces(pieces, np.arange(4), mode)
    expected = np.concatenate([pieces, pieces], 1) if mode == "first_last" else pieces
    np.testing.assert_array_equal(pooled, expected)


def test_no_words_gives_empty_matrix_of_right_width() -> None:
    assert pool_pieces(np.zeros((0, 5), np.float32), np.zeros(0, np.int64), "first_last").shape == (0, 10)


def test_unknown_mode_names_the_choices() -> None:
    with pytest.raises(ValueError, match="expected one of mean, first, last, first_last, max, sum"):
        pool_pieces(np.zeros((1, 2), np.float32), np.zeros(1, np.int64), "median")


def test_run_starts_marks_every_change() -> None:
    assert run_starts(np.array([0, 0, 1, 1, 1, 5, 0])).tolist() == [0, 2, 5, 6]


def test_sentence_mean_ignores_padding_and_cls_takes_first_token() -> None:
    hidden = np.array([[[1.0, 0], [3, 0], [100, 100]], [[2, 2], [4, 4], [6, 6]]], dtype=np.float32)
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    np.testing.assert_allclose(pool_sentences(hidden, mask, "mean"), [[2, 0], [4, 4]])
    np.testing.assert_allclose(pool_sentences(hidden, mask, "cls"), [[1, 0], [2, 2]])


def test_normalize_leaves_zero_rows_zero() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0, 0]])


@pytest.mark.parametrize("mode", WORD_POOLING_MODES)
def test_pooling_through_an_index_equals_pooling_the_gathered_rows(mode: str) -> None:
    table = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)
    ids = np.array([3, 3, 7, 49, 0, 12, 12, 12, 5])
    starts = np.array([0, 2, 3, 5, 8])
    np.testing.assert_array_equal(pool_pieces(table, starts, mode, index=ids), pool_pieces(table[ids], starts, mode))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=20),
    seed=st.integers(0, 2**16),
    mode=st.sampled_from(WORD_POOLING_MODES),
)
def test_pooling_through_an_index_matches_the_slow_reference(sizes: list[int], seed: int, mode: str) -> None:
    """The static path pools table rows through `index` without gathering them first."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(50, 3)).astype(np.float32)
    ids = rng.integers(0, 50, size=sum(sizes))
    starts = np.cumsum([0, *sizes])[:-1].astype(np.int64)
    groups = [list(range(a, a + k)) for a, k in zip(starts.tolist(), sizes)]
    expected = slow_pool(table[ids], groups, mode).reshape(len(sizes), -1)
    np.testing.assert_allclose(pool_pieces(table, starts, mode, index=ids), expected, rtol=1e-6, atol=1e-7)
