"""Bulk jobs: a file of words or texts -> a vector file, streamed in constant memory, resumable.

The input is read as a stream of lines and cut into *slices* (the memory unit):
at most SLICE_LINES lines and about SLICE_CHARS characters, so a slice's states
stay small however long its lines. Three stages overlap (bertonnx.jobs.stages):
a reader thread reads, checks and tokenizes slices ahead; the calling thread
runs the model and pools; a writer thread encodes rows and appends them to the
output's parts (bertonnx.io.sinks). A line longer than LONG_TEXT_PIECES pieces
runs a group of windows at a time (bertonnx.long_text), with progress inside it.

Every `chunk_lines` lines (the checkpoint unit, apart from the memory unit) the
writer commits a checkpoint: a killed job resumes after the last one and writes
an output byte-identical to an uninterrupted run, because slices depend on the
input alone. A resume is refused unless everything that shapes the numbers is
the same: input bytes, graph, backend, precision, int8 recipe, mode, pooling,
policies and batching (`JobSpec.fingerprint`).

Every row keeps its id (line, word): the 1-based input line it came from and
its index among that line's rows (contextual mode gives a row per word; static
and sentence lines give one row, word 0), and an unknown flag: the row's word
(a sentence: any word of it) maps to the unknown token.
"""

from __future__ import annotations

import codecs
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from bertonnx.bundle import Bundle, sha256_file
from bertonnx.embedder import Embedder, Prepared
from bertonnx.errors import BadLineError, OptionError
from bertonnx.io.formats import RowBlock, jsonl_records
from bertonnx.io.records import literal
from bertonnx.io.sinks import JobSpec, VectorSink
from bertonnx.jobs.stages import Behind, ahead
from bertonnx.long_text import sentence_in_groups, word_rows_in_groups
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
from bertonnx.tokenize import TextPieces, preview

DEFAULT_CHUNK_LINES = 20_000
SLICE_LINES = 512
"""Lines per Embedder call. Batches are cut from a slice sorted by length, so a bigger slice pads less: on
20,000 mixed sentences slices of 256 lines pad 13.2 % of positions, 512 lines 7.8 %, 1024 lines 4.5 %, one
call 0.3 %. With three slices in flight (read ahead, in the model, being written), 512 lines ran at 0.96x
the library's one call for +135 MB, 1024 at 0.97x for +240 MB (benchmarks/README.md, "Bulk jobs end to end")."""
SLICE_CHARS = 1 << 18
"""Characters per slice, about 64,000 pieces: bounds a slice of long lines as SLICE_LINES bounds short ones."""
LONG_TEXT_PIECES = 1 << 14
"""A line of more pieces runs a group of windows at a time instead of with its slice."""
SKIP_HINT = "use {on_error} to skip such lines"
"""The hint of a bad line under on_error="fail": a message template naming its fix, on_error="skip"."""
RECORDED_FIXES = {"mode": "--static"}
"""How a skipped line's reason words a fix: the reasons are kept in outputs (a Ray job's manifest.json), whose
bytes do not change."""
JOB_VERSION = 2
"""Bumped when slicing or row order changes: a resume across it would mix two ways of cutting the input."""

Progress = Callable[[int, int], None]  # (bytes read, lines read)


@dataclass(frozen=True)
class Line:
    number: int  # 1-based line number in the input
    text: str
    end_byte: int  # offset just past this line, for progress and resume
    start_byte: int = 0  # offset of its first byte, for progress inside a very long line


@dataclass(frozen=True)
class BulkOptions:
    """How a bulk job embeds: everything that changes its output, and how often it checkpoints."""

    mode: Mode = "static"
    pooling: str = "mean"  # a word pooling for static and contextual; mean or cls for sentences
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

    def numbers(self) -> dict[str, object]:
        """The options that change the rows (chunk_lines only changes when checkpoints fall)."""
        return {name: getattr(self, name) for name in BulkOptions.__dataclass_fields__ if name != "chunk_lines"}


