"""`bertonnx embed-distributed`: the bulk job of `bertonnx embed`, run on Ray Data.

Registered in bertonnx.cli.app as `app.command("embed-distributed")(friendly_errors(embed_distributed))`.
This module does not import bertonnx.cli.app, so that bertonnx.cli.app can import it; errors
a user can cause are BertonnxError or OSError, which friendly_errors prints as one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from bertonnx.bundle import load_bundle
from bertonnx.cli.console import err, print_skipped, say
from bertonnx.cli.options import (
    BackendChoice,
    BackendOption,
    BatchTokensOption,
    ContextOption,
    ContextualFlag,
    JobFlags,
    LongTextChoice,
    LongTextOption,
    MaxLengthOption,
    MinFidelityOption,
    NormalizeOption,
    OnErrorChoice,
    OnErrorOption,
    OutputFormatChoice,
    PoolingChoice,
    PoolingOption,
    PrecisionChoice,
    PrecisionOption,
    PriorOption,
    ProviderChoice,
    ProviderOption,
    SentencesFlag,
    StaticFlag,
    TypeLevelFiles,
    UnknownOption,
    job_options,
    load_options,
    made_by,
)
from bertonnx.errors import OptionError, OutputError
from bertonnx.io.formats import suffix_of
from bertonnx.jobs.ray import (
    DEFAULT_BATCH_LINES,
    DEFAULT_SHARD_ROWS,
    JobReport,
    Shards,
    Workers,
    check_output,
    cluster_cpus,
    embed_files,
    expand_inputs,
    plan_inputs,
    plan_workers,
    ray_session,
)
from bertonnx.jobs.ray.cluster import require_ray
from bertonnx.options import DEFAULT_BATCH_TOKENS, LoadOptions
from bertonnx.type_level import DEFAULT_CONTEXT, DEFAULT_MAX_CONTEXTS, DEFAULT_PRIOR
from bertonnx.type_level.distributed import RayRun
from bertonnx.type_level.vectors import TypeLevelOptions


def embed_distributed(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory, readable by every node")],
    inputs: Annotated[
        list[str],
        typer.Option("--input", "-i", help="Input file or glob (repeatable): text lines, .jsonl or .parquet"),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory: shards + manifest.json")],
    static: StaticFlag = False,
    contextual: ContextualFlag = False,
    sentences: SentencesFlag = False,
    output_format: Annotated[OutputFormatChoice, typer.Option("--format", help="numpy shards or Parquet")] = (
        OutputFormatChoice.npy  # type: ignore[attr-defined]
    ),
    column: Annotated[str, typer.Option(help="JSONL field or Parquet column holding the text")] = "text",
    pooling: PoolingOption = PoolingChoice.mean,
    normalize: NormalizeOption = False,
    unknown: UnknownOption = None,
    long_text: LongTextOption = LongTextChoice.window,
    on_error: OnErrorOption = OnErrorChoice.fail,
    max_length: MaxLengthOption = None,
    address: Annotated[
        str, typer.Option(help="Ray: 'local' starts one here; 'auto' or HOST:6379 joins a running cluster")
    ] = "local",
    num_workers: Annotated[
        int | None, typer.Option(help="Embedding actors (default: cluster CPUs / --threads)")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="Inference threads and CPUs per actor (default: 1, or CPUs / workers)")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Lines per actor call (and per read task)")] = DEFAULT_BATCH_LINES,
    batch_tokens: BatchTokensOption = DEFAULT_BATCH_TOKENS,
    shard_rows: Annotated[int, typer.Option(help="Rows per output shard at most")] = DEFAULT_SHARD_ROWS,
    backend: BackendOption = BackendChoice.auto,
    precision: PrecisionOption = PrecisionChoice.auto,
    provider: ProviderOption = ProviderChoice.auto,
    min_fidelity: MinFidelityOption = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --output directory")] = False,
    verbose: Annotated[bool, typer.Option(help="Show Ray's own log lines and the workers' logs")] = False,
    type_level: Annotated[
        bool, typer.Option("--type-level", help="One vector per vocabulary word (-i: the vocabulary, one word a "
                           "line; -o: a vector file), pooled over --corpus on the cluster, else templates")
    ] = False,
    corpus: Annotated[
        list[str] | None, typer.Option("--corpus", help="--type-level: corpus files or globs (repeatable)")
    ] = None,
    templates: Annotated[
        Path | None, typer.Option(help="--type-level: templates, one a line, {} where the word goes")
    ] = None,
    max_contexts: Annotated[
        int, typer.Option(help="--type-level: contexts averaged per word at most", min=1)
    ] = DEFAULT_MAX_CONTEXTS,
    prior: PriorOption = DEFAULT_PRIOR,
    context: ContextOption = DEFAULT_CONTEXT,
    postprocess: Annotated[
        str, typer.Option(help="--type-level: none, center, or abtt:D")
    ] = "none",
) -> None:
    """Embed files of words or texts on a Ray cluster (local by default), in input order.

    Required: exactly one of --static, --contextual, --sentences, --type-level.
    """
    flags = JobFlags(static, contextual, sentences, type_level, pooling, normalize, unknown, long_text, on_error,
                     max_length, corpus, templates, max_contexts, postprocess, prior, context)
    options = job_options(flags)
    load = load_options(backend, precision, provider, batch_tokens=batch_tokens, min_fidelity=min_fidelity)
    cluster = _Cluster(address, num_workers, threads, batch_size, verbose)
    if isinstance(options, TypeLevelOptions):
        _type_level(bundle, TypeLevelFiles(inputs[0] if len(inputs) == 1 else "", corpus or [], output), options,
                    load, cluster, force)
        return
    load_bundle(bundle, verify=False)  # fail on a wrong path, output or input here, before Ray starts
    check_output(output, force)
    shards = Shards(output_format.value, shard_rows)
    planned = plan_inputs(expand_inputs(inputs), column, batch_size)
    with cluster.session() as workers:
        err.print(
            f"embedding {planned.lines} lines of {len(planned.paths)} input file(s) ({options.mode}) with "
            f"{workers.count} worker(s) x {workers.threads} thread(s)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        report = embed_files(
            bundle,
            planned,
            output,
            options,
            workers=workers,
            load=load,
            shards=shards,
            force=force,
        )
    _summary(report)


@dataclass(frozen=True)
class _Cluster:
    """Where and how wide a distributed job runs: the Ray flags."""

    address: str
    num_workers: int | None
    threads: int | None
    batch_size: int
    verbose: bool

    @contextmanager
    def session(self) -> Iterator[Workers]:
        """Ray connected, its progress bars drawn by rich, and the actor pool planned over the cluster."""
        for name, value in (("--num-workers", self.num_workers), ("--threads", self.threads)):
            if value is not None and value < 1:  # checked before Ray starts
                raise OptionError(f"{name} must be at least 1, got {value}")
        with ray_session(self.address, verbose=self.verbose):
            rich_progress()
            yield plan_workers(self.num_workers, self.threads, *cluster_cpus())


def _type_level(
    bundle: Path, files: TypeLevelFiles, options: TypeLevelOptions, load: LoadOptions, cluster: _Cluster, force: bool
) -> None:
    from bertonnx.type_level.distributed import type_level_files

    output = files.output
    assert output is not None
    if not files.vocabulary or not Path(files.vocabulary).is_file():
        raise OptionError("--type-level reads one vocabulary file: -i vocab.txt (one word a line)")
    try:
        suffix_of(output)
    except OutputError as error:
        raise OptionError(str(error)) from error
    load_bundle(bundle, verify=False)
    planned = plan_inputs(expand_inputs(files.corpus, "corpus"), "text", cluster.batch_size) if files.corpus else None
    with cluster.session() as workers:
        if planned is not None:
            err.print(f"type-level: {planned.lines} corpus lines of {len(planned.paths)} file(s) with "
                      f"{workers.count} worker(s) x {workers.threads} thread(s)", markup=False, highlight=False)
        report = type_level_files(bundle, Path(files.vocabulary), planned, output, options,
                                  RayRun(workers, load, force))
    notes = []
    if planned is not None:
        notes.append(f"{report.corpus_lines:,} corpus lines, {report.contexts:,} contexts, "
                     f"{report.fallback:,} from templates (never seen)")
    if options.postprocess != "none":
        notes.append(f"post-processed: {options.postprocess}")
    notes.append(made_by(report.method, options))
    notes.append(f"{report.seconds:,.1f} s")
    say(f"{report.words:,} type-level vectors -> {output} + {report.files[0].name} ({'; '.join(notes)})")


def rich_progress() -> None:
    """Draw Ray Data's progress bars with rich, a bertonnx dependency; its default needs tqdm, which may be absent."""
    context = require_ray().data.DataContext.get_current()
    context.enable_rich_progress_bars = True
    context.use_ray_tqdm = False


def _summary(report: JobReport) -> None:
    print_skipped([f"skipped {name} line {number}: {reason}" for name, number, reason in report.skipped])
    say(
        f"{report.rows} vectors from {report.lines} lines -> {report.output} ({report.shards} shards, "
        f"{len(report.skipped)} skipped) in {report.seconds:.1f} s, {report.rows_per_second:,.0f} rows/s"
    )
