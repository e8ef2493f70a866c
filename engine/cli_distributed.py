"""`bertonnx embed-distributed`: the bulk job of `bertonnx embed`, run on Ray Data.

Registered in engine.cli as `app.command("embed-distributed")(friendly_errors(embed_distributed))`.
This module does not import engine.cli, so that engine.cli can import it; errors
a user can cause are ValueError or OSError, which friendly_errors prints as one line.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from engine.bulk import BulkOptions
from engine.bundle import load_bundle
from engine.choices import LongText, OnError, Pooling, Provider, UnknownPolicy
from engine.distributed import (
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
from engine.embedder import DEFAULT_BATCH_TOKENS
from engine.pooling import SENTENCE_POOLING_MODES, WORD_POOLING_MODES

err = Console(stderr=True)


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
    static: Annotated[bool, typer.Option("--static", help="One word per line -> its static vector")] = False,
    contextual: Annotated[
        bool, typer.Option("--contextual", help="One text per line -> a contextual vector per word")
    ] = False,
    sentences: Annotated[bool, typer.Option("--sentences", help="One text per line -> one vector")] = False,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="numpy shards or Parquet")] = (
        OutputFormat.npy
    ),
    column: Annotated[str, typer.Option(help="JSONL field or Parquet column holding the text")] = "text",
    pooling: Annotated[Pooling, typer.Option(help="Word pooling; for --sentences: mean or cls")] = Pooling.mean,
    normalize: Annotated[bool, typer.Option(help="--sentences: unit-length vectors")] = False,
    unknown: Annotated[
        UnknownPolicy, typer.Option(help="--static: a word mapping to [UNK] is an error, or gets [UNK]'s row, or 0")
    ] = UnknownPolicy.error,
    long_text: Annotated[LongText, typer.Option(help="Texts over the model maximum")] = LongText.window,
    on_error: Annotated[OnError, typer.Option(help="A bad line stops the job, or is skipped and reported")] = (
        OnError.fail
    ),
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
    batch_tokens: Annotated[int, typer.Option(help="Padded tokens per model run")] = DEFAULT_BATCH_TOKENS,
    shard_rows: Annotated[int, typer.Option(help="Rows per output shard at most")] = DEFAULT_SHARD_ROWS,
    provider: Annotated[Provider, typer.Option(help="ONNX Runtime execution provider")] = Provider.auto,
    force: Annotated[bool, typer.Option(help="Replace an existing --output directory")] = False,
) -> None:
    """Embed files of words or texts on a Ray cluster (local by default), in input order."""
    mode = _mode(static, contextual, sentences, pooling)
    load_bundle(bundle, verify=False)  # fail on a wrong path, output or input here, before Ray starts
    check_output(output, force)
    planned = plan_inputs(expand_inputs(inputs), column, batch_size)
    options = BulkOptions(
        mode=mode,
        pooling=pooling.value,
        unknown=unknown.value,
        long_text=long_text.value,
        normalize=normalize,
        on_error=on_error.value,
    )
    with ray_session(address):
        rich_progress()
        workers = plan_workers(num_workers, threads, *cluster_cpus())
        err.print(
            f"embedding {planned.lines} lines of {len(planned.paths)} input file(s) ({mode}) with "
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
            provider=provider.value,
            batch_tokens=batch_tokens,
            shard_rows=shard_rows,
            force=force,
        )
    _summary(report)


def _mode(static: bool, contextual: bool, sentences: bool, pooling: Pooling) -> str:
    modes = [name for name, chosen in (("static", static), ("contextual", contextual), ("sentences", sentences))
             if chosen]
    if len(modes) != 1:
        raise ValueError("choose exactly one of --static, --contextual, --sentences")
    mode = modes[0]
    if (mode == "sentences") != (pooling.value in SENTENCE_POOLING_MODES) and pooling != Pooling.mean:
        allowed = SENTENCE_POOLING_MODES if mode == "sentences" else WORD_POOLING_MODES
        raise ValueError(f"--pooling {pooling.value} does not apply to --{mode}; choose from {', '.join(allowed)}")
    return mode


def _summary(report: JobReport) -> None:
    for name, number, reason in report.skipped[:20]:
        err.print(f"skipped {name} line {number}: {reason}", markup=False, highlight=False, soft_wrap=True)
    if len(report.skipped) > 20:
        more = len(report.skipped) - 20
        err.print(f"... and {more} more skipped lines", markup=False, highlight=False, soft_wrap=True)
    err.print(
        f"{report.rows} vectors from {report.lines} lines -> {report.output} ({report.shards} shards, "
        f"{len(report.skipped)} skipped) in {report.seconds:.1f} s, {report.rows_per_second:,.0f} rows/s",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
