"""`embed-distributed --type-level`: the corpus pass of a type-level job on Ray Data.

Two passes over the corpus, so that every word gets exactly the contexts one
process gives it (its first `max_contexts` occurrences, in input order):

    1. FindSlots actors tokenize the lines and report which vocabulary words each
       line holds and how often; the driver, reading these in input order, gives
       each (line, word) its quota (all of them, the rest of the word's room, or none).
    2. SumSlots actors run the model on the lines that have a quota only, pool the
       first `quota` occurrences of each word in the line, each in its context (its
       sentence, window or line: type_level.contexts), and return a partial sum per
       word and batch; the driver adds the partial sums.

The templates pass (every word for templates, the words the corpus never saw
otherwise) and the output run on the driver, as in one process. The result is
the one-process job's up to the order of float64 additions: the same contexts,
the same counts and flags, vectors within 1e-6 of each other (tested).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.bundle import load_bundle
from bertonnx.embedder import Embedder
from bertonnx.errors import InputError
from bertonnx.jobs.ray.cluster import Workers, require_ray
from bertonnx.jobs.ray.inputs import Batch, Inputs, read_inputs
from bertonnx.jobs.ray.shards import dataset_batches
from bertonnx.options import LoadOptions
from bertonnx.pooling import pooled_width
from bertonnx.tokenize import Tokenizer
from bertonnx.type_level.contexts import parse_context, pool_contexts
from bertonnx.type_level.job import (
    TypeLevelReport,
    read_vocabulary,
    vocabulary_of,
    write_type_vectors,
)
from bertonnx.type_level.matching import Matcher, Vocabulary
from bertonnx.type_level.postprocess import check_postprocess_rows, parse_postprocess
from bertonnx.type_level.vectors import (
    Templates,
    TypeLevelOptions,
    TypeSums,
    finish,
    kept_slots,
    template_slots,
)


class FindSlots:
    """Pass 1 (tokenizer only): rows (file, line, text) -> rows (file, line, slot, count), one per word a line holds."""

    def __init__(self, bundle: str, words: Sequence[str]) -> None:
        checked = load_bundle(bundle, verify=False)
        self.tokenizer = Tokenizer.from_file(checked.tokenizer_path, checked.max_length)
        self.vocabulary = Vocabulary.of(self.tokenizer, words)
        self.matcher = Matcher(self.vocabulary)

    def __call__(self, batch: Batch) -> Batch:
        texts = ["" if text is None else str(text) for text in batch["text"]]
        found = self.matcher.find(self.tokenizer.split(texts))  # (M, 4) slot, text, start, end
        slots = len(self.vocabulary)
        keys, counts = np.unique(found[:, 1] * slots + found[:, 0], return_counts=True)  # text-major: input order
        text = keys // slots
        return {
            "file": np.asarray(batch["file"], dtype=np.int64)[text],
            "line": np.asarray(batch["line"], dtype=np.int64)[text],
            "slot": keys % slots,
            "count": counts.astype(np.int64),
        }


class SumSlots:
    """Pass 2 (the model): rows (file, line, text) -> rows (slot, count, sum), the partial sums of a batch."""

    def __init__(self, bundle: str, words: Sequence[str], pooling: str, context: str, quotas: Any,
                 load: LoadOptions, threads: int | None) -> None:
        ray = require_ray()
        if isinstance(quotas, ray.ObjectRef):
            quotas = ray.get(quotas)
        self.embedder = Embedder.load(bundle, replace(load, threads=threads))
        self.vocabulary = Vocabulary.of(self.embedder.tokenizer, words)
        self.matcher = Matcher(self.vocabulary)
        self.pooling, self.rule = pooling, parse_context(context)
        self.quotas: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
        for file, line, slot, quota in zip(*(quotas[name].tolist() for name in ("file", "line", "slot", "quota"))):
            self.quotas[(file, line)][slot] = quota

    def __call__(self, batch: Batch) -> Batch:
        width = pooled_width(self.embedder.dim, self.pooling)
        keep = [(i, self.quotas[key]) for i, key in enumerate(zip(np.asarray(batch["file"]).tolist(),
                                                                  np.asarray(batch["line"]).tolist()))
                if key in self.quotas]
        if not keep:
            return {"slot": np.zeros(0, np.int64), "count": np.zeros(0, np.int64),
                    "sum": np.zeros((0, width), np.float64)}
        texts = [str(batch["text"][i]) for i, _ in keep]
        pieces = self.embedder.tokenizer.split(texts)
        found = self.matcher.find(pieces)  # (M, 4) in input order
        taken: dict[tuple[int, int], int] = defaultdict(int)
        rows = []
        for index, (slot, text) in enumerate(found[:, :2].tolist()):
            if taken[(text, slot)] < keep[text][1].get(slot, 0):
                taken[(text, slot)] += 1
                rows.append(index)
        found = found[rows]
        vectors = pool_contexts(self.embedder.runner, self.rule, texts, pieces, found, self.pooling).astype(np.float64)
        slots, where = np.unique(found[:, 0], return_inverse=True)
        sums = np.zeros((slots.size, width), dtype=np.float64)
        np.add.at(sums, where, vectors)
        return {"slot": slots, "count": np.bincount(where, minlength=slots.size).astype(np.int64), "sum": sums}


@dataclass(frozen=True)
class RayRun:
    """How a type-level job runs on the connected Ray cluster."""

    workers: Workers  # the actor pool
    load: LoadOptions | None = None  # how each worker opens the bundle (its threads come from `workers`)
    force: bool = False  # replace an existing output


def type_level_files(
    bundle: str | Path, vocabulary_path: Path, corpus: Inputs | None, out: Path, options: TypeLevelOptions,
    run: RayRun,
) -> TypeLevelReport:
    """A type-level job with its corpus pass on the connected Ray cluster (see the module docstring)."""
    import time

    from bertonnx.io.checkpoints import refuse_existing
    from bertonnx.io.formats import output_files, suffix_of
    from bertonnx.type_level.job import counts_path

    started = time.monotonic()
    suffix_of(out)
    refuse_existing([*output_files(out), counts_path(out)], run.force)
    workers = run.workers
    load = run.load or LoadOptions()
    words = read_vocabulary(vocabulary_path)
    # the driver's embedder: templates, as a worker runs
    embedder = Embedder.load(bundle, replace(load, threads=workers.threads))
    load = embedder.resolved(load)  # auto chosen once, here: every worker runs the same backend and precision
    vocabulary = vocabulary_of(embedder.tokenizer, vocabulary_path, words, options.unknown)
    templates = Templates.of(embedder.tokenizer, options.templates)
    sums = TypeSums(embedder.runner, vocabulary, options.pooling, options.max_contexts, options.context)
    spec = parse_postprocess(options.postprocess, sums.sums.shape[1])
    check_postprocess_rows(spec, kept_slots(vocabulary, options.unknown))
    method = "corpus" if corpus is not None else "templates"
    report = TypeLevelReport(words=len(words), method=method, output=out)
    if corpus is not None:
        if corpus.lines == 0:
            raise InputError("the corpus is empty: no line in any corpus file")
        quotas = _quotas(bundle, words, corpus, options.max_contexts, len(vocabulary), workers)
        report.corpus_lines = corpus.lines
        if quotas["slot"].size:
            _sum(bundle, words, corpus, options, quotas, sums, RayRun(workers, load))
    sums.add_templates(template_slots(sums, method, options), templates)
    found = finish(vocabulary, sums, method, options, spec)
    report.files = write_type_vectors(out, found)
    report.from_corpus = int((sums.counts[vocabulary.slot] > 0).sum())
    report.fallback = int(found.fallback.sum())
    report.unknown = int(found.unknown.sum())
    report.contexts = int(found.counts.sum())
    report.seconds = time.monotonic() - started
    return report


def _quotas(bundle: str | Path, words: list[str], corpus: Inputs, cap: int, slots: int,
            workers: Workers) -> dict[str, NDArray[np.int64]]:
    """Pass 1, then each (line, slot)'s quota, in input order: the first `cap` occurrences of each slot."""
    ray = require_ray()
    dataset = read_inputs(corpus).map_batches(
        FindSlots, fn_constructor_kwargs={"bundle": str(Path(bundle).absolute()), "words": words},
        compute=ray.data.ActorPoolStrategy(size=workers.count), num_cpus=1, batch_size=corpus.block_lines,
        batch_format="numpy",
    )
    dataset.context.execution_options.preserve_order = True
    seen = np.zeros(slots, dtype=np.int64)
    chosen: dict[str, list[int]] = {"file": [], "line": [], "slot": [], "quota": []}
    for batch in dataset_batches(dataset, 4096):
        for file, line, slot, count in zip(batch["file"].tolist(), batch["line"].tolist(), batch["slot"].tolist(),
                                           batch["count"].tolist()):
            room = cap - seen[slot]
            if room > 0:
                quota = min(count, room)
                seen[slot] += quota
                for name, value in (("file", file), ("line", line), ("slot", slot), ("quota", quota)):
                    chosen[name].append(value)
    return {name: np.array(values, dtype=np.int64) for name, values in chosen.items()}


def _sum(bundle: str | Path, words: list[str], corpus: Inputs, options: TypeLevelOptions,
         quotas: dict[str, NDArray[np.int64]], sums: TypeSums, run: RayRun) -> None:
    """Pass 2: partial sums of the lines that have a quota, added on the driver."""
    ray = require_ray()
    workers = run.workers
    dataset = read_inputs(corpus).map_batches(
        SumSlots,
        fn_constructor_kwargs={"bundle": str(Path(bundle).absolute()), "words": words, "pooling": options.pooling,
                               "context": options.context, "quotas": ray.put(quotas), "load": run.load,
                               "threads": workers.threads},
        compute=ray.data.ActorPoolStrategy(size=workers.count), num_cpus=workers.threads,
        batch_size=corpus.block_lines, batch_format="numpy",
    )
    for batch in dataset_batches(dataset, 4096):
        np.add.at(sums.sums, batch["slot"], batch["sum"])
        np.add.at(sums.counts, batch["slot"], batch["count"])


__all__ = ["FindSlots", "RayRun", "SumSlots", "type_level_files"]
