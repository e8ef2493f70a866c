"""ONNX Runtime: provider choice, thread settings, and the GPU fast paths (CUDA with IO binding, TensorRT).

Provider choice is a pure function of what was asked and what the installed
onnxruntime offers, so it is testable on a machine without a GPU. A request
for CUDA or TensorRT that cannot be met is an error, never a quiet fallback:
ONNX Runtime replaces a provider it fails to create with the CPU and only logs
it, so what the session actually runs is checked after it opens. "auto" may
fall back, and says so in a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.backends.base import BackendInfo, Feeds, check_threads
from bertonnx.errors import ProviderError, missing_extra
from bertonnx.options import PROVIDERS, check_choice

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
_BY_NAME = {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT}


def onnxruntime_module() -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise missing_extra("the onnxruntime backend", "cpu", error) from error
    return onnxruntime


def choose_providers(requested: str, available: Sequence[str]) -> list[str]:
    """Execution providers to ask ONNX Runtime for, in priority order.

    Raises:
        OptionError: an unknown provider name.
        ProviderError: CUDA or TensorRT asked for and not in this build.
    """
    check_choice(requested, PROVIDERS, "provider")
    if requested in ("cuda", "tensorrt") and _BY_NAME[requested] not in available:
        raise ProviderError(
            f"provider {requested!r} is not available; this onnxruntime offers {', '.join(available)}. "
            "Install bertonnx[gpu] (onnxruntime-gpu) on a machine with an NVIDIA GPU"
            + (" and TensorRT" if requested == "tensorrt" else "")
        )
    if requested == "tensorrt":
        return [TENSORRT, CUDA, CPU]
    if requested in ("cuda", "auto") and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


def check_active(requested: str, chosen: Sequence[str], active: Sequence[str]) -> None:
    """Compare what a session got with what was asked: ONNX Runtime falls back silently.

    Raises:
        ProviderError: a GPU provider was asked for by name and the session runs without it.
    """
    wanted = chosen[0]
    if wanted == CPU or wanted in active:
        return
    message = (
        f"{wanted} is in this onnxruntime build but the session could not use it "
        f"(no GPU, or driver/CUDA/TensorRT libraries missing); running on {', '.join(active)}"
    )
    if requested != "auto":
        raise ProviderError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def provider_options(name: str, precision: str, cache_dir: Path | None) -> Any:
    """What each provider is created with; the CPU takes none."""
    if name == CUDA:
        return (CUDA, {"cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": True})
    if name == TENSORRT:
        options: dict[str, Any] = {"trt_fp16_enable": precision == "fp16"}
        if cache_dir is not None:  # engines take minutes to build: keep them across runs
            options |= {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_dir),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache_dir),
            }
        return (TENSORRT, options)
    return name


class OnnxRuntimeBackend:
    """One ONNX Runtime session, created eagerly. `run` is safe to call from many threads."""

    def __init__(
        self,
        model_path: Path,
        provider: str = "auto",
        threads: int | None = None,
        spin: bool = True,
        precision: str = "fp32",
        cache_dir: Path | None = None,
    ) -> None:
        """Open the graph.

        Args:
            model_path: the .onnx file.
            provider: auto | cpu | cuda | tensorrt.
            threads: intra-op threads; default all cores this process may use.
            spin: let ORT's threads busy-wait between the operators of a run (they stop
                the moment it returns, so an idle server stays idle): ~10-30 % lower
                latency on short inputs (benchmarks/README.md).
            precision: the graph's own precision, or fp16 for TensorRT on an fp32 graph.
            cache_dir: where TensorRT keeps its engines.
        """
        ort = onnxruntime_module()
        n_threads = check_threads(threads)
        chosen = choose_providers(provider, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = n_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        # Spin between a run's operators only: the pool stops spinning the moment run() returns, so idle
        # time, and whatever else shares the cores between calls, is left alone.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        if cache_dir is not None and TENSORRT in chosen:
            cache_dir.mkdir(parents=True, exist_ok=True)
        providers = [provider_options(name, precision, cache_dir) for name in chosen]
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as error:  # ORT raises its own exception types for a bad graph
            raise ProviderError(f"{model_path}: ONNX Runtime cannot load it ({error})") from error
        active = self._session.get_providers()
        check_active(provider, chosen, active)
        self._on_gpu = active[0] in (CUDA, TENSORRT)
        spinning = self._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        self.info = BackendInfo(
            backend="onnxruntime",
            device=active[0],
            precision=precision,
            threads=n_threads,
            inputs=tuple(i.name for i in self._session.get_inputs()),
            outputs=tuple(o.name for o in self._session.get_outputs()),
            spin=spinning == "1",
            details={"onnxruntime": ort.__version__, "providers": list(active)},
        )

    def run(self, output: str, feeds: Feeds) -> NDArray[np.float32]:
        """Run the graph and return one output as float32 on the host.

        On a GPU, inputs and outputs go through IO binding so only the asked-for
        output crosses back to the host; fp16 graphs are widened here.
        """
        if self._on_gpu:
            binding = self._session.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, value)
            binding.bind_output(output, "cuda")
            self._session.run_with_iobinding(binding)
            result = binding.copy_outputs_to_cpu()[0]
        else:
            result = self._session.run([output], feeds)[0]
        return result.astype(np.float32, copy=False)

    def run_many(self, output: str, batches: Sequence[Feeds]) -> list[NDArray[np.float32]]:
        """One batch after another: ONNX Runtime's intra-op threads already share each batch out."""
        return [self.run(output, feeds) for feeds in batches]
