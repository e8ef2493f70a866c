"""The one small protocol every backend implements, and what it reports about itself."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from bertonnx.options import check_positive

Feeds = dict[str, NDArray[np.int64]]


def default_threads() -> int:
    """Cores this process may run on: respects taskset and container CPU sets."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_threads(threads: int | None) -> int:
    """Threads a backend runs on: every core this process may use, or a positive number asked for."""
    return default_threads() if threads is None else check_positive("threads", threads)


@dataclass(frozen=True)
class BackendInfo:
    """What actually runs the graph: filled in from the backend after it opened, never from the request."""

    backend: str  # onnxruntime | openvino
    device: str  # the ONNX Runtime execution provider running the graph, or OpenVINO's device (CPU)
    precision: str  # fp32 | bf16 | fp16 | int8: the arithmetic the graph runs in
    threads: int
    inputs: tuple[str, ...]  # the graph's inputs: only these are fed
    outputs: tuple[str, ...]
    spin: bool = False  # ONNX Runtime: idle intra-op threads busy-wait
    pad_multiple: int = 1  # batches are padded to a multiple of this many positions (fewer shapes to compile)
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the compiled-model cache, the versions


class Backend(Protocol):
    """Runs a bundle's graph. `run` is safe to call from many threads at once."""

    info: BackendInfo

    def run(self, output: str, feeds: Feeds) -> NDArray[np.float32]:
        """Run the graph on (B, T) int64 feeds; one output (B, T, H) as float32 on the host."""
        ...

    def run_many(self, output: str, batches: Sequence[Feeds]) -> list[NDArray[np.float32]]:
        """`run` over several batches, in order; a backend may run them side by side."""
        ...
