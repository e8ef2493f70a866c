"""Embedder: static, contextual and sentence embeddings from one bundle.

Data flows one way: text -> TextPieces -> token-budget batches -> ONNX
outputs (B, T, H) -> one flat buffer of content pieces -> pooled vectors.
Pooling runs once per call over every text of the call.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

from engine.batching import BatchStats, batch_stats, plan_batches, plan_windows
from engine.bundle import CONTEXTUAL_OUTPUT, Bundle, load_bundle
from engine.pooling import (
    SENTENCE_POOLING_MODES,
    WORD_POOLING_MODES,
    check_mode,
    l2_normalize,
    pool_pieces,
    pool_sentences,
    run_starts,
)
from engine.session import Session
from engine.tokenize import TextInput, TextPieces, Tokenizer, preview

LongText = Literal["window", "truncate", "error"]
LONG_TEXT_POLICIES: tuple[str, ...] = get_args(LongText)
Unknown = Literal["error", "unk", "zero"]
UNKNOWN_POLICIES: tuple[str, ...] = get_args(Unknown)
DEFAULT_BATCH_TOKENS = 1024
"""Padded tokens per model run. Measured on 2 cores: smaller runs stay in cache; 1024 beat 8192
by 1.3-2x on a mixed-length corpus (benchmarks/README.md)."""


class TextTooLongError(ValueError):
    """A text has more word pieces than the model takes, and long_text='error'."""


class UnknownWordError(ValueError):
    """A word maps to the unknown token, and unknown='error'."""


@dataclass(frozen=True)
class WordVectors:
    """One text's words and their vectors."""

    words: tuple[str, ...]  # (W,)
    vectors: NDArray[np.float32]  # (W, H), or (W, 2H) for first_last
    spans: NDArray[np.int64]  # (W, 2) each word's [start, end) in the text's word pieces
    unknown: NDArray[np.bool_]  # (W,) True where a word contains the unknown token
    truncated: bool = False  # long_text="truncate" dropped words past the maximum


@dataclass
class RunStats:
    """Counters over an Embedder's life, for debugging batching and padding."""

    texts: int = 0
    sequences: int = 0  # model runs per text: more than one for windowed texts
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def padding_ratio(self) -> float:
        return 0.0 if self.padded_tokens == 0 else 1 - self.real_tokens / self.padded_tokens

    def add(self, texts: int, stats: BatchStats) -> None:
        with self.lock:
            self.texts += texts
            self.sequences += stats.n_texts
            self.batches += stats.n_batches
            self.real_tokens += stats.real_tokens
            self.padded_tokens += stats.padded_tokens


@dataclass(frozen=True)
class _Forward:
    """Content-piece states of every text of one call, stitched across windows."""

    hidden: NDArray[np.float32]  # (P, H) pieces of text 0, then text 1, ...
    sentence: NDArray[np.float32]  # (N, H) sentence vectors (only when asked for)


