"""The full report behind benchmarks/README.md: `python -m bertonnx.benchmarks.run`.

Two runs of the shared harness:
    minilm     the default model (all-MiniLM-L6-v2): fp32, optimized and int8
               bundles, every workload. Speed and fidelity.
    bert-base  a randomly initialised BertConfig() model of BERT-base size
               (12 x 768, 110M parameters) with the default model's tokenizer
               (same 30,522-entry vocabulary): latency and a small grid only.
               Random weights say nothing about fidelity; the real model's
               fidelity figures are in the minilm report.
Bundles are exported once into a cache folder and reused. On a machine with
a GPU (onnxruntime-gpu and torch with CUDA) an fp16 bundle is exported too and
the CUDA provider is compared as well.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bertonnx.backends.base import default_threads
from bertonnx.benchmarks.harness import BenchConfig, Report, run_benchmark
from bertonnx.benchmarks.report import print_report, write_report
from bertonnx.benchmarks.systems import Availability, cuda_unavailable
from bertonnx.benchmarks.workloads import WorkloadSpec
from bertonnx.bundle import MANIFEST
from bertonnx.paths import bundle_home

console = Console()
BERT_BASE_NOTE = (
    "Randomly initialised BertConfig() (BERT-base size: 12 layers, hidden 768, 110M parameters) with the "
    "default model's tokenizer: latency only. Its fidelity rows compare random weights with themselves; "
    "the real model's fidelity is in the all-MiniLM-L6-v2 report."
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def main(
    out_dir: Annotated[Path, typer.Option("--out", help="Where minilm/ and bert-base/ reports go")] = Path(
        "benchmarks/results"
    ),
    cache: Annotated[Path | None, typer.Option(help="Bundle cache; default: $BERTONNX_HOME/bench")] = None,
    threads: Annotated[int | None, typer.Option(help="Threads for every system (default: all cores)")] = None,
    repeat: Annotated[int, typer.Option(help="Timed runs per system and case")] = 3,
    corpus_texts: Annotated[int, typer.Option(help="Texts in the mixed-length corpus")] = 500,
    bert_base: Annotated[bool, typer.Option(help="Also run the BERT-base-size latency grid")] = True,
) -> None:
    """Export (once) and benchmark the default model, then a BERT-base-size random model."""
    from bertonnx.export.convert import resolve_source

    home = cache or bundle_home() / "bench"
    home.mkdir(parents=True, exist_ok=True)
    n_threads = threads or default_threads()
    gpu = cuda_unavailable(Availability.detect()) is None
    providers = ("cpu", "cuda") if gpu else ("cpu",)

    minilm = Path(resolve_source(None).location)
    config = BenchConfig(
        bundles=exported(minilm, home / "minilm", gpu),
        torch_model=minilm,
        workloads=WorkloadSpec(corpus_texts=corpus_texts, repeat=repeat),
        threads=n_threads,
        providers=providers,
        backends=("all",),
        memory=True,
        title="all-MiniLM-L6-v2",
    )
    show(run_benchmark(config, _say), out_dir / "minilm")

    if bert_base:
        model = random_bert_base(home / "bert-base-random" / "model", minilm)
        config = BenchConfig(
            bundles=exported(model, home / "bert-base-random", gpu, min_cosine=0.0),
            torch_model=model,
            workloads=WorkloadSpec(families=("latency", "grid"), batch_sizes=(1, 8), seq_lens=(16, 128), repeat=repeat),
            threads=n_threads,
            providers=providers,
            backends=("all",),
            title="BERT-base size, random weights",
            note=BERT_BASE_NOTE,
        )
        show(run_benchmark(config, _say), out_dir / "bert-base")


def exported(model: Path, folder: Path, fp16: bool, min_cosine: float | None = None) -> tuple[Path, ...]:
    """fp32, optimized and int8 bundles of `model` (and fp16 with a GPU), each exported only once."""
    from bertonnx.export import export_bundle

    variants = {"fp32": {}, "optimized": {"optimize": True}, "int8": {"optimize": True, "quantize": "int8"}}
    if fp16:
        variants["fp16"] = {"fp16": True}
    paths = []
    for name, options in variants.items():
        path = folder / name
        if not (path / MANIFEST).is_file():
            _say(f"exporting {model.name} -> {path}")
            threshold = min_cosine if name in ("int8", "fp16") else None
            export_bundle(str(model), path, force=path.exists(), min_cosine=threshold, **options)
        paths.append(path)
    return tuple(paths)


def random_bert_base(folder: Path, tokenizer_source: Path) -> Path:
    """Save a seeded random BertConfig() model with `tokenizer_source`'s tokenizer (same 30,522 vocabulary)."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    BertModel(BertConfig()).eval().save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (tokenizer_source / name).is_file():
            shutil.copy(tokenizer_source / name, folder / name)
    return folder


def show(report: Report, out_dir: Path) -> None:
    print_report(report, write_report(report, out_dir), console, console)


def _say(step: str) -> None:
    console.print(f"[dim]·[/] {step}")


if __name__ == "__main__":
    typer.run(main)