def output_width(bundle: Bundle, options: BulkOptions) -> int:
    """The width of the vectors a job writes: the table's or the hidden size, doubled by first_last word pooling."""
    width = bundle.embedding_size if options.mode == "static" else bundle.hidden_size
    return width * (2 if options.mode != "sentences" and options.pooling == "first_last" else 1)


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


def read_lines(stream: BinaryIO, name: str, first_number: int = 1, offset: int = 0) -> Iterator[Line]:
    """Lines as text without their line ending (LF or CRLF); a missing final newline is fine.

    A byte-order mark at the start of the input (as Windows editors write) is
    dropped, so that it does not become part of the first word.

    Args:
        first_number, offset: the line number and byte offset `stream` starts at (a resumed job seeks).

    Raises:
        BadLineError: a line is not UTF-8, naming the line and the byte offset.
    """
    for number, raw in enumerate(stream, start=first_number):
        bom = len(codecs.BOM_UTF8) if offset == 0 and raw.startswith(codecs.BOM_UTF8) else 0
        try:
            text = raw[bom:].decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadLineError(
                f"{name}: line {number} is not valid UTF-8 (byte offset {offset + bom + error.start})"
            ) from error
        offset += len(raw)
        yield Line(number=number, text=text.rstrip("\r\n"), end_byte=offset, start_byte=offset - len(raw))


