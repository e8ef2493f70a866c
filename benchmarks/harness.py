"""The one benchmark harness behind `bertonnx bench` and `python -m bertonnx.benchmarks.run`.

Method:
    * every system gets the same inputs and the same thread count (torch's
      intra-op threads = ONNX Runtime's; ORT spin-waiting off, the engine's default);
    * warm-up runs come first and are not timed;
    * systems are interleaved, A B C, B C A, C A B, ..., so that a drifting
      machine (clock, noisy neighbours) hits them all alike, with the GC off
      while a call is timed;
    * latency is wall time of the whole job (tokenization, model, pooling,
      results on the host) from time.perf_counter_ns; throughput divides a
      case's real tokens or items by the median latency;
    * fidelity: each system's token and mean-pooled word vectors against
      PyTorch's on the same token ids; a speed figure never goes without it;
    * peak memory comes from a fresh process per system (benchmarks.memory).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.benchmarks.machine import Machine, cpu_times, describe_machine, others_load
from bertonnx.benchmarks.memory import measure_memory
from bertonnx.benchmarks.systems import (
    DEFAULT_BACKENDS,
    ST_OPENVINO,
    Availability,
    BundleFacts,
    Outputs,
    System,
    SystemSpec,
    build_system,
    plan_systems,
)
from bertonnx.benchmarks.workloads import Case, ModelShape, Skipped, Workload, WorkloadSpec, build_workloads
from bertonnx.bundle import CONFIG_FILE, load_bundle
from bertonnx.errors import OptionError
from bertonnx.pooling import cosine_rows
from bertonnx.tokenize import Tokenizer

Progress = Callable[[str], None]
SCHEMA = "bertonnx-bench/1"
ORDER_SEED = 20261205
"""Seed of the rounds' orders: the same run order every time the bench runs the same systems."""
MEMORY_WORKERS = 2
"""Memory children run side by side once timing is over: contention changes their speed, not their peak."""


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run: which model, which bundles, which workloads, how."""

    bundles: tuple[Path, ...]  # bertonnx bundles of one model
    torch_model: Path  # the Hugging Face folder the bundles were exported from
    workloads: WorkloadSpec = WorkloadSpec()
    threads: int = 1  # for every system
    providers: tuple[str, ...] = ("cpu",)
    backends: tuple[str, ...] = DEFAULT_BACKENDS  # auto | onnxruntime | all | BACKEND:PRECISION
    memory: bool = False  # measure peak memory in a child process per system (slow: opt-in)
    fidelity_items: int = 256  # inputs of a case compared with PyTorch (the first ones)
    title: str = ""  # what this run is, e.g. the model
    note: str = ""  # printed with the report, e.g. "random weights: latency only"


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    runs: int  # timed runs, warm-up excluded

    @classmethod
    def of(cls, nanoseconds: Sequence[int]) -> Latency:
        ms = np.asarray(nanoseconds, dtype=np.float64) / 1e6
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), len(ms))


@dataclass(frozen=True)
class Fidelity:
    """A system's vectors against PyTorch's on the same inputs (the reference itself scores 1)."""

    reference: str  # the system compared with
    items: int  # inputs compared
    tokens: int  # token vectors compared (static: word pieces)
    words: int  # word vectors compared
    token_min_cosine: float
    token_mean_cosine: float
    word_min_cosine: float
    word_mean_cosine: float
    max_abs_diff: float  # over token vectors


@dataclass(frozen=True)
class Measurement:
    """One system on one case: speed, and its fidelity next to it."""

    case: Case
    system: str  # label
    provider: str
    latency: Latency
    tokens_per_s: float  # real tokens (padding excluded) per second, from the median
    items_per_s: float  # texts or words per second, from the median
    vs_pytorch: float | None  # PyTorch's median / this median: > 1 is faster
    vs_sentence_transformers: float | None
    vs_st_openvino: float | None  # sentence-transformers' OpenVINO backend (its default precision) / this median
    vs_pytorch_bf16: float | None  # PyTorch bf16 autocast's median / this median, where it ran
    gflops: float | None  # useful encoder GFLOP/s (contextual only)
    peak_share: float | None  # gflops / the CPU's fp32 peak at this thread count (CPU only)
    peak_rss_mb: float | None  # None when memory was not measured
    others_load: float | None  # share of the CPU other processes took while this case ran (noise)
    fidelity: Fidelity


@dataclass(frozen=True)
class TargetResult:
    """An engine target, met or not."""

    name: str
    target: str
    measured: str
    met: bool


@dataclass(frozen=True)
class Report:
    title: str
    note: str
    created: str
    settings: dict[str, Any]
    machine: Machine
    systems: tuple[SystemSpec, ...]
    measurements: tuple[Measurement, ...]
    skipped: tuple[Skipped, ...]
    targets: tuple[TargetResult, ...]
    bundles: tuple[BundleFacts, ...]
    shape: ModelShape
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["machine"] = self.machine.to_dict() | {"peak_gflops": self.machine.peak_gflops(self.settings["threads"])}
        return data


def run_benchmark(config: BenchConfig, progress: Progress | None = None) -> Report:
    """Build everything, time it interleaved, compare with PyTorch, measure memory, check the targets."""
    say = progress or (lambda _: None)
    if not config.bundles:
        raise OptionError("no bundle to benchmark")
    if config.threads < 1:
        raise OptionError(f"threads must be at least 1, got {config.threads}")
    machine = describe_machine()
    facts = [BundleFacts.read(path) for path in config.bundles]
    first = load_bundle(config.bundles[0], verify=False)
    tokenizer = Tokenizer.from_file(first.tokenizer_path, first.max_length)
    shape = ModelShape.from_config(first.path / CONFIG_FILE)

    say("building workloads")
    workloads, skipped = build_workloads(config.workloads, tokenizer, shape)
    available = Availability.detect()
    specs, left_out = plan_systems(
        facts, str(config.torch_model), config.providers, config.threads, available, config.backends
    )
    skipped += left_out
    wanted_paths = {w.case.path for w in workloads}
    specs = [s for s in specs if s.path in wanted_paths]
    systems: list[System] = []
    for spec in specs:
        say(f"loading {spec.label}")
        systems.append(build_system(spec))

    measurements: list[Measurement] = []
    for workload in workloads:
        case = workload.case
        say(f"{case.family}: {case.name}")
        runnable = []
        for system in systems:
            if system.spec.path != case.path:
                continue
            reason = system.cannot_run(case.longest)
            if reason is None:
                runnable.append(system)
            else:
                skipped.append(Skipped(f"{system.spec.label} on {case.family} {case.name}", reason))
        before = cpu_times()
        times = time_interleaved(runnable, workload)
        noise = others_load(before, cpu_times())
        fidelity = fidelities(runnable, workload, tokenizer, config.fidelity_items)
        found = summarize(case, runnable, times, fidelity, machine, config.threads)
        measurements += [replace(m, others_load=noise) for m in found]

    memory_method = "not measured"
    if config.memory:
        say(f"peak memory: a fresh process per system, {MEMORY_WORKERS} at a time")
        with ThreadPoolExecutor(max_workers=MEMORY_WORKERS) as pool:
            peaks = list(
                pool.map(lambda spec: measure_memory(spec, [w for w in workloads if w.case.path == spec.path]), specs)
            )
        for spec, found in zip(specs, peaks):
            memory_method = found.method
            if found.error:
                skipped.append(Skipped(f"peak memory of {spec.label}", found.error))
            measurements = [
                replace(m, peak_rss_mb=found.peaks_mb.get(m.case.name)) if m.system == spec.label else m
                for m in measurements
            ]
    return Report(
        title=config.title or first.source_model,
        note=config.note,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        settings=_settings(config, first.max_length, memory_method),
        machine=machine,
        systems=tuple(specs),
        measurements=tuple(measurements),
        skipped=tuple(skipped),
        targets=tuple(evaluate_targets(measurements, machine.flags)),
        bundles=tuple(facts),
        shape=shape,
    )


def time_interleaved(systems: Sequence[System], workload: Workload) -> dict[str, list[int]]:
    """Wall-clock nanoseconds per system: warm-up first, then rounds in a fresh (seeded) order each.

    A rotation (A B C, B C A, ...) keeps each system behind the same one in every
    round, and a system whose threads spin on after a call (PyTorch's OpenMP pool)
    then slows its follower every time: 2.5x on one short sentence, measured.
    Shuffled rounds give every system varied predecessors, so such a cost is shared.
    """
    for system in systems:
        system.run(workload.warmup)
    times: dict[str, list[int]] = {s.spec.label: [] for s in systems}
    gc.collect()
    order = np.random.default_rng(ORDER_SEED)
    for _ in range(workload.repeat):
        for index in order.permutation(len(systems)).tolist():
            system = systems[index]
            gc.disable()
            start = time.perf_counter_ns()
            result = system.run(workload.inputs)
            elapsed = time.perf_counter_ns() - start
            gc.enable()
            del result  # freed after the clock stopped, for every system alike
            times[system.spec.label].append(elapsed)
    return times


def fidelities(systems: Sequence[System], workload: Workload, tokenizer: Tokenizer, items: int) -> dict[str, Fidelity]:
    """Each system against the PyTorch system of its path and provider, on the case's first `items` inputs."""
    inputs = workload.inputs[:items]
    token_word = alignment(tokenizer, inputs, workload.case.path)
    outputs = {s.spec.label: s.outputs(inputs, token_word) for s in systems}
    found = {}
    for system in systems:
        reference = _reference(system.spec, [s.spec for s in systems])
        if reference is None:
            raise RuntimeError(f"no PyTorch reference ran next to {system.spec.label}")
        found[system.spec.label] = compare(
            reference.label, outputs[reference.label], outputs[system.spec.label], len(inputs)
        )
    return found


def alignment(tokenizer: Tokenizer, inputs: Sequence[str], path: str) -> NDArray[np.int64]:
    """(N,) global word index of every token the model sees (-1 on special tokens); static: of every piece."""
    if path == "static":
        ids, starts = tokenizer.split_words(inputs)
        counts = np.diff(np.append(starts, ids.size))
        return np.repeat(np.arange(len(inputs), dtype=np.int64), counts)
    prefix = np.full(len(tokenizer.prefix_ids), -1, dtype=np.int64)
    suffix = np.full(len(tokenizer.suffix_ids), -1, dtype=np.int64)
    parts = []
    offset = 0
    for pieces in tokenizer.split(list(inputs)):
        parts += [prefix, pieces.piece_word + offset, suffix]
        offset += len(pieces.words)
    return np.concatenate(parts)


def compare(reference: str, expected: Outputs, found: Outputs, items: int) -> Fidelity:
    """Row-wise cosines of tokens and words.

    Raises:
        ValueError: the two systems produced different numbers of tokens or words
            (they did not see the same token ids).
    """
    for what, a, b in (("token", expected.tokens, found.tokens), ("word", expected.words, found.words)):
        if a.shape != b.shape:
            raise ValueError(f"{what} vectors: the reference gives {a.shape}, the system {b.shape}")
    tokens = _cosines(expected.tokens, found.tokens)
    words = _cosines(expected.words, found.words)
    diff = np.abs(expected.tokens.astype(np.float64) - found.tokens).max(initial=0.0)
    return Fidelity(
        reference=reference,
        items=items,
        tokens=int(tokens.size),
        words=int(words.size),
        token_min_cosine=float(tokens.min(initial=1.0)),
        token_mean_cosine=float(tokens.mean()) if tokens.size else 1.0,
        word_min_cosine=float(words.min(initial=1.0)),
        word_mean_cosine=float(words.mean()) if words.size else 1.0,
        max_abs_diff=float(diff),
    )


def _cosines(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float64]:
    """Row-wise cosine; two all-zero rows (a zeroed padding embedding, say) count as identical."""
    cosines = cosine_rows(a, b)
    cosines[~a.any(axis=1) & ~b.any(axis=1)] = 1.0
    return cosines


def summarize(
    case: Case,
    systems: Sequence[System],
    times: dict[str, list[int]],
    fidelity: dict[str, Fidelity],
    machine: Machine,
    threads: int,
) -> list[Measurement]:
    """Percentiles, throughput, speed-ups against the baselines of the same provider, share of peak."""
    latency = {label: Latency.of(ns) for label, ns in times.items()}
    found = []
    for system in systems:
        spec = system.spec
        mine = latency[spec.label]
        seconds = mine.p50_ms / 1e3
        pytorch = _baseline(spec, systems, ("pytorch", "pytorch-embedding"))
        sentence = _baseline(spec, systems, ("sentence-transformers",))
        st_openvino = _baseline(spec, systems, ("sentence-transformers",), label=ST_OPENVINO)
        bf16 = _baseline(spec, systems, ("pytorch-bf16",))
        gflops = case.flops / seconds / 1e9 if case.flops else None
        found.append(
            Measurement(
                case=case,
                system=spec.label,
                provider=spec.provider,
                latency=mine,
                tokens_per_s=case.tokens / seconds,
                items_per_s=case.items / seconds,
                vs_pytorch=latency[pytorch].p50_ms / mine.p50_ms if pytorch else None,
                vs_sentence_transformers=latency[sentence].p50_ms / mine.p50_ms if sentence else None,
                vs_st_openvino=latency[st_openvino].p50_ms / mine.p50_ms if st_openvino else None,
                vs_pytorch_bf16=latency[bf16].p50_ms / mine.p50_ms if bf16 else None,
                gflops=gflops,
                peak_share=gflops / machine.peak_gflops(threads) if gflops and spec.provider == "cpu" else None,
                peak_rss_mb=None,
                others_load=None,
                fidelity=fidelity[spec.label],
            )
        )
    return found


@dataclass(frozen=True)
class Target:
    """An engine target: `metric` of `system` on `family` compared with `bound`."""

    name: str
    family: str
    system: str  # label; "bertonnx *" every contextual bertonnx system; "faithful best" / "int8 best": see below
    metric: str  # "seconds" (median) | a vs_* field of Measurement | "latency_ratio" | "st_openvino_latency_ratio"
    bound: float
    at_most: bool  # True: measured <= bound; False: measured >= bound
    cpu: str = "any"  # "amx": only on CPUs with AMX; "no-amx": only on CPUs without


FAITHFUL = 0.999
"""Min token cosine against PyTorch fp32 for a backend to count as faithful (the bf16 gate)."""
INT8_FAITHFUL = 0.99
"""Mean word cosine against PyTorch fp32 for int8 (its gate)."""


TARGETS = (
    Target("static: whole vocabulary, tokenization included", "static-vocab", "bertonnx static", "seconds", 0.15, True),
    Target("static: a million words ('a few seconds')", "static-million", "bertonnx static", "seconds", 5.0, True),
    Target("corpus: fp32 vs sentence-transformers", "corpus", "bertonnx fp32", "vs_sentence_transformers", 1.3, False),
    Target("corpus: int8 vs sentence-transformers", "corpus", "bertonnx int8", "vs_sentence_transformers", 2.2, False),
    Target("corpus: vs transformers, naive batches of 32", "corpus", "bertonnx *", "vs_pytorch", 3.0, False),
    Target("latency: one short sentence, p50 / PyTorch p50", "latency", "bertonnx *", "latency_ratio", 0.35, True),
    Target("corpus: best faithful backend vs sentence-transformers", "corpus", "faithful best",
           "vs_sentence_transformers", 2.0, False, "amx"),
    Target("corpus: best faithful backend vs PyTorch bf16 autocast", "corpus", "faithful best",
           "vs_pytorch_bf16", 1.15, False, "amx"),
    Target("corpus: int8 vs sentence-transformers", "corpus", "int8 best", "vs_sentence_transformers", 3.0, False,
           "amx"),
    Target("corpus: best faithful backend vs sentence-transformers", "corpus", "faithful best",
           "vs_sentence_transformers", 1.5, False, "no-amx"),
    Target("latency: one short sentence, p50 / ST OpenVINO p50", "latency", "bertonnx *", "st_openvino_latency_ratio",
           0.8, True),
    Target("corpus: int8 vs ST OpenVINO", "corpus", "int8 best", "vs_st_openvino", 1.9, False, "no-amx"),
)


def evaluate_targets(measurements: Sequence[Measurement], cpu_flags: Collection[str] = ()) -> list[TargetResult]:
    """Every target whose case and system were measured on CPU, one row per matching system.

    "faithful best" is the fastest bertonnx system at min token cosine >= FAITHFUL,
    "int8 best" the fastest int8 one at mean word cosine >= INT8_FAITHFUL: a speed
    target never counts a system that lost the fidelity it promises.
    """
    amx = "amx_bf16" in cpu_flags
    results = []
    for target in TARGETS:
        if (target.cpu == "amx" and not amx) or (target.cpu == "no-amx" and amx):
            continue
        best = {"faithful best": _best(measurements, target.family, faithful=True),
                "int8 best": _best(measurements, target.family, faithful=False)}
        for m in measurements:
            if m.case.family != target.family or m.provider != "cpu":
                continue
            matches = m.system == target.system or (
                target.system == "bertonnx *" and m.system.startswith("bertonnx ") and m.case.path == "contextual"
            ) or (target.system in best and best[target.system] is m)
            if not matches:
                continue
            value = _metric(m, target.metric)
            if value is None:
                continue
            met = value <= target.bound if target.at_most else value >= target.bound
            results.append(
                TargetResult(
                    name=f"{target.name}: {m.system}" if target.system in ("bertonnx *", *best) else target.name,
                    target=f"{'≤' if target.at_most else '≥'} {target.bound:g}{_unit(target.metric)}",
                    measured=f"{value:.3g}{_unit(target.metric)} ({m.case.name})",
                    met=met,
                )
            )
    return results


def _best(measurements: Sequence[Measurement], family: str, faithful: bool) -> Measurement | None:
    """Per case name, the fastest contextual bertonnx system that keeps its fidelity; the first case's."""
    candidates = [
        m for m in measurements
        if m.case.family == family and m.provider == "cpu" and m.system.startswith("bertonnx ")
        and m.case.path == "contextual"
        and (m.fidelity.token_min_cosine >= FAITHFUL if faithful
             else "int8" in m.system and m.fidelity.word_mean_cosine >= INT8_FAITHFUL)
    ]
    return max(candidates, key=lambda m: m.items_per_s, default=None)


def _metric(m: Measurement, metric: str) -> float | None:
    if metric == "seconds":
        return m.latency.p50_ms / 1e3
    if metric == "latency_ratio":
        return None if m.vs_pytorch is None else 1 / m.vs_pytorch
    if metric == "st_openvino_latency_ratio":
        return None if m.vs_st_openvino is None else 1 / m.vs_st_openvino
    return getattr(m, metric)


def _unit(metric: str) -> str:
    return " s" if metric == "seconds" else "×"


def _baseline(
    spec: SystemSpec, systems: Sequence[System], kinds: tuple[str, ...], label: str | None = None
) -> str | None:
    """Label of the baseline of one of `kinds` on the same path and provider, if it ran: the system labelled
    `label`, else the one on the library's own (torch) backend."""
    for other in systems:
        found = other.spec
        if found.kind in kinds and found.path == spec.path and found.provider == spec.provider and (
            found.label == label if label is not None else not found.backend
        ):
            return found.label
    return None


def _reference(spec: SystemSpec, specs: Sequence[SystemSpec]) -> SystemSpec | None:
    for other in specs:
        if (
            other.kind in ("pytorch", "pytorch-embedding")
            and other.path == spec.path
            and other.provider == spec.provider
        ):
            return other
    return None


def _settings(config: BenchConfig, max_length: int, memory_method: str) -> dict[str, Any]:
    return {
        "threads": config.threads,
        "providers": list(config.providers),
        "backends": list(config.backends),
        "bundles": [str(b) for b in config.bundles],
        "torch_model": str(config.torch_model),
        "workloads": asdict(config.workloads),
        "fidelity_items": config.fidelity_items,
        "max_length": max_length,
        "memory": config.memory,
        "method": {
            "interleaved": "every round runs each system once, in a fresh seeded random order (varied predecessors)",
            "warmup": "one untimed call per system first (bulk workloads: their first 64 inputs)",
            "timer": "time.perf_counter_ns around the whole call, GC off while timed",
            "threads": "torch.set_num_threads = ONNX Runtime intra_op_num_threads; inter-op 1 for both",
            "ort_spinning": "off (session.intra_op.allow_spinning = 0)",
            "throughput": "real (non-padding) tokens, special tokens included, / median latency",
            "baselines": "PyTorch: naive padded batches of 32 in input order; sentence-transformers: encode, 32",
            "memory": memory_method,
        },
    }
