"""Open the backend a request asks for: choose (choose.py), time the candidates where auto or fastest may pick
among several (measure.py), open, and hold a reduced precision to its fidelity gate (gate.py).

Under `fastest` on a CPU where OpenVINO int8 is a candidate, a load may open two backends, one per use: word and
token vectors on the fastest candidate that passes the word gate, sentence vectors on the fastest that passes the
sentence gate (int8's sentence recipe, say), whichever use a recipe was made for. The second is opened only where it
differs from the first."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import get_args

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
from bertonnx.errors import BackendError, OptionError
from bertonnx.fidelity import Gate, GateResult
from bertonnx.options import BACKENDS, LoadOptions, Precision
from bertonnx.tokenize import Tokenizer


@dataclass(frozen=True)
class Opened:
    """A backend ready to run, why it was chosen, and its fidelity against fp32 (None at fp32)."""

    backend: Backend
    choice: Choice
    fidelity: GateResult | None
    timings: Timings | None = None  # the candidates `auto` or `fastest` timed, where it measured
    sentences: Opened | None = None  # where `fastest` split by use: what serves sentence vectors (this same backend,
    # or another), its fidelity held to the sentence gate; None: this backend serves them, under its own gate


def open_backend(
    bundle: Bundle, tokenizer: Tokenizer, options: LoadOptions | None = None, machine: Machine | None = None
) -> Opened:
    """Choose, open and check the backend that runs `bundle`, as `options` ask (bertonnx.options.LoadOptions).

    Args:
        machine: what is installed and what the CPU can do; default this machine.

    Raises:
        BackendError: not installed, not runnable here, or (FidelityGateError) under the gate.
        OptionError: options that contradict each other (an ONNX Runtime provider for OpenVINO, a malformed pin).
    """
    options = options or LoadOptions()
    machine = machine or this_machine()
    _check_words_recipe(options.words_recipe)
    backend, precision, provider = options.backend, options.precision, options.provider
    if provider not in ("auto", "cpu") and backend not in ("auto", "onnxruntime"):  # every backend runs on the CPU
        raise OptionError(f"provider {provider!r} is one of ONNX Runtime's; backend {backend!r} runs on the CPU")
    if provider != "auto" and backend == "auto":
        backend = "onnxruntime"
    on_gpu = provider == "auto" and "onnxruntime" in machine.installed and CUDA in machine.ort_providers
    if (precision == "fastest" or (precision == "auto" and backend == "auto")) and not on_gpu:
        return _measured(bundle, tokenizer, options, machine, backend)
    if precision == "fastest":
        precision = "auto"  # on a GPU: CUDA at the bundle's precision, as auto
    pin = None if options.sentences_on is None else _sentence_pin(options.sentences_on)  # checked before opening
    choice = choose(backend, precision, bundle.precision, machine, provider)
    if options.words_recipe is not None and (choice.backend, choice.precision) == ("openvino", "int8"):
        choice = replace(choice, recipe=options.words_recipe)
    opened = _open(bundle, tokenizer, choice, options, machine)
    if pin is None:
        return opened
    return replace(opened, sentences=_sentence_server(bundle, tokenizer, options, machine, opened, pin))


PINNABLE = tuple(p for p in get_args(Precision) if p not in ("auto", "fastest"))
"""Precisions a sentence server can be pinned at: what a load resolved to, never a policy."""


def _check_words_recipe(kind: str | None) -> None:
    from bertonnx.backends.quantize import RECIPE_KINDS

    if kind is not None and kind not in RECIPE_KINDS:
        raise OptionError(f"words_recipe must be one of {', '.join(RECIPE_KINDS)} or None; got {kind!r}")


def _sentence_pin(text: str) -> tuple[str, str, str]:
    """(backend, precision, recipe kind) of LoadOptions.sentences_on, e.g. "openvino int8 sentences"."""
    from bertonnx.backends.quantize import RECIPE_KINDS

    parts = text.split()
    backend, precision, kind = parts if len(parts) == 3 else ("", "", "")
    if backend not in BACKENDS or backend == "auto" or precision not in PINNABLE or kind not in RECIPE_KINDS:
        raise OptionError(f"sentences_on must read 'BACKEND PRECISION RECIPE', e.g. 'openvino int8 sentences'; "
                          f"got {text!r}")
    return backend, precision, kind


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
    # Gates differ between the policies for int8 only: without it, auto and fastest share one verdict. With it,
    # fastest splits by use: int8's sentence recipe is timed too, held to the sentence gate alone.
    keys = measure.by_use(policy, pairs)
    split = measure.SENTENCE_RECIPE in keys
    verdict = "fastest" if split else "auto"
    gates = {f"{b} {p}": precision_gate(policy_gate(policy, p), options.min_fidelity).describe()
             for b, p in pairs if p != "fp32"}
    if split:
        gates["sentences"] = precision_gate("sentences", options.min_fidelity).describe()
    key = measure.cache_key(bundle.graph_sha256, verdict, threads, _versions(machine), machine, pairs, gates)
    if ("openvino", "int8") in pairs:  # a new recipe (a new name) is measured again
        key["int8_recipes"] = _recipe_names(machine, [kind for b, p, kind in keys if (b, p) == ("openvino", "int8")])
    if split:
        key["rule"] = measure.RULE
    # A verdict under another gate lives in a file of its own: a stricter run never replaces the default's.
    gate_tag = "" if options.min_fidelity is None else f"-min{options.min_fidelity:g}"
    path = cache_root() / "timings" / f"{graph_key(bundle)}-{verdict}-{threads}t{gate_tag}.json"
    cached = measure.read_timings(path, key)
    if cached is not None:
        cached = replace(cached, policy=policy, trials=cached.trials + untried)
        choice = Choice(*cached.winner, reason=cached.reason, recipe=cached.winner_recipe)
        try:
            opened = _open(bundle, tokenizer, choice, options, machine, policy_gate(policy, choice.precision))
            if cached.sentence_winner is None:
                return replace(opened, timings=cached)
            return replace(opened, timings=cached,
                           sentences=_sentence_server(bundle, tokenizer, options, machine, opened,
                                                      cached.sentence_winner))
        except BackendError:
            pass  # the verdict no longer holds (a cached fidelity figure changed, say): measure again
    opened_all: dict[tuple[str, str, str], Opened] = {}
    refused: dict[tuple[str, str, str], str] = {}
    for b, p, kind in keys:
        gate = "sentences" if kind == "sentences" else policy_gate(policy, p)
        try:
            opened_all[b, p, kind] = _open(bundle, tokenizer, Choice(b, p, "", kind), options, machine, gate)
        except BackendError as error:  # under its gate, or cannot run here after all
            refused[b, p, kind] = str(error)
    if not any(kind == "words" for _, _, kind in opened_all):
        raise BackendError("no backend can run this bundle here: " + "; ".join(refused.values()))
    figures = measure.time_candidates({k: o.backend for k, o in opened_all.items()}, measure.timing_workload(tokenizer))
    trials = tuple(measure.Trial(*k[:2], *figures.get(k, (None, None)), refused.get(k), k[2]) for k in keys)
    word_gate = precision_gate(policy_gate(policy, "int8"), options.min_fidelity)
    word_winner = measure.fastest_trial([t for t in trials if t.key in opened_all
                                         and (t.recipe == "words" or _passes(opened_all[t.key], word_gate))]).key
    sentence_winner = None
    if split:
        serving = [t for t in trials if t.key in opened_all
                   and _serves_sentences(opened_all[t.key], options.min_fidelity)]
        sentence_winner = measure.fastest_trial(serving).key  # fp32 always serves: never empty
    winner, winner_recipe = word_winner[:2], word_winner[2]
    verdict_now = Timings(verdict, threads, trials, winner, measure.now(), sentence_winner, winner_recipe)
    measure.write_timings(path, key, verdict_now)
    timings = replace(verdict_now, policy=policy, trials=trials + untried)
    chosen = opened_all[word_winner]
    if winner_recipe != "words" and chosen.fidelity is not None:  # made for another use: shown under the word gate
        chosen = replace(chosen, fidelity=_regated(chosen.fidelity, word_gate))
    words = replace(chosen, choice=Choice(*winner, reason=timings.reason, recipe=winner_recipe), timings=timings)
    if sentence_winner is None:
        return words
    return replace(words, sentences=_as_sentences(opened_all[sentence_winner], options.min_fidelity))


def _passes(opened: Opened, gate: Gate) -> bool:
    """Whether a candidate's figures pass another use's gate (fp32, with none, passes every gate)."""
    return opened.fidelity is None or _regated(opened.fidelity, gate).passed


def _regated(result: GateResult, gate: Gate) -> GateResult:
    """The same figures, held to another use's gate."""
    return GateResult(result.precision, result.reference, result.fidelity, gate)


