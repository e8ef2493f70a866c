"""`bertonnx compare`: the static-versus-contextual study as a command.

Registered in bertonnx.cli.app as `app.command("compare")(friendly_errors(compare))`.
This module does not import bertonnx.cli.app, so that bertonnx.cli.app can import it.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bertonnx.cli.console import err, out
from bertonnx.cli.options import (
    BackendChoice,
    BackendOption,
    ContextOption,
    PrecisionChoice,
    PrecisionOption,
    PriorOption,
    ProviderChoice,
    ProviderOption,
    WordPoolingChoice,
    load_options,
)
from bertonnx.cli.progress import status_spinner
from bertonnx.defaults import resolve_bundle
from bertonnx.embedder import Embedder
from bertonnx.errors import InputError, OptionError
from bertonnx.study import DEFAULT_CONTEXTS, METRICS, TYPE_LEVEL, StudyResult, load_contexts, run_study, write_outputs
from bertonnx.type_level import DEFAULT_CONTEXT, DEFAULT_PRIOR, TypeLevelOptions


class Metric(str, Enum):
    cosine = "cosine"
    euclidean = "euclidean"
    both = "both"


def compare(
    bundle: Annotated[Path | None, typer.Argument(help="Bundle directory; default: all-MiniLM-L6-v2")] = None,
    contexts: Annotated[
        Path | None,
        typer.Option(help="JSON or YAML file of word -> context sentences; default: the seed's king/queen study"),
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for the figures and study.json")] = Path(
        "compare-out"
    ),
    metric: Annotated[Metric, typer.Option(help="Which heatmaps and tables")] = Metric.both,
    pooling: Annotated[
        WordPoolingChoice, typer.Option(help="How a word's pieces become one vector")
    ] = WordPoolingChoice.mean,
    backend: BackendOption = BackendChoice.auto,
    precision: PrecisionOption = PrecisionChoice.fp32,
    provider: ProviderOption = ProviderChoice.auto,
    type_level: Annotated[
        bool, typer.Option("--type-level", help="Add a type-level panel: each word pooled over templates, or over "
                           "--corpus")
    ] = False,
    corpus: Annotated[
        Path | None, typer.Option(help="--type-level: a UTF-8 text file of texts, one a line")
    ] = None,
    prior: PriorOption = DEFAULT_PRIOR,
    context: ContextOption = DEFAULT_CONTEXT,
) -> None:
    """Compare static and contextual vectors of words read in context sentences.

    Runs the exact fp32 graph by default (a study of the model, not of the hardware: bf16 moves its numbers in the
    third decimal); study.json and the figures record what ran.
    """
    given = [flag for flag, on in (("--corpus", corpus is not None), ("--prior", prior != DEFAULT_PRIOR),
                                   ("--context", context != DEFAULT_CONTEXT)) if on]
    if given and not type_level:
        raise OptionError(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} with --type-level")
    options = TypeLevelOptions(prior=prior, context=context, pooling=pooling.value) if type_level else False
    study = load_contexts(contexts) if contexts is not None else DEFAULT_CONTEXTS
    metrics = METRICS if metric.value == "both" else (metric.value,)
    n_sentences = sum(len(sentences) for sentences in study.values())
    with status_spinner(err, "opening the bundle") as step:
        path = resolve_bundle(bundle, step)
        step(f"loading {path}")
        embedder = Embedder.load(path, load_options(backend, precision, provider))
        step(f"reading {len(study)} words in {n_sentences} sentences")
        lines = _corpus_lines(corpus) if corpus is not None else None
        result = run_study(embedder, study, pooling=pooling.value, type_level=options, corpus=lines)
        step(f"writing {out_dir}")
        written = write_outputs(result, out_dir, metrics)
    for metric_name in metrics:
        for table in matrix_tables(result, metric_name):
            out.print(table)
    if len(result.panels) > 2:
        out.print(across_table(result, metrics))
    if any(panel.analogy is not None for panel in result.panels):
        out.print(analogy_table(result))
    out.print("wrote " + ", ".join(str(file) for file in written))


def matrix_tables(result: StudyResult, metric: str) -> list[Table]:
    """One table per kind: the words against each other."""
    tables = []
    for panel in result.panels:
        table = Table(title=f"{metric} · {panel.kind}", title_justify="left")
        table.add_column("", style="bold")
        for word in result.words:
            table.add_column(word, justify="right")
        for word, row in zip(result.words, panel.matrix(metric)):
            table.add_row(word, *(_number(value, metric) for value in row))
        tables.append(table)
    return tables


def across_table(result: StudyResult, metrics: tuple[str, ...]) -> Table:
    """Each word against itself in every other context: how far context moves it."""
    n_contexts = len(result.panels) - 1
    pairs = [(a, b) for a in range(n_contexts) for b in range(a + 1, n_contexts)]
    # context k is "k"; a type-level panel (in the same last-layer space) is "type"
    names = ["type" if panel.kind == TYPE_LEVEL else panel.kind.split()[-1] for panel in result.panels[1:]]
    table = Table(title="word vs itself across contexts", title_justify="left")
    table.add_column("word", style="bold")
    for metric in metrics:
        for a, b in pairs:
            table.add_column(f"{metric} {names[a]}↔{names[b]}", justify="right")
    matrices = [result.across_contexts(metric) for metric in metrics]  # each (W, K, K)
    for index, word in enumerate(result.words):
        table.add_row(
            word, *(_number(m[index, a, b], metric) for metric, m in zip(metrics, matrices) for a, b in pairs)
        )
    return table


def analogy_table(result: StudyResult) -> Table:
    """queen − king ≈ woman − man, per kind: small gap and cosine near 1 mean it holds."""
    table = Table(title="analogy: queen − king ≈ woman − man", title_justify="left")
    for column in ("kind", "‖queen − king‖", "‖woman − man‖", "‖gap‖", "cos(offsets)"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for panel in result.panels:
        if panel.analogy is not None:
            a = panel.analogy
            table.add_row(panel.kind, f"{a.royal:.3f}", f"{a.gender:.3f}", f"{a.gap:.3f}", f"{a.cosine:.3f}")
    return table


def _number(value: float, metric: str) -> str:
    return f"{value:.3f}" if metric == "cosine" else f"{value:.2f}"


def _corpus_lines(path: Path) -> list[str]:
    """A small corpus for the study, read whole (type-level jobs at scale stream: `embed --type-level`)."""
    from bertonnx.jobs.bulk import read_lines

    if not path.is_file():
        raise InputError(f"{path}: no such corpus file")
    with path.open("rb") as stream:
        return [line.text for line in read_lines(stream, str(path))]
