"""Bulk jobs: a file of words or texts -> a vector file, streamed in constant memory, resumable.

The input is read as a stream of lines and cut into *slices* (the memory unit,
bertonnx.jobs.lines). One loop (`_pipeline`) serves every bulk job: three stages
overlap (bertonnx.jobs.stages): a reader thread reads, checks and tokenizes
slices ahead; the calling thread runs the model and pools (bertonnx.jobs.rows);
a writer thread takes the rows: a file job's writer appends them to the output's
parts (bertonnx.io.sinks), a stream job's writes JSON lines.

Every `chunk_lines` lines (the checkpoint unit, apart from the memory unit), or
at the first slice's end once `checkpoint_seconds` (60 s) have passed since the
last, a file job's writer commits a checkpoint: a killed job resumes after the
last one and writes an output byte-identical to an uninterrupted run, because
slices depend on the input alone and checkpoints fall between them. A resume is
refused unless everything that shapes the numbers is the same
(bertonnx.jobs.fingerprints). An interrupted job (KeyboardInterrupt) with
nothing a resume could continue (no checkpoint yet, or stdin, which cannot be
read twice) removes its work folder, so the same command can simply run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from bertonnx.embedder import Embedder
from bertonnx.errors import BadLineError
from bertonnx.io.checkpoints import CHECKPOINT_SECONDS
from bertonnx.io.formats import RowBlock, jsonl_records
from bertonnx.io.sinks import JobSpec, VectorSink
from bertonnx.jobs.fingerprints import input_fingerprint, job_fingerprint, runtime_fingerprint
from bertonnx.jobs.lines import Line, open_input, read_lines, slices
from bertonnx.jobs.rows import (
    DEFAULT_CHUNK_LINES,
    BulkOptions,
    Mark,
    Within,
    join,
    output_width,
    prepare,
    record,
    rows_of,
)
from bertonnx.jobs.stages import Behind, ahead

__all__ = [
    "CHECKPOINT_SECONDS", "DEFAULT_CHUNK_LINES", "BulkOptions", "BulkReport", "FileJob", "Line", "embed_file",
    "embed_lines", "embed_to_stream", "input_fingerprint", "job_fingerprint", "output_width", "read_lines",
    "runtime_fingerprint", "slices",
]

Progress = Callable[[int, int], None]  # (bytes read, lines read)
ExpectedSize = Callable[[int, int], None]  # (the output's expected bytes, the lines it was estimated from)


@dataclass
class BulkReport:
    """What a job did. After a resume `lines` and `rows` count the whole output; `*_this_run` this run alone."""

    lines: int = 0
    rows: int = 0
    lines_this_run: int = 0
    rows_this_run: int = 0
    seconds: float = 0.0  # this run's wall time
    unknown_rows: int = 0  # this run's rows flagged unknown
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason), this run
    resumed_lines: int = 0  # lines kept from the killed run
    output: Path | None = None

    @property
    def lines_per_second(self) -> float:
        return self.lines_this_run / self.seconds if self.seconds > 0 else 0.0


Item = RowBlock | Mark | Within
"""What the model stage hands the writer: rows, the end of a slice, progress inside a very long line."""


def _pipeline(embedder: Embedder, lines: Iterator[Line], options: BulkOptions, report: BulkReport,
              write: Callable[[Item], None]) -> None:
    """The one loop of every bulk job: slices read and tokenized ahead, the model here, `write` behind.

    `write` runs on the writer thread and hears each slice's rows, then its Mark; an error on any thread is
    raised here, the other threads stopped and joined.
    """
    # closing(): on any error the reader thread is stopped and joined here, never left running
    prepared = ahead(prepare(embedder, slices(lines), options))
    with closing(prepared), Behind(write, depth=2) as writer:
        for chunk in prepared:
            record(chunk, options, report.skipped)
            for block in rows_of(embedder, chunk, options):
                if isinstance(block, RowBlock):
                    report.unknown_rows += int(np.count_nonzero(block.unknown))
                writer.put(block)
            writer.put(Mark(chunk.lines[-1].number, chunk.lines[-1].end_byte))


class _SinkWriter:
    """A file job's writer: rows appended to the sink, a checkpoint every `chunk_lines` lines or `seconds` (at a
    slice's end), progress shown, and the output's size estimated from the first slice."""

    def __init__(self, sink: VectorSink, chunk_lines: int, seconds: float, last: Mark, progress: Progress | None,
                 input_size: int | None = None, expected_size: ExpectedSize | None = None) -> None:
        self.sink, self.chunk_lines, self.seconds, self.progress = sink, chunk_lines, seconds, progress
        self.last = last
        self.committed = last.lines
        self.committed_at = time.monotonic()
        self.start = (last, sink.written)  # where this run starts: input and output bytes
        self.input_size, self.expected_size = input_size, expected_size

    def __call__(self, item: Item) -> None:
        if isinstance(item, RowBlock):
            self.sink.append(item)
            return
        if isinstance(item, Mark):
            self.last = item
            self._estimate(item)
            due = time.monotonic() - self.committed_at >= self.seconds
            if item.lines - self.committed >= self.chunk_lines or (due and item.lines > self.committed):
                self.sink.commit(_position(item))
                self.committed, self.committed_at = item.lines, time.monotonic()
        if self.progress is not None:
            self.progress(item.end_byte, item.lines)

    def _estimate(self, mark: Mark) -> None:
        """After this run's first slice, the output's size: its bytes so far and the rest of the input at the
        first slice's output bytes per input byte (rows per line and the format's bytes per row alike)."""
        if self.expected_size is None or self.input_size is None:
            return
        (first, written) = self.start
        if mark.end_byte <= first.end_byte:
            return
        now = self.sink.written
        per_byte = (now - written) / (mark.end_byte - first.end_byte)
        self.expected_size(round(now + per_byte * max(self.input_size - mark.end_byte, 0)), mark.lines - first.lines)
        self.expected_size = None


class _StreamWriter:
    """A stream job's writer: rows as JSON lines, flushed slice by slice; progress shown."""

    def __init__(self, stream: BinaryIO, report: BulkReport, progress: Progress | None = None) -> None:
        self.stream, self.report, self.progress = stream, report, progress

    def __call__(self, item: Item) -> None:
        if isinstance(item, RowBlock):
            for block in item.blocks():
                self.stream.write(jsonl_records(block.keys, block.vectors, block.ids, block.unknown))
            self.stream.flush()
            self.report.rows_this_run += len(item)
            return
        if isinstance(item, Mark):
            self.report.lines = item.lines
        if self.progress is not None:
            self.progress(item.end_byte, item.lines)


