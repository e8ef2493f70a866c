"""`bertonnx embed` on Ray Data, for vocabularies and corpora that outgrow one machine.

The pipeline, each stage usable on its own:
    plan_inputs(paths)       text, JSONL or Parquet files, cut into spans of one batch each   (inputs)
    read_inputs(inputs)      -> rows (file, line, text), one read task per span               (inputs)
    embed_dataset(ds, ...)   EmbedBatch actors, each loading the bundle once                 (adapter)
                             -> rows (file, line, word, key, vector, skipped)
    write_output(ds, dir)    the driver takes rows in input order and writes shards + manifest (shards)
    read_output(dir)         -> (keys, vectors); read_ids(dir) -> (N, 3) (file, line, word)    (shards)
    embed_files(...)         all of it, on the connected Ray (ray_session, plan_workers)      (job, cluster)

Same output as `bertonnx embed` by construction: an actor hands its batch of
lines to bertonnx.jobs.bulk.embed_lines. Ids: (file, line) of each input line,
plus `word`, the row's index among its line's rows (contextual mode gives one
row per word, the other modes one per line). A line skipped with
on_error="skip" becomes one row with its reason in `skipped`, which the writer
reports and leaves out. Ray retries the tasks of a worker that dies; the
writer asks Ray to keep input order, checks that ids strictly increase and
that every input line gave rows, so a batch repeated or lost fails the job.

Every node reads the inputs and the bundle at the paths given: run on one
machine or on a shared filesystem. Ray and pyarrow are optional (the
`distributed` extra) and imported only where needed.
"""

from __future__ import annotations

from bertonnx.jobs.ray.adapter import OUTPUT_COLUMNS, EmbedBatch, embed_dataset
from bertonnx.jobs.ray.cluster import Workers, cluster_cpus, plan_workers, ray_session
from bertonnx.jobs.ray.inputs import DEFAULT_BATCH_LINES, Inputs, Span, expand_inputs, plan_inputs, read_inputs
from bertonnx.jobs.ray.job import embed_files
from bertonnx.jobs.ray.shards import (
    DEFAULT_SHARD_ROWS,
    MANIFEST,
    JobReport,
    Shards,
    check_output,
    read_ids,
    read_manifest,
    read_output,
    write_output,
)

__all__ = [
    "DEFAULT_BATCH_LINES", "DEFAULT_SHARD_ROWS", "MANIFEST", "OUTPUT_COLUMNS", "EmbedBatch", "Inputs", "JobReport",
    "Shards", "Span", "Workers", "check_output", "cluster_cpus", "embed_dataset", "embed_files", "expand_inputs",
    "plan_inputs", "plan_workers", "ray_session", "read_ids", "read_inputs", "read_manifest", "read_output",
    "write_output",
]
