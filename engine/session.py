"""ONNX Runtime session: provider choice, thread settings, and the CUDA fast path.

Provider choice is a pure function of what was asked and what the installed
onnxruntime offers, so it is testable on a machine without a GPU. A request
for CUDA that cannot be met is an error, never a quiet fallback; "auto" may
fall back, and says so in a warning.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray

Provider = Literal["auto", "cpu", "cuda"]
PROVIDERS: tuple[str, ...] = get_args(Provider)
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class ProviderError(RuntimeError):
    """The requested execution provider cannot be used here."""


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise ProviderError(
            "onnxruntime is not installed: pip install 'bertonnx[cpu]' (or 'bertonnx[gpu]' for CUDA)"
        ) from error
    return onnxruntime


def default_threads() -> int:
    """Cores this process may run on: respects taskset and container CPU sets."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def choose_providers(requested: str, available: Sequence[str]) -> list[str]:
    """Execution providers to ask ONNX Runtime for, in priority order.

    Raises:
        ProviderError: unknown name, or CUDA asked for and not in this build.
    """
    if requested not in PROVIDERS:
        raise ProviderError(f"unknown provider {requested!r}; expected one of {', '.join(PROVIDERS)}")
    if requested == "cuda" and CUDA not in available:
        raise ProviderError(
            f"provider 'cuda' is not available; this onnxruntime offers {', '.join(available)}. "
            "Install bertonnx[gpu] (onnxruntime-gpu) on a machine with an NVIDIA GPU"
        )
    if requested in ("cuda", "auto") and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


def check_active(requested: str, chosen: Sequence[str], active: Sequence[str]) -> None:
    """Compare what a session got with what was asked; ONNX Runtime falls back silently.

    Raises:
        ProviderError: "cuda" was asked for and the session runs without it.
    """
    if CUDA in chosen and CUDA not in active:
        message = (
            "CUDA is in this onnxruntime build but the session could not use it "
            f"(no GPU or driver/CUDA libraries missing); running on {', '.join(active)}"
        )
        if requested == "cuda":
            raise ProviderError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def check_threads(threads: int | None) -> int:
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive whole number, got {threads!r}")
    return threads


@dataclass(frozen=True)
class SessionInfo:
    provider: str  # the execution provider actually running the graph
    threads: int
    spin: bool  # idle intra-op threads busy-wait, as ONNX Runtime reports its own setting
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class Session:
    """One ONNX Runtime session, created eagerly. `run` is safe to call from many threads."""

    def __init__(
        self, model_path: Path, provider: str = "auto", threads: int | None = None, spin: bool = False
    ) -> None:
        """Open the graph.

        Args:
            model_path: the .onnx file.
            provider: auto | cpu | cuda.
            threads: intra-op threads; default all cores this process may use.
            spin: let idle ORT threads busy-wait. Faster for back-to-back calls
                on a dedicated machine; off by default so a server idles quietly.
        """
        ort = _onnxruntime()
        n_threads = check_threads(threads)
        chosen = choose_providers(provider, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = n_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        provider_args: list[Any] = [
            (CUDA, {"cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": True})
            if name == CUDA
            else name
            for name in chosen
        ]
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=provider_args)
        except Exception as error:  # ORT raises its own exception types for a bad graph
            raise ProviderError(f"{model_path}: ONNX Runtime cannot load it ({error})") from error
        active = self._session.get_providers()
        check_active(provider, chosen, active)
        self.on_cuda = CUDA in active
        self.info = SessionInfo(
            provider=active[0],
            threads=n_threads,
            spin=self._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1",
            inputs=tuple(i.name for i in self._session.get_inputs()),
            outputs=tuple(o.name for o in self._session.get_outputs()),
        )

    def run(self, output: str, feeds: dict[str, NDArray[np.int64]]) -> NDArray[np.float32]:
        """Run the graph and return one output as float32 on the host.

        On CUDA, inputs and outputs go through IO binding so only the asked-for
        output crosses back to the host; fp16 graphs are widened here.
        """
        if self.on_cuda:
            binding = self._session.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, value)
            binding.bind_output(output, "cuda")
            self._session.run_with_iobinding(binding)
            result = binding.copy_outputs_to_cpu()[0]
        else:
            result = self._session.run([output], feeds)[0]
        return result.astype(np.float32, copy=False)
