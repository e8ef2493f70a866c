"""export_bundle: model -> validated bundle directory, written atomically.

Everything is built in a temporary sibling of the target and moved into place
with one rename only after validation passed, so an interrupted or refused
export never leaves a directory that looks like a bundle.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from bertonnx.bundle import (
    CONFIG_FILE,
    CONTEXTUAL_OUTPUT,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    MODEL_FILE,
    STATIC_OUTPUT,
    TABLE_FILE,
    TOKENIZER_FILE,
    sha256_file,
)
from bertonnx.export.convert import (
    ExportError,
    LoadedModel,
    export_onnx,
    load_model,
    resolve_source,
    save_config,
    save_tokenizer,
)
from bertonnx.export.optimize import (
    QuantSettings,
    graph_inputs,
    has_fused_attention,
    optimize_graph,
    quant_search_space,
    quantize_int8,
)
from bertonnx.export.quiet import quiet_exporters
from bertonnx.export.validate import ValidationError, ValidationReport, require, validate_graph
from bertonnx.io.atomic import atomic_directory, make_hidden_dir
from bertonnx.tokenize import Tokenizer

DEFAULT_OPSET = 17
DEFAULT_MIN_COSINE = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.95}
"""Worst token- or word-level cosine a bundle may have against PyTorch, by precision."""
INT8_TARGET = 0.99
"""Mean word-level cosine of the contextual output an int8 graph should reach."""
Progress = Callable[[str], None]


@dataclass(frozen=True)
class QuantTrial:
    settings: QuantSettings
    report: ValidationReport


@dataclass
class ExportResult:
    path: Path
    manifest: dict[str, Any]
    report: ValidationReport
    stages: dict[str, ValidationReport] = field(default_factory=dict)  # every graph validated on the way
    quant_trials: list[QuantTrial] = field(default_factory=list)


def export_bundle(
    model: str | None,
    out: str | Path,
    *,
    optimize: bool = False,
    quantize: str | None = None,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    min_cosine: float | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Export a BERT-family encoder to a bundle and validate it against PyTorch.

    Args:
        model: local Hugging Face folder or hub id; None for the embedded default.
        out: bundle directory to create.
        optimize: apply ONNX Runtime's transformer fusions.
        quantize: "int8" for dynamic int8 (settings searched for fidelity).
        fp16: half-precision graph for the CUDA provider.
        opset: ONNX opset.
        min_cosine: refuse the bundle below this cosine; default by precision.
        force: replace an existing `out`.
        progress: called with a short description as each step starts.

    Raises:
        ExportError: bad model or output location.
        ValidationError: the graph does not reproduce PyTorch well enough.
    """
    say = progress or (lambda _: None)
    if quantize not in (None, "int8"):
        raise ExportError(f"unknown quantization {quantize!r}; expected int8")
    if quantize and fp16:
        raise ExportError("{quantize} and {fp16} exclude each other", quantize="int8", fp16=True)
    precision = "int8" if quantize else "fp16" if fp16 else "fp32"
    threshold = DEFAULT_MIN_COSINE[precision] if min_cosine is None else min_cosine
    target = Path(out).expanduser().resolve()
    _check_target(target, force)

    say("loading the model")
    loaded = load_model(resolve_source(model))
    try:
        work = make_hidden_dir(target)
    except OSError as error:
        raise ExportError(f"{target.parent}: cannot write here ({error.strerror})") from error
    with atomic_directory(target, work):
        say(f"exporting to ONNX (opset {opset})")
        with quiet_exporters():
            export_onnx(loaded, work / MODEL_FILE, opset)
        save_config(loaded, work)
        save_tokenizer(loaded, work / TOKENIZER_FILE)
        tokenizer = Tokenizer.from_file(work / TOKENIZER_FILE, loaded.max_length)
        stages, trials = _transform_and_validate(work, loaded, tokenizer, precision, optimize, say)
        report = stages[list(stages)[-1]]
        require(report, threshold, static_exact=precision != "fp16")

        say("writing the bundle")
        np.save(work / TABLE_FILE, loaded.static_table(), allow_pickle=False)
        manifest = _manifest(loaded, work, opset, precision, optimize, report, stages, trials, threshold)
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _drop_scratch(work)
    return ExportResult(path=target, manifest=manifest, report=report, stages=stages, quant_trials=trials)


def _transform_and_validate(
    work: Path, loaded: LoadedModel, tokenizer: Tokenizer, precision: str, optimize: bool, say: Progress
) -> tuple[dict[str, ValidationReport], list[QuantTrial]]:
    """Validate the exported graph, then each transform asked for (fusions or fp16, int8) after it is made."""
    fp16 = precision == "fp16"
    stages: dict[str, ValidationReport] = {}
    say("validating against PyTorch")
    stages["export"] = _validated(work / MODEL_FILE, loaded, tokenizer, static_exact=True)
    if optimize or fp16:
        say("optimising the graph" + (" to fp16" if fp16 else ""))
        candidate = work / "optimized.onnx"
        with quiet_exporters():
            optimize_graph(work, candidate, fp16=fp16)
        stages["fp16" if fp16 else "optimized"] = _validated(candidate, loaded, tokenizer, static_exact=not fp16)
        candidate.replace(work / MODEL_FILE)
    trials: list[QuantTrial] = []
    if precision == "int8":
        trials = _search_int8(work, loaded, tokenizer, say)
        stages["int8"] = trials[0].report
    return stages, trials


