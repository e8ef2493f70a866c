"""`bertonnx bench`: parse the options, run the shared harness, print and write the report.

Registered in bertonnx.cli.app as `app.command("bench")(friendly_errors(bench))`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertonnx.backends.base import default_threads
from bertonnx.benchmarks.names import BENCH_WORKLOADS, DEFAULT_BENCH_WORKLOADS
from bertonnx.cli.console import err, out
from bertonnx.cli.progress import status_spinner
from bertonnx.defaults import ensure_default_bundle
from bertonnx.errors import OptionError


def bench(
    bundles: Annotated[
        list[Path] | None,
        typer.Argument(help="Bundles of one model (fp32, optimized, int8, fp16); default: all-MiniLM-L6-v2"),
    ] = None,
    torch_model: Annotated[
        str | None, typer.Option(help="Hugging Face folder of the same weights; default: read from the bundle")
    ] = None,
    batch_sizes: Annotated[str, typer.Option(help="Grid batch sizes, comma-separated")] = "1,8,32",
    seq_lens: Annotated[str, typer.Option(help="Grid sequence lengths in tokens, comma-separated")] = "16,64,128,512",
    threads: Annotated[int | None, typer.Option(help="Threads for every system (default: all cores)")] = None,
    providers: Annotated[str, typer.Option(help="cpu and/or cuda, comma-separated; cuda is skipped without a GPU")] = (
        "cpu"
    ),
    backends: Annotated[
        str,
        typer.Option(help="auto (the engine's pick here), onnxruntime (each bundle as exported), all (every "
                     "backend x precision this machine has), or BACKEND:PRECISION, comma-separated"),
    ] = "auto,onnxruntime",
    repeat: Annotated[int, typer.Option(help="Timed runs per system and case (bulk workloads: at most 3)")] = 5,
    workloads: Annotated[
        str, typer.Option(help=f"Comma-separated, from: {', '.join(BENCH_WORKLOADS)}")
    ] = ",".join(DEFAULT_BENCH_WORKLOADS),
    corpus_texts: Annotated[int, typer.Option(help="Texts in the mixed-length corpus")] = 400,
    million: Annotated[int, typer.Option(help="Words in the static bulk workload")] = 1_000_000,
    memory: Annotated[bool, typer.Option(help="Measure peak memory, one child process per system (slow)")] = False,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for report.json, report.md, plots")] = Path(
        "bench-out"
    ),
) -> None:
    """Time bertonnx against PyTorch and sentence-transformers, each speed figure next to its fidelity."""
    from bertonnx.benchmarks.harness import BenchConfig, run_benchmark
    from bertonnx.benchmarks.report import print_report, write_report
    from bertonnx.benchmarks.workloads import WorkloadSpec

    spec = WorkloadSpec(
        families=_names(workloads, "--workloads"),
        batch_sizes=_positive_ints(batch_sizes, "--batch-sizes"),
        seq_lens=_positive_ints(seq_lens, "--seq-lens"),
        corpus_texts=corpus_texts,
        million=million,
        repeat=repeat,
    )
    with status_spinner(err, "preparing") as step:
        paths = tuple(bundles) if bundles else (ensure_default_bundle(step),)
        config = BenchConfig(
            bundles=paths,
            torch_model=Path(torch_model) if torch_model else torch_source(paths[0]),
            workloads=spec,
            threads=threads or default_threads(),
            providers=_names(providers, "--providers"),
            backends=_names(backends, "--backends"),
            memory=memory,
        )
        report = run_benchmark(config, step)
        step(f"writing {out_dir}")
        written = write_report(report, out_dir)
    print_report(report, written, out, err)


def torch_source(bundle: Path) -> Path:
    """The Hugging Face folder a bundle was exported from, when the manifest names one that is here."""
    from bertonnx.bundle import load_bundle

    source = load_bundle(bundle, verify=False).source_model
    if Path(source).is_dir():
        return Path(source)
    from bertonnx.export.convert import DEFAULT_MODEL_ID, resolve_source

    if source == DEFAULT_MODEL_ID:
        return Path(resolve_source(None).location)
    raise OptionError(f"{bundle} was exported from {source!r}, not a folder here; pass --torch-model")


def _names(text: str, option: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise OptionError(f"{option} is empty")
    return names


def _positive_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(part) for part in _names(text, option))
    except ValueError as error:
        raise OptionError(f"{option} takes comma-separated whole numbers, got {text!r}") from error
    if min(numbers) < 1:
        raise OptionError(f"{option} takes positive numbers, got {text!r}")
    return numbers