def slices(lines: Iterator[Line], max_lines: int | None = None, max_chars: int | None = None) -> Iterator[list[Line]]:
    """Lines cut greedily into slices of at most `max_lines` lines and about `max_chars` characters.

    A slice depends only on the lines from its first on, so slicing resumed at a
    slice boundary cuts the rest exactly as an uninterrupted run does.
    """
    max_lines = SLICE_LINES if max_lines is None else max_lines
    max_chars = SLICE_CHARS if max_chars is None else max_chars
    batch: list[Line] = []
    chars = 0
    for line in lines:
        batch.append(line)
        chars += len(line.text)
        if len(batch) >= max_lines or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def input_fingerprint(path: Path) -> dict[str, object]:
    """Size and sha256 of the input: a resumed job must read the same bytes."""
    return {"input": str(path.resolve()), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def job_fingerprint(embedder: Embedder, source: Path | None, options: BulkOptions) -> dict[str, object]:
    """Everything that changes the rows of a job: a resume under anything else is refused, naming it."""
    return {
        **(input_fingerprint(source) if source is not None else {"input": "-"}),
        **runtime_fingerprint(embedder),
        **options.numbers(),
    }


def runtime_fingerprint(embedder: Embedder) -> dict[str, object]:
    """What changes the numbers besides a job's input and options: the graph, what runs it, how it slices."""
    info = embedder.backend.info
    recipe = None
    if info.precision == "int8" and info.backend == "openvino":
        from bertonnx.backends.quantize import RECIPE

        recipe = RECIPE
    versions = {key: info.details[key] for key in ("onnxruntime", "openvino") if key in info.details}
    return {
        "graph": embedder.bundle.graph_sha256,
        "backend": info.backend,
        "device": info.device,
        "precision": info.precision,
        "int8_recipe": recipe,
        "runtime": versions,
        "batch_tokens": embedder.batch_tokens,
        "slicing": [JOB_VERSION, SLICE_LINES, SLICE_CHARS, LONG_TEXT_PIECES],
    }


@dataclass(frozen=True)
class _Slice:
    """A slice read, checked and tokenized on the reader thread, ready for the model."""

    lines: list[Line]  # every line read, the bad ones included
    kept: list[Line]  # the lines that give rows
    problems: list[tuple[Line, _Problem]]
    prepared: Prepared | None  # contextual and sentences: the kept lines' pieces
    static: RowBlock | None  # static: the kept lines' rows (a table lookup, done on the reader thread)


@dataclass(frozen=True)
class _Within:
    """Progress inside a very long line: shown, never a checkpoint (a resume starts at a slice boundary)."""

    lines: int
    end_byte: int


@dataclass(frozen=True)
class _Mark:
    """The end of a slice: where a resume would start, and what progress to show."""

    lines: int  # lines read so far, in the whole input
    end_byte: int


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
        cls,
        embedder: Embedder,
        source: Path | None,
        out: Path,
        options: BulkOptions,
        resume: bool = False,
        force: bool = False,
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
        )
        return cls(embedder, source, options, VectorSink.open(out, spec, resume=resume, force=force))

    def run(self, progress: Progress | None = None) -> BulkReport:
        """Embed every line into the output; `progress` hears (bytes read, lines read) as slices are written."""
        started = time.perf_counter()
        position = self.sink.position or {}
        kept_lines, start_byte = int(position.get("lines", 0)), int(position.get("bytes", 0))
        report = BulkReport(resumed_lines=kept_lines)
        rows_before = self.sink.rows
        if progress is not None and kept_lines:
            progress(start_byte, kept_lines)
        committed = kept_lines
        last = _Mark(kept_lines, start_byte)

        def write(item: RowBlock | _Mark | _Within) -> None:
            nonlocal last, committed
            if isinstance(item, RowBlock):
                self.sink.append(item)
                return
            if isinstance(item, _Within):
                if progress is not None:
                    progress(item.end_byte, item.lines)
                return
            last = item
            if item.lines - committed >= self.options.chunk_lines:
                self.sink.commit({"lines": item.lines, "bytes": item.end_byte})
                committed = item.lines
            if progress is not None:
                progress(item.end_byte, item.lines)

        try:
            with _open_input(self.source, start_byte) as (stream, name):
                lines = read_lines(stream, name, first_number=kept_lines + 1, offset=start_byte)
                # closing(): on any error the reader thread is stopped and joined here, never left running
                prepared = ahead(_prepare(self.embedder, slices(lines), self.options))
                with closing(prepared), Behind(write, depth=2) as writer:
                    for piece in prepared:
                        _record(piece, self.options, report)
                        for block in _embed(self.embedder, piece, self.options):
                            if isinstance(block, RowBlock):
                                report.unknown_rows += int(np.count_nonzero(block.unknown))
                            writer.put(block)
                        writer.put(_Mark(piece.lines[-1].number, piece.lines[-1].end_byte))
            report.output = self.sink.finish({"lines": last.lines, "bytes": last.end_byte})
        except BadLineError:
            self.sink.discard()  # the same input fails at the same line again: nothing worth resuming
            raise
        finally:
            self.sink.close()
        report.lines = last.lines
        report.lines_this_run = last.lines - kept_lines
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

    Raises:
        BadLineError: a bad line with on_error="fail".
        OutputError: see FileJob.open.
    """
    return FileJob.open(embedder, source, out, options, resume, force).run(progress)


def embed_to_stream(embedder: Embedder, source: Path | None, stream: BinaryIO, options: BulkOptions) -> BulkReport:
    """Embed `source` (None: stdin) and write JSON lines (key, line, word, unknown, vector) to `stream`.

    For pipes: nothing is atomic or resumable here; write to a file for that. Rows
    are written slice by slice as they are made, on a writer thread.
    """
    started = time.perf_counter()
    report = BulkReport()

    def write(block: RowBlock) -> None:
        for piece in block.pieces():
            stream.write(jsonl_records(piece.keys, piece.vectors, piece.ids, piece.unknown))
        stream.flush()
        report.rows_this_run += len(block)

    with _open_input(source) as (handle, name):
        prepared = ahead(_prepare(embedder, slices(read_lines(handle, name)), options))
        with closing(prepared), Behind(write, depth=2) as writer:
            for piece in prepared:
                _record(piece, options, report)
                report.lines = piece.lines[-1].number
                for block in _embed(embedder, piece, options):
                    if isinstance(block, RowBlock):
                        report.unknown_rows += int(np.count_nonzero(block.unknown))
                        writer.put(block)
    report.lines_this_run, report.rows = report.lines, report.rows_this_run
    report.seconds = time.perf_counter() - started
    return report


def embed_lines(embedder: Embedder, chunk: list[Line], options: BulkOptions, report: BulkReport) -> RowBlock:
    """Lines -> their rows (keys, vectors, ids, unknown), in line order; bad lines fail or are skipped into `report`.

    The in-memory form of a bulk job, for callers that hand over lines themselves (Ray workers).
    """
    blocks: list[RowBlock] = []
    for piece in _prepare(embedder, slices(iter(chunk)), options):
        _record(piece, options, report)
        blocks.extend(block for block in _embed(embedder, piece, options) if isinstance(block, RowBlock))
    return _join(blocks, output_width(embedder.bundle, options))


# -- the reader stage: lines -> checked, tokenized slices ---------------------------------------


@dataclass(frozen=True)
class _Problem:
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
        if not self.fixes:
            return self.reason
        return self.reason.format(**{name: RECORDED_FIXES[name] for name, _ in self.fixes if name in RECORDED_FIXES})


def _prepare(embedder: Embedder, pieces: Iterator[list[Line]], options: BulkOptions) -> Iterator[_Slice]:
    """Each slice checked and tokenized once: the pieces that tell a line has no words are the ones embedded."""
    for lines in pieces:
        problems: dict[int, _Problem] = {}
        for index, line in enumerate(lines):
            problem = _text_problem(line.text, options.mode)
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
                    problems[index] = _Problem(
                        f"has {text.ids.size} word pieces; the model takes {limit}",
                        "{long_text} embeds it anyway", (("long_text", ("window", "truncate")),))
            prepared = prepared.select(np.array([index not in problems for index in clean], dtype=bool))
        kept = [line for index, line in enumerate(lines) if index not in problems]
        found = [(lines[index], problems[index]) for index in sorted(problems)]
        yield _Slice(lines=lines, kept=kept, problems=found, prepared=prepared, static=static)


def _record(piece: _Slice, options: BulkOptions, report: BulkReport) -> None:
    """Fail on the slice's first bad line, or note every bad line as skipped."""
    for line, problem in piece.problems:
        if options.on_error == "fail":
            raise problem.error(line.number)
        report.skipped.append((line.number, problem.recorded()))


