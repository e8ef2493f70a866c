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

The run itself and its timing live here; the statistics in bertonnx.benchmarks.measurements, fidelity in
bertonnx.benchmarks.fidelity, the targets in bertonnx.benchmarks.targets, the systems in
bertonnx.benchmarks.systems.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bertonnx.benchmarks.contract import System, SystemSpec
from bertonnx.benchmarks.fidelity import fidelities
from bertonnx.benchmarks.machine import Machine, cpu_times, describe_machine, others_load
from bertonnx.benchmarks.measurements import Measurement, summarize
from bertonnx.benchmarks.memory import measure_memory
from bertonnx.benchmarks.systems import DEFAULT_BACKENDS, Availability, BundleFacts, build_system, plan_systems
from bertonnx.benchmarks.targets import TargetResult, evaluate_targets
from bertonnx.benchmarks.workloads import ModelShape, Skipped, Workload, WorkloadSpec, build_workloads
from bertonnx.bundle import CONFIG_FILE, load_bundle
from bertonnx.errors import OptionError
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
        threads = self.settings["threads"]
        data["machine"] = self.machine.to_dict() | {
            "peak_gflops": self.machine.peak_gflops(threads),
            "peaks_gflops": {p.arithmetic: self.machine.peak_gflops(threads, p.arithmetic) for p in self.machine.peaks},
        }
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
    specs, left_out = plan_systems(
        facts, str(config.torch_model), config.providers, config.threads, Availability.detect(), config.backends
    )
    skipped += left_out
    wanted_paths = {w.case.path for w in workloads}
    specs = [s for s in specs if s.path in wanted_paths]
    systems: list[System] = []
    for spec in specs:
        say(f"loading {spec.label}")
        systems.append(build_system(spec))
    specs = [system.spec for system in systems]  # what each one runs, once loaded: `auto` resolved

    measurements: list[Measurement] = []
    for workload in workloads:
        say(f"{workload.case.family}: {workload.case.name}")
        found, left_out = measure_case(workload, systems, tokenizer, machine, config)
        measurements += found
        skipped += left_out

    memory_method = "not measured"
    if config.memory:
        say(f"peak memory: a fresh process per system, {MEMORY_WORKERS} at a time")
        measurements, left_out, memory_method = add_peak_memory(measurements, specs, workloads)
        skipped += left_out
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


def measure_case(
    workload: Workload, systems: Sequence[System], tokenizer: Tokenizer, machine: Machine, config: BenchConfig
) -> tuple[list[Measurement], list[Skipped]]:
    """The systems of the case's path that can run it, timed interleaved and compared with PyTorch; why the
    others cannot."""
    case = workload.case
    runnable = []
    skipped = []
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
    return [replace(m, others_load=noise) for m in found], skipped


def add_peak_memory(
    measurements: Sequence[Measurement], specs: Sequence[SystemSpec], workloads: Sequence[Workload]
) -> tuple[list[Measurement], list[Skipped], str]:
    """The measurements with each system's peak memory per case, from a fresh process per system; the systems
    whose child failed; and how peaks were measured."""
    with ThreadPoolExecutor(max_workers=MEMORY_WORKERS) as pool:
        peaks = list(
            pool.map(lambda spec: measure_memory(spec, [w for w in workloads if w.case.path == spec.path]), specs)
        )
    measured = list(measurements)
    skipped = []
    method = "not measured"
    for spec, found in zip(specs, peaks):
        method = found.method
        if found.error:
            skipped.append(Skipped(f"peak memory of {spec.label}", found.error))
        measured = [
            replace(m, peak_rss_mb=found.peaks_mb.get(m.case.name)) if m.system == spec.label else m
            for m in measured
        ]
    return measured, skipped, method


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
