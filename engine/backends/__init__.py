"""Backends: what runs a bundle's graph. One protocol (base.Backend), two implementations.

onnxruntime.py  ONNX Runtime: CPU, CUDA (IO binding), TensorRT (fp16, engine cache)
openvino.py     OpenVINO on the CPU: fp32, bf16, int8 (NNCF, quantize.py), compiled-model cache
choose.py       `auto`: a pure function of the request, the installed packages and the CPU flags
open_backend    composes them: choose, open, and hold a reduced precision to its fidelity gate

Neither onnxruntime nor openvino is imported until a backend of its kind opens.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from bertonnx.backends.base import Backend, BackendInfo
from bertonnx.backends.choose import Choice, Machine, choose, this_machine
from bertonnx.bundle import CONTEXTUAL_OUTPUT, Bundle
from bertonnx.errors import FidelityGateError
from bertonnx.fidelity import GATES, Gate, GateResult, compare, probe_batch, read_cached, write_cached
from bertonnx.options import LoadOptions
from bertonnx.paths import bundle_home
from bertonnx.tokenize import Tokenizer

__all__ = ["Backend", "BackendInfo", "Opened", "cache_root", "open_backend"]


@dataclass(frozen=True)
class Opened:
    """A backend ready to run, why it was chosen, and its fidelity against fp32 (None at fp32)."""

    backend: Backend
    choice: Choice
    fidelity: GateResult | None


def cache_root() -> Path:
    """Compiled models, quantised graphs and fidelity figures: never inside a bundle."""
    return bundle_home() / "cache"


def open_backend(
    bundle: Bundle, tokenizer: Tokenizer, options: LoadOptions | None = None, machine: Machine | None = None
) -> Opened:
    """Choose, open and check the backend that runs `bundle`, as `options` ask (bertonnx.options.LoadOptions).

    Args:
        machine: what is installed and what the CPU can do; default this machine.

    Raises:
        BackendError: not installed, not runnable here, or (FidelityGateError) under the gate.
    """
    options = options or LoadOptions()
    machine = machine or this_machine()
    backend, precision, provider = options.backend, options.precision, options.provider
    if provider != "auto" and backend == "auto":
        backend = "onnxruntime"
    choice = choose(backend, precision, bundle.precision, machine, provider)
    try:
        return _open(bundle, tokenizer, choice, options, machine)
    except FidelityGateError as error:
        if backend != "auto" or precision != "auto":
            raise
        # auto never trades fidelity for speed: run the bundle as it was exported instead.
        warnings.warn(f"{error}; running fp32", RuntimeWarning, stacklevel=2)
        fallback = choose("onnxruntime" if "onnxruntime" in machine.installed else "openvino", "fp32",
                          bundle.precision, machine, provider)
        return _open(bundle, tokenizer, replace(fallback, reason=f"{choice.precision} under its gate"), options,
                     machine)


def _open(bundle: Bundle, tokenizer: Tokenizer, choice: Choice, options: LoadOptions, machine: Machine) -> Opened:
    provider, threads, spin, min_fidelity = options.provider, options.threads, options.spin, options.min_fidelity
    if choice.backend == "onnxruntime":
        from bertonnx.backends.onnxruntime import OnnxRuntimeBackend

        trt_cache = cache_root() / "tensorrt" / _graph_key(bundle)
        opened: Backend = OnnxRuntimeBackend(
            bundle.model_path, provider, threads, spin, precision=choice.precision, cache_dir=trt_cache
        )
        if choice.precision == bundle.precision:
            return Opened(opened, choice, _exported_fidelity(bundle, min_fidelity))
    else:
        from bertonnx.backends.openvino import OpenVinoBackend, openvino_version

        cache = cache_root() / "openvino" / openvino_version() / _graph_key(bundle) / choice.precision
        graph = bundle.model_path
        if choice.precision == "int8":
            from bertonnx.backends.quantize import quantized_graph

            graph = quantized_graph(bundle, tokenizer, cache)
        opened = OpenVinoBackend(graph, CONTEXTUAL_OUTPUT, choice.precision, threads, cache / "compiled",
                                 native_bf16=machine.native_bf16)
        if choice.precision == "fp32":
            return Opened(opened, choice, None)
    result = _measured_fidelity(bundle, tokenizer, opened, choice, machine, min_fidelity)
    result.check()
    return Opened(opened, choice, result)


def _graph_key(bundle: Bundle) -> str:
    """The bundle's graph, by content: the first 16 hex digits of its sha256."""
    return bundle.graph_sha256[:16]


def _gate(precision: str, min_fidelity: float | None) -> Gate:
    gate = GATES[precision]
    return gate if min_fidelity is None else Gate(gate.metric, min_fidelity)


def _exported_fidelity(bundle: Bundle, min_fidelity: float | None) -> GateResult | None:
    """An fp16 or int8 bundle was measured against PyTorch fp32 at export: hold those figures to the gate."""
    if bundle.precision not in GATES:
        return None
    from bertonnx.fidelity import OutputFidelity

    final = bundle.manifest.get("validation", {}).get("final", {}).get("outputs", {}).get(CONTEXTUAL_OUTPUT)
    if not isinstance(final, dict):
        return None
    fidelity = OutputFidelity(**{name: final[name] for name in OutputFidelity.__dataclass_fields__})
    result = GateResult(bundle.precision, "PyTorch fp32, at export", fidelity, _gate(bundle.precision, min_fidelity))
    result.check()
    return result


def _measured_fidelity(
    bundle: Bundle, tokenizer: Tokenizer, candidate: Backend, choice: Choice, machine: Machine,
    min_fidelity: float | None,
) -> GateResult:
    """Run the probes at the reduced precision and at fp32; cached per bundle, backend, versions and CPU."""
    gate = _gate(choice.precision, min_fidelity)
    key = {
        "graph": bundle.graph_sha256,
        "backend": candidate.info.backend,
        "precision": choice.precision,
        "versions": {k: v for k, v in candidate.info.details.items() if k in ("openvino", "onnxruntime")},
        "cpu": sorted(machine.cpu_flags & {"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f"}),
        "probes": "v1",
        "recipe": _int8_recipe() if choice.precision == "int8" and candidate.info.backend == "openvino" else None,
    }
    path = cache_root() / "fidelity" / f"{_graph_key(bundle)}-{candidate.info.backend}-{choice.precision}.json"
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


def _int8_recipe() -> str:
    from bertonnx.backends.quantize import RECIPE

    return RECIPE


def _fp32_reference(bundle: Bundle, machine: Machine) -> Backend:
    if "onnxruntime" in machine.installed:
        from bertonnx.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle.model_path, "cpu")
    from bertonnx.backends.openvino import OpenVinoBackend

    return OpenVinoBackend(bundle.model_path, CONTEXTUAL_OUTPUT, "fp32")
