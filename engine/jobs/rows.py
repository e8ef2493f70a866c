"""How a bulk job makes its rows, mode by mode: a slice of lines -> checked, tokenized -> rows.

The reader stage (`prepare`) checks each line and tokenizes a slice once; the
model stage (`rows_of`) runs the model and pools, one function per mode
(static: a table lookup; contextual: a row per word; sentences: a row per
line), a very long line a group of windows at a time with progress inside it.

Every row keeps its id (line, word): the 1-based input line it came from and
its index among that line's rows (contextual mode gives a row per word; static
and sentence lines give one row, word 0), and an unknown flag: the row's word
(a sentence: any word of it) maps to the unknown token.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import NDArray

from bertonnx.bundle import Bundle
from bertonnx.embedder import Embedder, Prepared
from bertonnx.errors import BadLineError, OptionError
from bertonnx.io.formats import RowBlock
from bertonnx.jobs.lines import LONG_TEXT_PIECES, Line
from bertonnx.long_text import sentence_in_groups, word_rows_in_groups
from bertonnx.options import (
    DEFAULT_CHUNK_LINES,
    LONG_TEXT_POLICIES,
    ON_ERROR_POLICIES,
    UNKNOWN_POLICIES,
    LongText,
    Mode,
    OnError,
    SentencePooling,
    Unknown,
    WordPooling,
    check_choice,
    check_pooling_for_mode,
    check_positive,
)
from bertonnx.pooling import pooled_width
from bertonnx.tokenize import TextPieces, preview

SKIP_HINT = "use {on_error} to skip such lines"
"""The hint of a bad line under on_error="fail": a message template naming its fix, on_error="skip"."""
RECORDED_FIXES = {"mode": "--static"}
"""How a skipped line's reason words a fix: the reasons are kept in outputs (a Ray job's manifest.json), whose
bytes do not change."""


@dataclass(frozen=True)
class BulkOptions:
    """How a bulk job embeds: everything that changes its output, and how often it checkpoints."""

    mode: Mode = "static"
    pooling: WordPooling | SentencePooling = "mean"  # a word pooling for static and contextual; mean, cls: sentences
    unknown: Unknown = "error"  # static: what a word mapping to the unknown token gets
    long_text: LongText = "window"
    normalize: bool = False  # sentences only
    on_error: OnError = "fail"  # fail, or skip the line and report it
    chunk_lines: int = DEFAULT_CHUNK_LINES  # lines between checkpoints; does not change the output
    max_length: int | None = None  # sentences only: cut every text to this many positions, as sentence-transformers

    def __post_init__(self) -> None:
        # Checked here, so a library caller meets a bad combination before the job starts, not mid-way.
        check_pooling_for_mode(self.pooling, self.mode)
        check_choice(self.unknown, UNKNOWN_POLICIES, "unknown policy")
        check_choice(self.long_text, LONG_TEXT_POLICIES, "long_text policy")
        check_choice(self.on_error, ON_ERROR_POLICIES, "on_error policy")
        check_positive("chunk_lines", self.chunk_lines)
        if self.max_length is not None:
            check_positive("max_length", self.max_length)
            if self.mode != "sentences":
                raise OptionError(f"max_length applies to sentences only, not {self.mode}")
        if self.normalize and self.mode != "sentences":
            raise OptionError(f"normalize applies to sentences only, not {self.mode}")
        if self.unknown != "error" and self.mode != "static":
            raise OptionError(f"unknown applies to static vectors only, not {self.mode}: a contextual vector of a "
                              "word read as [UNK] still reads its context (its row is flagged unknown)")

    @property
    def word_pooling(self) -> WordPooling:
        """The pooling of a static or contextual job (checked to be a word pooling when the options were made)."""
        return cast(WordPooling, self.pooling)

    @property
    def sentence_pooling(self) -> SentencePooling:
        """The pooling of a sentences job (checked to be mean or cls when the options were made)."""
        return cast(SentencePooling, self.pooling)

    def numbers(self) -> dict[str, object]:
        """The options that change the rows (chunk_lines only changes when checkpoints fall)."""
        return {name: getattr(self, name) for name in BulkOptions.__dataclass_fields__ if name != "chunk_lines"}


def output_width(bundle: Bundle, options: BulkOptions) -> int:
    """The width of the vectors a job writes: the table's or the hidden size, doubled by first_last word pooling."""
    width = bundle.embedding_size if options.mode == "static" else bundle.hidden_size
    return width if options.mode == "sentences" else pooled_width(width, options.pooling)


@dataclass(frozen=True)
class Within:
    """Progress inside a very long line: shown, never a checkpoint (a resume starts at a slice boundary)."""

    lines: int
    end_byte: int


@dataclass(frozen=True)
class Mark:
    """The end of a slice: where a resume would start, and what progress to show."""

    lines: int  # lines read so far, in the whole input
    end_byte: int


