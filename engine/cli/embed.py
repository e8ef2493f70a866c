"""`bertonnx embed`: a file of words or texts -> a vector file, in chunks, resumable."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bertonnx.cli.console import CliError, err, print_skipped, say
from bertonnx.cli.options import (
    BackendChoice,
    BackendOption,
    BatchTokensOption,
    ContextualFlag,
    LongText,
    LongTextOption,
    MinFidelityOption,
    NormalizeOption,
    OnError,
    OnErrorOption,
    Pooling,
    PoolingOption,
    PrecisionChoice,
    PrecisionOption,
    Provider,
    ProviderOption,
    SentencesFlag,
    StaticFlag,
    UnknownOption,
    UnknownPolicy,
    bulk_options,
)
from bertonnx.cli.progress import bytes_bar
from bertonnx.embedder import DEFAULT_BATCH_TOKENS
from bertonnx.jobs.bulk import DEFAULT_CHUNK_LINES, BulkReport, embed_file, embed_to_stream


def embed(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory")],
    static: StaticFlag = False,
    contextual: ContextualFlag = False,
    sentences: SentencesFlag = False,
    input_path: Annotated[str, typer.Option("--input", "-i", help="UTF-8 input file, or - for stdin")] = "-",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output: .npy .npz .txt .bin (word2vec) .jsonl")
    ] = None,
    pooling: PoolingOption = Pooling.mean,
    normalize: NormalizeOption = False,
    unknown: UnknownOption = UnknownPolicy.error,
    long_text: LongTextOption = LongText.window,
    on_error: OnErrorOption = OnError.fail,
    batch_tokens: BatchTokensOption = DEFAULT_BATCH_TOKENS,
    chunk_lines: Annotated[int, typer.Option(help="Lines per checkpointed chunk")] = DEFAULT_CHUNK_LINES,
    resume: Annotated[bool, typer.Option(help="Continue a killed job, keeping its finished chunks")] = False,
    backend: BackendOption = BackendChoice.auto,
    precision: PrecisionOption = PrecisionChoice.auto,
    provider: ProviderOption = Provider.auto,
    min_fidelity: MinFidelityOption = None,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime threads (default: all cores)")] = None,
) -> None:
    """Embed a file of words or texts in bulk, streaming in chunks, written atomically."""
    from bertonnx.embedder import Embedder

    options = bulk_options(
        static, contextual, sentences, pooling, normalize, unknown, long_text, on_error, chunk_lines=chunk_lines
    )
    source = None if input_path == "-" else Path(input_path)
    if source is not None and not source.is_file():
        problem = "not a regular file (use -i - for a pipe or stdin)" if source.exists() else "no such input file"
        raise CliError(f"{source}: {problem}")
    embedder = Embedder.load(
        bundle, backend=backend.value, precision=precision.value, provider=provider.value, threads=threads,
        batch_tokens=batch_tokens, min_fidelity=min_fidelity,
    )
    if output is None:
        report = embed_to_stream(embedder, source, sys.stdout.buffer, options)
        _summary(report)
        return
    total = source.stat().st_size if source is not None else None
    with bytes_bar(err, total, f"embedding ({options.mode})") as bar:
        task = bar.add_task(f"embedding ({options.mode})", total=total, items=0)
        report = embed_file(
            embedder, source, output, options, resume=resume,
            progress=lambda done, lines: bar.update(task, completed=done, items=lines),
        )
    _summary(report)


def _summary(report: BulkReport) -> None:
    print_skipped([f"skipped line {number}: {reason}" for number, reason in report.skipped])
    resumed = f", {report.resumed_chunks} chunks kept from the killed run" if report.resumed_chunks else ""
    where = f" -> {report.output}" if report.output else ""
    say(f"{report.rows} vectors from {report.lines} lines{where} ({len(report.skipped)} skipped{resumed})")
