"""Backends: what runs a bundle's graph. One protocol (base.Backend), two implementations.

onnxruntime.py  ONNX Runtime: CPU, CUDA (IO binding), TensorRT (fp16, engine cache)
openvino.py     OpenVINO on the CPU: fp32, bf16, int8 (NNCF, quantize.py), compiled-model cache
choose.py       what a request may run: a pure function of it, the installed packages and the CPU flags
measure.py      `auto` and `fastest` on the CPU: time the candidates once per machine, cache the verdict
open_backend    composes them: choose, open, and hold a reduced precision to its fidelity gate

Neither onnxruntime nor openvino is imported until a backend of its kind opens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from bertonnx.backends.base import Backend, BackendInfo
from bertonnx.backends.choose import Choice, Machine, choose, this_machine
from bertonnx.backends.measure import Timings
from bertonnx.backends.onnxruntime import CUDA
from bertonnx.bundle import CONTEXTUAL_OUTPUT, Bundle
from bertonnx.errors import BackendError
from bertonnx.fidelity import GATES, Gate, GateResult, compare, probe_batch, read_cached, write_cached
from bertonnx.options import LoadOptions
from bertonnx.paths import bundle_home
from bertonnx.tokenize import Tokenizer

__all__ = ["Backend", "BackendInfo", "Opened", "Timings", "cache_root", "open_backend"]


@dataclass(frozen=True)
class Opened:
    """A backend ready to run, why it was chosen, and its fidelity against fp32 (None at fp32)."""

    backend: Backend
    choice: Choice
    fidelity: GateResult | None
    timings: Timings | None = None  # the candidates `auto` or `fastest` timed, where it measured


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
    on_gpu = provider == "auto" and "onnxruntime" in machine.installed and CUDA in machine.ort_providers
    if (precision == "fastest" or (precision == "auto" and backend == "auto")) and not on_gpu:
        return _measured(bundle, tokenizer, options, machine, backend)
    if precision == "fastest":
        precision = "auto"  # on a GPU: CUDA at the bundle's precision, as auto
    return _open(bundle, tokenizer, choose(backend, precision, bundle.precision, machine, provider), options, machine)


def _measured(bundle: Bundle, tokenizer: Tokenizer, options: LoadOptions, machine: Machine, backend: str) -> Opened:
    """`auto` or `fastest` on the CPU: the fastest candidate that passes its gate, timed once per machine."""
    from bertonnx.backends import measure

    policy = "fastest" if options.precision == "fastest" else "auto"
    int8_faithful = _int8_faithful(bundle, machine)
    pairs = [pair for pair in measure.candidates(policy, bundle.precision, machine, int8_faithful)
             if backend == "auto" or pair[0] == backend]
    untried = tuple(trial for trial in measure.left_out(policy, bundle.precision, machine, int8_faithful)
                    if backend in ("auto", trial.backend))
    if not pairs:
        return _open(bundle, tokenizer, choose(backend, "auto", bundle.precision, machine), options, machine)
    if len(pairs) == 1:
        choice = Choice(*pairs[0], reason="the only candidate here")
        return _open(bundle, tokenizer, choice, options, machine, _policy_gate(policy, choice.precision))
    from bertonnx.backends.base import check_threads

    threads = check_threads(options.threads)
    # Gates differ between the policies for int8 only: without it, auto and fastest share one verdict.
    verdict = "fastest" if policy == "fastest" and ("openvino", "int8") in pairs else "auto"
    key = measure.cache_key(bundle.graph_sha256, verdict, threads, _versions(machine), machine, pairs)
    path = cache_root() / "timings" / f"{_graph_key(bundle)}-{verdict}-{threads}t.json"
    cached = measure.read_timings(path, key)
    if cached is not None:
        cached = replace(cached, policy=policy, trials=cached.trials[: len(pairs)] + untried)
        choice = Choice(*cached.winner, reason=cached.reason)
        try:
            opened = _open(bundle, tokenizer, choice, options, machine, _policy_gate(policy, choice.precision))
            return replace(opened, timings=cached)
        except BackendError:
            pass  # the verdict no longer holds (a gate changed with --min-fidelity, say): measure again
    opened_all: dict[tuple[str, str], Opened] = {}
    refused: dict[tuple[str, str], str] = {}
    for pair in pairs:
        try:
            opened_all[pair] = _open(bundle, tokenizer, Choice(*pair, reason=""), options, machine,
                                     _policy_gate(policy, pair[1]))
        except BackendError as error:  # under its gate, or cannot run here after all
            refused[pair] = str(error)
    if not opened_all:
        raise BackendError("no backend can run this bundle here: " + "; ".join(refused.values()))
    figures = measure.time_candidates({pair: o.backend for pair, o in opened_all.items()},
                                      measure.timing_workload(tokenizer))
    trials = tuple(measure.Trial(b, p, *figures.get((b, p), (None, None)), refused.get((b, p))) for b, p in pairs)
    winner = measure.winner(trials)
    measure.write_timings(path, key, Timings(verdict, threads, trials, winner, measure.now()))
    timings = Timings(policy, threads, trials + untried, winner, measure.now())
    return replace(opened_all[winner], choice=Choice(*winner, reason=timings.reason), timings=timings)


def _policy_gate(policy: str, precision: str) -> str:
    """The gate a candidate is held to: under auto, int8 too must clear the bf16 gate."""
    return "bf16" if policy == "auto" and precision == "int8" else precision


def _versions(machine: Machine) -> dict[str, str]:
    import importlib.metadata

    found = {}
    for name in ("onnxruntime", "openvino", "nncf"):
        if name in machine.installed:
            try:
                found[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                found[name] = "unknown"
    return found


def _int8_faithful(bundle: Bundle, machine: Machine) -> bool:
    """int8's fidelity on OpenVINO, measured before on this machine, clears the bf16 gate."""
    if "openvino" not in machine.installed:
        return False
    from bertonnx.backends.openvino import openvino_version

    path, key = _fidelity_entry(bundle, "openvino", "int8", {"openvino": openvino_version()}, machine)
    cached = read_cached(path, key)
    return cached is not None and GateResult(cached.precision, cached.reference, cached.fidelity, GATES["bf16"]).passed


