"""`bertonnx info`: describe a bundle and check its files against the manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bertonnx.bundle import load_bundle
from bertonnx.cli.console import out
from bertonnx.cli.export import validation_table
from bertonnx.cli.options import (
    BackendChoice,
    BackendOption,
    MinFidelityOption,
    PrecisionChoice,
    PrecisionOption,
    ProviderChoice,
    ProviderOption,
    load_options,
)
from bertonnx.embedder import RuntimeInfo


def info(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest and the runtime as JSON")] = False,
    backend: BackendOption = BackendChoice.auto,
    precision: PrecisionOption = PrecisionChoice.auto,
    provider: ProviderOption = ProviderChoice.auto,
    threads: Annotated[int | None, typer.Option(help="Inference threads (default: all cores)")] = None,
    min_fidelity: MinFidelityOption = None,
) -> None:
    """Describe a bundle, check its files, and show what runs it here: backend, device, precision, fidelity."""
    from bertonnx.embedder import Embedder

    checked = load_bundle(bundle)
    manifest = checked.manifest
    options = load_options(backend, precision, provider, threads, min_fidelity=min_fidelity)
    runtime = Embedder.load(checked.path, options, verify=False).runtime_info()
    if as_json:
        out.print_json(json.dumps({**manifest, "runtime": runtime.to_dict()}))
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
    out.print(runtime_table(runtime))


USE_NAMES = {"words": "words/tokens", "sentences": "sentences"}


def runtime_table(runtime: RuntimeInfo) -> Table:
    """What runs the bundle on this machine, and its fidelity against fp32 where the precision is reduced."""
    table = Table(title="runtime on this machine", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")  # a recipe's name is one long word: folded, never cut
    table.add_row("backend", f"{runtime.backend} ({runtime.chosen_because})")
    table.add_row("device", runtime.device)
    table.add_row("precision", runtime.precision)
    table.add_row("threads", str(runtime.threads))
    if runtime.fidelity is not None:
        table.add_row("fidelity", runtime.fidelity.summary())
    serves = runtime.serves
    serving = next(iter(serves.values()))
    if all(other == serving for other in serves.values()):  # one backend, one gate, every use: figures above
        recipe = f" (recipe {serving.recipe})" if serving.recipe else ""
        uses = " and ".join(USE_NAMES.get(use, use) for use in serves)
        table.add_row("serves", f"{uses} alike: {serving.backend} {serving.precision}{recipe}")
    else:
        for use, serving in serves.items():
            table.add_row(f"serves {USE_NAMES.get(use, use)}", serving.summary())
    if runtime.timings is not None:
        timings = runtime.timings
        for trial in timings.trials:
            won = " ← fastest" if trial.key == timings.word_winner else ""
            if trial.key == timings.sentence_winner:
                won += " ← fastest for sentences"
            figure = trial.refused or f"{trial.short_ms:.1f} ms short, {trial.bulk_ms:.1f} ms bulk"
            table.add_row(f"{timings.policy}: {trial.name}", figure + won)
        table.add_row("measured", f"{timings.measured_at}, {timings.threads} threads (cached until the graph, "
                      "the runtimes or the CPU change)")
    return table
