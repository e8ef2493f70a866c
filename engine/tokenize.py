"""Text -> word pieces with word alignment, and pieces -> padded model inputs.

Tokenization runs in the `tokenizers` library (Rust, multi-threaded); this
module only turns its output into flat numpy arrays. Special tokens are added
here, at packing time, so that a long text can be cut into windows first.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tokenizers import Encoding
from tokenizers import Tokenizer as HFTokenizer

from bertonnx.batching import run_starts
from bertonnx.errors import BundleError, EmptyWordError, InputError
from bertonnx.spans import word_char_spans

TextInput = str | Sequence[str]
"""A raw string, or a text already split into words."""


@dataclass(frozen=True)
class TextPieces:
    """One text as content pieces (no special tokens) aligned to its words."""

    ids: NDArray[np.int64]  # (n,) piece ids
    piece_word: NDArray[np.int64]  # (n,) word index of each piece, nondecreasing
    words: tuple[str, ...]  # (W,) the words, as they appear in the input

    @property
    def word_starts(self) -> NDArray[np.int64]:
        """(W,) index of each word's first piece."""
        return run_starts(self.piece_word)


def cut(text: TextPieces, room: int) -> TextPieces:
    """The first `room` pieces, even mid-word, as a tokenizer truncating at max_length cuts."""
    if text.ids.size <= room:
        return text
    kept_words = int(text.piece_word[room - 1]) + 1
    return TextPieces(ids=text.ids[:room], piece_word=text.piece_word[:room], words=text.words[:kept_words])


def truncate(text: TextPieces, window: int) -> TextPieces:
    """Keep the whole words that fit in one window."""
    keep_words = int(text.piece_word[window])  # the word cut by the window edge is dropped too
    keep = int(np.searchsorted(text.piece_word, keep_words))
    return TextPieces(ids=text.ids[:keep], piece_word=text.piece_word[:keep], words=text.words[:keep_words])


@dataclass(frozen=True)
class Encoded:
    """A padded batch ready for the model."""

    input_ids: NDArray[np.int64]  # (B, T)
    attention_mask: NDArray[np.int64]  # (B, T)
    token_type_ids: NDArray[np.int64]  # (B, T)
    content_rows: NDArray[np.int64]  # (P,) batch row of every content piece, in input order
    content_cols: NDArray[np.int64]  # (P,) its position in that row

    def feeds(self, names: Sequence[str]) -> dict[str, NDArray[np.int64]]:
        """The inputs a graph declares, by name; graphs differ (DistilBERT has no token types)."""
        available = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }
        missing = [name for name in names if name not in available]
        if missing:
            raise BundleError(f"the model asks for inputs {missing}; bertonnx provides {list(available)}")
        return {name: available[name] for name in names}


SEGMENT_CHARS = 1 << 16
"""A raw string longer than this is tokenized a segment at a time (Tokenizer._split_long)."""
_SEGMENT_CUT = re.compile(r"\S(?=[ \t\n\r])")
r"""A character no pre-tokenizer takes for whitespace, before one every pre-tokenizer does: Python's \s is
wider than BERT's whitespace (\x1c is a control character BERT deletes) and byte-level BPE's (\xa0)."""