def _open(
    bundle: Bundle, tokenizer: Tokenizer, choice: Choice, options: LoadOptions, machine: Machine,
    gate_of: str | None = None,
) -> Opened:
    """Open one choice. gate_of: hold a reduced precision to another precision's gate (auto's int8: bf16's)."""
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
    result = _measured_fidelity(bundle, tokenizer, opened, choice, machine, min_fidelity, gate_of)
    result.check()
    return Opened(opened, choice, result)


def _graph_key(bundle: Bundle) -> str:
    """The bundle's graph, by content: the first 16 hex digits of its sha256."""
    return bundle.graph_sha256[:16]


def _gate(precision: str, min_fidelity: float | None) -> Gate:
    gate = GATES.get(precision, GATES["bf16"])
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
    min_fidelity: float | None, gate_of: str | None = None,
) -> GateResult:
    """Run the probes at the reduced precision and at fp32; cached per bundle, backend, versions and CPU."""
    gate = _gate(gate_of or choice.precision, min_fidelity)
    versions = {k: v for k, v in candidate.info.details.items() if k in ("openvino", "onnxruntime")}
    path, key = _fidelity_entry(bundle, candidate.info.backend, choice.precision, versions, machine)
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


def _fidelity_entry(
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
        "recipe": _int8_recipe() if precision == "int8" and backend == "openvino" else None,
    }
    return cache_root() / "fidelity" / f"{_graph_key(bundle)}-{backend}-{precision}.json", key


def _int8_recipe() -> str:
    from bertonnx.backends.quantize import RECIPE

    return RECIPE


def _fp32_reference(bundle: Bundle, machine: Machine) -> Backend:
    if "onnxruntime" in machine.installed:
        from bertonnx.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle.model_path, "cpu")
    from bertonnx.backends.openvino import OpenVinoBackend

    return OpenVinoBackend(bundle.model_path, CONTEXTUAL_OUTPUT, "fp32")
