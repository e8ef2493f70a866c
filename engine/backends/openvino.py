"""OpenVINO on the CPU: the bundle's model.onnx read as it is, run at fp32, bf16 or int8.

- Dynamic batch and sequence shapes, as the graph declares them.
- Only the contextual output is compiled: the static path never runs the graph.
- One infer request per calling thread, so one Embedder is safe to share.
- Compiled models are cached in the user cache (never inside the bundle),
  keyed by the graph's sha256, the OpenVINO version and the precision: the
  plugin's own cache key leaves the precision out, and an fp32 blob loaded for
  bf16 crashes the process.
- int8 is NNCF post-training quantisation of the fp32 graph on first use,
  calibrated on texts built from the bundle's own vocabulary, saved in the
  same cache (see quantize.py).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.backends.base import BackendInfo, Feeds
from bertonnx.errors import BackendError, missing_extra

DEVICE = "CPU"
_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "bf16"}
"""OpenVINO's inference precision per bertonnx precision. int8 keeps its
quantised MatMuls in int8; the operations left in floating point run in bf16
where the CPU has it (checked at load), else f32."""
_REPORTED = {"bfloat16": "bf16", "bf16": "bf16", "float32": "fp32", "f32": "fp32", "float16": "fp16", "f16": "fp16"}
"""OpenVINO's names for the precision a compiled model runs (its Type prints as <Type: 'bfloat16'>)."""


def openvino_module() -> Any:
    try:
        import openvino
    except ImportError as error:
        raise missing_extra("the openvino backend", "openvino", error) from error
    return openvino


def openvino_version() -> str:
    return str(openvino_module().get_version()).split("-")[0]


class OpenVinoBackend:
    """A compiled OpenVINO model of one bundle graph. `run` is safe to call from many threads."""

    def __init__(
        self,
        model_path: Path,
        output: str,
        precision: str = "fp32",
        threads: int | None = None,
        cache_dir: Path | None = None,
        native_bf16: bool = True,
    ) -> None:
        """Read and compile the graph.

        Args:
            model_path: an .onnx file (or, for int8, the quantised .xml).
            output: the one graph output to compile and return.
            precision: fp32 | bf16 | int8 (int8 needs `model_path` to be a quantised model).
            threads: inference threads; default every core this process may use.
            cache_dir: where compiled blobs go; None turns caching off.
            native_bf16: the CPU computes bf16 natively (int8's float parts then run in bf16).
        """
        ov = openvino_module()
        from bertonnx.backends.onnxruntime import check_threads

        n_threads = check_threads(threads)
        if precision not in _PRECISION_HINT:
            raise BackendError(f"openvino runs fp32, bf16 or int8 here, not {precision}")
        hint = _PRECISION_HINT[precision]
        if precision == "int8" and not native_bf16:
            hint = "f32"
        core = ov.Core()
        try:
            model = core.read_model(str(model_path))
        except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
            raise BackendError(f"{model_path}: OpenVINO cannot read this graph ({_first_line(error)})") from error
        try:
            model = ov.Model([model.output(output)], model.get_parameters(), model.get_friendly_name())
        except Exception as error:
            raise BackendError(f"{model_path}: the graph has no output {output!r} ({_first_line(error)})") from error
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": n_threads,
            "NUM_STREAMS": 1,
        }
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(cache_dir)
        try:
            self._compiled = core.compile_model(model, DEVICE, config)
        except Exception as error:
            raise BackendError(f"{model_path}: OpenVINO cannot compile this graph ({_first_line(error)})") from error
        self._output = self._compiled.output(0)
        self._inputs = tuple(port.get_any_name() for port in self._compiled.inputs)
        self._local = threading.local()
        running = str(self._compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        floating = next((name for key, name in _REPORTED.items() if key in running), running)
        self.info = BackendInfo(
            backend="openvino",
            device=DEVICE,
            precision="int8" if precision == "int8" else floating,
            threads=n_threads,
            inputs=self._inputs,
            outputs=(output,),
            details={
                "openvino": openvino_version(),
                "inference_precision": floating,
                "cache": str(cache_dir) if cache_dir is not None else None,
                "loaded_from_cache": _loaded_from_cache(self._compiled),
            },
        )
        if precision != "int8" and self.info.precision != precision:
            raise BackendError(f"asked openvino for {precision}, the compiled model runs {self.info.precision}")

    def run(self, output: str, feeds: Feeds) -> NDArray[np.float32]:
        """Run the graph; `output` must be the one compiled. (B, T, H) float32, a fresh array."""
        if output not in self.info.outputs:
            raise BackendError(f"this openvino model computes {self.info.outputs[0]}, not {output}")
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        request.infer({name: feeds[name] for name in self._inputs}, share_inputs=True)
        # The request reuses its output buffer on the next call: hand back a copy.
        return np.array(request.get_tensor(self._output).data, dtype=np.float32, copy=True)


def _loaded_from_cache(compiled: Any) -> bool | None:
    try:
        return bool(compiled.get_property("LOADED_FROM_CACHE"))
    except Exception:  # not every version reports it
        return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__

