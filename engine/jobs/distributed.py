"""`bertonnx embed` on Ray Data, for vocabularies and corpora that outgrow one machine.

The pipeline, each stage usable on its own:
    plan_inputs(paths)       text, JSONL or Parquet files, cut into spans of one batch each
    read_inputs(inputs)      -> rows (file, line, text), one read task per span
    embed_dataset(ds, ...)   EmbedBatch actors, each loading the bundle once
                             -> rows (file, line, word, key, vector, skipped)
    write_output(ds, dir)    the driver takes rows in input order and writes shards + manifest.json
    read_output(dir)         -> (keys, vectors), as bertonnx.io.sinks.read_vectors reads one file

Same output as `bertonnx embed` by construction: an actor hands its batch of
lines to bertonnx.jobs.bulk.embed_lines, the function the single-process job runs on
each of its chunks. Embedder results do not depend on how lines are grouped
into calls, so the rows are the same, row for row.

Ids: line `line` (1-based; the row number in Parquet) of input `file` (its
index in the list of inputs) is the id (file, line); each row adds `word`, its
index among the rows of its line (contextual mode gives one row per word, the
other modes one per line). A line skipped with on_error="skip" becomes one
row with its reason in `skipped`, which the writer reports and leaves out.
Ray retries the tasks of a worker that dies; the writer asks Ray to keep input
order, checks that ids strictly increase and that every input line gave rows,
so a batch repeated or lost fails the job rather than corrupting it.

Every node reads the inputs and the bundle at the paths given: run on one
machine or on a shared filesystem. Ray and pyarrow are optional (the
`distributed` extra) and imported only where needed; read_output needs neither
for numpy shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from glob import glob, has_magic
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.bundle import load_bundle
from bertonnx.embedder import LoadOptions
from bertonnx.errors import BadLineError, BertonnxError, JobError, MissingExtraError, OptionError, OutputError
from bertonnx.io.keys import escape_line, read_keys
from bertonnx.jobs.bulk import BulkOptions, BulkReport, Line, embed_lines, output_width, read_lines
from bertonnx.options import OUTPUT_FORMATS

if TYPE_CHECKING:
    from ray.data import Dataset

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "bertonnx-shards"
MANIFEST_VERSION = 1
INSTALL_HINT = "pip install 'bertonnx[distributed]'"
DEFAULT_BATCH_LINES = 1000  # lines per actor call: big enough to batch well, small enough to balance
DEFAULT_SHARD_ROWS = 100_000
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")

Batch = dict[str, NDArray[Any]]


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - ray.data is a separate import, and needs the [data] extra
    except ImportError as error:
        raise MissingExtraError(f"distributed embedding needs Ray Data: {INSTALL_HINT}") from error
    return ray


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:
        raise MissingExtraError(f"Parquet needs pyarrow: {INSTALL_HINT}") from error
    return pyarrow, pyarrow.parquet


# -- connecting ---------------------------------------------------------------


@contextmanager
def ray_session(address: str = "local") -> Iterator[None]:
    """Connect to Ray for the duration of a job, unless this process already is.

    Args:
        address: "local" starts a Ray instance on this machine, with all its CPUs;
            "auto" joins the cluster this machine belongs to, "host:6379" the one
            whose head is there (this process is then the job's driver).
    """
    ray = _ray()
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address)
    except ConnectionError as error:
        if address == "local":
            raise
        raise ConnectionError(f"could not join the Ray cluster at {address}: {error}{_auth_hint()}") from error
    try:
        yield
    finally:
        ray.shutdown()


def _auth_hint() -> str:
    """Ray >= 2.59 starts clusters with token authentication, but a driver joining one sends no token unless told."""
    if os.environ.get("RAY_AUTH_MODE") == "token":
        return "; is it running, and is RAY_AUTH_TOKEN (or ~/.ray/auth_token) the cluster's token?"
    return "; is it running? If it uses token authentication, set RAY_AUTH_MODE=token (and its token)"


def rich_progress() -> None:
    """Draw Ray Data's progress bars with rich, a bertonnx dependency; its default needs tqdm, which may be absent."""
    context = _ray().data.DataContext.get_current()
    context.enable_rich_progress_bars = True
    context.use_ray_tqdm = False


@dataclass(frozen=True)
class Workers:
    """How many embedding actors run, and the ONNX Runtime threads (and CPUs) each takes."""

    count: int
    threads: int


def plan_workers(count: int | None, threads: int | None, cluster_cpus: int, node_cpus: int) -> Workers:
    """The actor pool: by default it fills the cluster, workers x threads = CPUs, no worker wider than a node.

    Defaults: one single-threaded worker per CPU, since independent workers
    need no synchronisation between threads and a slow one delays only its own
    batches; or, given only the worker count, as many threads each as fit.
    Ray places each worker on a node with `threads` free CPUs; what does not
    fit waits.

    Raises:
        OptionError: a count or thread number below 1.
    """
    for name, value in (("--num-workers", count), ("--threads", threads)):
        if value is not None and value < 1:
            raise OptionError(f"{name} must be at least 1, got {value}")
    if threads is None:
        threads = 1 if count is None else max(1, min(node_cpus, cluster_cpus // count))
    if count is None:
        count = max(1, cluster_cpus // threads)
    return Workers(count=count, threads=threads)


def cluster_cpus() -> tuple[int, int]:
    """(CPUs in the cluster, CPUs of its biggest node), of the connected Ray."""
    ray = _ray()
    nodes = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")]
    return int(sum(nodes)), int(max(nodes, default=0))


# -- reading ------------------------------------------------------------------


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Paths and globs -> the input files, each once; a glob's matches in sorted order.

    A file's position in this list is its `file` id, so the order must be stable.

    Raises:
        FileNotFoundError: a path that is no file, or a glob that matches none.
    """
    found: dict[Path, None] = {}
    for pattern in patterns:
        matches = sorted(glob(pattern, recursive=True)) if has_magic(pattern) else [pattern]
        files = [Path(match) for match in matches if Path(match).is_file()]
        if not files:
            problem = "no file matches this glob" if has_magic(pattern) else "no such input file"
            raise FileNotFoundError(f"{pattern}: {problem}")
        found.update(dict.fromkeys(files))
    return list(found)


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

    Text and JSONL files are read through bertonnx.jobs.bulk.read_lines, as `bertonnx
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
    ray = _ray()
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
    pyarrow, parquet = _pyarrow()
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
    _, parquet = _pyarrow()
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


# -- embedding: the map_batches adapter -----------------------------------------


class EmbedBatch:
    """The `Dataset.map_batches` adapter: rows of texts (or words) -> rows of vectors.

    A callable class, so that Ray Data builds one per actor and each worker loads
    the bundle once:

        ds.map_batches(EmbedBatch, fn_constructor_kwargs={"bundle": path, "options": options},
                       compute=ray.data.ActorPoolStrategy(size=4), num_cpus=threads, batch_size=1000)

    Input: a `text_column` of strings (a null reads as blank), and optionally
    `file` and `line` ids, as read_inputs gives them; without them a batch's rows
    are numbered line 1, 2, ... of file 0, so any Dataset with a text column works.
    Every other column is carried over to each row its input row gives (contextual
    mode gives one row per word, the other modes one per input row).

    Output columns: file, line, word (int64), key (str), vector ((N, dim) float32),
    skipped (str: "" for a vector, else why the line was skipped; its vector is 0),
    then the carried-over columns. The (file, line) ids of a batch must be unique.
    """

    def __init__(
        self,
        bundle: str | Path,
        options: BulkOptions,
        threads: int | None = None,
        load: LoadOptions | None = None,
        inputs: Sequence[str | Path] = (),
        text_column: str = "text",
    ) -> None:
        """Args as for Embedder.load and embed_lines; `threads` replaces load.threads; `inputs` name the files in
        error messages."""
        self.embedder = replace(load or LoadOptions(), threads=threads).load(bundle)
        self.options = options
        self.inputs = tuple(str(path) for path in inputs)
        self.text_column = text_column
        self.width = output_width(self.embedder.bundle, options)

    def __call__(self, batch: Batch) -> Batch:
        if self.text_column not in batch:
            raise OptionError(f"expected a column {self.text_column!r} of texts, found {', '.join(batch)}")
        texts = ["" if text is None else str(text) for text in batch[self.text_column]]  # a null reads as blank
        size = len(texts)
        files = np.asarray(batch["file"], dtype=np.int64) if "file" in batch else np.zeros(size, np.int64)  # (B,)
        numbers = np.asarray(batch["line"], dtype=np.int64) if "line" in batch else np.arange(1, size + 1)  # (B,)
        carried = [name for name in batch if name not in (self.text_column, "file", "line")]
        clashing = sorted(set(carried) & set(OUTPUT_COLUMNS))
        if clashing:
            raise OptionError(f"input columns {', '.join(clashing)} would clash with the output's; rename them")
        starts = np.flatnonzero(np.diff(files, prepend=-1)) if size else np.zeros(0, np.int64)
        ends = np.append(starts[1:], size)
        parts = [self._embed_file_run(int(files[s]), numbers[s:e], texts[s:e], s) for s, e in zip(starts, ends)]
        if not parts:
            empty = np.zeros(0, np.int64)
            parts = [{**_rows(0, empty, empty, [], np.zeros((0, self.width), np.float32), []), "source": empty}]
        rows = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        source = rows.pop("source")  # (N,) the input row of each output row
        return {**rows, **{name: np.asarray(batch[name])[source] for name in carried}}

    def _embed_file_run(self, file: int, numbers: NDArray[np.int64], texts: list[str], offset: int) -> Batch:
        """Lines of one file through embed_lines; line numbers are unique within a file."""
        chunk = [Line(number=int(number), text=text, end_byte=0) for number, text in zip(numbers, texts)]
        report = BulkReport()
        try:
            rows = embed_lines(self.embedder, chunk, self.options, report)
        except BadLineError as error:
            name = self.inputs[file] if file < len(self.inputs) else f"input {file}"
            raise BadLineError(f"{name}: {error}") from error
        starts = np.flatnonzero(np.diff(rows.lines, prepend=-1))  # (L,) each line's first row
        word = np.arange(len(rows)) - np.repeat(starts, np.diff(np.append(starts, len(rows))))
        reasons = dict(report.skipped)
        skipped_lines = np.array(list(reasons), dtype=np.int64)
        batch = _rows(
            file,
            np.concatenate([rows.lines, skipped_lines]),
            np.concatenate([word, np.zeros(skipped_lines.size, np.int64)]),
            rows.keys + [""] * skipped_lines.size,
            np.concatenate([rows.vectors, np.zeros((skipped_lines.size, self.width), np.float32)]),
            [""] * len(rows) + list(reasons.values()),
        )
        by_number = np.argsort(numbers, kind="stable")  # numbers -> their place in the run
        batch["source"] = offset + by_number[np.searchsorted(numbers[by_number], batch["line"])]
        order = np.argsort(batch["source"], kind="stable")  # input order, skipped lines back in their place
        return {name: column[order] for name, column in batch.items()}


OUTPUT_COLUMNS = ("file", "line", "word", "key", "vector", "skipped")


def _rows(
    file: int,
    line: NDArray[np.int64],
    word: NDArray[np.int64],
    keys: list[str],
    vectors: NDArray[np.float32],
    skipped: list[str],
) -> Batch:
    return {
        "file": np.full(line.size, file, dtype=np.int64),
        "line": line,
        "word": word,
        "key": np.array(keys, dtype=object),
        "vector": vectors,
        "skipped": np.array(skipped, dtype=object),
    }


def embed_dataset(
    dataset: Dataset,
    bundle: str | Path,
    options: BulkOptions,
    workers: Workers,
    batch_lines: int = DEFAULT_BATCH_LINES,
    load: LoadOptions | None = None,
    inputs: Sequence[str | Path] = (),
) -> Dataset:
    """Add the embedding stage: a fixed pool of EmbedBatch actors, `workers.threads` CPUs each.

    Ray Data restarts an actor that dies and retries its tasks (its default,
    max_restarts=-1 and max_task_retries=-1); an error a line causes is not retried.
    """
    ray = _ray()
    if batch_lines < 1:
        raise OptionError(f"batch size must be at least 1 line, got {batch_lines}")
    return dataset.map_batches(
        EmbedBatch,
        fn_constructor_kwargs={
            "bundle": str(Path(bundle).absolute()),
            "options": options,
            "threads": workers.threads,
            "load": load or LoadOptions(),
            "inputs": [str(path) for path in inputs],
        },
        compute=ray.data.ActorPoolStrategy(size=workers.count),
        num_cpus=workers.threads,
        batch_size=batch_lines,
        batch_format="numpy",
    )


# -- writing and reading back ---------------------------------------------------


@dataclass(frozen=True)
class JobReport:
    """What a distributed job wrote."""

    rows: int
    lines: int  # input lines that gave rows or were skipped
    skipped: tuple[tuple[str, int, str], ...]  # (input, line, reason)
    shards: int
    output: Path
    seconds: float  # from the first row asked for to the manifest written

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def write_output(
    dataset: Dataset,
    out_dir: Path,
    dim: int,
    fmt: str = "npy",
    shard_rows: int = DEFAULT_SHARD_ROWS,
    inputs: Sequence[str | Path] = (),
    job: dict[str, object] | None = None,
    force: bool = False,
    expected_lines: int | None = None,
) -> JobReport:
    """Run `dataset` and write its rows, in input order, as shards listed by `out_dir/manifest.json`.

    Shards go to a hidden sibling directory that is renamed to `out_dir` once the
    manifest is written, so a visible `out_dir` is always complete.

    Formats: "npy": shard-NNNNN.npy ((n, dim) float32), shard-NNNNN.keys.txt
    (escaped keys, as bertonnx.io.sinks writes them) and shard-NNNNN.ids.npy ((n, 3)
    int64 file, line, word); "parquet": shard-NNNNN.parquet with columns file,
    line, word, key and vector (fixed-size list of float32).

    Args:
        dataset: rows as EmbedBatch gives them.
        dim: the width of the vectors.
        inputs: the input files, by `file` id, recorded in the manifest.
        job: facts about the job (mode, bundle...) recorded in the manifest.
        force: replace an existing `out_dir`.
        expected_lines: the input lines that must each give rows (or a skipped row): a check that no batch was lost.

    Raises:
        FileExistsError: `out_dir` exists and is not empty, without `force`.
        JobError: a row came out of order or twice, or lines are missing.
    """
    if fmt not in OUTPUT_FORMATS:
        raise OptionError(f"unknown output format {fmt!r}; expected one of {', '.join(OUTPUT_FORMATS)}")
    if shard_rows < 1:
        raise OptionError(f"shard rows must be at least 1, got {shard_rows}")
    check_output(out_dir, force)
    work = out_dir.with_name(f".{out_dir.name}.partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    dataset.context.execution_options.preserve_order = True
    started = time.perf_counter()
    shards = _Shards(work, dim, fmt, [str(path) for path in inputs])
    try:
        for batch in _batches(dataset, shard_rows):
            shards.add(batch)
        if expected_lines is not None and shards.lines != expected_lines:
            raise JobError(f"expected rows from {expected_lines} input lines, found {shards.lines}: rows were lost")
        manifest = json.dumps(shards.manifest(job or {}), indent=2, ensure_ascii=False) + "\n"
        (work / MANIFEST).write_text(manifest, encoding="utf-8")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if out_dir.is_dir():
        shutil.rmtree(out_dir)
    elif out_dir.exists():
        out_dir.unlink()
    os.replace(work, out_dir)
    return JobReport(
        rows=shards.rows,
        lines=shards.lines,
        skipped=tuple(shards.skipped),
        shards=len(shards.written),
        output=out_dir,
        seconds=time.perf_counter() - started,
    )


class _Shards:
    """Takes the job's rows batch by batch, in input order, and writes each batch as one shard."""

    def __init__(self, work: Path, dim: int, fmt: str, names: list[str]) -> None:
        self.work = work
        self.dim = dim
        self.fmt = fmt
        self.names = names
        self.written: list[dict[str, object]] = []
        self.skipped: list[tuple[str, int, str]] = []
        self.rows = 0
        self.lines = 0
        self.last = np.full(3, -1, dtype=np.int64)  # the id of the previous row

    def add(self, batch: Batch) -> None:
        ids = np.stack([batch["file"], batch["line"], batch["word"]], axis=1).astype(np.int64)  # (n, 3)
        _check_increasing(self.last, ids)
        self.last = ids[-1] if ids.size else self.last
        self.lines += int(np.count_nonzero(ids[:, 2] == 0))
        reasons = np.asarray(batch["skipped"], dtype=object)  # (n,)
        skipped = reasons != ""
        for file, line, reason in zip(ids[skipped, 0].tolist(), ids[skipped, 1].tolist(), reasons[skipped]):
            name = self.names[file] if file < len(self.names) else f"input {file}"
            self.skipped.append((name, line, str(reason)))
        keep = ~skipped
        if not keep.any():
            return
        keys = [str(key) for key in np.asarray(batch["key"], dtype=object)[keep]]
        vectors = np.ascontiguousarray(batch["vector"][keep], dtype=np.float32)  # (n, dim)
        if vectors.shape[1] != self.dim:
            raise JobError(f"expected vectors of dim {self.dim}, found shape {vectors.shape}")
        name = f"shard-{len(self.written):05d}"
        files = _SHARD_WRITERS[self.fmt](self.work, name, keys, vectors, ids[keep])
        first, last = ids[keep][0].tolist(), ids[keep][-1].tolist()
        self.written.append({"name": name, "rows": len(keys), "first": first, "last": last, "files": files})
        self.rows += len(keys)

    def manifest(self, job: dict[str, object]) -> dict[str, object]:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "kind": self.fmt,
            "dim": self.dim,
            "rows": self.rows,
            "lines": self.lines,
            "inputs": self.names,
            "job": job,
            "skipped": [list(entry) for entry in self.skipped],
            "shards": self.written,
        }


def check_output(out_dir: Path, force: bool) -> None:
    """Refuse to replace an existing output unless forced; cheap, so callers check before starting Ray."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not force:
        raise FileExistsError(f"{out_dir}: already exists; use --force (force=True) to replace it")


def _batches(dataset: Dataset, size: int) -> Iterator[Batch]:
    """Run the dataset; an error a worker raised (a bad line) comes out as itself, not wrapped by Ray."""
    ray = _ray()
    dataset.context.raise_original_map_exception = True
    try:
        with warnings.catch_warnings():
            # Ray counts input files, not the blocks each read task streams, and would warn that one file cannot
            # keep several workers busy; it can.
            warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
            yield from dataset.iter_batches(batch_size=size, batch_format="numpy")
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, (BertonnxError, OSError)):
            raise error.cause from error
        raise


def _check_increasing(last: NDArray[np.int64], ids: NDArray[np.int64]) -> None:
    """Ids must strictly increase, across batches too: else a row is repeated or out of order."""
    both = np.concatenate([last[None, :], ids])  # (n + 1, 3)
    step = np.diff(both, axis=0)  # (n, 3)
    first_change = np.argmax(step != 0, axis=1)  # lexicographic: the first column that differs decides
    increasing = step[np.arange(step.shape[0]), first_change] > 0
    if not increasing.all():
        row = int(np.flatnonzero(~increasing)[0])
        raise JobError(
            f"row (file, line, word) {tuple(both[row + 1].tolist())} came after {tuple(both[row].tolist())}: "
            "a row was repeated or reordered"
        )


def _npy_bytes(array: NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _write_files(work: Path, contents: dict[str, bytes]) -> dict[str, str]:
    for name, data in contents.items():
        (work / name).write_bytes(data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}


def _write_npy_shard(
    work: Path, name: str, keys: list[str], vectors: NDArray[np.float32], ids: NDArray[np.int64]
) -> dict[str, str]:
    return _write_files(work, {
        f"{name}.npy": _npy_bytes(vectors),
        f"{name}.keys.txt": "".join(escape_line(key) + "\n" for key in keys).encode("utf-8"),
        f"{name}.ids.npy": _npy_bytes(ids),
    })


def _write_parquet_shard(
    work: Path, name: str, keys: list[str], vectors: NDArray[np.float32], ids: NDArray[np.int64]
) -> dict[str, str]:
    pyarrow, parquet = _pyarrow()
    table = pyarrow.table({
        "file": ids[:, 0],
        "line": ids[:, 1],
        "word": ids[:, 2],
        "key": pyarrow.array(keys, type=pyarrow.string()),
        "vector": pyarrow.FixedSizeListArray.from_arrays(pyarrow.array(vectors.reshape(-1)), vectors.shape[1]),
    })
    buffer = pyarrow.BufferOutputStream()
    parquet.write_table(table, buffer)
    return _write_files(work, {f"{name}.parquet": buffer.getvalue().to_pybytes()})


_SHARD_WRITERS = {"npy": _write_npy_shard, "parquet": _write_parquet_shard}


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of a distributed job's output.

    Raises:
        OutputError: no manifest (the job did not finish), or not one of ours.
    """
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise OutputError(f"{out_dir}: expected {MANIFEST} (written when a job finishes), found none")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise OutputError(f"{path}: expected a {MANIFEST_FORMAT} manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise OutputError(f"{path}: expected version {MANIFEST_VERSION}, found {manifest.get('version')!r}")
    return manifest


def read_output(out_dir: str | Path) -> tuple[list[str], NDArray[np.float32]]:
    """Read a distributed job's output back into (keys, (N, dim) float32), in input order.

    Raises:
        OutputError: no manifest, or a shard whose sha256 or row count is not the manifest's.
    """
    keys: list[str] = []
    parts: list[NDArray[np.float32]] = []
    manifest = read_manifest(out_dir)
    for shard_keys, vectors, _ in _shards(Path(out_dir), manifest):
        keys.extend(shard_keys)
        parts.append(vectors)
    return keys, np.concatenate(parts) if parts else np.zeros((0, manifest["dim"]), np.float32)


def read_ids(out_dir: str | Path) -> NDArray[np.int64]:
    """(N, 3) int64: the (file, line, word) id of each row of read_output, in the same order."""
    parts = [ids for _, _, ids in _shards(Path(out_dir), read_manifest(out_dir))]
    return np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)


def _shards(
    out_dir: Path, manifest: dict[str, Any]
) -> Iterator[tuple[list[str], NDArray[np.float32], NDArray[np.int64]]]:
    for shard in manifest["shards"]:
        for name, digest in shard["files"].items():
            data = (out_dir / name).read_bytes()
            if hashlib.sha256(data).hexdigest() != digest:
                raise OutputError(f"{out_dir / name}: sha256 differs from the manifest's (damaged or replaced)")
        keys, vectors, ids = _read_shard(out_dir, shard["name"], manifest["kind"])
        if not len(keys) == vectors.shape[0] == ids.shape[0] == shard["rows"]:
            found = f"{len(keys)} keys, {vectors.shape[0]} vectors, {ids.shape[0]} ids"
            raise OutputError(f"{out_dir / shard['name']}: expected {shard['rows']} rows, found {found}")
        yield keys, vectors, ids


def _read_shard(
    out_dir: Path, name: str, kind: str
) -> tuple[list[str], NDArray[np.float32], NDArray[np.int64]]:
    if kind == "npy":
        vectors = np.load(out_dir / f"{name}.npy", allow_pickle=False)
        ids = np.load(out_dir / f"{name}.ids.npy", allow_pickle=False)
        return read_keys(out_dir / f"{name}.keys.txt"), vectors, ids
    _, parquet = _pyarrow()
    table = parquet.read_table(out_dir / f"{name}.parquet")
    vector = table.column("vector").combine_chunks()
    vectors = vector.flatten().to_numpy().reshape(len(table), vector.type.list_size)
    ids = np.stack([table.column(column).to_numpy() for column in ("file", "line", "word")], axis=1)
    return table.column("key").to_pylist(), vectors, ids


# -- the whole job --------------------------------------------------------------


def embed_files(
    bundle: str | Path,
    inputs: Inputs,
    out_dir: str | Path,
    options: BulkOptions,
    workers: Workers | None = None,
    fmt: str = "npy",
    load: LoadOptions | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    force: bool = False,
) -> JobReport:
    """Embed every line of `inputs` on the connected Ray cluster into `out_dir` (see ray_session).

    Args:
        bundle: a bundle directory every node can read.
        inputs: from plan_inputs, over files every node can read.
        out_dir: the output directory, written on this machine (see write_output).
        options: as for `bertonnx embed`; chunk_lines does not apply.
        workers: the actor pool; default plan_workers over the cluster's CPUs.
        fmt: "npy" shards or "parquet".
        load: how each worker opens the bundle (its threads come from `workers`).
    """
    checked = load_bundle(bundle, verify=False)
    width = output_width(checked, options)
    workers = workers or plan_workers(None, None, *cluster_cpus())
    rows = embed_dataset(
        read_inputs(inputs), bundle, options, workers, inputs.block_lines, load, inputs.paths
    )
    load = load or LoadOptions()
    job = {
        "bundle": str(Path(bundle).resolve()),
        "model_sha256": checked.manifest["files"]["model.onnx"]["sha256"],
        "options": {name: value for name, value in asdict(options).items() if name != "chunk_lines"},
        "input_lines": inputs.lines,
        "workers": workers.count,
        "threads": workers.threads,
        "backend": {"backend": load.backend, "precision": load.precision, "provider": load.provider},
    }
    return write_output(rows, Path(out_dir), width, fmt, shard_rows, inputs.paths, job, force, inputs.records)
