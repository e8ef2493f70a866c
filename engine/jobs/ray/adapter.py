"""The embedding stage: EmbedBatch, the `Dataset.map_batches` adapter, and the actor pool that runs it.

An actor hands its batch of lines to bertonnx.jobs.bulk.embed_lines, the function
`bertonnx embed` runs on each slice of its chunks. Embedder results do not depend
on how lines are grouped into calls, so the rows are the same, row for row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from bertonnx.embedder import Embedder
from bertonnx.errors import BadLineError, OptionError
from bertonnx.jobs.bulk import BulkOptions, BulkReport, Line, embed_lines, output_width
from bertonnx.jobs.ray.cluster import Workers, require_ray
from bertonnx.jobs.ray.inputs import DEFAULT_BATCH_LINES, Batch
from bertonnx.options import LoadOptions

if TYPE_CHECKING:
    from ray.data import Dataset

OUTPUT_COLUMNS = ("file", "line", "word", "key", "vector", "skipped")


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
        self.embedder = Embedder.load(bundle, replace(load or LoadOptions(), threads=threads))
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
            parts = [{**_rows(0, np.zeros((0, 2), np.int64), [], np.zeros((0, self.width), np.float32), []),
                      "source": empty}]
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
        reasons = dict(report.skipped)
        skipped = np.array([(line, 0) for line in reasons], dtype=np.int64).reshape(-1, 2)  # (S, 2)
        batch = _rows(
            file,
            np.concatenate([rows.ids, skipped]),
            rows.keys + [""] * len(skipped),
            np.concatenate([rows.vectors, np.zeros((len(skipped), self.width), np.float32)]),
            [""] * len(rows) + list(reasons.values()),
        )
        by_number = np.argsort(numbers, kind="stable")  # numbers -> their place in the run
        batch["source"] = offset + by_number[np.searchsorted(numbers[by_number], batch["line"])]
        order = np.argsort(batch["source"], kind="stable")  # input order, skipped lines back in their place
        return {name: column[order] for name, column in batch.items()}


def _rows(
    file: int, ids: NDArray[np.int64], keys: list[str], vectors: NDArray[np.float32], skipped: list[str]
) -> Batch:
    """Output columns from (N, 2) (line, word) ids, keys, (N, dim) vectors and skip reasons."""
    return {
        "file": np.full(len(ids), file, dtype=np.int64),
        "line": ids[:, 0].copy(),
        "word": ids[:, 1].copy(),
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
    ray = require_ray()
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
