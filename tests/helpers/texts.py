"""Inputs the tests share: hostile characters, megabyte strings, word lists and hypothesis strategies."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st

MEGABYTE = 1 << 20
SHORT_MESSAGE = 300  # characters: an error about a 1 MB string must not quote it whole

HOSTILE_ALPHABET = (
    "abcKQ .,!?'-\t\n\r\x00\x01\x07\x1b\x7f\u0085\u00a0\u2028\u200b\u200d\ufeff\u0301\u0308"
    "\u05d0\u05e9\u0627\u0644\u65e5\u672c\u3000\U0001f642\U0001f3fd\u0130\u00df\ufb01"
)
"""Scripts, controls, zero-width and combining characters, emoji, ligatures: what a tokenizer may trip on."""

VOCABULARY = "the king queen man woman apple music rule kingdom wise kind great band unable embedding , .".split()
"""Words of the tiny vocabulary for random corpora (two of several pieces, and punctuation)."""

PROPERTY = settings(max_examples=50, deadline=None, derandomize=True)
"""Few, derandomized examples (a fixed sequence per test): a run is repeatable."""
TOLERANCE = 1e-6  # float32 kernels may round differently for another batch shape; a wrong row is off by ~1
WORDS = [
    "the", "king", "queen", "Queen", "man", "woman", "apple", "music", "kingdom", "wise",  # one piece
    "unable", "embedding", "embeddings", "played", "kingly", "zq",  # several pieces
    ",", ".", "?", "🙂", "語",  # punctuation; [UNK]
]

word_lists = st.lists(st.sampled_from(WORDS), max_size=30)
texts = word_lists.map(" ".join) | word_lists.filter(bool)  # raw strings or pre-split words
