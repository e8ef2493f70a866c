"""Benchmarks: bertonnx against PyTorch and sentence-transformers, speed always next to fidelity.

One harness (`benchmarks.harness.run_benchmark`) serves `bertonnx bench` and
the full-report script `python -m bertonnx.benchmarks.run`; both write the same
report.json, report.md and plots (`benchmarks.report`).
"""

from __future__ import annotations