class Tokenizer:
    """A `tokenizers` tokenizer set up for embedding: no truncation, no padding."""

    def __init__(self, backend: HFTokenizer, max_length: int) -> None:
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self.max_length = max_length
        self.prefix_ids, self.suffix_ids = _special_template(backend)
        if self.window < 1:
            raise BundleError(
                f"max_length {max_length} leaves no room for text next to the "
                f"{self.n_special} special tokens"
            )
        self.pad_id = _token_id(backend, ("[PAD]", "<pad>"), default=0)
        self.unk_id = _token_id(backend, ("[UNK]", "<unk>"), default=-1)

    @classmethod
    def from_file(cls, path: Path, max_length: int) -> Tokenizer:
        return cls(HFTokenizer.from_file(str(path)), max_length)

    @property
    def window(self) -> int:
        """Content pieces that fit in one model run, next to the special tokens."""
        return self.max_length - self.n_special

    @property
    def n_special(self) -> int:
        """Special tokens around every sequence ([CLS] and [SEP] for BERT)."""
        return len(self.prefix_ids) + len(self.suffix_ids)

    def split(self, texts: Sequence[TextInput], words: bool = True) -> list[TextPieces]:
        """Tokenize raw strings or pre-split word lists, keeping each piece's word.

        Raw strings are split into words by the tokenizer's own pre-tokenizer
        ("The king is wise." -> The, king, is, wise, .), so the words match what
        the model was trained on. A raw text without words gives zero pieces.
        words=False leaves a raw text's `words` empty (its pieces still know their
        word): sentence vectors need no word strings, and finding them costs time.

        Raises:
            EmptyWordError: a pre-split word is empty or whitespace only.
        """
        raw = [index for index, text in enumerate(texts) if isinstance(text, str)]
        split = [index for index, text in enumerate(texts) if not isinstance(text, str)]
        result: list[TextPieces | None] = [None] * len(texts)
        long = [index for index in raw if len(texts[index]) > SEGMENT_CHARS]  # type: ignore[arg-type]
        for index in long:
            result[index] = self._split_long(texts[index], words)  # type: ignore[arg-type]
        raw = [index for index in raw if result[index] is None]
        strings: list[str] = [texts[i] for i in raw]  # type: ignore[misc]
        for index, pieces in zip(raw, self._split_raw(strings, raw, words)):
            result[index] = pieces
        if split:
            try:
                word_lists = [list(texts[i]) for i in split]
                encodings = self.backend.encode_batch(word_lists, is_pretokenized=True, add_special_tokens=False)
            except (TypeError, ValueError) as error:
                explained = _bad_word_lists(texts, split)
                if explained is None:
                    raise
                raise explained from error
            for index, words, enc in zip(split, word_lists, encodings):
                result[index] = _from_words(words, enc, index)
        return result  # type: ignore[return-value]

    def _split_raw(self, strings: list[str], positions: list[int], words: bool = True) -> list[TextPieces]:
        if not strings:
            return []
        try:
            encodings = self.backend.encode_batch(strings, add_special_tokens=False)
        except (TypeError, ValueError) as error:
            explained = _bad_input(strings, positions, "text")
            if explained is None:
                raise
            raise explained from error
        if not words:
            return [_pieces_only(enc) for enc in encodings]
        return [_from_raw(text, enc) for text, enc in zip(strings, encodings)]

    def _split_long(self, text: str, words: bool = True) -> TextPieces:
        """`split` of one very long string, a segment at a time: the tokenizer's own encoding of a 1.7 MB line
        takes ~220 MB, a 64k-character segment's a few MB.

        Segments are cut just before a run of whitespace, where no pre-tokenizer
        joins characters into one word (byte-level BPE gives the space to the word
        after it, so the space goes with that word's segment). A text with no such
        place is tokenized whole.
        """
        parts: list[TextPieces] = []
        start = 0
        while start < len(text):
            found = _SEGMENT_CUT.search(text, start + SEGMENT_CHARS) if start + SEGMENT_CHARS < len(text) else None
            end = found.start() + 1 if found else len(text)
            parts.append(self._split_raw([text[start:end]], [0], words)[0])
            start = end
        counts = [len(part.words) if words else int(part.piece_word[-1]) + 1 if part.ids.size else 0 for part in parts]
        word_offsets = np.cumsum([0] + counts)[:-1]
        return TextPieces(
            ids=np.concatenate([part.ids for part in parts]),
            piece_word=np.concatenate([part.piece_word + offset for part, offset in zip(parts, word_offsets)]),
            words=tuple(word for part in parts for word in part.words),
        )

    def split_words(self, words: Sequence[str]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Pieces of many isolated words: the static path's input.

        Words that are themselves one vocabulary piece are looked up in a
        table verified against the tokenizer (see `single_pieces`); only the
        rest go through the tokenizer, as one pre-tokenized sequence per chunk,
        so each is normalised and split exactly as it would be alone.

        Returns:
            ids: (P,) piece ids.
            starts: (W,) index of each word's first piece.

        Raises:
            EmptyWordError: a word produced no pieces.
        """
        single = self.single_pieces
        try:
            found = np.fromiter((single.get(w, -1) for w in words), dtype=np.int64, count=len(words))  # (W,)
            missing = np.flatnonzero(found < 0)
            miss_ids, miss_word = self._encode_words([words[i] for i in missing.tolist()])
        except (TypeError, ValueError) as error:
            explained = _bad_input(words, range(len(words)), "word")
            if explained is None:
                raise
            raise explained from error
        miss_counts = np.bincount(miss_word, minlength=missing.size) if missing.size else _EMPTY
        if (miss_counts == 0).any():
            first = int(missing[np.flatnonzero(miss_counts == 0)[0]])
            raise EmptyWordError(f"word {first} ({preview(words[first])}) has no word pieces: it is empty or blank")
        counts = np.ones(len(words), dtype=np.int64)
        counts[missing] = miss_counts
        starts = np.cumsum(counts) - counts  # (W,)
        ids = np.empty(int(counts.sum()), dtype=np.int64)
        ids[starts] = found
        miss_starts = starts[missing]  # where each looked-up-by-tokenizer word begins
        ids[np.repeat(miss_starts - (np.cumsum(miss_counts) - miss_counts), miss_counts) + np.arange(miss_ids.size)] = (
            miss_ids
        )
        return ids, starts

    def has_pieces(self, texts: Sequence[str]) -> NDArray[np.bool_]:
        """(N,) False for each text that gives no word pieces at all.

        Not only blank strings: BERT's normaliser deletes NUL and other control
        characters, zero-width and format characters, and (when it strips
        accents) combining marks, so a text of only those has no words either.
        An ASCII letter or digit survives BERT's normaliser, so only texts
        without one are tokenized here.
        """
        result = np.ones(len(texts), dtype=bool)
        check = [index for index, text in enumerate(texts) if not _ASCII_ALNUM.search(text)]
        encodings = self.backend.encode_batch([texts[i] for i in check], add_special_tokens=False)
        result[[index for index, enc in zip(check, encodings) if not enc.ids]] = False
        return result

    @functools.cached_property
    def single_pieces(self) -> dict[str, int]:
        """Vocabulary entries that the tokenizer maps, as a word alone, to exactly themselves.

        Built once by tokenizing the whole vocabulary, so a lookup here gives
        the tokenizer's own answer: "king" -> [king] qualifies, "##ing" (which
        splits into #, #, ing) and "King" on an uncased model do not.
        """
        vocab = self.backend.get_vocab()
        candidates = list(vocab)
        ids, piece_word = self._encode_words(candidates)
        counts = np.bincount(piece_word, minlength=len(candidates))
        first = np.cumsum(counts) - counts
        expected = np.fromiter((vocab[c] for c in candidates), dtype=np.int64, count=len(candidates))
        ok = (counts == 1) & (ids[np.minimum(first, ids.size - 1)] == expected)
        return {candidates[i]: int(expected[i]) for i in np.flatnonzero(ok).tolist()}

    def _encode_words(self, words: list[str]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(P,) piece ids and (P,) word index of each piece, for isolated words."""
        chunk = 8192
        groups = [words[i : i + chunk] for i in range(0, len(words), chunk)]
        encodings = self.backend.encode_batch(groups, is_pretokenized=True, add_special_tokens=False)
        ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings] or [_EMPTY])
        piece_word = np.concatenate(
            [_word_ids(e) + offset for e, offset in zip(encodings, range(0, len(words), chunk))] or [_EMPTY]
        )
        return ids, piece_word

    def pack(self, sequences: Sequence[NDArray[np.int64]], pad_multiple: int = 1) -> Encoded:
        """Add special tokens and pad a batch of content-piece sequences, without a per-row loop.

        Args:
            pad_multiple: pad the width up to a multiple of this (a backend that compiles
                each new shape then meets fewer shapes); the mask hides the extra positions.
        """
        if len(sequences) == 1 and pad_multiple == 1:
            return self._pack_one(sequences[0])
        prefix = np.asarray(self.prefix_ids, dtype=np.int64)
        suffix = np.asarray(self.suffix_ids, dtype=np.int64)
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        batch = len(sequences)
        total = lengths + len(prefix) + len(suffix)  # (B,)
        width = int(total.max()) if batch else 0
        width = -(-width // pad_multiple) * pad_multiple
        input_ids = np.full((batch, width), self.pad_id, dtype=np.int64)
        attention_mask = (np.arange(width)[None, :] < total[:, None]).astype(np.int64)  # (B, T)
        input_ids[:, : len(prefix)] = prefix
        rows = np.repeat(np.arange(batch, dtype=np.int64), lengths)  # (P,)
        starts = np.cumsum(lengths) - lengths
        cols = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(starts, lengths) + len(prefix)
        if batch:
            input_ids[rows, cols] = np.concatenate(sequences)
        suffix_cols = (lengths + len(prefix))[:, None] + np.arange(len(suffix))[None, :]  # (B, S)
        input_ids[np.arange(batch)[:, None], suffix_cols] = suffix
        return Encoded(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=np.zeros_like(input_ids),
            content_rows=rows,
            content_cols=cols,
        )

    def _pack_one(self, sequence: NDArray[np.int64]) -> Encoded:
        """`pack` of a lone sequence (the latency path): the same arrays, built without the batch machinery."""
        ids = np.concatenate((self.prefix_ids, sequence, self.suffix_ids)).astype(np.int64)[None, :]  # (1, T)
        start = len(self.prefix_ids)
        return Encoded(
            input_ids=ids,
            attention_mask=np.ones_like(ids),
            token_type_ids=np.zeros_like(ids),
            content_rows=np.zeros(len(sequence), dtype=np.int64),
            content_cols=np.arange(start, start + len(sequence), dtype=np.int64),
        )


_EMPTY = np.zeros(0, dtype=np.int64)
_ASCII_ALNUM = re.compile(r"[0-9A-Za-z]")
_PREVIEW_CHARS = 40


def preview(text: str) -> str:
    """repr for error messages, cut short: a 1 MB word must not make a 1 MB message."""
    if len(text) <= _PREVIEW_CHARS:
        return repr(text)
    return f"{text[:_PREVIEW_CHARS]!r}... ({len(text)} characters)"


def _refusal(item: object) -> Exception | None:
    """Why the tokenizer cannot take one string (not a str, or a lone surrogate), or None."""
    if not isinstance(item, str):
        return TypeError(f"is {type(item).__name__}; expected str")
    try:
        item.encode("utf-8")
    except UnicodeEncodeError as error:
        return InputError(f"is not valid Unicode ({error.reason} at character {error.start})")
    return None


def _bad_input(items: Sequence[object], positions: Iterable[int], what: str) -> Exception | None:
    """The error naming the first of `items` the tokenizer refuses, if one explains it."""
    for position, item in zip(positions, items):
        if (reason := _refusal(item)) is not None:
            return type(reason)(f"{what} {position} {reason}")
    return None


def _bad_word_lists(texts: Sequence[object], positions: Iterable[int]) -> Exception | None:
    """The error naming the first pre-split text, or word in it, the tokenizer refuses, if one explains it."""
    for position in positions:
        words = texts[position]
        if isinstance(words, (bytes, bytearray)) or not isinstance(words, Iterable):
            return TypeError(f"text {position} is {type(words).__name__}; expected a str or a list of words")
        for index, word in enumerate(words):
            if (reason := _refusal(word)) is not None:
                return type(reason)(f"text {position}: word {index} {reason}")
    return None


def _word_ids(encoding: Encoding) -> NDArray[np.int64]:
    """Word ids as int64; content pieces always belong to a word when no specials are added."""
    return np.asarray(encoding.word_ids, dtype=np.int64)


def _pieces_only(encoding: Encoding) -> TextPieces:
    """A raw text's pieces and their words' numbers 0..W-1, without the word strings."""
    ids = np.asarray(encoding.ids, dtype=np.int64)
    piece_word = _word_ids(encoding)
    if ids.size:
        piece_word = np.cumsum(np.diff(piece_word, prepend=piece_word[0]) != 0).astype(np.int64)
    return TextPieces(ids=ids, piece_word=piece_word, words=())


def _from_raw(text: str, encoding: Encoding) -> TextPieces:
    ids = np.asarray(encoding.ids, dtype=np.int64)
    piece_word = _word_ids(encoding)
    if ids.size == 0:
        return TextPieces(ids=ids, piece_word=piece_word, words=())
    spans = word_char_spans(text, np.asarray(encoding.offsets, dtype=np.int64), piece_word)
    words = tuple(text[a:b] for a, b in spans.tolist())
    # Renumber 0..W-1: pre-tokenizer word ids can skip numbers for removed characters.
    piece_word = np.cumsum(np.diff(piece_word, prepend=piece_word[0]) != 0).astype(np.int64)
    return TextPieces(ids=ids, piece_word=piece_word, words=words)


def _from_words(words: list[str], encoding: Encoding, text_index: int) -> TextPieces:
    piece_word = _word_ids(encoding)
    counts = np.bincount(piece_word, minlength=len(words)) if len(words) else _EMPTY
    if (counts == 0).any():
        first = int(np.flatnonzero(counts == 0)[0])
        raise EmptyWordError(
            f"text {text_index}: word {first} ({preview(words[first])}) has no word pieces: it is empty or blank"
        )
    return TextPieces(ids=np.asarray(encoding.ids, dtype=np.int64), piece_word=piece_word, words=tuple(words))


def _special_template(backend: HFTokenizer) -> tuple[list[int], list[int]]:
    """The special ids around a single sequence ([CLS] ... [SEP] for BERT), read off the tokenizer."""
    plain = backend.encode("a", add_special_tokens=False).ids
    full = backend.encode("a", add_special_tokens=True).ids
    cut = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
    return full[:cut], full[cut + len(plain) :]


def _token_id(backend: HFTokenizer, candidates: tuple[str, ...], default: int) -> int:
    for token in candidates:
        token_id = backend.token_to_id(token)
        if token_id is not None:
            return token_id
    return default
