"""Finding vocabulary words in tokenized text: entries split as the model splits them, matched by their pieces.

A vocabulary entry is one word as the static path takes it (no whitespace
inside). The tokenizer's pre-tokenizer may still split it ("U.S." -> U . S .):
such an entry is matched as that run of words. An entry and a corpus word are
the same word when they give the same word pieces ("Apple" and "apple" for an
uncased model, not for a cased one).

A word's pieces can depend on where it stands. Byte-level BPE (RoBERTa, GPT-2)
folds a preceding space into the word ("apple" at a line's start or after "(",
"Ġapple" after a space), WordPiece does not. So each entry is split in the
positions a word takes in running text (POSITIONS: alone, after a space, after
an opening bracket) and every distinct split is one of its *forms*; the corpus
matches any form. The tokenizer decides how many forms there are: one for
WordPiece, two for byte-level BPE, without a rule for any marker such as "Ġ".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bertonnx.errors import EmptyWordError, InputError
from bertonnx.tokenize import TextPieces, Tokenizer, preview

POSITIONS: tuple[tuple[str, str], ...] = (("x", " "), ("(", ""))
"""(what stands before the entry, what separates them), besides nothing, when its forms are read off the
tokenizer: a word and a space (the usual place of a word in text), an opening bracket glued to it. A form counts
only when the probe splits as the prefix alone followed by the entry's own number of words."""


