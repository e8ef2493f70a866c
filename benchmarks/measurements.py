"""The bench's statistics: latency percentiles, throughput, speed-ups against the baselines, share of peak."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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
    peak_share: float | None  # gflops / the CPU's fp32 peak at this thread count (CPU only)
    peak_rss_mb: float | None  # None when memory was not measured
    others_load: float | None  # share of the CPU other processes took while this case ran (noise)
    fidelity: Fidelity


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
