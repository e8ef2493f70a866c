"""Reading a job's inputs: text, JSONL or Parquet files, cut into spans of one batch each.

    plan_inputs(paths)       read each file once on the driver (bad UTF-8 fails here) -> Inputs of Spans
    read_inputs(inputs)      -> a Ray Dataset of rows (file, line, text), one read task per span

Ids: line `line` (1-based; the row number in Parquet) of input `file` (its
index in the list of inputs). Text lines are read through
bertonnx.jobs.lines.read_lines, exactly as `bertonnx embed` reads them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.errors import BadLineError, OptionError
from bertonnx.io.paths import expand_paths as expand_inputs  # noqa: F401 - the ray package's name for it
from bertonnx.io.shards import require_pyarrow
from bertonnx.jobs.lines import Line, read_lines
from bertonnx.jobs.ray.cluster import require_ray

if TYPE_CHECKING:
    from ray.data import Dataset

DEFAULT_BATCH_LINES = 1000  # lines per actor call: big enough to batch well, small enough to balance
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")

Batch = dict[str, NDArray[Any]]


@dataclass(frozen=True)
class Span:
    """What one read task reads: `count` lines of input `file`, from its line `first`.

    Ray gives each block it reads to one worker, so inputs are cut into spans
    of one batch each; a whole file in one task would keep one worker busy.
    For Parquet, a line is a row and a span lies within one row group.
    """

    file: int  # index of the input among all inputs
    path: str  # absolute: a worker's working directory is not the driver's
    first: int  # 1-based number of the span's first line in its file
    count: int  # lines
    records: int  # lines that hold a text: all but a JSONL file's blank lines
    start: int = 0  # text and JSONL: the bytes [start, stop) of the file
    stop: int = 0


@dataclass(frozen=True)
class Inputs:
    """The input files of a job, cut into spans for the read tasks: see plan_inputs."""

    paths: tuple[str, ...]  # as given; a file's index here is its id
    column: str  # the JSONL field or Parquet column holding the text
    block_lines: int  # lines per span: the batch size of the embedding stage
    spans: tuple[Span, ...]  # in input order

    @property
    def lines(self) -> int:
        """Lines (Parquet: rows) of all the inputs."""
        return sum(span.count for span in self.spans)

    @property
    def records(self) -> int:
        """Lines that hold a text, each of which the output must account for."""
        return sum(span.records for span in self.spans)


def plan_inputs(
    paths: Sequence[str | Path], column: str = "text", block_lines: int = DEFAULT_BATCH_LINES
) -> Inputs:
    """Cut the inputs into spans of `block_lines` lines, reading each file once on this machine.

    Text and JSONL files are read through bertonnx.jobs.lines.read_lines, as `bertonnx
    embed` reads them, so a line that is not UTF-8 fails here, before any worker
    starts; of Parquet files only the footer is read.

    Raises:
        BadLineError: a line is not UTF-8, or a Parquet file has no string `column`.
    """
    if block_lines < 1:
        raise OptionError(f"batches must hold at least 1 line, got {block_lines}")
    spans: list[Span] = []
    for file, path in enumerate(Path(path).absolute() for path in paths):
        if path.suffix.lower() in PARQUET_SUFFIXES:
            spans += _parquet_spans(file, path, column, block_lines)
        else:
            spans += _line_spans(file, path, block_lines)
    return Inputs(tuple(str(path) for path in paths), column, block_lines, tuple(spans))


def read_inputs(inputs: Inputs) -> Dataset:
    """A Ray Dataset of every line of the inputs: columns file (int64), line (int64), text (str).

    Text files give one text per line, exactly as `bertonnx embed` reads them;
    `.jsonl`/`.ndjson`/`.json` give the `column` field of one JSON object per
    line (a blank line holds none); `.parquet`/`.pq` the `column` column, a null
    read as a blank text. One task reads each span into one block.
    """
    ray = require_ray()
    items = [asdict(span) for span in inputs.spans]
    # Reading is light next to the model: num_cpus=0 lets it run beside actors that hold every CPU.
    return ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
        _read_spans, batch_size=1, batch_format="numpy", num_cpus=0, fn_kwargs={"column": inputs.column}
    )


def _line_spans(file: int, path: Path, block_lines: int) -> list[Span]:
    """Spans of whole lines; every line is decoded, so that a bad one fails now."""
    jsonl = path.suffix.lower() in JSONL_SUFFIXES
    spans = []
    first, start, number, stop, records = 1, 0, 0, 0, 0
    with path.open("rb") as stream:
        for line in read_lines(stream, str(path)):
            number, stop = line.number, line.end_byte
            records += 1 if not jsonl or line.text.strip() else 0  # as _span_records reads them
            if number - first + 1 == block_lines:
                spans.append(Span(file, str(path), first, block_lines, records, start, stop))
                first, start, records = number + 1, stop, 0
    if number >= first:
        spans.append(Span(file, str(path), first, number - first + 1, records, start, stop))
    return spans


def _parquet_spans(file: int, path: Path, column: str, block_lines: int) -> Iterator[Span]:
    """Spans within row groups: only the footer is read."""
    pyarrow, parquet = require_pyarrow()
    table = parquet.ParquetFile(path)
    schema = table.schema_arrow
    if column not in schema.names:
        raise BadLineError(f"{path}: expected a column {column!r}, found {', '.join(schema.names)}")
    kind = schema.field(column).type
    if not (pyarrow.types.is_string(kind) or pyarrow.types.is_large_string(kind)):
        raise BadLineError(f"{path}: expected column {column!r} of strings, found {kind}")
    first = 1
    for group in range(table.num_row_groups):
        rows = table.metadata.row_group(group).num_rows
        for offset in range(0, rows, block_lines):
            count = min(block_lines, rows - offset)
            yield Span(file, str(path), first, count, count)
            first += count


def _read_spans(batch: Batch, column: str) -> Iterator[Batch]:
    for row in zip(*(batch[name].tolist() for name in Span.__dataclass_fields__)):
        span = Span(*row)
        numbers, texts = _span_records(span, column)
        yield {
            "file": np.full(len(numbers), span.file, dtype=np.int64),
            "line": np.array(numbers, dtype=np.int64),
            "text": np.array(texts, dtype=object),
        }


def _span_records(span: Span, column: str) -> tuple[list[int], list[str]]:
    """(line numbers, texts) of the records of one span."""
    path = Path(span.path)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        texts = _parquet_texts(span, column)
        return list(range(span.first, span.first + len(texts))), texts
    numbers: list[int] = []
    texts = []
    for line in _span_lines(span):
        if path.suffix.lower() not in JSONL_SUFFIXES:
            numbers.append(line.number)
            texts.append(line.text)
        elif line.text.strip():  # a blank line holds no record
            numbers.append(line.number)
            texts.append(_json_field(path, line, column))
    return numbers, texts


def _span_lines(span: Span) -> Iterator[Line]:
    """The lines of a span, numbered as in their file."""
    with open(span.path, "rb") as stream:
        stream.seek(span.start)
        data = stream.read(span.stop - span.start)
    if span.start == 0:
        yield from read_lines(io.BytesIO(data), span.path)
        return
    # Mid-file, a blank line put first stands in for the lines before: read_lines then numbers ours
    # from 2, and drops no byte-order mark from our first line (it does so at a file's start only).
    for line in islice(read_lines(io.BytesIO(b"\n" + data), span.path), 1, None):
        yield Line(number=span.first + line.number - 2, text=line.text, end_byte=span.start + line.end_byte - 1)


def _parquet_texts(span: Span, column: str) -> list[str]:
    _, parquet = require_pyarrow()
    table = parquet.ParquetFile(span.path)
    before = 0
    for group in range(table.num_row_groups):
        rows = table.metadata.row_group(group).num_rows
        if before + rows >= span.first:  # the group holding the span
            values = table.read_row_group(group, columns=[column]).column(0).slice(span.first - 1 - before, span.count)
            return ["" if text is None else text for text in values.to_pylist()]
        before += rows
    raise BadLineError(f"{span.path}: expected rows {span.first} to {span.first + span.count - 1}, found {before} rows")


def _json_field(path: Path, line: Line, column: str) -> str:
    try:
        record = json.loads(line.text)
    except json.JSONDecodeError as error:
        raise BadLineError(f"{path}: line {line.number} is not JSON ({error.msg})") from error
    value = record.get(column) if isinstance(record, dict) else None
    if not isinstance(value, str):
        found = type(value).__name__ if isinstance(record, dict) and column in record else "no such field"
        raise BadLineError(f"{path}: line {line.number}: expected a string field {column!r}, found {found}")
    return value
