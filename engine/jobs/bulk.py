"""Bulk jobs: a file of words or texts -> a vector file, in chunks, resumable.

The input is read as a stream of lines and cut into fixed chunks of lines; each
chunk is embedded and stored by a VectorSink before the next is read, so memory
stays bounded and a killed job resumes at the first unfinished chunk. A chunk is
embedded in slices of a few hundred lines, so that progress moves within it.

Every row keeps its id (line, word): the 1-based input line it came from and
its index among that line's rows (contextual mode gives a row per word; static
and sentence lines give one row, word 0).
"""

from __future__ import annotations

import codecs
import hashlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from bertonnx.bundle import Bundle
from bertonnx.embedder import Embedder
from bertonnx.errors import BadLineError, OptionError
from bertonnx.io.formats import jsonl_records
from bertonnx.io.sinks import JobSpec, VectorSink
from bertonnx.options import (
    LONG_TEXT_POLICIES,
    ON_ERROR_POLICIES,
    UNKNOWN_POLICIES,
    LongText,
    Mode,
    OnError,
    Unknown,
    check_choice,
    check_pooling_for_mode,
    check_positive,
)
from bertonnx.tokenize import preview

DEFAULT_CHUNK_LINES = 20_000
SLICE_LINES = 256
"""Lines per Embedder call within a chunk: progress moves every slice; measured as fast as whole chunks
(README, "The command line")."""
SKIP_HINT = "use --on-error skip to skip such lines"

Progress = Callable[[int, int], None]  # (bytes read, lines read)


@dataclass(frozen=True)
class Line:
    number: int  # 1-based line number in the input
    text: str
    end_byte: int  # offset just past this line, for progress


@dataclass(frozen=True)
class BulkOptions:
    """How a bulk job embeds: everything that changes its output."""

    mode: Mode = "static"
    pooling: str = "mean"  # a word pooling for static and contextual; mean or cls for sentences
    unknown: Unknown = "error"  # static: what a word mapping to the unknown token gets
    long_text: LongText = "window"
    normalize: bool = False  # sentences only
    on_error: OnError = "fail"  # fail, or skip the line and report it
    chunk_lines: int = DEFAULT_CHUNK_LINES
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


def output_width(bundle: Bundle, options: BulkOptions) -> int:
    """The width of the vectors a job writes: the table's or the hidden size, doubled by first_last word pooling."""
    width = bundle.embedding_size if options.mode == "static" else bundle.hidden_size
    return width * (2 if options.mode != "sentences" and options.pooling == "first_last" else 1)


@dataclass(frozen=True)
class Rows:
    """What a run of lines gives: a key, a vector and an id per row."""

    keys: list[str]
    vectors: NDArray[np.float32]  # (N, width)
    ids: NDArray[np.int64]  # (N, 2) line number, word index within the line

    def __len__(self) -> int:
        return len(self.keys)

    @staticmethod
    def join(parts: list[Rows], width: int) -> Rows:
        if len(parts) == 1:
            return parts[0]
        return Rows(
            [key for part in parts for key in part.keys],
            np.concatenate([part.vectors for part in parts] or [np.zeros((0, width), np.float32)]),
            np.concatenate([part.ids for part in parts] or [np.zeros((0, 2), np.int64)]),
        )


@dataclass
class BulkReport:
    lines: int = 0
    rows: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    resumed_chunks: int = 0
    output: Path | None = None


def read_lines(stream: BinaryIO, name: str) -> Iterator[Line]:
    """Lines as text without their line ending (LF or CRLF); a missing final newline is fine.

    A byte-order mark at the start of the input (as Windows editors write) is
    dropped, so that it does not become part of the first word.

    Raises:
        BadLineError: a line is not UTF-8, naming the line and the byte offset.
    """
    offset = 0
    for number, raw in enumerate(stream, start=1):
        bom = len(codecs.BOM_UTF8) if number == 1 and raw.startswith(codecs.BOM_UTF8) else 0
        try:
            text = raw[bom:].decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadLineError(
                f"{name}: line {number} is not valid UTF-8 (byte offset {offset + bom + error.start})"
            ) from error
        offset += len(raw)
        yield Line(number=number, text=text.rstrip("\r\n"), end_byte=offset)