def _position(mark: Mark) -> dict[str, int]:
    """Where a resume starts: the lines done and the byte after them."""
    return {"lines": mark.lines, "bytes": mark.end_byte}


class FileJob:
    """One `embed_file` job, opened (every check that can fail at once done) before it runs.

    Opening first lets a caller show progress only for a job that has started.
    """

    def __init__(self, embedder: Embedder, source: Path | None, options: BulkOptions, sink: VectorSink,
                 checkpoint_seconds: float = CHECKPOINT_SECONDS) -> None:
        self.embedder = embedder
        self.source = source
        self.options = options
        self.sink = sink
        self.checkpoint_seconds = checkpoint_seconds
        self._discarded = False

    @classmethod
    def open(
        cls,
        embedder: Embedder,
        source: Path | None,
        out: Path,
        options: BulkOptions,
        resume: bool = False,
        force: bool = False,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ) -> FileJob:
        """Check the job and open its sink; see embed_file.

        Raises:
            BadLineError: resume from stdin.
            OutputError: an output the sink refuses (suffix, a directory, an existing output without force,
                an unfinished job without resume or force, a resume of another job).
        """
        if source is None and resume:
            raise BadLineError("{resume} needs an input file; standard input cannot be read twice", resume=True)
        spec = JobSpec(
            fingerprint=job_fingerprint(embedder, source, options),
            dim=output_width(embedder.bundle, options),
            ids=True,
            unknown=True,
            key_by={"contextual": "word", "sentences": "line"}.get(options.mode),
        )
        sink = VectorSink.open(out, spec, resume=resume, force=force)
        return cls(embedder, source, options, sink, checkpoint_seconds)

    @property
    def kept_lines(self) -> int:
        """Input lines a resume would not redo: those up to the last checkpoint on disk (0: nothing is kept)."""
        return 0 if self._discarded else int((self.sink.position or {}).get("lines", 0))

    def run(self, progress: Progress | None = None, expected_size: ExpectedSize | None = None) -> BulkReport:
        """Embed every line into the output.

        Args:
            progress: hears (bytes read, lines read) as slices are written.
            expected_size: hears (the output's expected bytes, the lines estimated from) once, after this run's
                first slice, when the input is a file (its size known).

        Raises:
            KeyboardInterrupt: after a checkpoint, the work stays for a resume (`kept_lines`); with nothing a
                resume could continue (no checkpoint yet, or stdin) the work folder is removed.
        """
        started = time.perf_counter()
        position = self.sink.position or {}
        kept_lines, start_byte = int(position.get("lines", 0)), int(position.get("bytes", 0))
        report = BulkReport(resumed_lines=kept_lines)
        rows_before = self.sink.rows
        if progress is not None and kept_lines:
            progress(start_byte, kept_lines)
        input_size = self.source.stat().st_size if self.source is not None else None
        writer = _SinkWriter(self.sink, self.options.chunk_lines, self.checkpoint_seconds,
                             Mark(kept_lines, start_byte), progress, input_size, expected_size)
        finishing = False
        try:
            with open_input(self.source, start_byte) as (stream, name):
                lines = read_lines(stream, name, first_number=kept_lines + 1, offset=start_byte,
                                   undecodable=_undecodable(self.options))
                _pipeline(self.embedder, lines, self.options, report, writer)
            finishing = True
            report.output = self.sink.finish(_position(writer.last))
        except BadLineError:
            self.sink.discard()  # the same input fails at the same line again: nothing worth resuming
            raise
        except KeyboardInterrupt:
            if not finishing and (self.source is None or self.kept_lines == 0):
                self.sink.discard()  # nothing a resume could continue: the same command simply runs again
                self._discarded = True
            raise
        finally:
            self.sink.close()
        report.lines = writer.last.lines
        report.lines_this_run = writer.last.lines - kept_lines
        report.rows = self.sink.rows
        report.rows_this_run = self.sink.rows - rows_before
        report.seconds = time.perf_counter() - started
        return report