@dataclass(frozen=True)
class Slice:
    """A slice read, checked and tokenized on the reader thread, ready for the model."""

    lines: list[Line]  # every line read, the bad ones included
    kept: list[Line]  # the lines that give rows
    problems: list[tuple[Line, Problem]]
    prepared: Prepared | None  # contextual and sentences: the kept lines' pieces
    static: RowBlock | None  # static: the kept lines' rows (a table lookup, done on the reader thread)


@dataclass(frozen=True)
class Problem:
    """Why a line cannot be embedded, and the one hint that helps: message templates (bertonnx.errors) naming
    `fixes` as `{argument}` placeholders; without a hint, on_error="skip" is the way out."""

    reason: str
    hint: str = SKIP_HINT
    fixes: tuple[tuple[str, object], ...] = ()

    def error(self, number: int) -> BadLineError:
        fixes = dict(self.fixes) if self.hint != SKIP_HINT else {**dict(self.fixes), "on_error": "skip"}
        return BadLineError(f"line {number} {self.reason} ({self.hint})", **fixes)

    def recorded(self) -> str:
        """The reason as a skipped line's report and a Ray job's manifest keep it."""
        reason = self.reason
        for name, _ in self.fixes:
            reason = reason.replace("{" + name + "}", RECORDED_FIXES.get(name, "{" + name + "}"))
        return reason


def prepare(embedder: Embedder, chunks: Iterator[list[Line]], options: BulkOptions) -> Iterator[Slice]:
    """Each slice checked and tokenized once: the pieces that tell a line has no words are the ones embedded."""
    for lines in chunks:
        problems: dict[int, Problem] = {}
        for index, line in enumerate(lines):
            problem = _text_problem(line.text, options.mode) if line.bad_byte is None else Problem(
                f"is not valid UTF-8 (byte {line.bad_byte} of the input)")
            if problem is not None:
                problems[index] = problem
        clean = [index for index in range(len(lines)) if index not in problems]
        prepared, static = None, None
        if options.mode == "static":
            static = _static_rows(embedder, [lines[index] for index in clean], options, problems, clean)
        else:
            prepared = embedder.prepare([lines[index].text for index in clean])
            limit = embedder.tokenizer.window
            for index, text in zip(clean, prepared.pieces):
                if not text.words:
                    problems[index] = _no_words()
                elif options.long_text == "error" and text.ids.size > limit and options.max_length is None:
                    problems[index] = Problem(
                        f"has {text.ids.size} word pieces; the model takes {limit}",
                        "{long_text} embeds it anyway", (("long_text", ("window", "truncate")),))
            prepared = prepared.select(np.array([index not in problems for index in clean], dtype=bool))
        kept = [line for index, line in enumerate(lines) if index not in problems]
        found = [(lines[index], problems[index]) for index in sorted(problems)]
        yield Slice(lines=lines, kept=kept, problems=found, prepared=prepared, static=static)


def record(chunk: Slice, options: BulkOptions, skipped: list[tuple[int, str]]) -> None:
    """Fail on the slice's first bad line, or note every bad line in `skipped` as (line number, reason)."""
    for line, problem in chunk.problems:
        if options.on_error == "fail":
            raise problem.error(line.number)
        skipped.append((line.number, problem.recorded()))


def _no_words() -> Problem:
    return Problem("has no words (only characters the tokenizer drops)")


def _text_problem(text: str, mode: str) -> Problem | None:
    """Why a line cannot be embedded, from its text alone."""
    if "\x00" in text:  # binary or UTF-16 input; and .npz cannot store a key ending in NUL
        return Problem("contains a NUL byte (binary or UTF-16 input?)")
    if not text.strip():
        return Problem("is blank")
    if mode == "static" and len(words := text.split()) > 1:
        shown = preview(text.strip())
        return Problem(f"holds {len(words)} words ({shown}); {{mode}} takes one word a line",
                        fixes=(("mode", mode),))
    return None


# -- the model stage: one function per mode ------------------------------------------------------


def rows_of(embedder: Embedder, chunk: Slice, options: BulkOptions) -> Iterator[RowBlock | Within]:
    """A slice's rows in line order; inside a very long line, marks of progress between its blocks."""
    if not chunk.kept:
        return
    if chunk.static is not None:
        yield chunk.static
        return
    numbers = np.array([line.number for line in chunk.kept], dtype=np.int64)  # (L,)
    assert chunk.prepared is not None
    texts = list(chunk.prepared.pieces)
    long = [options.long_text == "window" and options.max_length is None and t.ids.size > LONG_TEXT_PIECES
            for t in texts]
    start = 0
    while start < len(texts):  # runs of ordinary lines together, each very long line alone
        if long[start]:
            yield from _long_rows(embedder, texts[start], chunk.kept[start], options)
            start += 1
            continue
        end = start
        while end < len(texts) and not long[end]:
            end += 1
        run = Prepared(pieces=tuple(texts[start:end]), tokens=chunk.prepared.tokens[start:end])
        if options.mode == "contextual":
            yield _contextual_rows(embedder, run, numbers[start:end], options)
        else:
            yield _sentence_rows(embedder, run, [line.text for line in chunk.kept[start:end]],
                                 numbers[start:end], options)
        start = end


