"""Open the backend a request asks for: choose (choose.py), time the candidates where auto or fastest may pick
among several (measure.py), open, and hold a reduced precision to its fidelity gate (gate.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from bertonnx.backends import measure
from bertonnx.backends.base import Backend
from bertonnx.backends.choose import Choice, Machine, choose, this_machine
from bertonnx.backends.gate import (
    cache_root,
    exported_fidelity,
    graph_key,
    int8_faithful,
    measured_fidelity,
    precision_gate,
)
from bertonnx.backends.measure import Timings
from bertonnx.backends.onnxruntime import CUDA
from bertonnx.bundle import CONTEXTUAL_OUTPUT, Bundle
from bertonnx.errors import BackendError
from bertonnx.fidelity import GateResult
from bertonnx.options import LoadOptions
from bertonnx.tokenize import Tokenizer


@dataclass(frozen=True)
class Opened:
    """A backend ready to run, why it was chosen, and its fidelity against fp32 (None at fp32)."""

    backend: Backend
    choice: Choice
    fidelity: GateResult | None
    timings: Timings | None = None  # the candidates `auto` or `fastest` timed, where it measured


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
    policy = "fastest" if options.precision == "fastest" else "auto"
    int8_ok = int8_faithful(bundle, machine)
    pairs = [pair for pair in measure.candidates(policy, bundle.precision, machine, int8_ok)
             if backend == "auto" or pair[0] == backend]
    untried = tuple(trial for trial in measure.left_out(policy, bundle.precision, machine, int8_ok)
                    if backend in ("auto", trial.backend))
    if not pairs:
        return _open(bundle, tokenizer, choose(backend, "auto", bundle.precision, machine), options, machine)
    if len(pairs) == 1:
        choice = Choice(*pairs[0], reason="the only candidate here")
        return _open(bundle, tokenizer, choice, options, machine, policy_gate(policy, choice.precision))
    from bertonnx.backends.base import check_threads

    threads = check_threads(options.threads)
    # Gates differ between the policies for int8 only: without it, auto and fastest share one verdict.
    verdict = "fastest" if policy == "fastest" and ("openvino", "int8") in pairs else "auto"
    gates = {f"{b} {p}": precision_gate(policy_gate(policy, p), options.min_fidelity).describe()
             for b, p in pairs if p != "fp32"}
    key = measure.cache_key(bundle.graph_sha256, verdict, threads, _versions(machine), machine, pairs, gates)
    # A verdict under another gate lives in a file of its own: a stricter run never replaces the default's.
    gate_tag = "" if options.min_fidelity is None else f"-min{options.min_fidelity:g}"
    path = cache_root() / "timings" / f"{graph_key(bundle)}-{verdict}-{threads}t{gate_tag}.json"
    cached = measure.read_timings(path, key)
    if cached is not None:
        cached = replace(cached, policy=policy, trials=cached.trials[: len(pairs)] + untried)
        choice = Choice(*cached.winner, reason=cached.reason)
        try:
            opened = _open(bundle, tokenizer, choice, options, machine, policy_gate(policy, choice.precision))
            return replace(opened, timings=cached)
        except BackendError:
            pass  # the verdict no longer holds (a cached fidelity figure changed, say): measure again
    opened_all: dict[tuple[str, str], Opened] = {}
    refused: dict[tuple[str, str], str] = {}
    for pair in pairs:
        try:
            opened_all[pair] = _open(bundle, tokenizer, Choice(*pair, reason=""), options, machine,
                                     policy_gate(policy, pair[1]))
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


def policy_gate(policy: str, precision: str) -> str:
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


def _open(
    bundle: Bundle, tokenizer: Tokenizer, choice: Choice, options: LoadOptions, machine: Machine,
    gate_of: str | None = None,
) -> Opened:
    """Open one choice. gate_of: hold a reduced precision to another precision's gate (auto's int8: bf16's)."""
    provider, threads, spin, min_fidelity = options.provider, options.threads, options.spin, options.min_fidelity
    if choice.backend == "onnxruntime":
        from bertonnx.backends.onnxruntime import OnnxRuntimeBackend

        trt_cache = cache_root() / "tensorrt" / graph_key(bundle)
        opened: Backend = OnnxRuntimeBackend(
            bundle.model_path, provider, threads, spin, precision=choice.precision, cache_dir=trt_cache
        )
        if choice.precision == bundle.precision:
            return Opened(opened, choice, exported_fidelity(bundle, min_fidelity))
    else:
        from bertonnx.backends.openvino import OpenVinoBackend, openvino_version

        cache = cache_root() / "openvino" / openvino_version() / graph_key(bundle) / choice.precision
        graph, recipe = bundle.model_path, None
        if choice.precision == "int8":
            from bertonnx.backends.quantize import int8_recipe, quantized_graph

            recipe = int8_recipe(machine.cpu_flags)
            graph = quantized_graph(bundle, tokenizer, cache, recipe)
        opened = OpenVinoBackend(graph, CONTEXTUAL_OUTPUT, choice.precision, threads, cache / "compiled",
                                 native_bf16=machine.native_bf16, recipe=recipe.name if recipe else None)
        if choice.precision == "fp32":
            return Opened(opened, choice, None)
    result = measured_fidelity(bundle, tokenizer, opened, choice, machine, min_fidelity, gate_of)
    result.check()
    return Opened(opened, choice, result)


