"""The bench's statistics: latency percentiles, throughput, speed-ups against the baselines, share of peak."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from bertonnx.backends.choose import BF16_FLAGS
from bertonnx.benchmarks.contract import System, SystemSpec
from bertonnx.benchmarks.fidelity import Fidelity
from bertonnx.benchmarks.machine import Machine
from bertonnx.benchmarks.systems import ST_OPENVINO
from bertonnx.benchmarks.workloads import Case


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
    peak_share: float | None  # gflops / the peak of this row's arithmetic at this thread count (CPU only)
    peak_rss_mb: float | None  # None when memory was not measured
    others_load: float | None  # share of the CPU other processes took while this case ran (noise)
    fidelity: Fidelity
    arithmetic: str | None = None  # what its matmuls computed in, the peak it is held to: fp32 | bf16 | int8
    peak_gflops: float | None = None  # that arithmetic's peak at this thread count (CPU only)


def arithmetic(spec: SystemSpec, cpu_flags: Collection[str]) -> str | None:
    """The arithmetic a contextual system's matmuls ran in on the CPU (None elsewhere): the peak it is held to.

    bertonnx rows name their precision once built (auto resolved); ST openvino names the precision its compiled
    model runs at once loaded, and before that its default, bf16 where the CPU has native bf16. A dynamic int8
    graph still computes attention in fp32: the int8 peak is an upper bound of what it could reach.
    """
    if spec.path != "contextual" or spec.provider != "cpu":
        return None
    native_bf16 = bool(set(cpu_flags) & set(BF16_FLAGS))
    if spec.kind == "pytorch-bf16":
        return "bf16" if native_bf16 else "fp32"
    if spec.kind == "sentence-transformers" and spec.backend == "openvino" and not spec.precision:
        return "bf16" if native_bf16 else "fp32"
    if spec.kind in ("bertonnx", "sentence-transformers") and spec.precision in ("bf16", "int8"):
        return spec.precision
    return "fp32"


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
        kind = arithmetic(spec, machine.flags) if gflops else None
        peak = machine.peak_gflops(threads, kind) if kind else None
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
                peak_share=gflops / peak if gflops and peak else None,
                peak_rss_mb=None,
                others_load=None,
                fidelity=fidelity[spec.label],
                arithmetic=kind,
                peak_gflops=peak,
            )
        )
    return found


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