def embed_file(
    embedder: Embedder,
    source: Path | None,
    out: Path,
    options: BulkOptions,
    resume: bool = False,
    progress: Progress | None = None,
    force: bool = False,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
) -> BulkReport:
    """Embed every line of `source` (None: stdin) into `out`, atomically and resumably, in constant memory.

    Args:
        embedder: the loaded bundle.
        source: a UTF-8 file, one word (static) or text per line; None reads stdin.
        out: the output; its suffix picks the format (.npy .npz .txt .bin .jsonl), ids and flags kept where
            it has room.
        options: mode, pooling and error handling.
        resume: continue a killed run of the same job from its last checkpoint.
        progress: called with (bytes read, lines read) as slices are written.
        force: replace an existing output, or start over where a killed run left its work.
        checkpoint_seconds: a checkpoint also falls at the first slice's end once this long has passed since the
            last (besides every `options.chunk_lines` lines); it never changes the output.

    Raises:
        BadLineError: a bad line with on_error="fail".
        OutputError: see FileJob.open.
        KeyboardInterrupt: see FileJob.run.
    """
    return FileJob.open(embedder, source, out, options, resume, force, checkpoint_seconds).run(progress)


def _undecodable(options: BulkOptions) -> Literal["raise", "mark"]:
    """A line that is not UTF-8 fails the job, or where bad lines are skipped, is skipped and reported."""
    return "mark" if options.on_error == "skip" else "raise"


def embed_to_stream(embedder: Embedder, source: Path | None, stream: BinaryIO, options: BulkOptions,
                    progress: Progress | None = None) -> BulkReport:
    """Embed `source` (None: stdin) and write JSON lines (key, line, word, unknown, vector) to `stream`.

    For pipes: nothing is atomic or resumable here; write to a file for that. Rows
    are written slice by slice as they are made, on a writer thread; `progress` hears (bytes read, lines read).
    """
    started = time.perf_counter()
    report = BulkReport()
    with open_input(source) as (handle, name):
        _pipeline(embedder, read_lines(handle, name, undecodable=_undecodable(options)), options, report,
                  _StreamWriter(stream, report, progress))
    report.lines_this_run, report.rows = report.lines, report.rows_this_run
    report.seconds = time.perf_counter() - started
    return report


def embed_lines(embedder: Embedder, chunk: list[Line], options: BulkOptions, report: BulkReport) -> RowBlock:
    """Lines -> their rows (keys, vectors, ids, unknown), in line order; bad lines fail or are skipped into `report`.

    The in-memory form of a bulk job, for callers that hand over lines themselves (Ray workers).
    """
    blocks: list[RowBlock] = []
    for prepared in prepare(embedder, slices(iter(chunk)), options):
        record(prepared, options, report.skipped)
        blocks.extend(block for block in rows_of(embedder, prepared, options) if isinstance(block, RowBlock))
    return join(blocks, output_width(embedder.bundle, options))
