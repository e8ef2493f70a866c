"""Words' character spans in the text they came from, where the tokenizer's offsets fall short of them."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from bertonnx.batching import run_starts

WHITESPACE = np.array(
    [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000],
    dtype=np.uint32,
)
"""Unicode White_Space, which the pre-tokenizers split on (Python's isspace adds U+001C..U+001F, which BERT deletes)."""

def word_char_spans(text: str, offsets: NDArray[np.int64], piece_word: NDArray[np.int64]) -> NDArray[np.int64]:
    """(W, 2) each word's [start, end) characters in `text`, from first character to last.

    A tokenizer's offsets cover only the characters that survive its normaliser,
    so a zero-width, control or combining character at a word's edge falls
    outside them ("abc\u200b " -> "abc"). Each word is widened over such
    characters up to the next whitespace or word (first the end, then the start),
    so every non-whitespace character next to a word belongs to it. A word whose
    offsets were trimmed to nothing (byte-level BPE's lone "Ġ" between two spaces)
    gets back the whitespace it was made of.

    Args:
        text: the string that was tokenized.
        offsets: (n, 2) character offsets of its pieces.
        piece_word: (n,) word id of each piece, nondecreasing.
    """
    first = run_starts(piece_word)  # (W,)
    start = np.minimum.reduceat(offsets[:, 0], first)  # (W,)
    end = np.maximum.reduceat(offsets[:, 1], first)  # (W,)
    if text.isascii() and text.isprintable() and bool((start < end).all()):
        return np.stack([start, end], axis=1)  # no character was normalised away: the offsets are the words
    size = len(text)
    space = np.isin(np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32), WHITESPACE)
    spaces = np.append(np.flatnonzero(space), size)  # (S+1,) with a sentinel at the end
    next_start = np.append(start[1:], size)
    end = np.maximum(end, np.minimum(spaces[np.searchsorted(spaces, end)], next_start))
    before = np.searchsorted(spaces, start) - 1  # the last whitespace before each start, -1 if none
    after_space = np.where(before >= 0, spaces[np.maximum(before, 0)] + 1, 0)
    previous_end = np.concatenate(([0], end[:-1]))
    start = np.minimum(start, np.maximum(after_space, previous_end))
    for word in np.flatnonzero(start == end).tolist():
        start[word], end[word] = _whitespace_around(
            space, int(start[word]), int(previous_end[word]), int(next_start[word])
        )
    return np.stack([start, end], axis=1)


def _whitespace_around(space: NDArray[np.bool_], at: int, low: int, high: int) -> tuple[int, int]:
    """The whitespace run at `at`, within [low, high): backwards first, as the trimmed-away space came first."""
    start = at
    while start > low and space[start - 1]:
        start -= 1
    end = at
    if start == at:
        while end < high and space[end]:
            end += 1
    return start, end