@dataclass(frozen=True)
class Vocabulary:
    """Vocabulary entries as the model splits them; entries the model cannot tell apart share one slot."""

    words: tuple[str, ...]
    slot: NDArray[np.int64]  # (N,) each entry's slot; equal slots <=> equal word pieces alone
    keys: tuple[bytes, ...]  # (U,) a slot's pieces and word lengths alone, as corpus runs are keyed
    n_words: NDArray[np.int64]  # (U,) pre-tokenizer words a slot spans
    unknown: NDArray[np.bool_]  # (U,)
    forms: tuple[bytes, ...]  # (F,) every distinct key a slot takes in running text (its alone key first)
    form_slot: NDArray[np.int64]  # (F,) the slot of each form
    form_first: tuple[bytes, ...]  # (F,) a form's first word's pieces: the corpus scan's first test
    form_words: NDArray[np.int64]  # (F,) pre-tokenizer words a form spans

    @classmethod
    def of(cls, tokenizer: Tokenizer, words: Sequence[str], name: Callable[[int], str] = "word {}".format
           ) -> Vocabulary:
        """Split every entry as the corpus will be split, in each of POSITIONS.

        Args:
            name: how an error names entry i ("word 3"; the CLI says "vocab.txt: line 4").

        Raises:
            InputError: an entry holds whitespace (several words), repeats an earlier one, or is not text.
            EmptyWordError: an entry gives no word pieces.
        """
        words = _checked(words, name)
        pieces = tokenizer.split(list(words))
        slot_of: dict[bytes, int] = {}
        slot = np.empty(len(words), dtype=np.int64)
        keys: list[bytes] = []
        n_words: list[int] = []
        unknown: list[bool] = []
        for index, text in enumerate(pieces):
            if text.ids.size == 0:
                raise EmptyWordError(
                    f"{name(index)} ({preview(words[index])}) has no word pieces: it is empty or blank"
                )
            key = run_key(text.ids, text.piece_word)
            if key not in slot_of:
                slot_of[key] = len(keys)
                keys.append(key)
                n_words.append(int(text.piece_word[-1]) + 1)
                unknown.append(bool((text.ids == tokenizer.unk_id).any()))
            slot[index] = slot_of[key]
        forms: dict[bytes, tuple[int, bytes, int]] = {}  # key -> (slot, first word's pieces, words)
        for index, text in enumerate(pieces):
            forms.setdefault(keys[slot[index]], (int(slot[index]), _first_word(text), n_words[slot[index]]))
        for prefix, separator in POSITIONS:
            alone = tokenizer.split([prefix])[0]
            probes = tokenizer.split([prefix + separator + word for word in words])
            for index, probe in enumerate(probes):
                form = _after(probe, alone, n_words[slot[index]])
                if form is not None:
                    forms.setdefault(run_key(form.ids, form.piece_word),
                                     (int(slot[index]), _first_word(form), n_words[slot[index]]))
        return cls(words, slot, tuple(keys), np.array(n_words, dtype=np.int64), np.array(unknown, dtype=bool),
                   tuple(forms), np.array([f[0] for f in forms.values()], dtype=np.int64),
                   tuple(f[1] for f in forms.values()), np.array([f[2] for f in forms.values()], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.keys)


def _checked(words: Sequence[str], name: Callable[[int], str]) -> tuple[str, ...]:
    if isinstance(words, str):
        raise TypeError("type_vectors() takes a list of words, not one string")
    words = tuple(words)
    seen: dict[str, int] = {}
    for index, word in enumerate(words):
        if not isinstance(word, str):
            raise InputError(f"{name(index)} is {type(word).__name__}; expected str")
        if len(word.split()) > 1:
            raise InputError(
                f"{name(index)} ({preview(word.strip())}) holds {len(word.split())} words; type-level vectors "
                "are one word each, as static vectors are"
            )
        if word in seen:  # a table keyed by words cannot hold one twice (gensim loads a broken one)
            raise InputError(f"{name(index)} ({preview(word)}) repeats {name(seen[word])}; give each word once")
        seen[word] = index
    return words


def _first_word(text: TextPieces) -> bytes:
    return text.ids[text.piece_word == text.piece_word[0]].tobytes()


def _after(probe: TextPieces, prefix: TextPieces, n_words: int) -> TextPieces | None:
    """The entry's pieces in `probe` (prefix + entry), when the probe is the prefix's own pieces and words
    followed by exactly `n_words` words; else None (the prefix merged with the entry)."""
    size, words = prefix.ids.size, len(prefix.words)
    if probe.ids.size <= size or not np.array_equal(probe.ids[:size], prefix.ids):
        return None
    if not np.array_equal(probe.piece_word[:size], prefix.piece_word) or (size and probe.piece_word[size] != words):
        return None
    rest = probe.piece_word[size:] - words
    if int(rest[-1]) + 1 != n_words:
        return None
    return TextPieces(ids=probe.ids[size:], piece_word=rest, words=())


def run_key(ids: NDArray[np.int64], piece_word: NDArray[np.int64]) -> bytes:
    """A run of words keyed by its pieces and its word lengths: equal keys, the same words to the model."""
    lengths = np.bincount(piece_word - piece_word[0]).astype(np.int64)
    return ids.astype(np.int64).tobytes() + b"|" + lengths.tobytes()


class Matcher:
    """Finds vocabulary slots in tokenized texts: runs of words whose pieces and word lengths are one of a slot's
    forms."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self._by_first: dict[bytes, list[int]] = {}  # first word's pieces -> forms
        for form, key in enumerate(vocabulary.form_first):
            if not vocabulary.unknown[vocabulary.form_slot[form]]:  # [UNK] in the key would match unrelated words
                self._by_first.setdefault(key, []).append(form)
        self._first_ids = np.array(sorted({np.frombuffer(k, dtype=np.int64)[0] for k in self._by_first}),
                                   dtype=np.int64)

    def find(self, pieces: Sequence[TextPieces], wanted: NDArray[np.bool_] | None = None) -> NDArray[np.int64]:
        """(M, 4) slot, text, first piece, end piece of every occurrence, in input order; only `wanted` slots."""
        found: list[tuple[int, int, int, int]] = []
        vocabulary = self.vocabulary
        for text_index, text in enumerate(pieces):
            if text.ids.size == 0:
                continue
            starts = np.flatnonzero(np.diff(text.piece_word, prepend=-1) != 0)  # (W,) each word's first piece
            ends = np.append(starts[1:], text.ids.size)
            for word in np.flatnonzero(np.isin(text.ids[starts], self._first_ids)).tolist():
                for form in self._by_first.get(text.ids[starts[word] : ends[word]].tobytes(), ()):
                    slot = int(vocabulary.form_slot[form])
                    last = word + int(vocabulary.form_words[form]) - 1
                    if last >= starts.size or (wanted is not None and not wanted[slot]):
                        continue
                    start, end = int(starts[word]), int(ends[last])
                    if vocabulary.form_words[form] == 1 or (
                        run_key(text.ids[start:end], text.piece_word[start:end]) == vocabulary.forms[form]
                    ):
                        found.append((slot, text_index, start, end))
        return np.array(found, dtype=np.int64).reshape(-1, 4)


def first_per_slot(found: NDArray[np.int64], room: NDArray[np.int64]) -> NDArray[np.int64]:
    """The occurrences (rows of `found`, slot first) that are among the first `room[slot]` of their slot."""
    slots = found[:, 0]
    order = np.argsort(slots, kind="stable")
    group_start = np.searchsorted(slots[order], slots[order])
    rank = np.empty_like(slots)
    rank[order] = np.arange(slots.size) - group_start  # each occurrence's place among its slot's
    return found[rank < room[slots]]
