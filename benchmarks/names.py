"""The workload names of `bertonnx bench`: constants only, so that the CLI's --help needs no benchmark code."""

from __future__ import annotations

BENCH_WORKLOADS: tuple[str, ...] = ("latency", "grid", "corpus", "vocab-contextual", "static-vocab", "static-million")
"""Workload families of `bertonnx bench` (defined here so the CLI need not import the benchmarks)."""
DEFAULT_BENCH_WORKLOADS: tuple[str, ...] = ("latency", "corpus", "static-vocab")
"""The quick default (a few minutes on 2 cores); grid, vocab-contextual and static-million are opt-in."""
