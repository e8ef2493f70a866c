"""What makes two runs the same job: the facts that fix every row, recorded with a checkpoint.

A resume is refused unless everything that shapes the numbers is the same
(bertonnx.io.checkpoints names what differs): the input bytes, the graph, what
runs it (backend, device, precision, int8 recipe, runtime versions), the batch
budget and the slicing, and the job's own options. A static job's rows are table rows: only the bundle
and the slicing fix them, so any backend (or none) may resume it.
"""

from __future__ import annotations

from pathlib import Path

from bertonnx.bundle import sha256_file
from bertonnx.embedder import Embedder
from bertonnx.jobs.lines import LONG_TEXT_PIECES, SLICE_CHARS, SLICE_LINES
from bertonnx.jobs.rows import BulkOptions

JOB_VERSION = 2
"""Bumped when slicing or row order changes: a resume across it would mix two ways of cutting the input."""


def input_fingerprint(path: Path) -> dict[str, object]:
    """Size and sha256 of the input: a resumed job must read the same bytes."""
    return {"input": str(path.resolve()), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def job_fingerprint(embedder: Embedder, source: Path | None, options: BulkOptions) -> dict[str, object]:
    """Everything that changes the rows of a job: a resume under anything else is refused, naming it."""
    runtime = static_fingerprint(embedder) if options.mode == "static" else runtime_fingerprint(embedder)
    return {
        **(input_fingerprint(source) if source is not None else {"input": "-"}),
        **runtime,
        **options.numbers(),
    }


def static_fingerprint(embedder: Embedder) -> dict[str, object]:
    """A static job's rows are table rows: the bundle and the slicing fix them, whatever backend was loaded."""
    return {"graph": embedder.bundle.graph_sha256, "slicing": [JOB_VERSION, SLICE_LINES, SLICE_CHARS, LONG_TEXT_PIECES]}


def runtime_fingerprint(embedder: Embedder) -> dict[str, object]:
    """What changes the numbers besides a job's input and options: the graph, what runs it, how it slices."""
    info = embedder.backend.info
    versions = {key: info.details[key] for key in ("onnxruntime", "openvino") if key in info.details}
    return {
        "graph": embedder.bundle.graph_sha256,
        "backend": info.backend,
        "device": info.device,
        "precision": info.precision,
        "int8_recipe": info.details.get("int8_recipe"),
        "runtime": versions,
        "batch_tokens": embedder.batch_tokens,
        "slicing": [JOB_VERSION, SLICE_LINES, SLICE_CHARS, LONG_TEXT_PIECES],
        **_sentence_backend(embedder),
    }


def _sentence_backend(embedder: Embedder) -> dict[str, object]:
    """Where `fastest` serves sentence vectors from a backend of their own, that backend too (absent otherwise, so
    that jobs' fingerprints from before the split still match)."""
    backend = embedder.runner.sentence_backend
    if backend is embedder.backend:
        return {}
    info = backend.info
    return {"sentences": [info.backend, info.precision, info.details.get("int8_recipe")]}
