"""Texts far longer than the model's maximum, a group of windows at a time: memory O(group), not O(text).

`Embedder.contextual_rows` and `sentences` hold the final states of every piece
of a call at once: fine for sentences and pages, not for a megabyte line (a
1.7 MB line is ~400,000 pieces, ~600 MB of states at H=384). Here the text's
windows (bertonnx.batching.plan_windows, the same plan) run `group` at a time;
each group's words are pooled and handed out before the next group runs. The
windows are batched as they are in one call (all have the same length), so the
vectors are those of `contextual_rows` on the same text.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

from bertonnx.batching import plan_windows, run_starts
from bertonnx.options import SentencePooling, WordPooling
from bertonnx.pooling import pool_pieces
from bertonnx.results import WordRows
from bertonnx.runner import Runner
from bertonnx.tokenize import TextPieces

GROUP_WINDOWS = 32
"""Windows run at once: with 510-piece windows ~16,000 pieces of states (~25 MB at H=384); even, so that
batches of two windows pair as they do in one call."""


def word_rows_in_groups(
    runner: Runner, text: TextPieces, pooling: WordPooling = "mean", group: int = GROUP_WINDOWS
) -> Iterator[tuple[WordRows, int]]:
    """One long text's word rows, in word order, a group of windows at a time, each with the pieces done so far."""
    plan = plan_windows(text.piece_word, runner.tokenizer.window)
    lengths = plan.ends - plan.starts  # (K,)
    window_first = np.cumsum(lengths) - lengths  # (K,) row of each window's first piece in a run of all windows
    word_start = _word_starts(text.piece_word)  # (n,) first piece of each piece's word
    n, count = text.ids.size, plan.starts.size
    carry = np.zeros((0, runner.dim), dtype=np.float32)  # states of pieces [done, low) not pooled yet
    done = 0
    for first in range(0, count, group):
        last = min(count, first + group)
        sequences = [text.ids[start:end] for start, end in zip(plan.starts[first:last], plan.ends[first:last])]
        flat, _ = runner.run_sequences(sequences, None)
        low, high = np.searchsorted(plan.piece_window, [first, last])  # pieces whose window is in this group
        rows = window_first[plan.piece_window[low:high]] - window_first[first] + plan.piece_offset[low:high]
        states = np.concatenate([carry, flat[rows]])  # pieces [done, high)
        cut = n if last == count or high >= n else int(word_start[high])  # never split a word between groups
        yield _rows(runner, text, done, cut, states[: cut - done], pooling), cut
        carry, done = states[cut - done :], cut


def sentence_in_groups(
    runner: Runner, text: TextPieces, pooling: SentencePooling = "mean", group: int = GROUP_WINDOWS
) -> Iterator[tuple[NDArray[np.float32] | None, int]]:
    """One long text's sentence vector, as `sentences(long_text="window")` gives it; (None, pieces done) until the last.

    mean: the windows' mean-pooled vectors averaged, weighted by their tokens, summed
    in window order as one call sums them; cls: the first window's [CLS] state.
    """
    plan = plan_windows(text.piece_word, runner.tokenizer.window)
    count, n_special = plan.starts.size, runner.tokenizer.n_special
    total = np.zeros(runner.dim, dtype=np.float32)
    weight = np.float32(0.0)
    first_vector: NDArray[np.float32] | None = None
    for first in range(0, count, group):
        last = min(count, first + group)
        sequences = [text.ids[start:end] for start, end in zip(plan.starts[first:last], plan.ends[first:last])]
        _, vectors = runner.run_sequences(sequences, pooling, keep_pieces=False)
        if first_vector is None:
            first_vector = vectors[0].copy()
        weights = np.array([s.size + n_special for s in sequences], dtype=np.float32)
        stacked = np.concatenate([total[None], vectors * weights[:, None]])
        total = np.add.reduce(stacked, axis=0)
        weight = np.add.reduce(np.concatenate([[weight], weights]))
        if last < count:
            yield None, int(plan.ends[last - 1])
    assert first_vector is not None
    yield (first_vector if pooling == "cls" else total / weight), text.ids.size


def _word_starts(piece_word: NDArray[np.int64]) -> NDArray[np.int64]:
    starts = run_starts(piece_word)  # (W,)
    return np.repeat(starts, np.diff(np.append(starts, piece_word.size)))


def _rows(
    runner: Runner, text: TextPieces, low: int, high: int, states: NDArray[np.float32], pooling: WordPooling
) -> WordRows:
    """The words of pieces [low, high) of `text` (whole words), pooled from their states."""
    piece_word = text.piece_word[low:high]
    starts = run_starts(piece_word)  # (W,) relative to low
    words = piece_word[starts]  # (W,) their index in the text
    ends = np.append(starts[1:], high - low)
    return WordRows(
        words=tuple(text.words[int(w)] for w in words),
        vectors=pool_pieces(states, starts, pooling),
        text=np.zeros(words.size, dtype=np.int64),
        word=words.astype(np.int64),
        spans=np.stack([starts + low, ends + low], axis=1).astype(np.int64),
        unknown=runner.unknown_pieces(text.ids[low:high], starts),
        words_per_text=np.array([words.size], dtype=np.int64),
        truncated=np.zeros(1, dtype=bool),
    )