def _static_rows(
    embedder: Embedder, lines: list[Line], options: BulkOptions, problems: dict[int, Problem], clean: list[int]
) -> RowBlock:
    """Static rows of one-word lines from one table lookup; lines without pieces, or (unknown="error") with the
    unknown token, become problems and give no row."""
    words = [line.text.strip() for line in lines]
    bad = ~embedder.tokenizer.has_pieces(words)  # (L,)
    for index, empty in zip(clean, bad.tolist()):
        if empty:
            problems[index] = _no_words()
    words = [word for word, empty in zip(words, bad.tolist()) if not empty]
    found = embedder.static_lookup(words, pooling=options.word_pooling,
                                   unknown="zero" if options.unknown == "zero" else "unk")
    unknown = np.zeros(len(lines), dtype=bool)
    unknown[~bad] = found.unknown
    vectors = np.zeros((len(lines), found.vectors.shape[1]), dtype=np.float32)
    vectors[~bad] = found.vectors
    if options.unknown == "error":
        for index, line, flagged in zip(clean, lines, unknown.tolist()):
            if flagged:
                problems[index] = Problem(
                    f"maps to the unknown token ({preview(line.text.strip())})", "{unknown} embeds it anyway",
                    (("unknown", ("unk", "zero")),))
        bad |= unknown
    keep = ~bad
    numbers = np.array([line.number for line in lines], dtype=np.int64)[keep]
    kept = [line.text.strip() for line, k in zip(lines, keep.tolist()) if k]
    return RowBlock(kept, vectors[keep], _line_ids(numbers), unknown[keep])


def _contextual_rows(
    embedder: Embedder, run: Prepared, numbers: NDArray[np.int64], options: BulkOptions
) -> RowBlock:
    rows = embedder.contextual_rows(run, pooling=options.word_pooling, long_text=options.long_text)
    return RowBlock(list(rows.words), rows.vectors, np.stack([numbers[rows.text], rows.word], axis=1), rows.unknown)


def _sentence_rows(
    embedder: Embedder, run: Prepared, texts: list[str], numbers: NDArray[np.int64], options: BulkOptions
) -> RowBlock:
    vectors = embedder.sentences(
        run, pooling=options.sentence_pooling, normalize=options.normalize,
        long_text=options.long_text, max_length=options.max_length,
    )
    unknown = np.array([_has_unknown(embedder, text) for text in run.pieces], dtype=bool)
    return RowBlock(texts, vectors, _line_ids(numbers), unknown)


def _long_rows(embedder: Embedder, text: TextPieces, line: Line, options: BulkOptions) -> Iterator[RowBlock | Within]:
    """One very long line, a group of windows at a time (bertonnx.long_text), with progress inside it."""
    number = np.array([line.number], dtype=np.int64)

    def within(done: int) -> Within:
        return Within(line.number - 1, line.start_byte + (line.end_byte - line.start_byte) * done // text.ids.size)

    if options.mode == "contextual":
        for rows, done in word_rows_in_groups(embedder.runner, text, options.word_pooling):
            ids = np.stack([np.full_like(rows.word, line.number), rows.word], axis=1)
            yield RowBlock(list(rows.words), rows.vectors, ids, rows.unknown)
            yield within(done)
        return
    for vector, done in sentence_in_groups(embedder.runner, text, options.sentence_pooling):
        yield within(done)
        if vector is not None:
            vectors = vector[None].astype(np.float32)
            if options.normalize:
                from bertonnx.pooling import l2_normalize

                vectors = l2_normalize(vectors)
            yield RowBlock([line.text], vectors, _line_ids(number),
                           np.array([_has_unknown(embedder, text)], dtype=bool))


def _has_unknown(embedder: Embedder, text: TextPieces) -> bool:
    return bool((text.ids == embedder.tokenizer.unk_id).any())


def _line_ids(numbers: NDArray[np.int64]) -> NDArray[np.int64]:
    return np.stack([numbers, np.zeros_like(numbers)], axis=1)  # (L, 2): one row a line


def join(blocks: list[RowBlock], width: int) -> RowBlock:
    if len(blocks) == 1:
        return blocks[0]
    return RowBlock(
        [key for block in blocks for key in block.keys],
        np.concatenate([block.vectors for block in blocks] or [np.zeros((0, width), np.float32)]),
        np.concatenate([block.ids for block in blocks if block.ids is not None] or [np.zeros((0, 2), np.int64)]),
        np.concatenate([block.unknown for block in blocks if block.unknown is not None] or [np.zeros(0, bool)]),
    )