class Embedder:
    """Static and contextual BERT embeddings served from an ONNX bundle."""

    def __init__(
        self,
        bundle: Bundle,
        session: Session,
        tokenizer: Tokenizer,
        table: NDArray[np.float32],
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
    ) -> None:
        if batch_tokens < 1:
            raise ValueError(f"batch_tokens must be at least 1, got {batch_tokens}")
        self.bundle = bundle
        self.session = session
        self.tokenizer = tokenizer
        self.table = table  # (V, H) memory-mapped
        self.batch_tokens = batch_tokens
        self.stats = RunStats()

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        provider: str = "auto",
        threads: int | None = None,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        verify: bool = True,
        spin: bool = False,
    ) -> Embedder:
        """Open a bundle: check it, start the ONNX Runtime session, map the table.

        Args:
            bundle_dir: directory written by `bertonnx export`.
            provider: auto | cpu | cuda. "cuda" fails loudly when unavailable.
            threads: ONNX Runtime intra-op threads; default every core this process may use.
            batch_tokens: padded tokens per model run (batch size x longest text).
            verify: check every file's sha256 against the manifest.
            spin: let idle ONNX Runtime threads busy-wait for the next operator: lower latency
                for short texts (~18 % for one sentence on 2 cores), CPU burned while idle.
        """
        bundle = load_bundle(bundle_dir, verify=verify)
        tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
        session = Session(bundle.model_path, provider=provider, threads=threads, spin=spin)
        return cls(bundle, session, tokenizer, bundle.load_table(), batch_tokens)

    @property
    def dim(self) -> int:
        """Width of contextual and sentence vectors: the hidden size."""
        return self.bundle.hidden_size

    @property
    def static_dim(self) -> int:
        """Width of static vectors: the embedding table's, narrower than `dim` in e.g. ELECTRA-small."""
        return self.bundle.embedding_size

    def static(self, words: Sequence[str], pooling: str = "mean", unknown: str = "error") -> NDArray[np.float32]:
        """Context-free vectors: each word's pieces looked up in the embedding table and pooled.

        Never runs the transformer. A word is split into pieces exactly as the
        tokenizer splits it alone ("embeddings" -> em, ##bed, ##ding, ##s).

        Args:
            words: the words, one vector each.
            pooling: mean | first | last | first_last | max | sum.
            unknown: what to do with a word that maps to the unknown token:
                "error" raises, "unk" pools the unknown token's row like BERT does,
                "zero" gives a zero vector.

        Returns:
            (len(words), H) float32, or (len(words), 2H) for first_last.

        Raises:
            EmptyWordError: a word is empty or blank.
            UnknownWordError: with unknown="error".
        """
        check_mode(pooling, WORD_POOLING_MODES)
        check_mode(unknown, UNKNOWN_POLICIES, "unknown policy")
        if isinstance(words, str):
            raise TypeError("static() takes a list of words, not one string")
        ids, starts = self.tokenizer.split_words(words)
        vectors = pool_pieces(self.table, starts, pooling, index=ids)  # (W, H)
        is_unknown = self._unknown(ids, starts)
        if is_unknown.any():
            if unknown == "error":
                first = int(np.flatnonzero(is_unknown)[0])
                raise UnknownWordError(
                    f"word {first} ({preview(words[first])}) maps to the unknown token; "
                    "pass unknown='unk' or 'zero' to embed it anyway"
                )
            if unknown == "zero":
                vectors[is_unknown] = 0.0
        return vectors

    def find_unknown(self, words: Sequence[str]) -> NDArray[np.bool_]:
        """(W,) True for each word with a piece that is the unknown token, e.g. most emoji."""
        ids, starts = self.tokenizer.split_words(words)
        return self._unknown(ids, starts)

    def contextual(
        self, texts: Sequence[TextInput], pooling: str = "mean", long_text: str = "window"
    ) -> list[WordVectors]:
        """Contextual word vectors: the final hidden state of each word's pieces, pooled.

        Args:
            texts: raw strings, split into words the way the model's own
                pre-tokenizer splits them, or lists of pre-split words.
            pooling: mean | first | last | first_last | max | sum.
            long_text: for texts longer than the model maximum: "window" runs
                overlapping windows and takes each word from the window where it is
                most central; "truncate" drops the words past the maximum (and flags
                the result); "error" raises.

        Returns:
            One WordVectors per text, in input order.
        """
        check_mode(pooling, WORD_POOLING_MODES)
        texts = _as_list(texts)
        pieces = self.tokenizer.split(texts)
        pieces, truncated = self._fit(pieces, long_text)
        forward = self._forward(pieces, sentence_pooling=None)
        text_of_piece = np.repeat(np.arange(len(pieces)), [p.ids.size for p in pieces])  # (P,)
        piece_word = np.concatenate([p.piece_word for p in pieces] or [np.zeros(0, np.int64)])
        starts = run_starts(text_of_piece * (1 + piece_word.max(initial=0)) + piece_word)  # (W,)
        vectors = pool_pieces(forward.hidden, starts, pooling)  # (W, H)
        all_ids = np.concatenate([p.ids for p in pieces] or [np.zeros(0, np.int64)])
        unknown = self._unknown(all_ids, starts)
        words_per_text = np.array([len(p.words) for p in pieces], dtype=np.int64)
        bounds = np.cumsum(words_per_text)[:-1]
        local_starts = starts - np.repeat(np.cumsum([0] + [p.ids.size for p in pieces])[:-1], words_per_text)
        local_ends = np.append(starts[1:], all_ids.size) - (starts - local_starts)
        spans = np.stack([local_starts, local_ends], axis=1)  # (W, 2)
        return [
            WordVectors(words=p.words, vectors=v, spans=s, unknown=u, truncated=bool(t))
            for p, v, s, u, t in zip(
                pieces,
                np.split(vectors, bounds),
                np.split(spans, bounds),
                np.split(unknown, bounds),
                truncated,
            )
        ]

    def sentences(
        self,
        texts: Sequence[TextInput],
        pooling: str = "mean",
        normalize: bool = False,
        long_text: str = "window",
    ) -> NDArray[np.float32]:
        """One vector per text, pooled as sentence-transformers pools.

        Args:
            texts: raw strings or lists of pre-split words.
            pooling: "mean" averages all tokens, [CLS] and [SEP] included; "cls"
                takes the [CLS] state.
            normalize: scale to unit length (what all-MiniLM-L6-v2's Normalize layer does).
            long_text: "window" averages the tokens of all windows (weighted by
                their length; "cls" takes the first window's); "truncate" keeps
                the first window; "error" raises.

        Returns:
            (len(texts), H) float32.
        """
        check_mode(pooling, SENTENCE_POOLING_MODES)
        texts = _as_list(texts)
        pieces, _ = self._fit(self.tokenizer.split(texts), long_text)
        vectors = self._forward(pieces, sentence_pooling=pooling).sentence
        return l2_normalize(vectors) if normalize else vectors

    def _unknown(self, ids: NDArray[np.int64], starts: NDArray[np.int64]) -> NDArray[np.bool_]:
        if starts.size == 0:
            return np.zeros(0, dtype=bool)
        return np.maximum.reduceat(ids == self.tokenizer.unk_id, starts).astype(bool)

    def _fit(self, pieces: list[TextPieces], long_text: str) -> tuple[list[TextPieces], NDArray[np.bool_]]:
        """Apply the long-text policy that does not need windows: truncate or raise."""
        check_mode(long_text, LONG_TEXT_POLICIES, "long_text policy")
        window = self.tokenizer.window
        too_long = np.array([p.ids.size > window for p in pieces], dtype=bool)
        if long_text == "error" and too_long.any():
            first = int(np.flatnonzero(too_long)[0])
            raise TextTooLongError(
                f"text {first} has {pieces[first].ids.size} word pieces; the model takes {window} "
                "(use long_text='window' or 'truncate')"
            )
        if long_text == "truncate":
            pieces = [_truncate(p, window) if long else p for p, long in zip(pieces, too_long)]
        return pieces, too_long & (long_text == "truncate")

    def _forward(self, pieces: list[TextPieces], sentence_pooling: str | None) -> _Forward:
        """Run every text through the model in token-budget batches and stitch windows."""
        window = self.tokenizer.window
        # Each text becomes one sequence, or several overlapping windows laid out consecutively.
        sequences: list[NDArray[np.int64]] = []
        owner: list[int] = []
        plans = {}
        for index, text in enumerate(pieces):
            if text.ids.size <= window:
                sequences.append(text.ids)
                owner.append(index)
                continue
            plan = plan_windows(text.piece_word, window)
            plans[index] = (len(sequences), plan)
            sequences.extend(text.ids[start:end] for start, end in zip(plan.starts, plan.ends))
            owner.extend([index] * len(plan.starts))
        seq_len = np.array([s.size for s in sequences], dtype=np.int64)  # (S,)
        seq_offset = np.cumsum(seq_len) - seq_len
        n_special = len(self.tokenizer.prefix_ids) + len(self.tokenizer.suffix_ids)
        batches = plan_batches(seq_len + n_special, self.batch_tokens)
        self.stats.add(len(pieces), batch_stats(seq_len + n_special, batches))

        flat = np.empty((int(seq_len.sum()), self.dim), dtype=np.float32)  # (sum S_len, H)
        seq_sentence = np.empty((len(sequences), self.dim), dtype=np.float32)  # (S, H)
        seq_tokens = seq_len + n_special
        for batch in batches:
            encoded = self.tokenizer.pack([sequences[i] for i in batch])
            hidden = self.session.run(CONTEXTUAL_OUTPUT, encoded.feeds(self.session.info.inputs))
            lengths = seq_len[batch]
            dest = np.repeat(seq_offset[batch] - (np.cumsum(lengths) - lengths), lengths)
            dest += np.arange(dest.size)
            flat[dest] = hidden[encoded.content_rows, encoded.content_cols]
            if sentence_pooling is not None:
                seq_sentence[batch] = pool_sentences(hidden, encoded.attention_mask, sentence_pooling)

        owner_arr = np.array(owner, dtype=np.int64)
        sentence = self._text_sentences(seq_sentence, seq_tokens, owner_arr, len(pieces), sentence_pooling)
        if not plans:
            return _Forward(hidden=flat, sentence=sentence)
        # Windowed texts: map each of their pieces to the row of its chosen window.
        text_len = np.array([p.ids.size for p in pieces], dtype=np.int64)
        first_seq = np.searchsorted(owner_arr, np.arange(len(pieces)))  # (N,) first sequence of each text
        source = np.repeat(seq_offset[first_seq] - (np.cumsum(text_len) - text_len), text_len)
        source += np.arange(source.size)
        text_offset = np.cumsum(text_len) - text_len
        for index, (seq_start, plan) in plans.items():
            rows = seq_offset[seq_start] + plan.flat_index  # windows' rows are consecutive in `flat`
            source[text_offset[index] : text_offset[index] + text_len[index]] = rows
        return _Forward(hidden=flat[source], sentence=sentence)

    def _text_sentences(
        self,
        seq_sentence: NDArray[np.float32],
        seq_tokens: NDArray[np.int64],
        owner: NDArray[np.int64],
        n_texts: int,
        pooling: str | None,
    ) -> NDArray[np.float32]:
        """Fold window sentence vectors back into one per text."""
        if pooling is None:
            return np.zeros((n_texts, self.dim), dtype=np.float32)
        starts = run_starts(owner)
        if starts.size == owner.size:
            return seq_sentence
        if pooling == "cls":
            return seq_sentence[starts]
        weights = seq_tokens.astype(np.float32)[:, None]
        summed = np.add.reduceat(seq_sentence * weights, starts, axis=0)
        return summed / np.add.reduceat(weights, starts, axis=0)


def _as_list(texts: Sequence[TextInput]) -> list[TextInput]:
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not one string: contextual(['the king is wise.'])")
    return list(texts)


def _truncate(text: TextPieces, window: int) -> TextPieces:
    """Keep the whole words that fit in one window."""
    keep_words = int(text.piece_word[window])  # the word cut by the window edge is dropped too
    keep = int(np.searchsorted(text.piece_word, keep_words))
    return TextPieces(ids=text.ids[:keep], piece_word=text.piece_word[:keep], words=text.words[:keep_words])