def _no_words() -> _Problem:
    return _Problem("has no words (only characters the tokenizer drops)")


def _text_problem(text: str, mode: str) -> _Problem | None:
    """Why a line cannot be embedded, from its text alone."""
    if "\x00" in text:  # binary or UTF-16 input; and .npz cannot store a key ending in NUL
        return _Problem("contains a NUL byte (binary or UTF-16 input?)")
    if not text.strip():
        return _Problem("is blank")
    if mode == "static" and len(words := text.split()) > 1:
        shown = literal(preview(text.strip()))
        return _Problem(f"holds {len(words)} words ({shown}); {{mode}} takes one word a line",
                        fixes=(("mode", mode),))
    return None


# -- the model stage: one function per mode ------------------------------------------------------


def _embed(embedder: Embedder, piece: _Slice, options: BulkOptions) -> Iterator[RowBlock | _Within]:
    """A slice's rows in line order; inside a very long line, marks of progress between its blocks."""
    if not piece.kept:
        return
    if piece.static is not None:
        yield piece.static
        return
    numbers = np.array([line.number for line in piece.kept], dtype=np.int64)  # (L,)
    assert piece.prepared is not None
    texts = list(piece.prepared.pieces)
    long = [options.long_text == "window" and options.max_length is None and t.ids.size > LONG_TEXT_PIECES
            for t in texts]
    start = 0
    while start < len(texts):  # runs of ordinary lines together, each very long line alone
        if long[start]:
            yield from _long_rows(embedder, texts[start], piece.kept[start], options)
            start += 1
            continue
        end = start
        while end < len(texts) and not long[end]:
            end += 1
        run = Prepared(pieces=tuple(texts[start:end]), tokens=piece.prepared.tokens[start:end])
        if options.mode == "contextual":
            yield _contextual_rows(embedder, run, numbers[start:end], options)
        else:
            yield _sentence_rows(embedder, run, [line.text for line in piece.kept[start:end]],
                                 numbers[start:end], options)
        start = end