def input_fingerprint(path: Path) -> dict[str, object]:
    """Size and sha256 of the input: a resumed job must read the same bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return {"input": str(path.resolve()), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


class FileJob:
    """One `embed_file` job, opened (every check that can fail at once done) before it runs.

    Opening first lets a caller show progress only for a job that has started.
    """

    def __init__(self, embedder: Embedder, source: Path | None, options: BulkOptions, sink: VectorSink) -> None:
        self.embedder = embedder
        self.source = source
        self.options = options
        self.sink = sink

    @classmethod
    def open(
        cls, embedder: Embedder, source: Path | None, out: Path, options: BulkOptions, resume: bool = False
    ) -> FileJob:
        """Check the job and open its sink; see embed_file.

        Raises:
            BadLineError: resume from stdin.
            OutputError: an output the sink refuses (suffix, a directory, another job's chunks).
        """
        if source is None and resume:
            raise BadLineError("--resume needs an input file; standard input cannot be read twice")
        fingerprint = {
            **(input_fingerprint(source) if source is not None else {"input": "-"}),
            "bundle": embedder.bundle.manifest["files"]["model.onnx"]["sha256"],
            **{name: getattr(options, name) for name in BulkOptions.__dataclass_fields__},
        }
        spec = JobSpec(fingerprint=fingerprint, dim=output_width(embedder.bundle, options), ids=True)
        return cls(embedder, source, options, VectorSink.open(out, spec, resume=resume))

    def run(self, progress: Progress | None = None) -> BulkReport:
        """Embed every line into the output; `progress` hears (bytes read, lines read) after each slice."""
        report = BulkReport(resumed_chunks=self.sink.done_chunks)
        with _open_input(self.source) as (stream, name):
            for index, chunk in enumerate(_chunks(read_lines(stream, name), self.options.chunk_lines)):
                report.lines += len(chunk)
                if index < self.sink.done_chunks:
                    if progress is not None and index == self.sink.done_chunks - 1:
                        progress(chunk[-1].end_byte, report.lines)
                    continue
                done = report.lines - len(chunk)
                rows = embed_slices(self.embedder, chunk, self.options, report, progress, done)
                self.sink.write_chunk(index, rows.keys, rows.vectors, rows.ids)
                report.rows += len(rows)
                if progress is not None:  # the chunk's last slice: reported once it is stored
                    progress(chunk[-1].end_byte, report.lines)
        report.output = self.sink.finish()
        return report


def embed_file(
    embedder: Embedder,
    source: Path | None,
    out: Path,
    options: BulkOptions,
    resume: bool = False,
    progress: Progress | None = None,
) -> BulkReport:
    """Embed every line of `source` (None: stdin) into `out`, atomically and resumably.

    Args:
        embedder: the loaded bundle.
        source: a UTF-8 file, one word (static) or text per line; None reads stdin.
        out: the output; its suffix picks the format (.npy .npz .txt .bin .jsonl), ids kept where it has room.
        options: mode, pooling and error handling.
        resume: keep the chunks a killed run of the same job finished.
        progress: called with (bytes read, lines read) after each slice of lines.

    Raises:
        BadLineError: a bad line with on_error="fail".
    """
    return FileJob.open(embedder, source, out, options, resume).run(progress)


def embed_to_stream(
    embedder: Embedder, source: Path | None, stream: BinaryIO, options: BulkOptions
) -> BulkReport:
    """Embed `source` (None: stdin) and write JSON lines (key, line, word, vector) to `stream` slice by slice.

    For pipes: nothing is atomic or resumable here; write to a file for that.
    """
    report = BulkReport()
    with _open_input(source) as (handle, name):
        for chunk in _chunks(read_lines(handle, name), SLICE_LINES):
            report.lines += len(chunk)
            rows = embed_lines(embedder, chunk, options, report)
            stream.write(jsonl_records(rows.keys, rows.vectors, rows.ids))
            stream.flush()
            report.rows += len(rows)
    return report


def embed_slices(
    embedder: Embedder,
    chunk: list[Line],
    options: BulkOptions,
    report: BulkReport,
    progress: Progress | None = None,
    lines_before: int = 0,
) -> Rows:
    """embed_lines over a chunk in slices of SLICE_LINES; the same rows.

    `progress` hears (bytes, lines) after each slice but the last: the caller reports that one once the
    chunk is stored.
    """
    parts = []
    for start in range(0, len(chunk), SLICE_LINES):
        piece = chunk[start : start + SLICE_LINES]
        parts.append(embed_lines(embedder, piece, options, report))
        if progress is not None and start + SLICE_LINES < len(chunk):
            progress(piece[-1].end_byte, lines_before + start + len(piece))
    return Rows.join(parts, output_width(embedder.bundle, options))


def embed_lines(embedder: Embedder, chunk: list[Line], options: BulkOptions, report: BulkReport) -> Rows:
    """Lines -> their rows, in line order; bad lines fail or are skipped into the report.

    Each text is tokenized once: the pieces that tell a line has no words are the
    ones embedded (a static word is split once more, by the table lookup).
    """
    problems = [_text_problem(line.text, options.mode) for line in chunk]
    texts = _texts(chunk, problems)
    if options.mode == "static":
        words = [text.strip() for text in texts]
        _flag(problems, words, ~embedder.tokenizer.has_pieces(words), _no_words)
        words = [text.strip() for text in _texts(chunk, problems)]
        policy = "unk" if options.unknown == "error" else options.unknown  # unknown words are flagged below
        found = embedder.static_lookup(words, pooling=options.pooling, unknown=policy)
        vectors = found.vectors
        if options.unknown == "error":
            _flag(problems, words, found.unknown, lambda word: _Problem(
                f"maps to the unknown token ({preview(word)})", "--unknown unk|zero embeds it anyway"))
            vectors = vectors[~found.unknown]
    else:
        prepared = embedder.prepare(texts)
        _flag(problems, texts, ~prepared.has_words, _no_words)
        prepared = prepared.select(prepared.has_words)
    for line, problem in zip(chunk, problems):
        if problem is not None:
            _bad(line, problem, options, report)
    kept = [line for line, problem in zip(chunk, problems) if problem is None]
    numbers = np.array([line.number for line in kept], dtype=np.int64)  # (L,)
    if options.mode == "contextual":
        rows = embedder.contextual_rows(prepared, pooling=options.pooling, long_text=options.long_text)
        return Rows(list(rows.words), rows.vectors, np.stack([numbers[rows.text], rows.word], axis=1))
    ids = np.stack([numbers, np.zeros_like(numbers)], axis=1)  # (L, 2): one row a line
    if options.mode == "static":
        return Rows([line.text.strip() for line in kept], vectors, ids)
    vectors = embedder.sentences(
        prepared, pooling=options.pooling, normalize=options.normalize, long_text=options.long_text,
        max_length=options.max_length,
    )
    return Rows([line.text for line in kept], vectors, ids)


@dataclass(frozen=True)
class _Problem:
    """Why a line cannot be embedded, and the one hint that helps."""

    reason: str
    hint: str = SKIP_HINT


def _no_words(text: str) -> _Problem:
    return _Problem("has no words (only characters the tokenizer drops)")


def _text_problem(text: str, mode: str) -> _Problem | None:
    """Why a line cannot be embedded, from its text alone."""
    if "\x00" in text:  # binary or UTF-16 input; and .npz cannot store a key ending in NUL
        return _Problem("contains a NUL byte (binary or UTF-16 input?)")
    if not text.strip():
        return _Problem("is blank")
    if mode == "static" and len(words := text.split()) > 1:
        return _Problem(f"holds {len(words)} words ({preview(text.strip())}); --static takes one word a line")
    return None


def _texts(chunk: list[Line], problems: list[_Problem | None]) -> list[str]:
    """The texts of the lines without a problem so far."""
    return [line.text for line, problem in zip(chunk, problems) if problem is None]


def _flag(
    problems: list[_Problem | None], texts: list[str], bad: NDArray[np.bool_], problem: Callable[[str], _Problem]
) -> None:
    """Give `problem(text)` to the lines flagged in `bad`, which has one entry per line without a problem."""
    clean = [index for index, found in enumerate(problems) if found is None]
    for index, text, flagged in zip(clean, texts, bad.tolist()):
        if flagged:
            problems[index] = problem(text)


def _bad(line: Line, problem: _Problem, options: BulkOptions, report: BulkReport) -> None:
    if options.on_error == "fail":
        raise BadLineError(f"line {line.number} {problem.reason} ({problem.hint})")
    report.skipped.append((line.number, problem.reason))


@contextmanager
def _open_input(source: Path | None) -> Iterator[tuple[BinaryIO, str]]:
    """The input file, or stdin (left open); yields (binary stream, name for messages)."""
    if source is None:
        yield sys.stdin.buffer, "stdin"
        return
    with source.open("rb") as stream:
        yield stream, str(source)


def _chunks(lines: Iterator[Line], size: int) -> Iterator[list[Line]]:
    while chunk := list(islice(lines, size)):
        yield chunk