def _serves_sentences(opened: Opened, min_fidelity: float | None) -> bool:
    """Whether a candidate's figures pass the sentence gate (fp32 always does)."""
    return _passes(opened, precision_gate("sentences", min_fidelity))


def _as_sentences(opened: Opened, min_fidelity: float | None) -> Opened:
    """The same backend, its figures held to the sentence gate: what `info` shows beside "serves sentences"."""
    if opened.fidelity is None:
        return replace(opened, timings=None)
    return replace(opened, timings=None, fidelity=_regated(opened.fidelity, precision_gate("sentences", min_fidelity)))


def _sentence_server(
    bundle: Bundle, tokenizer: Tokenizer, options: LoadOptions, machine: Machine, words: Opened,
    winner: tuple[str, str, str],
) -> Opened:
    """A cached verdict's sentence server: the word backend itself where it won, else opened under the sentence
    gate (a BackendError, e.g. a figure that no longer passes, sends the caller to measure again)."""
    backend, precision, kind = winner
    if (backend, precision, kind) == (words.choice.backend, words.choice.precision, words.choice.recipe):
        return _as_sentences(words, options.min_fidelity)
    choice = Choice(backend, precision, "fastest for sentence vectors", kind)
    return _open(bundle, tokenizer, choice, options, machine, "sentences")


