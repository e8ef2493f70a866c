"""`bertonnx embed-distributed`: the bulk job of `bertonnx embed`, run on Ray Data.

Registered in bertonnx.cli.app as `app.command("embed-distributed")(friendly_errors(embed_distributed))`.
This module does not import bertonnx.cli.app, so that bertonnx.cli.app can import it; errors
a user can cause are BertonnxError or OSError, which friendly_errors prints as one line.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from bertonnx.bundle import load_bundle
from bertonnx.cli.console import err, print_skipped, say
from bertonnx.cli.options import (
    BackendChoice,
    BackendOption,
    BatchTokensOption,
    ContextualFlag,
    LongTextChoice,
    LongTextOption,
    MaxLengthOption,
    MinFidelityOption,
    NormalizeOption,
    OnErrorChoice,
    OnErrorOption,
    PoolingChoice,
    PoolingOption,
    PrecisionChoice,
    PrecisionOption,
    ProviderChoice,
    ProviderOption,
    SentencesFlag,
    StaticFlag,
    UnknownChoice,
    UnknownOption,
    bulk_options,
    load_options,
)
from bertonnx.jobs.ray import (
    DEFAULT_BATCH_LINES,
    DEFAULT_SHARD_ROWS,
    JobReport,
    check_output,
    cluster_cpus,
    embed_files,
    expand_inputs,
    plan_inputs,
    plan_workers,
    ray_session,
    rich_progress,
)
from bertonnx.options import DEFAULT_BATCH_TOKENS


class OutputFormat(str, Enum):
    npy = "npy"
    parquet = "parquet"


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
    output_format: Annotated[OutputFormat, typer.Option("--format", help="numpy shards or Parquet")] = (
        OutputFormat.npy
    ),
    column: Annotated[str, typer.Option(help="JSONL field or Parquet column holding the text")] = "text",
    pooling: PoolingOption = PoolingChoice.mean,
    normalize: NormalizeOption = False,
    unknown: UnknownOption = UnknownChoice.error,
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
        int | None, typer.Option(help="ONNX Runtime threads and CPUs per actor (default: 1, or CPUs / workers)")
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
) -> None:
    """Embed files of words or texts on a Ray cluster (local by default), in input order.

    Required: exactly one of --static, --contextual, --sentences.
    """
    options = bulk_options(
        static, contextual, sentences, pooling, normalize, unknown, long_text, on_error, max_length=max_length
    )
    load_bundle(bundle, verify=False)  # fail on a wrong path, output or input here, before Ray starts
    check_output(output, force)
    planned = plan_inputs(expand_inputs(inputs), column, batch_size)
    with ray_session(address, verbose=verbose):
        rich_progress()
        workers = plan_workers(num_workers, threads, *cluster_cpus())
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
            fmt=output_format.value,
            load=load_options(backend, precision, provider, batch_tokens=batch_tokens, min_fidelity=min_fidelity),
            shard_rows=shard_rows,
            force=force,
        )
    _summary(report)


def _summary(report: JobReport) -> None:
    print_skipped([f"skipped {name} line {number}: {reason}" for name, number, reason in report.skipped])
    say(
        f"{report.rows} vectors from {report.lines} lines -> {report.output} ({report.shards} shards, "
        f"{len(report.skipped)} skipped) in {report.seconds:.1f} s, {report.rows_per_second:,.0f} rows/s"
    )
