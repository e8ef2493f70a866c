"""The runner: the internal service under `Embedder`, `long_text` and `type_level`.

It holds what a loaded bundle runs on (bundle, backend, tokenizer, table) and does
the model's work: text -> TextPieces -> token-budget batches -> ONNX outputs
(B, T, H) -> one flat buffer of content pieces, long texts windowed and stitched.
`Embedder` (the public face) checks arguments and shapes results; nothing here
knows about words as a user sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bertonnx.backends import Backend, Opened, open_backend
from bertonnx.batching import batch_stats, plan_batches, plan_sequences
from bertonnx.bundle import CONTEXTUAL_OUTPUT, Bundle, load_bundle
from bertonnx.errors import OptionError, TextTooLongError
from bertonnx.options import DEFAULT_BATCH_TOKENS, LONG_TEXT_POLICIES, LoadOptions, check_choice, check_positive
from bertonnx.pooling import fold_windows, pool_sentences
from bertonnx.results import Prepared, RunStats
from bertonnx.tokenize import TextInput, TextPieces, Tokenizer

GROUP_BATCHES = 8
"""Batches handed to the backend at once: enough to keep every stream busy, few enough to bound memory."""


@dataclass(frozen=True)
class Forward:
    """Content-piece states of every text of one call, stitched across windows."""

    hidden: NDArray[np.float32]  # (P, H) pieces of text 0, then text 1, ...
    sentence: NDArray[np.float32]  # (N, H) sentence vectors (only when asked for)


class Runner:
    """A bundle's graph, tokenizer and table, ready to run."""

    def __init__(
        self,
        bundle: Bundle,
        backend: Backend,
        tokenizer: Tokenizer,
        table: NDArray[np.float32],
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        opened: Opened | None = None,
    ) -> None:
        self.bundle = bundle
        self.backend = backend
        self.tokenizer = tokenizer
        self.table = table  # (V, E) memory-mapped
        self.batch_tokens = check_positive("batch_tokens", batch_tokens)
        self.opened = opened  # how the backend was chosen, and its fidelity gate
        # Sentence vectors alone may run on another backend: where `fastest` split by use (backends/open.py).
        sentences = opened.sentences if opened is not None else None
        self.sentence_backend = sentences.backend if sentences is not None else backend
        self.stats = RunStats()

    @classmethod
    def open(cls, bundle_dir: str | Path, options: LoadOptions, verify: bool = True) -> Runner:
        """Check a bundle, open the backend that runs its graph, map the table."""
        bundle = load_bundle(bundle_dir, verify=verify)
        tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
        opened = open_backend(bundle, tokenizer, options)
        return cls(bundle, opened.backend, tokenizer, bundle.load_table(), options.batch_tokens, opened)

    @property
    def dim(self) -> int:
        """Width of a piece's final state: the hidden size."""
        return self.bundle.hidden_size

    def prepare(self, texts: Sequence[TextInput] | Prepared) -> Prepared:
        """Split texts into word pieces once."""
        if isinstance(texts, Prepared):
            return texts
        pieces = tuple(self.tokenizer.split(as_list(texts)))
        tokens = np.array([p.ids.size + self.tokenizer.n_special for p in pieces], dtype=np.int64)
        return Prepared(pieces=pieces, tokens=tokens)

    def piece_states(self, texts: Sequence[TextInput] | Prepared) -> NDArray[np.float32]:
        """(P, H) the final state of every word piece of every text, in order; long texts windowed and
        stitched. What word pooling reads, for callers that pool their own runs."""
        pieces, _ = self.fit(list(self.prepare(texts).pieces), "window")
        return self.forward(pieces, sentence_pooling=None).hidden

    def unknown_pieces(self, ids: NDArray[np.int64], starts: NDArray[np.int64]) -> NDArray[np.bool_]:
        """(W,) True for each run of pieces (a word: ids[starts[i]:starts[i+1]]) holding the unknown token."""
        if starts.size == 0:
            return np.zeros(0, dtype=bool)
        return np.maximum.reduceat(ids == self.tokenizer.unk_id, starts).astype(bool)

    def room(self, max_length: int) -> int:
        """Content pieces that fit in `max_length` positions next to the special tokens."""
        room = check_positive("max_length", max_length) - self.tokenizer.n_special
        if max_length > self.tokenizer.max_length or room < 1:
            raise OptionError(
                f"max_length must leave room for text and be at most the model's {self.tokenizer.max_length}, "
                f"got {max_length}"
            )
        return room

    def fit(self, pieces: list[TextPieces], long_text: str) -> tuple[list[TextPieces], NDArray[np.bool_]]:
        """Apply the long-text policy that does not need windows: truncate or raise."""
        from bertonnx.tokenize import truncate

        check_choice(long_text, LONG_TEXT_POLICIES, "long_text policy")
        window = self.tokenizer.window
        too_long = np.array([p.ids.size > window for p in pieces], dtype=bool)
        if long_text == "error" and too_long.any():
            first = int(np.flatnonzero(too_long)[0])
            raise TextTooLongError(
                f"text {first} has {pieces[first].ids.size} word pieces; the model takes {window} "
                "(use {long_text})",
                long_text=("window", "truncate"),
            )
        if long_text == "truncate":
            pieces = [truncate(p, window) if long else p for p, long in zip(pieces, too_long)]
        return pieces, too_long & (long_text == "truncate")

    def forward(self, pieces: list[TextPieces], sentence_pooling: str | None, keep_pieces: bool = True) -> Forward:
        """Run every text through the model in token-budget batches and stitch windows.

        keep_pieces=False (sentence vectors only) skips gathering every piece's state: `hidden` is then empty."""
        sequences, owner, plans = plan_sequences(pieces, self.tokenizer.window)
        seq_len = np.array([s.size for s in sequences], dtype=np.int64)  # (S,)
        seq_offset = np.cumsum(seq_len) - seq_len
        flat, seq_sentence = self.run_sequences(sequences, sentence_pooling, keep_pieces)
        with self.stats.lock:
            self.stats.texts += len(pieces)
        owner_arr = np.array(owner, dtype=np.int64)
        seq_tokens = seq_len + self.tokenizer.n_special
        sentence = fold_windows(seq_sentence, seq_tokens, owner_arr, len(pieces), sentence_pooling)
        if not plans or not keep_pieces:
            return Forward(hidden=flat, sentence=sentence)
        # Windowed texts: map each of their pieces to the row of its chosen window.
        text_len = np.array([p.ids.size for p in pieces], dtype=np.int64)
        first_seq = np.searchsorted(owner_arr, np.arange(len(pieces)))  # (N,) first sequence of each text
        source = np.repeat(seq_offset[first_seq] - (np.cumsum(text_len) - text_len), text_len)
        source += np.arange(source.size)
        text_offset = np.cumsum(text_len) - text_len
        for index, (seq_start, plan) in plans.items():
            rows = seq_offset[seq_start] + plan.flat_index  # windows' rows are consecutive in `flat`
            source[text_offset[index] : text_offset[index] + text_len[index]] = rows
        return Forward(hidden=flat[source], sentence=sentence)

    def run_sequences(
        self, sequences: list[NDArray[np.int64]], sentence_pooling: str | None, keep_pieces: bool = True
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Sequences of content pieces (each at most `tokenizer.window`) through the model in token-budget batches.

        Sentence vectors alone (keep_pieces=False) run on `sentence_backend`; anything that keeps pieces, on `backend`.

        Returns:
            (sum of lengths, H) the content pieces' final states, sequence after sequence (empty with
            keep_pieces=False), and (S, H) each sequence's sentence vector (only when `sentence_pooling` is given).
        """
        seq_len = np.array([s.size for s in sequences], dtype=np.int64)  # (S,)
        seq_offset = np.cumsum(seq_len) - seq_len
        n_special = self.tokenizer.n_special
        backend = self.sentence_backend if sentence_pooling is not None and not keep_pieces else self.backend
        info = backend.info
        # Every batch, a lone text's too, is padded to the backend's multiple: OpenVINO's kernels round differently
        # at other widths, and a text must get the same bits alone as merged with others (the server merges).
        multiple = info.pad_multiple
        padded = -(-(seq_len + n_special) // multiple) * multiple  # (S,) positions each sequence will take
        batches = plan_batches(padded, self.batch_tokens) if len(sequences) > 1 else [np.zeros(1, dtype=np.int64)]
        self.stats.add(0, batch_stats(seq_len + n_special, batches))

        flat = np.empty((int(seq_len.sum()) if keep_pieces else 0, self.dim), dtype=np.float32)  # (sum S_len, H)
        seq_sentence = np.empty((len(sequences), self.dim), dtype=np.float32)  # (S, H)
        for group in _groups(batches, GROUP_BATCHES):
            packed = [self.tokenizer.pack([sequences[i] for i in batch], multiple) for batch in group]
            outputs = backend.run_many(CONTEXTUAL_OUTPUT, [encoded.feeds(info.inputs) for encoded in packed])
            for batch, encoded, hidden in zip(group, packed, outputs):  # hidden: (B, T, H)
                if keep_pieces:
                    lengths = seq_len[batch]
                    dest = np.repeat(seq_offset[batch] - (np.cumsum(lengths) - lengths), lengths)
                    dest += np.arange(dest.size)
                    flat[dest] = hidden[encoded.content_rows, encoded.content_cols]
                if sentence_pooling is not None:
                    seq_sentence[batch] = pool_sentences(hidden, encoded.attention_mask, sentence_pooling)
        return flat, seq_sentence


def as_list(texts: Sequence[TextInput]) -> list[TextInput]:
    """Texts as a list; one string is refused (it would be read as a list of one-letter texts)."""
    if isinstance(texts, str):
        raise TypeError(f"pass a list of texts, not one string: [{texts[:40]!r}] rather than {texts[:40]!r}")
    return list(texts)


def _groups(batches: list[NDArray[np.int64]], size: int) -> list[list[NDArray[np.int64]]]:
    return [batches[start : start + size] for start in range(0, len(batches), size)]
