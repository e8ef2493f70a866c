"""Grouping texts into model runs: token-budget batches and sliding windows.

Batches: padding is wasted compute, so texts are sorted by length and cut into
batches whose padded size (rows x longest row) stays under a token budget.

Windows: a text longer than the model maximum is cut into overlapping windows,
each run with its own special tokens. Every word then takes its vector from the
one window where it sits most centrally, so it sees context on both sides
instead of being cut off at a window edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


def run_starts(keys: NDArray[np.int64]) -> NDArray[np.int64]:
    """Start index of every run of equal consecutive values in `keys` (P,): each word's first piece, each
    text's first window."""
    if keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return np.concatenate(([0], change)).astype(np.int64)


def plan_batches(
    lengths: Sequence[int] | NDArray[np.integer],
    max_tokens: int,
    max_batch_size: int | None = None,
) -> list[NDArray[np.int64]]:
    """Group texts of similar length so padded batches waste few tokens.

    Texts are sorted by length (descending, stable), then cut greedily into
    batches with len(batch) * max(length in batch) <= max_tokens and
    len(batch) <= max_batch_size. A text longer than max_tokens on its own gets
    a batch of its own rather than being dropped. Batches come longest first,
    so the peak memory of a run shows up in its first batch.

    Args:
        lengths: (N,) tokens per text, special tokens included.
        max_tokens: budget of padded tokens per batch.
        max_batch_size: optional cap on texts per batch.

    Returns:
        Arrays of original text indices, one per batch; each index appears once.

    Raises:
        ValueError: max_tokens or max_batch_size below 1, or a bad length.
    """
    sizes = _as_lengths(lengths)  # (N,)
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
    n = sizes.shape[0]
    order = np.argsort(-sizes, kind="stable").astype(np.int64)  # (N,) longest first
    longest = sizes[order]  # (N,) descending: a batch's first text is its longest
    cap = n if max_batch_size is None else max_batch_size
    cuts: list[int] = []
    start = 0
    while start < n:
        length = int(longest[start])
        fit = max_tokens // length if length else n
        start += max(1, min(fit, cap, n - start))
        cuts.append(start)
    return np.split(order, cuts[:-1]) if n else []


def _as_lengths(lengths: Sequence[int] | NDArray[np.integer]) -> NDArray[np.int64]:
    """Validate token counts up front, so a float or negative length cannot skew a plan silently."""
    array = np.asarray(lengths)
    if array.ndim != 1:
        raise ValueError(f"lengths must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"lengths must be integers, got dtype {array.dtype}")
    if (array < 0).any():
        first = int(np.flatnonzero(array < 0)[0])
        raise ValueError(f"lengths must be >= 0, got {int(array[first])} at index {first}")
    return array.astype(np.int64)


@dataclass(frozen=True)
class BatchStats:
    """How much of a batching's compute goes to real tokens rather than padding."""

    n_texts: int
    n_batches: int
    real_tokens: int
    padded_tokens: int

    @property
    def padding_ratio(self) -> float:
        """Share of padded tokens that are padding; 0.0 for an empty batching."""
        if self.padded_tokens == 0:
            return 0.0
        return (self.padded_tokens - self.real_tokens) / self.padded_tokens


def batch_stats(
    lengths: Sequence[int] | NDArray[np.integer], batches: Sequence[NDArray[np.int64]]
) -> BatchStats:
    """Measure any batching (planned or naive) so the two can be compared.

    Args:
        lengths: (N,) tokens per text.
        batches: arrays of indices into `lengths`, one per batch.
    """
    sizes = _as_lengths(lengths)  # (N,)
    padded = sum(batch.size * int(sizes[batch].max()) for batch in batches if batch.size)
    members = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)  # (M,)
    return BatchStats(
        n_texts=int(members.size),
        n_batches=len(batches),
        real_tokens=int(sizes[members].sum()),
        padded_tokens=int(padded),
    )


@dataclass(frozen=True)
class WindowPlan:
    """Where to cut a long text, and which window each piece's vector comes from."""

    starts: NDArray[np.int64]  # (K,) first content piece of each window
    ends: NDArray[np.int64]  # (K,) one past the last content piece of each window
    piece_window: NDArray[np.int64]  # (n,) window each piece's vector is taken from
    piece_offset: NDArray[np.int64]  # (n,) position of the piece inside its window's content

    @property
    def flat_index(self) -> NDArray[np.int64]:
        """(n,) row of each piece in the concatenation of all windows' content rows."""
        lengths = self.ends - self.starts  # (K,)
        window_first = np.cumsum(lengths) - lengths  # (K,) first row of each window
        return window_first[self.piece_window] + self.piece_offset