def _validated(graph: Path, loaded: LoadedModel, tokenizer: Tokenizer, static_exact: bool) -> ValidationReport:
    report = validate_graph(graph, loaded.model, tokenizer)
    require(report, 0.0, static_exact=static_exact)
    return report


def _search_int8(work: Path, loaded: LoadedModel, tokenizer: Tokenizer, say: Progress) -> list[QuantTrial]:
    """Try each quantisation setting, then keep one graph; trials come back best first.

    The chosen graph is the most quantised (fewest fp32 MatMuls kept) among
    those reaching INT8_TARGET mean word cosine, else the most faithful one.
    """
    fused = has_fused_attention(work / MODEL_FILE)
    trials: list[QuantTrial] = []
    graphs: list[Path] = []
    space = list(quant_search_space(fused))
    for index, settings in enumerate(space):
        say(f"int8 search {index + 1}/{len(space)}: {settings.label()}")
        candidate = work / f"int8-{index}.onnx"
        with quiet_exporters():
            quantize_int8(work / MODEL_FILE, candidate, settings)
        trials.append(QuantTrial(settings, _validated(candidate, loaded, tokenizer, static_exact=True)))
        graphs.append(candidate)

    def rank(index: int) -> tuple[bool, bool, float]:
        score = trials[index].report.output(CONTEXTUAL_OUTPUT).word_mean_cosine
        reaches = score >= INT8_TARGET
        return (reaches, reaches and trials[index].settings.keep_fp32 == "none", score)

    order = sorted(range(len(trials)), key=rank, reverse=True)
    graphs[order[0]].replace(work / MODEL_FILE)
    for index in order[1:]:
        graphs[index].unlink()
    return [trials[index] for index in order]


def _check_target(target: Path, force: bool) -> None:
    if target.exists() and not force:
        raise ExportError(f"{target}: already exists; pass {{force}} to replace it", force=True)
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target}: exists and is not a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)  # as `mkdir -p`: `--out bundles/minilm` on a fresh clone
    except FileExistsError as error:
        message = f"{target.parent}: exists and is not a folder, so {{out}} cannot go in it"
        raise ExportError(message, out=...) from error
    except OSError as error:
        message = f"{target.parent}: cannot create the folder for {{out}} ({error.strerror})"
        raise ExportError(message, out=...) from error


def _drop_scratch(work: Path) -> None:
    """Only the bundle's own files go into place: the optimiser's and quantiser's scratch stays behind."""
    for leftover in work.iterdir():
        if leftover.name not in (MODEL_FILE, TABLE_FILE, TOKENIZER_FILE, CONFIG_FILE, MANIFEST):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


def _manifest(
    loaded: LoadedModel,
    work: Path,
    opset: int,
    precision: str,
    optimized: bool,
    report: ValidationReport,
    stages: dict[str, ValidationReport],
    trials: list[QuantTrial],
    threshold: float,
) -> dict[str, Any]:
    files = {
        name: {"sha256": sha256_file(work / name), "bytes": (work / name).stat().st_size}
        for name in (MODEL_FILE, TABLE_FILE, TOKENIZER_FILE, CONFIG_FILE)
    }
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "model": loaded.source.name,
            "model_type": loaded.model_type,
            "weights_sha256": loaded.weights_sha256(),
        },
        "model": {
            "hidden_size": loaded.hidden_size,
            "embedding_size": loaded.embedding_size,
            "vocab_size": loaded.vocab_size,
            "max_length": loaded.max_length,
            "num_layers": loaded.num_layers,
            "num_heads": loaded.num_heads,
            **_sentence_transformers(loaded),
        },
        "onnx": {
            "opset": opset,
            "precision": precision,
            "optimized": optimized or precision == "fp16",
            "inputs": graph_inputs(work / MODEL_FILE),
            "outputs": {"static": STATIC_OUTPUT, "contextual": CONTEXTUAL_OUTPUT},
        },
        "static_table": {"file": TABLE_FILE, "shape": [loaded.vocab_size, loaded.embedding_size], "dtype": "float32"},
        "validation": {
            "min_cosine_required": threshold,
            "final": report.to_dict(),
            "stages": {name: stage.to_dict() for name, stage in stages.items()},
            "int8_search": [{"settings": t.settings.to_dict(), **t.report.to_dict()} for t in trials],
        },
        "versions": _versions(),
        "files": files,
    }


def _sentence_transformers(loaded: LoadedModel) -> dict[str, int]:
    """The key only where the source model is a sentence-transformers model: absent means "none"."""
    length = loaded.sentence_transformers_max_length
    return {} if length is None else {"sentence_transformers_max_length": length}


def _versions() -> dict[str, str]:
    names = ("bertonnx", "torch", "transformers", "optimum-onnx", "onnx", "onnxruntime", "tokenizers", "numpy")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


__all__ = ["ExportError", "ExportResult", "ValidationError", "export_bundle"]
