"""Token-budget batching and sliding windows, as the runtime uses them."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.reference import context_bound, restore_order, stitch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from bertonnx.batching import (
    BatchStats,
    WindowPlan,
    batch_stats,
    plan_batches,
    plan_windows,
)

# ---------------------------------------------------------------- batches


def padded_cost(lengths: NDArray[np.int64], batch: NDArray[np.int64]) -> int:
    return int(batch.size * lengths[batch].max())


def test_batches_group_similar_lengths_under_the_budget() -> None:
    lengths = [5, 100, 3, 50, 50, 7]
    batches = plan_batches(lengths, max_tokens=120, max_batch_size=3)
    assert [b.tolist() for b in batches] == [[1], [3, 4], [5, 0, 2]]


lengths_strategy = st.lists(st.integers(min_value=0, max_value=600), max_size=200)


@settings(max_examples=200, deadline=None)
@given(
    lengths=lengths_strategy,
    max_tokens=st.integers(min_value=1, max_value=4096),
    max_batch_size=st.none() | st.integers(min_value=1, max_value=64),
)
def test_every_text_lands_in_exactly_one_batch_within_budget(
    lengths: list[int], max_tokens: int, max_batch_size: int | None
) -> None:
    sizes = np.asarray(lengths, dtype=np.int64)
    batches = plan_batches(sizes, max_tokens, max_batch_size)

    everything = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    assert sorted(everything.tolist()) == list(range(len(lengths)))
    for batch in batches:
        assert batch.dtype == np.int64
        assert batch.size >= 1
        if max_batch_size is not None:
            assert batch.size <= max_batch_size
        over_budget_alone = batch.size == 1 and sizes[batch[0]] > max_tokens
        assert padded_cost(sizes, batch) <= max_tokens or over_budget_alone
    # Sorted longest first, stable among equal lengths: the concatenation is a stable sort.
    assert everything.tolist() == np.argsort(-sizes, kind="stable").tolist()


def test_a_text_over_the_budget_gets_its_own_batch() -> None:
    batches = plan_batches([10, 999, 10], max_tokens=100)
    assert [b.tolist() for b in batches] == [[1], [0, 2]]


def test_sorting_wastes_less_padding_than_fixed_batches_in_input_order() -> None:
    rng = np.random.default_rng(7)
    short = rng.integers(8, 40, size=700)  # tweets and titles
    long = rng.integers(200, 512, size=300)  # paragraphs
    lengths = rng.permutation(np.concatenate([short, long]))

    naive = np.split(np.arange(lengths.size), np.arange(32, lengths.size, 32))  # 32 at a time
    planned = plan_batches(lengths, max_tokens=32 * 512, max_batch_size=32)
    naive_stats, planned_stats = batch_stats(lengths, naive), batch_stats(lengths, planned)

    assert naive_stats.real_tokens == planned_stats.real_tokens == int(lengths.sum())
    assert naive_stats.padding_ratio > 0.4
    assert planned_stats.padding_ratio < 0.1
    assert planned_stats.padded_tokens < naive_stats.padded_tokens


def test_batch_stats_counts_padding() -> None:
    stats = batch_stats([4, 2, 3], [np.array([0, 1]), np.array([2])])
    assert stats == BatchStats(n_texts=3, n_batches=2, real_tokens=9, padded_tokens=11)
    assert stats.padding_ratio == pytest.approx(2 / 11)
    assert batch_stats([], []).padding_ratio == 0.0


@given(lengths=lengths_strategy, max_tokens=st.integers(min_value=1, max_value=2048))
def test_restore_order_puts_batch_results_back_in_input_order(lengths: list[int], max_tokens: int) -> None:
    batches = plan_batches(lengths, max_tokens)
    # A "model" whose output for a text is its own index, run batch by batch.
    results = np.concatenate([batch * 10 for batch in batches]) if batches else np.zeros(0, np.int64)
    assert (results[restore_order(batches)] == np.arange(len(lengths)) * 10).all()


@pytest.mark.parametrize(
    ("lengths", "max_tokens", "max_batch_size", "message"),
    [
        ([1, 2], 0, None, "max_tokens must be >= 1, got 0"),
        ([1, 2], 10, 0, "max_batch_size must be >= 1 or None, got 0"),
        ([1, -2], 10, None, "lengths must be >= 0, got -2 at index 1"),
        ([1.5, 2.0], 10, None, "lengths must be integers, got dtype float64"),
        ([[1, 2]], 10, None, r"lengths must be one-dimensional, got shape \(1, 2\)"),
    ],
)
def test_plan_batches_rejects_bad_arguments(
    lengths: list[object], max_tokens: int, max_batch_size: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan_batches(lengths, max_tokens, max_batch_size)  # type: ignore[arg-type]


# ---------------------------------------------------------------- windows


def words_of(sizes: list[int]) -> NDArray[np.int64]:
    """piece_word for words of the given piece counts."""
    return np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)


def word_spans(piece_word: NDArray[np.int64]) -> list[tuple[int, int]]:
    """[first piece, one past last piece) of every word, the slow obvious way."""
    spans: dict[int, list[int]] = {}
    for piece, word in enumerate(piece_word.tolist()):
        spans.setdefault(word, []).append(piece)
    return [(pieces[0], pieces[-1] + 1) for pieces in spans.values()]


def check_plan_invariants(plan: WindowPlan, n: int, window: int, stride: int) -> None:
    """What every plan promises, whatever the layout of words."""
    starts, ends = plan.starts, plan.ends
    assert starts[0] == 0 and ends[-1] == n
    assert (ends - starts <= window).all()
    assert (np.diff(starts) >= 1).all() and (np.diff(starts) <= stride).all()
    if starts.size > 1:
        assert (ends - starts == window).all()  # only a lone window is short
    pieces = np.arange(n)
    assert (starts[plan.piece_window] <= pieces).all() and (pieces < ends[plan.piece_window]).all()
    assert (plan.piece_offset == pieces - starts[plan.piece_window]).all()


def test_a_short_text_is_one_window() -> None:
    plan = plan_windows(words_of([1, 3, 1, 2]), window=510)
    assert plan.starts.tolist() == [0] and plan.ends.tolist() == [7]
    assert plan.piece_window.tolist() == [0] * 7
    assert plan.piece_offset.tolist() == list(range(7))


def test_a_text_four_times_the_window_is_cut_into_overlapping_windows() -> None:
    sizes = [1, 2, 1, 1, 3, 1, 2, 1] * 4  # 12 pieces per repeat, 48 in all
    piece_word = words_of(sizes)
    plan = plan_windows(piece_word, window=12)  # stride 6

    n = piece_word.size
    assert n == 4 * 12
    check_plan_invariants(plan, n, window=12, stride=6)
    assert (plan.ends[:-1] > plan.starts[1:]).all()  # consecutive windows overlap
    assert plan.ends[-1] == n
    # Windows start on word boundaries, except the last, which is flush with the end.
    word_starts = {first for first, _ in word_spans(piece_word)}
    assert set(plan.starts[:-1].tolist()) <= word_starts
    for first, end in word_spans(piece_word):
        k = plan.piece_window[first]
        assert (plan.piece_window[first:end] == k).all()
        assert plan.starts[k] <= first and end <= plan.ends[k]


def test_window_starts_snap_back_to_the_start_of_the_word_they_fall_in() -> None:
    # Words of 3 pieces: nominal starts 0, 5, 10, ... fall mid-word and snap to 3, then 3 + 5 = 8 -> 6, ...
    plan = plan_windows(words_of([3] * 10), window=10, stride=5)
    assert plan.starts.tolist() == [0, 3, 6, 9, 12, 15, 18, 20]
    assert plan.ends.tolist() == [10, 13, 16, 19, 22, 25, 28, 30]


def test_snapping_never_stalls_on_a_word_longer_than_the_stride() -> None:
    # Piece 4 falls inside the 7-piece word that starts at 0: snapping would not advance, so start at 4.
    plan = plan_windows(words_of([7, 1, 1, 1, 1, 1, 1, 1, 1]), window=8, stride=4)
    assert plan.starts.tolist() == [0, 4, 7]


def test_each_word_takes_the_window_where_it_is_most_central() -> None:
    plan = plan_windows(words_of([1] * 20), window=8, stride=4)
    assert plan.starts.tolist() == [0, 4, 8, 12]
    # Piece 6 has min(6 left, 1 right) = 1 of context in window 0 and min(2, 5) = 2 in window 1.
    assert plan.piece_window.tolist() == [0] * 6 + [1] * 4 + [2] * 4 + [3] * 6


def test_a_word_longer_than_the_window_falls_back_to_per_piece_windows() -> None:
    piece_word = words_of([2, 1, 30, 1, 2])  # the 30-piece word cannot fit a 12-piece window
    plan = plan_windows(piece_word, window=12)
    check_plan_invariants(plan, piece_word.size, window=12, stride=6)
    giant = plan.piece_window[3:33]
    assert np.unique(giant).size > 1  # spread across windows, each piece covered by its own
    for piece in range(3, 33):
        k = plan.piece_window[piece]
        margin = min(piece - plan.starts[k], plan.ends[k] - 1 - piece)
        best = max(min(piece - s, e - 1 - piece) for s, e in zip(plan.starts, plan.ends))
        assert margin == best
    assert (plan.piece_window[:2] == plan.piece_window[0]).all()  # small words still share


layouts = st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=80)


@settings(max_examples=300, deadline=None)
@given(
    sizes=layouts,
    window=st.integers(min_value=1, max_value=40),
    stride_fraction=st.none() | st.floats(min_value=0.0, max_value=1.0),
)
def test_window_plans_cover_every_piece_and_centre_every_word(
    sizes: list[int], window: int, stride_fraction: float | None
) -> None:
    piece_word = words_of(sizes)
    n = piece_word.size
    stride = None if stride_fraction is None else max(1, round(stride_fraction * window))
    plan = plan_windows(piece_word, window, stride)
    used_stride = max(1, window // 2) if stride is None else stride

    check_plan_invariants(plan, n, window, used_stride)
    for first, end in word_spans(piece_word):
        k = int(plan.piece_window[first])
        if end - first > window:
            continue
        # Fits -> whole inside one window, the one where it is most central (earliest on ties).
        assert (plan.piece_window[first:end] == k).all()
        margins = [min(first - s, e - end) for s, e in zip(plan.starts.tolist(), plan.ends.tolist())]
        assert k == int(np.argmax(margins))
        assert margins[k] >= context_bound(first, end, n, window, used_stride)


def test_every_piece_of_a_long_document_sees_a_quarter_window_of_context() -> None:
    # BERT-sized: 510 content pieces, default 50 % overlap, single-piece words.
    n, window = 5000, 510
    plan = plan_windows(np.arange(n, dtype=np.int64), window)
    pieces = np.arange(n)
    left = pieces - plan.starts[plan.piece_window]
    right = plan.ends[plan.piece_window] - 1 - pieces
    context = np.minimum(left, right)
    expected = np.minimum(np.minimum(pieces, n - 1 - pieces), 127)  # ceil((510 - 255 - 1) / 2)
    assert (context >= expected).all()


@pytest.mark.parametrize(
    ("piece_word", "window", "stride", "message"),
    [
        ([0, 1], 0, None, "window must be >= 1, got 0"),
        ([0, 1], 4, 0, r"stride must be in \[1, window=4\], got 0"),
        ([0, 1], 4, 5, r"stride must be in \[1, window=4\], got 5"),
        ([0, 1, 1, 0], 4, None, "piece_word must be nondecreasing, got 0 after 1 at index 3"),
        ([[0, 1]], 4, None, r"piece_word must be one-dimensional, got shape \(1, 2\)"),
    ],
)
def test_plan_windows_rejects_bad_arguments(
    piece_word: list[object], window: int, stride: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan_windows(np.asarray(piece_word), window, stride)


# ---------------------------------------------------------------- stitching


def fake_model(plan: WindowPlan, hidden_size: int, seed: int) -> list[NDArray[np.float32]]:
    """Per-window outputs that differ between windows even for the same piece."""
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal((int(e - s), hidden_size)).astype(np.float32)
        for s, e in zip(plan.starts, plan.ends)
    ]


def stitch_reference(window_hidden: list[NDArray[np.float32]], plan: WindowPlan) -> NDArray[np.float32]:
    rows = []
    for piece in range(plan.piece_window.size):
        k = int(plan.piece_window[piece])
        rows.append(window_hidden[k][piece - int(plan.starts[k])])
    return np.stack(rows) if rows else np.zeros((0, window_hidden[0].shape[1]), dtype=np.float32)


@settings(max_examples=100, deadline=None)
@given(sizes=layouts, window=st.integers(min_value=1, max_value=30), seed=st.integers(0, 2**32 - 1))
def test_stitch_matches_a_per_piece_loop(sizes: list[int], window: int, seed: int) -> None:
    plan = plan_windows(words_of(sizes), window)
    window_hidden = fake_model(plan, hidden_size=4, seed=seed)
    stitched = stitch(window_hidden, plan)
    assert stitched.dtype == np.float32
    np.testing.assert_array_equal(stitched, stitch_reference(window_hidden, plan))


def test_stitch_takes_each_piece_from_its_own_window() -> None:
    piece_word = words_of([1, 2, 1, 3, 1, 1, 2, 1, 1, 2, 1] * 3)
    plan = plan_windows(piece_word, window=10)
    # Row j of window k records (global piece, window): the stitched rows show where each came from.
    window_hidden = [
        np.stack([np.arange(s, e), np.full(e - s, k)], axis=1).astype(np.float32)
        for k, (s, e) in enumerate(zip(plan.starts.tolist(), plan.ends.tolist()))
    ]
    stitched = stitch(window_hidden, plan)
    assert stitched.shape == (piece_word.size, 2)
    assert stitched[:, 0].tolist() == list(range(piece_word.size))
    assert stitched[:, 1].tolist() == plan.piece_window.tolist()


def test_stitch_rejects_outputs_that_do_not_match_the_plan() -> None:
    plan = plan_windows(words_of([1] * 20), window=8, stride=4)
    window_hidden = fake_model(plan, hidden_size=3, seed=0)
    with pytest.raises(ValueError, match="expected 4 window outputs, got 3"):
        stitch(window_hidden[:3], plan)
    with pytest.raises(ValueError, match=r"window 1: expected shape \(8, H\), got \(7, 3\)"):
        stitch([window_hidden[0], window_hidden[1][:7], *window_hidden[2:]], plan)
