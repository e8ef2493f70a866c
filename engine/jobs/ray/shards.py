"""A distributed job's output: the driver runs the dataset and writes its rows as shards (bertonnx.io.shards).

    write_output(ds, dir)    the driver takes rows in input order and writes shards + manifest.json

The driver checks that ids strictly increase and that every input line gave
rows, so a batch repeated or lost fails the job rather than corrupting it. The
directory is built in a hidden sibling and swapped in whole
(bertonnx.io.atomic.atomic_directory), so a visible output is always complete.
The shard format and its readers (read_output, read_ids) live in bertonnx.io.shards: they need no Ray.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bertonnx.errors import BertonnxError, JobError, OptionError
from bertonnx.io.atomic import atomic_directory
from bertonnx.io.records import record_bytes
from bertonnx.io.shards import (
    MANIFEST,
    Batch,
    ShardWriter,
    _check_increasing,
    check_output,
    read_ids,
    read_manifest,
    read_output,
)
from bertonnx.jobs.ray.cluster import require_ray
from bertonnx.jobs.ray.inputs import Inputs
from bertonnx.options import OUTPUT_FORMATS

if TYPE_CHECKING:
    from ray.data import Dataset

__all__ = [
    "DEFAULT_SHARD_ROWS", "MANIFEST", "JobReport", "Shards", "_check_increasing", "check_output", "read_ids",
    "read_manifest", "read_output", "write_output",
]

DEFAULT_SHARD_ROWS = 100_000


@dataclass(frozen=True)
class Shards:
    """How a distributed job's rows are written: the shard format ("npy" or "parquet") and the rows a shard holds
    at most."""

    fmt: str = "npy"
    rows: int = DEFAULT_SHARD_ROWS

    def __post_init__(self) -> None:
        if self.fmt not in OUTPUT_FORMATS:
            raise OptionError(f"unknown output format {self.fmt!r}; expected one of {', '.join(OUTPUT_FORMATS)}")
        if self.rows < 1:
            raise OptionError(f"shard rows must be at least 1, got {self.rows}")


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
    shards: Shards | None = None,
    inputs: Sequence[str | Path] = (),
    job: dict[str, object] | None = None,
    force: bool = False,
) -> JobReport:
    """Run `dataset` and write its rows, in input order, as shards listed by `out_dir/manifest.json`.

    Shards go to a hidden sibling directory, fsynced and swapped in whole once the
    manifest is written (an existing `out_dir` is replaced only then), so a visible
    `out_dir` is always complete.

    Formats: "npy": shard-NNNNN.npy ((n, dim) float32), shard-NNNNN.keys.txt
    (escaped keys, as bertonnx.io.keys writes them) and shard-NNNNN.ids.npy ((n, 3)
    int64 file, line, word); "parquet": shard-NNNNN.parquet with columns file,
    line, word, key and vector (fixed-size list of float32).

    Args:
        dataset: rows as EmbedBatch gives them.
        dim: the width of the vectors.
        shards: their format and size (default: .npy shards of DEFAULT_SHARD_ROWS rows at most).
        inputs: the input files, by `file` id, recorded in the manifest; planned Inputs (plan_inputs) also give
            the lines that must each give rows (or a skipped row): a check that no batch was lost.
        job: facts about the job (mode, bundle...) recorded in the manifest.
        force: replace an existing `out_dir`.

    Raises:
        OutputError: `out_dir` exists and is not empty, without `force`.
        JobError: a row came out of order or twice, or lines are missing.
    """
    shards = shards or Shards()
    expected_lines = inputs.records if isinstance(inputs, Inputs) else None
    paths = inputs.paths if isinstance(inputs, Inputs) else inputs
    check_output(out_dir, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    dataset.context.execution_options.preserve_order = True
    started = time.perf_counter()
    with atomic_directory(out_dir) as work:
        writer = ShardWriter(work, dim, shards.fmt, [str(path) for path in paths])
        for batch in dataset_batches(dataset, shards.rows):
            writer.add(batch)
        if expected_lines is not None and writer.lines != expected_lines:
            raise JobError(f"expected rows from {expected_lines} input lines, found {writer.lines}: rows were lost")
        (work / MANIFEST).write_bytes(record_bytes(writer.manifest(job or {})))
    return JobReport(
        rows=writer.rows,
        lines=writer.lines,
        skipped=tuple(writer.skipped),
        shards=len(writer.written),
        output=out_dir,
        seconds=time.perf_counter() - started,
    )


def dataset_batches(dataset: Dataset, size: int) -> Iterator[Batch]:
    """Run the dataset; an error a worker raised (a bad line) comes out as itself, not wrapped by Ray."""
    ray = require_ray()
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


