"""`bertonnx export`: a model folder or hub id -> a validated bundle (needs the export extra)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bertonnx.cli.console import err, out
from bertonnx.cli.progress import status_spinner


class Quantize(str, Enum):
    int8 = "int8"


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
    from bertonnx.export import export_bundle

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
