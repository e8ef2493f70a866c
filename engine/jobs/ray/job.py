"""The whole distributed job: inputs -> EmbedBatch actors -> shards, on the connected Ray."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from bertonnx.bundle import load_bundle
from bertonnx.embedder import Embedder
from bertonnx.jobs.bulk import BulkOptions, output_width
from bertonnx.jobs.ray import adapter
from bertonnx.jobs.ray.cluster import Workers, cluster_cpus, plan_workers
from bertonnx.jobs.ray.inputs import Inputs, read_inputs
from bertonnx.jobs.ray.shards import JobReport, Shards, write_output
from bertonnx.options import LoadOptions


def embed_files(
    bundle: str | Path,
    inputs: Inputs,
    out_dir: str | Path,
    options: BulkOptions,
    workers: Workers | None = None,
    load: LoadOptions | None = None,
    shards: Shards | None = None,
    force: bool = False,
) -> JobReport:
    """Embed every line of `inputs` on the connected Ray cluster into `out_dir` (see ray_session).

    Args:
        bundle: a bundle directory every node can read.
        inputs: from plan_inputs, over files every node can read.
        out_dir: the output directory, written on this machine (see write_output).
        options: as for `bertonnx embed`; chunk_lines does not apply.
        workers: the actor pool; default plan_workers over the cluster's CPUs.
        load: how each worker opens the bundle (its threads come from `workers`).
        shards: "npy" shards or "parquet", and their rows at most (default: npy, DEFAULT_SHARD_ROWS).
        force: replace an existing `out_dir`.
    """
    checked = load_bundle(bundle, verify=False)
    width = output_width(checked, options)
    workers = workers or plan_workers(None, None, *cluster_cpus())
    load = load or LoadOptions()
    if load.backend == "auto" or load.precision in ("auto", "fastest"):
        # Chosen (and timed) once here, at the workers' thread count: every worker then runs the same thing.
        load = Embedder.load(bundle, replace(load, threads=workers.threads), verify=False).resolved(load)
    rows = adapter.embed_dataset(
        read_inputs(inputs), bundle, options, workers, inputs.block_lines, load, inputs.paths
    )
    job = {
        "bundle": str(Path(bundle).resolve()),
        "model_sha256": checked.graph_sha256,
        "options": {name: value for name, value in asdict(options).items() if name != "chunk_lines"},
        "input_lines": inputs.lines,
        "workers": workers.count,
        "threads": workers.threads,
        "backend": {"backend": load.backend, "precision": load.precision, "provider": load.provider}
        | ({} if load.sentences_on is None else {"sentences_on": load.sentences_on})
        | ({} if load.words_recipe is None else {"words_recipe": load.words_recipe}),
    }
    return write_output(rows, Path(out_dir), width, shards, inputs, job, force)