def _static_rows(
    embedder: Embedder, lines: list[Line], options: BulkOptions, problems: dict[int, _Problem], clean: list[int]
) -> RowBlock:
    """Static rows of one-word lines from one table lookup; lines without pieces, or (unknown="error") with the
    unknown token, become problems and give no row."""
    words = [line.text.strip() for line in lines]
    bad = ~embedder.tokenizer.has_pieces(words)  # (L,)
    for index, empty in zip(clean, bad.tolist()):
        if empty:
            problems[index] = _no_words()
    words = [word for word, empty in zip(words, bad.tolist()) if not empty]
    found = embedder.static_lookup(words, pooling=options.pooling,  # type: ignore[arg-type]
                                   unknown="zero" if options.unknown == "zero" else "unk")
    unknown = np.zeros(len(lines), dtype=bool)
    unknown[~bad] = found.unknown
    vectors = np.zeros((len(lines), found.vectors.shape[1]), dtype=np.float32)
    vectors[~bad] = found.vectors
    if options.unknown == "error":
        for index, line, flagged in zip(clean, lines, unknown.tolist()):
            if flagged:
                problems[index] = _Problem(
                    f"maps to the unknown token ({literal(preview(line.text.strip()))})", "{unknown} embeds it anyway",
                    (("unknown", ("unk", "zero")),))
        bad |= unknown
    keep = ~bad
    numbers = np.array([line.number for line in lines], dtype=np.int64)[keep]
    kept = [line.text.strip() for line, k in zip(lines, keep.tolist()) if k]
    return RowBlock(kept, vectors[keep], _line_ids(numbers), unknown[keep])


def _contextual_rows(
    embedder: Embedder, run: Prepared, numbers: NDArray[np.int64], options: BulkOptions
) -> RowBlock:
    rows = embedder.contextual_rows(run, pooling=options.pooling, long_text=options.long_text)  # type: ignore[arg-type]
    return RowBlock(list(rows.words), rows.vectors, np.stack([numbers[rows.text], rows.word], axis=1), rows.unknown)


def _sentence_rows(
    embedder: Embedder, run: Prepared, texts: list[str], numbers: NDArray[np.int64], options: BulkOptions
) -> RowBlock:
    vectors = embedder.sentences(
        run, pooling=options.pooling, normalize=options.normalize,  # type: ignore[arg-type]
        long_text=options.long_text, max_length=options.max_length,
    )
    unknown = np.array([_has_unknown(embedder, text) for text in run.pieces], dtype=bool)
    return RowBlock(texts, vectors, _line_ids(numbers), unknown)


def _long_rows(embedder: Embedder, text: TextPieces, line: Line, options: BulkOptions) -> Iterator[RowBlock | _Within]:
    """One very long line, a group of windows at a time (bertonnx.long_text), with progress inside it."""
    number = np.array([line.number], dtype=np.int64)

    def within(done: int) -> _Within:
        return _Within(line.number - 1, line.start_byte + (line.end_byte - line.start_byte) * done // text.ids.size)

    if options.mode == "contextual":
        for rows, done in word_rows_in_groups(embedder, text, options.pooling):  # type: ignore[arg-type]
            ids = np.stack([np.full_like(rows.word, line.number), rows.word], axis=1)
            yield RowBlock(list(rows.words), rows.vectors, ids, rows.unknown)
            yield within(done)
        return
    for vector, done in sentence_in_groups(embedder, text, options.pooling):  # type: ignore[arg-type]
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


def _join(blocks: list[RowBlock], width: int) -> RowBlock:
    if len(blocks) == 1:
        return blocks[0]
    return RowBlock(
        [key for block in blocks for key in block.keys],
        np.concatenate([block.vectors for block in blocks] or [np.zeros((0, width), np.float32)]),
        np.concatenate([block.ids for block in blocks if block.ids is not None] or [np.zeros((0, 2), np.int64)]),
        np.concatenate([block.unknown for block in blocks if block.unknown is not None] or [np.zeros(0, bool)]),
    )


@contextmanager
def _open_input(source: Path | None, start_byte: int = 0) -> Iterator[tuple[BinaryIO, str]]:
    """The input file from `start_byte`, or stdin (left open); yields (binary stream, name for messages)."""
    if source is None:
        yield sys.stdin.buffer, "stdin"
        return
    with source.open("rb") as stream:
        stream.seek(start_byte)
        yield stream, str(source)
