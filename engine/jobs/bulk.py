"""Bulk jobs: a file of words or texts -> a vector file, in chunks, resumable.

The input is read as a stream of lines and cut into fixed chunks of lines; each
chunk is embedded and stored by a VectorSink before the next is read, so memory
stays bounded and a killed job resumes at the first unfinished chunk.
"""

from __future__ import annotations

import codecs
import hashlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from bertonnx.bundle import Bundle
from bertonnx.embedder import Embedder
from bertonnx.errors import BadLineError
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

DEFAULT_CHUNK_LINES = 20_000


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

    def __post_init__(self) -> None:
        # Checked here, so a library caller meets a bad combination before the job starts, not mid-way.
        check_pooling_for_mode(self.pooling, self.mode)
        check_choice(self.unknown, UNKNOWN_POLICIES, "unknown policy")
        check_choice(self.long_text, LONG_TEXT_POLICIES, "long_text policy")
        check_choice(self.on_error, ON_ERROR_POLICIES, "on_error policy")
        check_positive("chunk_lines", self.chunk_lines)


def output_width(bundle: Bundle, options: BulkOptions) -> int:
    """The width of the vectors a job writes: the table's or the hidden size, doubled by first_last word pooling."""
    width = bundle.embedding_size if options.mode == "static" else bundle.hidden_size
    return width * (2 if options.mode != "sentences" and options.pooling == "first_last" else 1)


@dataclass(frozen=True)
class Rows:
    """What a chunk of lines gives: a key and a vector per row, and the line each row came from."""

    keys: list[str]
    vectors: NDArray[np.float32]  # (N, width)
    lines: NDArray[np.int64]  # (N,) line numbers; contextual mode gives one row per word of a line

    def __len__(self) -> int:
        return len(self.keys)


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


def embed_file(
    embedder: Embedder,
    source: Path | None,
    out: Path,
    options: BulkOptions,
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> BulkReport:
    """Embed every line of `source` (None: stdin) into `out`, atomically and resumably.

    Args:
        embedder: the loaded bundle.
        source: a UTF-8 file, one word (static) or text per line; None reads stdin.
        out: the output; its suffix picks the format (.npy .npz .txt .bin .jsonl).
        options: mode, pooling and error handling.
        resume: keep the chunks a killed run of the same job finished.
        progress: called with (bytes read, lines read) after each chunk.

    Raises:
        BadLineError: a bad line with on_error="fail".
    """
    if source is None and resume:
        raise BadLineError("--resume needs an input file; standard input cannot be read twice")
    width = output_width(embedder.bundle, options)
    fingerprint = {
        **(input_fingerprint(source) if source is not None else {"input": "-"}),
        "bundle": embedder.bundle.manifest["files"]["model.onnx"]["sha256"],
        **{name: getattr(options, name) for name in BulkOptions.__dataclass_fields__},
    }
    sink = VectorSink.open(out, JobSpec(fingerprint=fingerprint, dim=width), resume=resume)
    report = BulkReport(resumed_chunks=sink.done_chunks)
    stream = sys.stdin.buffer if source is None else source.open("rb")
    try:
        lines = read_lines(stream, "stdin" if source is None else str(source))
        for index, chunk in enumerate(_chunks(lines, options.chunk_lines)):
            report.lines += len(chunk)
            if index < sink.done_chunks:
                continue
            rows = embed_lines(embedder, chunk, options, report)
            sink.write_chunk(index, rows.keys, rows.vectors)
            report.rows += len(rows)
            if progress is not None:
                progress(chunk[-1].end_byte, report.lines)
    finally:
        if source is not None:
            stream.close()
    report.output = sink.finish()
    return report


def embed_to_stream(
    embedder: Embedder, source: Path | None, stream: BinaryIO, options: BulkOptions
) -> BulkReport:
    """Embed `source` (None: stdin) and write JSON lines to `stream` as each chunk is done.

    For pipes: nothing is atomic or resumable here; write to a file for that.
    """
    report = BulkReport()
    handle = sys.stdin.buffer if source is None else source.open("rb")
    try:
        for chunk in _chunks(read_lines(handle, "stdin" if source is None else str(source)), options.chunk_lines):
            report.lines += len(chunk)
            rows = embed_lines(embedder, chunk, options, report)
            stream.write(jsonl_records(rows.keys, rows.vectors))
            stream.flush()
            report.rows += len(rows)
    finally:
        if source is not None:
            handle.close()
    return report


def embed_lines(embedder: Embedder, chunk: list[Line], options: BulkOptions, report: BulkReport) -> Rows:
    """One chunk of lines -> its rows, in line order; bad lines fail or are skipped into the report."""
    problems = [_problem(line) for line in chunk]
    _flag(problems, ~embedder.tokenizer.has_pieces(_texts(chunk, problems)),
          "has no words (only characters the tokenizer drops)")
    if options.mode == "static" and options.unknown == "error":
        _flag(problems, embedder.find_unknown([t.strip() for t in _texts(chunk, problems)]),
              "maps to the unknown token (--unknown unk|zero keeps it)")
    for line, problem in zip(chunk, problems):
        if problem is not None:
            _bad(line, problem, options, report)
    kept = np.array([line.number for line, problem in zip(chunk, problems) if problem is None], dtype=np.int64)
    texts = _texts(chunk, problems)
    if options.mode == "static":
        words = [text.strip() for text in texts]
        return Rows(words, embedder.static(words, pooling=options.pooling, unknown=options.unknown), kept)
    if options.mode == "sentences":
        vectors = embedder.sentences(texts, pooling=options.pooling, normalize=options.normalize,
                                     long_text=options.long_text)
        return Rows(texts, vectors, kept)
    results = embedder.contextual(texts, pooling=options.pooling, long_text=options.long_text)
    counts = np.array([len(result.words) for result in results], dtype=np.int64)
    keys = [word for result in results for word in result.words]
    empty = np.zeros((0, output_width(embedder.bundle, options)), np.float32)
    vectors = np.concatenate([result.vectors for result in results] or [empty])
    return Rows(keys, vectors, np.repeat(kept, counts))


def _problem(line: Line) -> str | None:
    """Why a line cannot be embedded, from its text alone; None when it looks fine."""
    if "\x00" in line.text:  # binary or UTF-16 input; and .npz cannot store a key ending in NUL
        return "contains a NUL byte (binary or UTF-16 input?)"
    if not line.text.strip():
        return "is blank"
    return None


def _texts(chunk: list[Line], problems: list[str | None]) -> list[str]:
    """The texts of the lines without a problem so far."""
    return [line.text for line, problem in zip(chunk, problems) if problem is None]


def _flag(problems: list[str | None], bad: NDArray[np.bool_], reason: str) -> None:
    """Mark with `reason` the lines flagged in `bad`, which has one entry per line without a problem."""
    clean = [index for index, problem in enumerate(problems) if problem is None]
    for index, flagged in zip(clean, bad.tolist()):
        if flagged:
            problems[index] = reason


def _bad(line: Line, reason: str, options: BulkOptions, report: BulkReport) -> None:
    if options.on_error == "fail":
        raise BadLineError(f"line {line.number} {reason!s} (use --on-error skip to skip such lines)")
    report.skipped.append((line.number, reason))


def _chunks(lines: Iterator[Line], size: int) -> Iterator[list[Line]]:
    while chunk := list(islice(lines, size)):
        yield chunk