def plan_windows(
    piece_word: NDArray[np.int64], window: int, stride: int | None = None
) -> WindowPlan:
    """Cut a text too long for the model into overlapping windows and pick each word's window.

    Windows hold `window` content pieces and advance by `stride` (default
    window // 2, at least 1). A window's start is snapped back to the first
    piece of the word it falls inside whenever the snapped start is still past
    the previous window's start. Windows thus begin on word boundaries where
    they can (at the price of advancing a little less than `stride`), and every
    word of at most `window` pieces lies whole inside some window. The last
    window is shifted left to end exactly at the text's end. A text of at most
    `window` pieces is one window.

    Each word takes the window that contains all of its pieces and leaves it
    the most context: the largest min(pieces before it, pieces after it) inside
    the window (earlier window on ties). Because consecutive starts are at
    most `stride` apart, a word [a, b) of L <= window pieces in a text of n
    pieces gets at least min(a, n - b, ceil((window - stride - L) / 2)) pieces
    of context on each side. A word longer than `window` fits no window; each of
    its pieces then takes the window where that piece is most central.

    Args:
        piece_word: (n,) word index of each content piece, nondecreasing.
        window: content pieces per model run (max_length minus special tokens).
        stride: advance between window starts, 1 <= stride <= window.

    Raises:
        ValueError: window < 1, stride out of range, or piece_word not a
            nondecreasing 1-D array.
    """
    words, step = _checked(piece_word, window, stride)
    n = words.shape[0]
    # A sentinel before the first and after the last piece makes both text edges word edges.
    word_starts = np.flatnonzero(np.diff(words, prepend=words[:1] - 1)).astype(np.int64)  # (W,)
    word_ends = np.flatnonzero(np.diff(words, append=words[-1:] + 1)).astype(np.int64) + 1  # (W,)
    word_sizes = word_ends - word_starts  # (W,)
    first = np.repeat(word_starts, word_sizes)  # (n,) first piece of each piece's word
    last = np.repeat(word_ends, word_sizes)  # (n,) one past the last piece of each piece's word

    starts = _window_starts(first, window, step)  # (K,)
    ends = np.minimum(starts + window, n)  # (K,)
    pieces = np.arange(n, dtype=np.int64)  # (n,)
    giant = last - first > window  # (n,) pieces of words that fit no window
    span_start = np.where(giant, pieces, first)  # (n,) what must sit centrally: the word,
    span_end = np.where(giant, pieces + 1, last)  # (n,) or the piece alone for giant words
    piece_window = _most_central(span_start, span_end, starts, ends)  # (n,)
    return WindowPlan(
        starts=starts,
        ends=ends,
        piece_window=piece_window,
        piece_offset=pieces - starts[piece_window],
    )


def _checked(piece_word: NDArray[np.int64], window: int, stride: int | None) -> tuple[NDArray[np.int64], int]:
    """plan_windows' arguments checked: the (n,) word ids as int64 and the stride."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    step = max(1, window // 2) if stride is None else stride
    if not 1 <= step <= window:
        raise ValueError(f"stride must be in [1, window={window}], got {step}")
    words = np.asarray(piece_word, dtype=np.int64)  # (n,)
    if words.ndim != 1:
        raise ValueError(f"piece_word must be one-dimensional, got shape {words.shape}")
    drops = np.flatnonzero(words[1:] < words[:-1])
    if drops.size:
        at = int(drops[0]) + 1
        raise ValueError(
            f"piece_word must be nondecreasing, got {int(words[at])} after {int(words[at - 1])} at index {at}"
        )
    return words, step


def _window_starts(first: NDArray[np.int64], window: int, stride: int) -> NDArray[np.int64]:
    """Window starts stepping by `stride`, snapped back to word starts, the last flush with the end.

    Every advance is between 1 and `stride`, so windows overlap (or touch when
    stride == window) and together cover every piece.

    Args:
        first: (n,) first piece of the word each piece belongs to.
    """
    n = first.shape[0]
    starts = [0]
    while starts[-1] + window < n:
        nominal = starts[-1] + stride  # < n, since stride <= window
        snapped = int(first[nominal])
        candidate = snapped if snapped > starts[-1] else nominal
        starts.append(min(candidate, n - window))
    return np.asarray(starts, dtype=np.int64)


def _most_central(
    span_start: NDArray[np.int64],
    span_end: NDArray[np.int64],
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
) -> NDArray[np.int64]:
    """Window maximising min(span_start - start, end - span_end) for each span, earlier on ties.

    All windows have the same length, so that margin is (length - span) / 2
    minus the distance between a window's start and the span's ideal start:
    the best window is one of the two whose starts bracket the ideal, and only
    those two are compared instead of every window.

    Args:
        span_start: (S,) first piece of each span.
        span_end: (S,) one past the last piece of each span.
        starts: (K,) window starts, increasing.
        ends: (K,) window ends.
    """
    length = ends[0] - starts[0]
    twice_ideal = span_start + span_end - length  # (S,) 2 * best start, kept integral
    above = np.searchsorted(2 * starts, twice_ideal, side="left")  # (S,) first start >= ideal
    last = starts.shape[0] - 1
    lower = np.clip(above - 1, 0, last)  # (S,)
    upper = np.clip(above, 0, last)  # (S,)
    margin_lower = np.minimum(span_start - starts[lower], ends[lower] - span_end)  # (S,)
    margin_upper = np.minimum(span_start - starts[upper], ends[upper] - span_end)  # (S,)
    return np.where(margin_lower >= margin_upper, lower, upper).astype(np.int64)


def plan_sequences(
    pieces: Sequence[Any], window: int
) -> tuple[list[NDArray[np.int64]], list[int], dict[int, tuple[int, WindowPlan]]]:
    """Each text (its `ids` and `piece_word`) as one sequence of at most `window` pieces, or, when longer, as
    its overlapping windows laid out consecutively.

    Returns:
        the sequences; the text each belongs to; for each windowed text, its first sequence and its plan.
    """
    sequences: list[NDArray[np.int64]] = []
    owner: list[int] = []
    plans: dict[int, tuple[int, WindowPlan]] = {}
    for index, text in enumerate(pieces):
        if text.ids.size <= window:
            sequences.append(text.ids)
            owner.append(index)
            continue
        plan = plan_windows(text.piece_word, window)
        plans[index] = (len(sequences), plan)
        sequences.extend(text.ids[start:end] for start, end in zip(plan.starts, plan.ends))
        owner.extend([index] * len(plan.starts))
    return sequences, owner, plans
