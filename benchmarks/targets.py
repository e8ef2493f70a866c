"""The engine's targets, checked against a run's measurements: met or not, each speed target behind a fidelity gate."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from bertonnx.benchmarks.measurements import Measurement


@dataclass(frozen=True)
class TargetResult:
    """An engine target, met or not."""

    name: str
    target: str
    measured: str
    met: bool


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
