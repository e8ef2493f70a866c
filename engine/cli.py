"""The `bertonnx` command: a thin typer layer over the Python API.

Errors a user can cause become one line on stderr and exit code 1; set
BERTONNX_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from benchmarks.cli_bench import bench
from engine.bulk import DEFAULT_CHUNK_LINES, BulkReport, embed_file, embed_to_stream
from engine.bundle import load_bundle
from engine.choices import (
    BatchTokensOption,
    ContextualFlag,
    LongText,
    LongTextOption,
    NormalizeOption,
    OnError,
    OnErrorOption,
    Pooling,
    PoolingOption,
    Provider,
    ProviderOption,
    SentencesFlag,
    StaticFlag,
    UnknownOption,
    UnknownPolicy,
    bulk_options,
)
from engine.cli_compare import compare
from engine.cli_distributed import embed_distributed
from engine.cli_serve import serve
from engine.embedder import DEFAULT_BATCH_TOKENS
from engine.progress import bytes_bar, status_spinner

app = typer.Typer(
    name="bertonnx",
    help="Static and contextual BERT word embeddings, served fast from ONNX bundles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def friendly_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn the errors a user can cause into one line on stderr and exit code 1."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except (CliError, ValueError, OSError, RuntimeError, ImportError) as error:
            if os.environ.get("BERTONNX_DEBUG"):
                raise
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return run


class Quantize(str, Enum):
    int8 = "int8"


@app.command()
@friendly_errors
def export(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to create")],
    model: Annotated[
        str | None, typer.Argument(help="Hugging Face model folder or hub id; default: all-MiniLM-L6-v2")
    ] = None,
    optimize: Annotated[bool, typer.Option(help="Fuse the graph with ONNX Runtime's transformer optimiser")] = False,
    quantize: Annotated[Quantize | None, typer.Option(help="Dynamic int8, settings searched for fidelity")] = None,
    fp16: Annotated[bool, typer.Option(help="Half-precision graph for the CUDA provider")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset")] = 17,
    min_cosine: Annotated[
        float | None, typer.Option(help="Refuse a bundle below this cosine (default 0.99999 fp32, 0.95 int8)")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out")] = False,
) -> None:
    """Export a BERT-family model to a validated ONNX bundle."""
    from export import export_bundle

    with status_spinner(err, "exporting") as step:
        result = export_bundle(
            model,
            out_dir,
            optimize=optimize,
            quantize=quantize.value if quantize else None,
            fp16=fp16,
            opset=opset,
            min_cosine=min_cosine,
            force=force,
            progress=step,
        )
    out.print(validation_table(result.manifest["validation"]))
    out.print(f"bundle written to [bold]{result.path}[/] ({result.manifest['onnx']['precision']})")


@app.command()
@friendly_errors
def info(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole manifest as JSON")] = False,
) -> None:
    """Describe a bundle and check its files against the manifest."""
    checked = load_bundle(bundle)
    manifest = checked.manifest
    if as_json:
        out.print_json(json.dumps(manifest))
        return
    table = Table(title=str(checked.path), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    source, model, onnx = manifest["source"], manifest["model"], manifest["onnx"]
    table.add_row("source", f"{source['model']} ({source['model_type']})")
    table.add_row("weights sha256", source["weights_sha256"][:16] + "…")
    table.add_row("hidden size", str(model["hidden_size"]))
    if checked.embedding_size != checked.hidden_size:
        table.add_row("static vector size", str(checked.embedding_size))
    table.add_row("vocabulary", str(model["vocab_size"]))
    table.add_row("max length", str(model["max_length"]))
    table.add_row("layers / heads", f"{model['num_layers']} / {model['num_heads']}")
    table.add_row("precision", onnx["precision"] + (" (optimised)" if onnx["optimized"] else ""))
    table.add_row("opset", str(onnx["opset"]))
    table.add_row("outputs", f"static: {onnx['outputs']['static']}, contextual: {onnx['outputs']['contextual']}")
    for name, entry in manifest["files"].items():
        table.add_row(name, f"{entry['bytes'] / 1e6:.1f} MB, sha256 ok")
    out.print(table)
    out.print(validation_table(manifest["validation"]))


@app.command()
@friendly_errors
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
    provider: ProviderOption = Provider.auto,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime threads (default: all cores)")] = None,
) -> None:
    """Embed a file of words or texts in bulk, streaming in chunks, written atomically."""
    from engine.embedder import Embedder

    options = bulk_options(
        static, contextual, sentences, pooling, normalize, unknown, long_text, on_error, chunk_lines=chunk_lines
    )
    source = None if input_path == "-" else Path(input_path)
    if source is not None and not source.is_file():
        problem = "not a regular file (use -i - for a pipe or stdin)" if source.exists() else "no such input file"
        raise CliError(f"{source}: {problem}")
    embedder = Embedder.load(bundle, provider=provider.value, threads=threads, batch_tokens=batch_tokens)
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
    for number, reason in report.skipped[:20]:
        err.print(f"skipped line {number}: {reason}", markup=False, highlight=False)
    if len(report.skipped) > 20:
        err.print(f"... and {len(report.skipped) - 20} more skipped lines")
    resumed = f", {report.resumed_chunks} chunks kept from the killed run" if report.resumed_chunks else ""
    where = f" -> {report.output}" if report.output else ""
    err.print(
        f"{report.rows} vectors from {report.lines} lines{where} ({len(report.skipped)} skipped{resumed})",
        markup=False,
        highlight=False,
    )


app.command("compare")(friendly_errors(compare))
app.command("serve")(friendly_errors(serve))
app.command("bench")(friendly_errors(bench))
app.command("embed-distributed")(friendly_errors(embed_distributed))


def validation_table(validation: dict[str, Any]) -> Table:
    """Fidelity against PyTorch, per output, at token and word level."""
    final = validation["final"]
    table = Table(title=f"validation against PyTorch ({final['texts']} texts, {final['tokens']} tokens)")
    for column in ("output", "level", "max abs diff", "min cosine", "mean cosine"):
        table.add_column(column, justify="left" if column in ("output", "level") else "right")
    for name, fidelity in final["outputs"].items():
        for level in ("token", "word"):
            table.add_row(
                name,
                level,
                f"{fidelity[f'{level}_max_abs_diff']:.3g}",
                f"{fidelity[f'{level}_min_cosine']:.7f}",
                f"{fidelity[f'{level}_mean_cosine']:.7f}",
            )
    return table


def main() -> None:
    """Console entry point."""
    app()
