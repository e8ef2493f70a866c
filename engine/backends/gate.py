"""A reduced precision held to its fidelity gate: figures measured once against fp32 and cached per bundle,
backend, versions and CPU, or taken from the bundle's own validation at export."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bertonnx.backends.base import Backend
from bertonnx.backends.choose import Choice, Machine
from bertonnx.bundle import CONTEXTUAL_OUTPUT, Bundle
from bertonnx.fidelity import (
    GATES,
    SENTENCE_GATE,
    Gate,
    GateResult,
    compare,
    probe_batch,
    prose_batch,
    read_cached,
    sentence_cosines,
    write_cached,
)
from bertonnx.paths import bundle_home
from bertonnx.tokenize import Tokenizer


def cache_root() -> Path:
    """Compiled models, quantised graphs and fidelity figures: never inside a bundle."""
    return bundle_home() / "cache"


def graph_key(bundle: Bundle) -> str:
    """The bundle's graph, by content: the first 16 hex digits of its sha256."""
    return bundle.graph_sha256[:16]


def precision_gate(precision: str, min_fidelity: float | None) -> Gate:
    """A precision's gate, or with "sentences" the sentence gate; min_fidelity replaces its minimum."""
    gate = SENTENCE_GATE if precision == "sentences" else GATES.get(precision, GATES["bf16"])
    return gate if min_fidelity is None else Gate(gate.metric, min_fidelity)


def exported_fidelity(bundle: Bundle, min_fidelity: float | None) -> GateResult | None:
    """An fp16 or int8 bundle was measured against PyTorch fp32 at export: hold those figures to the gate."""
    if bundle.precision not in GATES:
        return None
    from bertonnx.fidelity import OutputFidelity

    final = bundle.manifest.get("validation", {}).get("final", {}).get("outputs", {}).get(CONTEXTUAL_OUTPUT)
    if not isinstance(final, dict):
        return None
    fidelity = OutputFidelity(**{name: final[name] for name in OutputFidelity.__dataclass_fields__ if name in final})
    gate = precision_gate(bundle.precision, min_fidelity)
    result = GateResult(bundle.precision, "PyTorch fp32, at export", fidelity, gate)
    result.check()
    return result


def measured_fidelity(
    bundle: Bundle, tokenizer: Tokenizer, candidate: Backend, choice: Choice, machine: Machine,
    min_fidelity: float | None, gate_of: str | None = None,
) -> GateResult:
    """Run the probes (and, for sentence figures, held-out prose) at the reduced precision and at fp32; cached per
    bundle, backend, versions, CPU and int8 recipe.

    Args:
        gate_of: hold the figures to another gate: a precision's, or "sentences" (the sentence gate).
    """
    gate = precision_gate(gate_of or choice.precision, min_fidelity)
    versions = {k: v for k, v in candidate.info.details.items() if k in ("openvino", "onnxruntime")}
    path, key = fidelity_entry(bundle, candidate.info.backend, choice.precision, versions, machine, choice.recipe)
    cached = read_cached(path, key)
    if cached is not None:
        return GateResult(cached.precision, cached.reference, cached.fidelity, gate)
    reference = _fp32_reference(bundle, machine)
    encoded, word_ids = probe_batch(tokenizer)
    expected = reference.run(CONTEXTUAL_OUTPUT, encoded.feeds(reference.info.inputs))
    found = candidate.run(CONTEXTUAL_OUTPUT, encoded.feeds(candidate.info.inputs))
    fidelity = compare(CONTEXTUAL_OUTPUT, expected, found, encoded.attention_mask.astype(bool), word_ids)
    prose = prose_batch(tokenizer)
    prose_cos = sentence_cosines(reference.run(CONTEXTUAL_OUTPUT, prose.feeds(reference.info.inputs)),
                                 candidate.run(CONTEXTUAL_OUTPUT, prose.feeds(candidate.info.inputs)),
                                 prose.attention_mask)
    sentences = [*sentence_cosines(expected, found, encoded.attention_mask), *prose_cos]  # probes, then prose
    fidelity = replace(fidelity, sentence_min_cosine=float(min(sentences)),
                       sentence_mean_cosine=float(sum(sentences) / len(sentences)))
    name = f"{reference.info.backend} fp32"
    result = GateResult(choice.precision, name, fidelity, gate)
    write_cached(path, key, result)
    return result


def fidelity_entry(
    bundle: Bundle, backend: str, precision: str, versions: dict[str, str], machine: Machine, kind: str = "words"
) -> tuple[Path, dict[str, object]]:
    """Where a precision's fidelity figures are cached, and the key they were measured under.

    Args:
        kind: OpenVINO int8's recipe kind (quantize.RECIPE_KINDS): each recipe has figures of its own.
    """
    int8 = precision == "int8" and backend == "openvino"
    key = {
        "graph": bundle.graph_sha256,
        "backend": backend,
        "precision": precision,
        "versions": versions,
        "cpu": sorted(machine.cpu_flags & {"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f"}),
        "probes": "v2",  # v2: sentence figures, on the probes and HELD_OUT_PROSE
        "recipe": _int8_recipe(machine, kind) if int8 else None,
    }
    suffix = f"-{kind}" if int8 and kind != "words" else ""
    return cache_root() / "fidelity" / f"{graph_key(bundle)}-{backend}-{precision}{suffix}.json", key


def _int8_recipe(machine: Machine, kind: str) -> str:
    from bertonnx.backends.quantize import int8_recipe

    return int8_recipe(machine.cpu_flags, kind).name


def _fp32_reference(bundle: Bundle, machine: Machine) -> Backend:
    if "onnxruntime" in machine.installed:
        from bertonnx.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle.model_path, "cpu")
    from bertonnx.backends.openvino import OpenVinoBackend

    return OpenVinoBackend(bundle.model_path, CONTEXTUAL_OUTPUT, "fp32")


def int8_faithful(bundle: Bundle, machine: Machine) -> bool:
    """int8's fidelity on OpenVINO, measured before on this machine, clears the bf16 gate."""
    if "openvino" not in machine.installed:
        return False
    from bertonnx.backends.openvino import openvino_version

    path, key = fidelity_entry(bundle, "openvino", "int8", {"openvino": openvino_version()}, machine)
    cached = read_cached(path, key)
    return cached is not None and GateResult(cached.precision, cached.reference, cached.fidelity, GATES["bf16"]).passed