def policy_gate(policy: str, precision: str) -> str:
    """The gate a candidate is held to: under auto, int8 too must clear the bf16 gate."""
    return "bf16" if policy == "auto" and precision == "int8" else precision


def _recipe_names(machine: Machine, kinds: list[str]) -> list[str]:
    from bertonnx.backends.quantize import int8_recipe

    return [int8_recipe(machine.cpu_flags, kind).name for kind in kinds]


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


def open_choice(
    bundle: Bundle, tokenizer: Tokenizer, choice: Choice, options: LoadOptions, machine: Machine | None = None,
    gate_of: str | None = None,
) -> Opened:
    """One named choice, its int8 recipe included, held to its gate (or to `gate_of`'s: a precision, or
    "sentences"): what the bench opens to show each int8 recipe beside the others. No load option names a recipe."""
    return _open(bundle, tokenizer, choice, options, machine or this_machine(), gate_of)


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

            recipe = int8_recipe(machine.cpu_flags, choice.recipe)
            graph = quantized_graph(bundle, tokenizer, cache, recipe)
        opened = OpenVinoBackend(graph, CONTEXTUAL_OUTPUT, choice.precision, threads, cache / "compiled",
                                 native_bf16=machine.native_bf16, recipe=recipe.name if recipe else None)
        if choice.precision == "fp32":
            return Opened(opened, choice, None)
    result = measured_fidelity(bundle, tokenizer, opened, choice, machine, min_fidelity, gate_of)
    result.check()
    return Opened(opened, choice, result)


