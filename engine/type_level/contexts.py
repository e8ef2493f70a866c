"""What the model reads around a corpus occurrence: its sentence, a window of words, or the whole line.

Contexts are cut on the tokenizer's own words (its pre-tokenizer's split, with
each word's characters in the line), so cased, uncased and byte-level models cut
alike. The rule, CONTEXT_RULE in fingerprints:

    sentence   A sentence ends after a word made of . ! ? or … (a run of them, e.g.
               "?!" or "..."), together with the closing quotes and brackets glued
               after it (." .) ?'), when whitespace or the line's end follows. Not
               after a lone "." that follows a single letter or a title (U.S., e.g.,
               J. Smith, Mr. Dr. Mrs. Ms. Prof. St. Jr. Sr. vs.): those are
               abbreviations. The end of a line always ends a sentence; a sentence of
               more than LONG_LINE_PIECES pieces is cut between words into parts.
    window:N   at most N words either side of the occurrence, within its sentence, and
               fewer when the context would not fit the model's window in one run.
    line       the whole line (parts of LONG_LINE_PIECES pieces for giant lines), as
               before contexts had a rule.

A sentence or window goes to the model on its own: its characters, from its
first word to its last, are tokenized afresh, so a word's context is the same
whether the corpus holds a paragraph or a sentence per line (byte-level BPE
spells a line's first word without its leading space either way). Only the
contexts of occurrences the sums still want reach the model, and the contexts
of many lines are batched together.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from bertonnx.batching import run_starts
from bertonnx.errors import OptionError
from bertonnx.pooling import pool_pieces, pooled_width
from bertonnx.tokenize import TextPieces, Tokenizer

if TYPE_CHECKING:
    from bertonnx.runner import Runner

CONTEXTS = ("sentence", "window:N", "line")
DEFAULT_CONTEXT = "sentence"
CONTEXT_RULE = "sentence/1"
"""The cutting rule's version: a resume refuses a checkpoint cut by another rule (it is in the job's fingerprint)."""
LONG_LINE_PIECES = 1 << 14
"""A corpus line (or sentence) of more pieces is read as parts of at most this many, cut between words, so that its
states stay small (the model sees a window around each word either way; only words near a cut see less context)."""
PROBES = ("x word", "x. Word")
"""Texts whose last word is compared with that word alone, to learn if the tokenizer spells words by place."""
TITLES = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs"})
_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*")  # end marks, closers glued after them (byte-level BPE)
_CLOSER = re.compile(r"[\"'\u201d\u2019)\]]+")  # a closing word of its own (WordPiece splits every mark)


@dataclass(frozen=True)
class ContextRule:
    """A parsed `context` option."""

    kind: str  # line | sentence | window
    words: int = 0  # window: words either side of the occurrence

    @property
    def spec(self) -> str:
        return f"window:{self.words}" if self.kind == "window" else self.kind


def parse_context(spec: str) -> ContextRule:
    """"sentence" | "line" | "window:N" (N >= 1) -> its ContextRule; an OptionError names what is wrong."""
    if spec in ("sentence", "line"):
        return ContextRule(spec)
    name, _, value = str(spec).partition(":")
    if name == "window" and value.isdigit() and int(value) >= 1:
        return ContextRule("window", int(value))
    raise OptionError(f"context {spec!r}: expected sentence, line or window:N with N >= 1")


def sentence_ends(text: str, words: Sequence[str], spans: NDArray[np.int64]) -> NDArray[np.int64]:
    """(S,) the last word of each sentence of a line (the module docstring's rule), the line's last word last."""
    ends: list[int] = []
    count = len(words)
    for index, word in enumerate(words):
        if not _END.fullmatch(word) or (ends and ends[-1] >= index):
            continue
        if word == "." and index > 0 and spans[index - 1, 1] == spans[index, 0] and _abbreviation(words[index - 1]):
            continue
        last = index
        while last + 1 < count and spans[last + 1, 0] == spans[last, 1] and _CLOSER.fullmatch(words[last + 1]):
            last += 1
        after = int(spans[last, 1])
        if after < len(text) and not text[after].isspace():
            continue  # "u.s" or "3.14": a mark inside a word
        ends.append(last)
    if count and (not ends or ends[-1] != count - 1):
        if ends and not "".join(words[ends[-1] + 1 :]).strip():
            ends.pop()  # only spaces after the last end (byte-level BPE's lone spaces): they close that sentence
        ends.append(count - 1)
    return np.array(ends, dtype=np.int64)


def _abbreviation(word: str) -> bool:
    return (len(word) == 1 and word.isalpha()) or word.casefold() in TITLES


def word_spans(text: str, words: Sequence[str]) -> NDArray[np.int64]:
    """(W, 2) each word's [start, end) characters in `text` (the words are its substrings, in order)."""
    spans = np.empty((len(words), 2), dtype=np.int64)
    at = 0
    for index, word in enumerate(words):
        start = text.find(word, at) if word.strip() else at
        start = at if start < 0 else start
        spans[index] = start, start + len(word)
        at = start + len(word)
    return spans


def pool_ranges(
    runner: Runner, pieces: Sequence[TextPieces], ranges: NDArray[np.int64], pooling: str
) -> NDArray[np.float32]:
    """Final states of `pieces` pooled over each (text, start, end) piece range: (M, H)."""
    from bertonnx.results import Prepared

    special = runner.tokenizer.n_special
    sizes = np.array([p.ids.size + special for p in pieces], dtype=np.int64)
    hidden = runner.piece_states(Prepared(tuple(pieces), sizes))  # (P, H) every piece, in order
    offsets = np.cumsum([0] + [p.ids.size for p in pieces])[:-1]
    first = offsets[ranges[:, 0]] + ranges[:, 1]
    lengths = ranges[:, 2] - ranges[:, 1]
    starts = np.cumsum(lengths) - lengths
    index = np.repeat(first - starts, lengths) + np.arange(int(lengths.sum()))
    return pool_pieces(hidden, starts, pooling, index=index)


def cut_long(text: TextPieces, limit: int = LONG_LINE_PIECES) -> list[TextPieces]:
    """`text` as parts of at most `limit` pieces, each cut at a word's first piece (a longer word stays whole)."""
    if text.ids.size <= limit:
        return [text]
    starts = np.flatnonzero(np.diff(text.piece_word, prepend=-1) != 0)  # (W,) each word's first piece
    parts = []
    begin = 0
    while begin < text.ids.size:
        # the last word start at or before begin + limit (past begin), else the next one: a word is never split
        stop = starts[np.searchsorted(starts, begin + limit, side="right") - 1] if begin + limit < text.ids.size \
            else text.ids.size
        if stop <= begin:
            after = starts[starts > begin]
            stop = int(after[0]) if after.size else text.ids.size
        word = text.piece_word[begin:stop]
        parts.append(TextPieces(ids=text.ids[begin:stop], piece_word=word - word[0], words=()))
        begin = int(stop)
    return parts


def _bounds(text: str, line: TextPieces) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """(S,) first and (S,) end word of each sentence of a line (giant ones in parts), (W, 2) the words' characters."""
    spans = word_spans(text, line.words)
    ends = sentence_ends(text, line.words, spans) + 1
    starts = np.concatenate(([0], ends[:-1]))
    per_word = np.bincount(line.piece_word, minlength=len(line.words))  # (W,) pieces of each word
    if int(per_word.sum()) > LONG_LINE_PIECES:
        first, last = [], []
        cumulative = np.concatenate(([0], np.cumsum(per_word)))
        for start, end in zip(starts.tolist(), ends.tolist()):
            while cumulative[end] - cumulative[start] > LONG_LINE_PIECES:
                cut = int(np.searchsorted(cumulative, cumulative[start] + LONG_LINE_PIECES, side="right")) - 1
                cut = max(cut, start + 1)
                first.append(start)
                last.append(cut)
                start = cut
            first.append(start)
            last.append(end)
        starts, ends = np.array(first, dtype=np.int64), np.array(last, dtype=np.int64)
    return starts, ends, spans


def cut_contexts(
    tokenizer: Tokenizer, rule: ContextRule, texts: Sequence[str], pieces: Sequence[TextPieces],
    found: NDArray[np.int64],
) -> tuple[list[TextPieces], NDArray[np.int64]]:
    """The sentence or window of each occurrence (rows of `found`: slot, text, start piece, end piece), tokenized on
    its own: the distinct contexts, in input order, and (M, 3) each occurrence's (context, start, end)."""
    used = np.unique(found[:, 1])  # (L,) lines with an occurrence, in order
    bounds = [_bounds(texts[i], pieces[i]) for i in used.tolist()]
    n_words = np.array([len(pieces[i].words) for i in used.tolist()], dtype=np.int64)  # (L,)
    word_base = np.concatenate(([0], np.cumsum(n_words)))  # (L+1,) each line's first word, all lines' words in a row
    rank = np.searchsorted(used, found[:, 1])  # (M,) each occurrence's line among `used`
    piece_word = np.concatenate([pieces[i].piece_word for i in used.tolist()])  # (P,)
    piece_base = np.concatenate(([0], np.cumsum([pieces[i].ids.size for i in used.tolist()])))
    first = piece_word[piece_base[rank] + found[:, 2]] + word_base[rank]  # (M,) global word indexes
    end = piece_word[piece_base[rank] + found[:, 3] - 1] + word_base[rank] + 1
    sentence_start = np.concatenate([b[0] for b in bounds]) + np.repeat(word_base[:-1], [b[0].size for b in bounds])
    sentence_end = np.concatenate([b[1] for b in bounds]) + np.repeat(word_base[:-1], [b[1].size for b in bounds])
    sentence = np.searchsorted(sentence_end, first, side="right")  # (M,) sentence of each occurrence's first word
    low, high = sentence_start[sentence], np.maximum(sentence_end[sentence], end)  # never cut a run of words
    if rule.kind == "window":
        per_word = np.concatenate([np.bincount(pieces[i].piece_word, minlength=len(pieces[i].words))
                                   for i in used.tolist()])
        low, high = _windows(per_word, low, high, first, end, rule.words, tokenizer.window)
    span = int(word_base[-1]) + 1
    pairs, where = np.unique(low * span + high, return_inverse=True)  # (C,) distinct contexts, in input order
    keys = np.stack([pairs // span, pairs % span], axis=1)  # (C, 2) each context's words [low, high)
    words = [word for i in used.tolist() for word in pieces[i].words]  # every used line's words, in a row
    spans = np.concatenate([b[2] for b in bounds])  # (W, 2) characters within each word's own line
    line_of = np.searchsorted(word_base, keys[:, 0], side="right") - 1  # (C,) rank of each context's line
    inner = np.full((keys.shape[0], 2), [np.iinfo(np.int64).max, 0], dtype=np.int64)  # (C, 2) words its
    np.minimum.at(inner[:, 0], where, first)  # occurrences span: a trimmed edge never cuts into them
    np.maximum.at(inner[:, 1], where, end)
    trimmed = keys.copy()
    strings = []
    for index, (a, b) in enumerate(keys.tolist()):
        while a < inner[index, 0] and not words[a].strip():  # byte-level BPE's lone spaces stay off the edges
            a += 1
        while b > inner[index, 1] and not words[b - 1].strip():
            b -= 1
        trimmed[index] = a, b
        strings.append(texts[int(used[line_of[index]])][int(spans[a, 0]) : int(spans[b - 1, 1])])
    # A tokenizer that spells a word alike wherever it stands (WordPiece) gives a cut text the line's own pieces:
    # slicing them is the same and saves tokenizing again.
    contexts = tokenizer.split(strings, words=False) if _spelled_by_place(tokenizer) else [None] * len(strings)
    for index, context in enumerate(contexts):
        a, b = trimmed[index].tolist()
        if context is None or (int(context.piece_word[-1]) + 1 if context.ids.size else 0) != b - a:
            # sliced, or the tokenizer splits the cut text otherwise (a normaliser's edge case): the line's pieces
            line, base = pieces[int(used[line_of[index]])], int(word_base[line_of[index]])
            lo, hi = np.searchsorted(line.piece_word, [a - base, b - base])
            contexts[index] = TextPieces(ids=line.ids[lo:hi], piece_word=line.piece_word[lo:hi] - (a - base), words=())
    sizes = np.array([c.ids.size for c in contexts], dtype=np.int64)
    starts = [run_starts(c.piece_word) for c in contexts]
    bases = np.concatenate(([0], np.cumsum([s.size + 1 for s in starts])))  # (C+1,) each context's word starts
    word_starts = np.concatenate([np.append(s, size) for s, size in zip(starts, sizes.tolist())])
    offset = first - trimmed[where, 0]  # (M,) the occurrence's first word within its context
    ranges = np.stack([where, word_starts[bases[where] + offset], word_starts[bases[where] + offset + end - first]],
                      axis=1)
    return contexts, ranges.astype(np.int64)


def _spelled_by_place(tokenizer: Tokenizer) -> bool:
    """Whether a word's pieces depend on what stands before it (byte-level BPE: "Ġword" after a space, "word" at
    the start), asked of the tokenizer itself."""
    for probe in PROBES:
        whole, last = tokenizer.split([probe, probe.split()[-1]])
        tail = whole.ids[whole.piece_word == whole.piece_word[-1]]
        if not np.array_equal(tail, last.ids):
            return True
    return False


def _windows(per_word: NDArray[np.int64], low: NDArray[np.int64], high: NDArray[np.int64], first: NDArray[np.int64],
             end: NDArray[np.int64], n: int, room: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Words [first - n, end + n) within [low, high), n lowered where their pieces do not fit `room` (the model's
    window), one word a side at a time."""
    cumulative = np.concatenate(([0], np.cumsum(per_word)))
    width = np.full(first.size, n, dtype=np.int64)
    while True:
        a, b = np.maximum(low, first - width), np.minimum(high, end + width)
        over = (cumulative[b] - cumulative[a] > room) & (width > 0)
        if not over.any():
            return a, b
        width[over] -= 1


def pool_contexts(
    runner: Runner, rule: ContextRule, texts: Sequence[str] | None, pieces: Sequence[TextPieces],
    found: NDArray[np.int64], pooling: str,
) -> NDArray[np.float32]:
    """(M, H) each occurrence (rows of `found`: slot, text, start piece, end piece) pooled in its context.

    `texts` are the lines `pieces` were split from (with words); the line rule needs neither.
    """
    if not found.size:
        return np.zeros((0, pooled_width(runner.dim, pooling)), dtype=np.float32)
    if rule.kind == "line":
        used = np.unique(found[:, 1])
        remap = np.full(len(pieces), -1, dtype=np.int64)
        remap[used] = np.arange(used.size)
        return pool_ranges(runner, [pieces[i] for i in used.tolist()],
                           np.column_stack([remap[found[:, 1]], found[:, 2:]]), pooling)
    assert texts is not None
    contexts, ranges = cut_contexts(runner.tokenizer, rule, texts, pieces, found)
    return pool_ranges(runner, contexts, ranges, pooling)
