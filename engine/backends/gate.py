"""A reduced precision held to its fidelity gate: figures measured once against fp32 and cached per bundle,
backend, versions and CPU, or taken from the bundle's own validation at export."""

from __future__ import annotations

from pathlib import Path

from bertonnx.backends.base import Backend
from bertonnx.backends.choose import Choice, Machine
from bertonnx.bundle import CONTEXTUAL_OUTPUT, Bundle
from bertonnx.fidelity import GATES, Gate, GateResult, compare, probe_batch, read_cached, write_cached
from bertonnx.paths import bundle_home
from bertonnx.tokenize import Tokenizer


def cache_root() -> Path:
    """Compiled models, quantised graphs and fidelity figures: never inside a bundle."""
    return bundle_home() / "cache"


def graph_key(bundle: Bundle) -> str:
    """The bundle's graph, by content: the first 16 hex digits of its sha256."""
    return bundle.graph_sha256[:16]


def precision_gate(precision: str, min_fidelity: float | None) -> Gate:
    gate = GATES.get(precision, GATES["bf16"])
    return gate if min_fidelity is None else Gate(gate.metric, min_fidelity)


def exported_fidelity(bundle: Bundle, min_fidelity: float | None) -> GateResult | None:
    """An fp16 or int8 bundle was measured against PyTorch fp32 at export: hold those figures to the gate."""
    if bundle.precision not in GATES:
        return None
    from bertonnx.fidelity import OutputFidelity

    final = bundle.manifest.get("validation", {}).get("final", {}).get("outputs", {}).get(CONTEXTUAL_OUTPUT)
    if not isinstance(final, dict):
        return None
    fidelity = OutputFidelity(**{name: final[name] for name in OutputFidelity.__dataclass_fields__})
    gate = precision_gate(bundle.precision, min_fidelity)
    result = GateResult(bundle.precision, "PyTorch fp32, at export", fidelity, gate)
    result.check()
    return result


def measured_fidelity(
    bundle: Bundle, tokenizer: Tokenizer, candidate: Backend, choice: Choice, machine: Machine,
    min_fidelity: float | None, gate_of: str | None = None,
) -> GateResult:
    """Run the probes at the reduced precision and at fp32; cached per bundle, backend, versions and CPU."""
    gate = precision_gate(gate_of or choice.precision, min_fidelity)
    versions = {k: v for k, v in candidate.info.details.items() if k in ("openvino", "onnxruntime")}
    path, key = fidelity_entry(bundle, candidate.info.backend, choice.precision, versions, machine)
    cached = read_cached(path, key)
    if cached is not None:
        return GateResult(cached.precision, cached.reference, cached.fidelity, gate)
    reference = _fp32_reference(bundle, machine)
    encoded, word_ids = probe_batch(tokenizer)
    expected = reference.run(CONTEXTUAL_OUTPUT, encoded.feeds(reference.info.inputs))
    found = candidate.run(CONTEXTUAL_OUTPUT, encoded.feeds(candidate.info.inputs))
    fidelity = compare(CONTEXTUAL_OUTPUT, expected, found, encoded.attention_mask.astype(bool), word_ids)
    name = f"{reference.info.backend} fp32"
    result = GateResult(choice.precision, name, fidelity, gate)
    write_cached(path, key, result)
    return result


def fidelity_entry(
    bundle: Bundle, backend: str, precision: str, versions: dict[str, str], machine: Machine
) -> tuple[Path, dict[str, object]]:
    """Where a precision's fidelity figures are cached, and the key they were measured under."""
    key = {
        "graph": bundle.graph_sha256,
        "backend": backend,
        "precision": precision,
        "versions": versions,
        "cpu": sorted(machine.cpu_flags & {"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f"}),
        "probes": "v1",
        "recipe": _int8_recipe(machine) if precision == "int8" and backend == "openvino" else None,
    }
    return cache_root() / "fidelity" / f"{graph_key(bundle)}-{backend}-{precision}.json", key


def _int8_recipe(machine: Machine) -> str:
    from bertonnx.backends.quantize import int8_recipe

    return int8_recipe(machine.cpu_flags).name


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


