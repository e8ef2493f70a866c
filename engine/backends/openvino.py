"""OpenVINO on the CPU: the bundle's model.onnx read as it is, run at fp32, bf16 or int8.

- Dynamic batch and sequence shapes, as the graph declares them.
- Only the contextual output is compiled: the static path never runs the graph.
- One infer request per calling thread, so one Embedder is safe to share.
- Two compiled forms of the one graph: a latency model (one stream using
  every thread) runs single batches; for a call of many batches a throughput
  model (one stream per thread, compiled on first use) runs them side by side,
  a request per stream. On 2 cores that is ~1.6x the latency model's
  throughput on a mixed-length corpus (benchmarks/README.md).
- Batches are padded to a multiple of 16 positions: fewer shapes to prepare
  kernels for, and AMX tiles are 16 rows.
- Compiled models are cached in the user cache (never inside the bundle),
  keyed by the graph's sha256, the OpenVINO version and the precision: the
  plugin's own cache key leaves the precision out, and an fp32 blob loaded for
  bf16 crashes the process.
- int8 is NNCF post-training quantisation of the fp32 graph on first use,
  calibrated on texts built from the bundle's own vocabulary, saved in the
  same cache (see quantize.py).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.backends.base import BackendInfo, Feeds
from bertonnx.errors import BackendError, missing_extra

DEVICE = "CPU"
PAD_MULTIPLE = 16
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


@functools.cache
def shared_core() -> Any:
    """One OpenVINO Core for the process, as OpenVINO advises: it owns the plugins and their thread pools."""
    return openvino_module().Core()


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
        recipe: str | None = None,
    ) -> None:
        """Read and compile the graph.

        Args:
            model_path: an .onnx file (or, for int8, the quantised .xml).
            output: the one graph output to compile and return.
            precision: fp32 | bf16 | int8 (int8 needs `model_path` to be a quantised model).
            threads: inference threads; default every core this process may use.
            cache_dir: where compiled blobs go; None turns caching off.
            native_bf16: the CPU computes bf16 natively (int8's float parts then run in bf16).
            recipe: the name of the int8 recipe that made `model_path` (quantize.Int8Recipe), for the record.
        """
        from bertonnx.backends.base import check_threads

        n_threads = check_threads(threads)
        if precision not in _PRECISION_HINT:
            raise BackendError(f"openvino runs fp32, bf16 or int8 here, not {precision}")
        hint = _PRECISION_HINT[precision]
        if precision == "int8" and not native_bf16:
            hint = "f32"
        core = shared_core()
        model = _read_model(core, model_path, output)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": n_threads}
        self._core, self._model, self._config, self._path = core, model, config, model_path
        self._cache = cache_dir
        self._compiled = self._compile("LATENCY", 1)
        self._streams = n_threads
        self._throughput: Any = None  # compiled on the first call with several batches
        self._throughput_lock = threading.Lock()
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
            pad_multiple=PAD_MULTIPLE,
            details={
                "openvino": openvino_version(),
                "inference_precision": floating,
                "cache": str(cache_dir) if cache_dir is not None else None,
                "loaded_from_cache": _loaded_from_cache(self._compiled),
                "int8_recipe": recipe if precision == "int8" else None,
            },
        )
        if precision != "int8" and self.info.precision != precision:
            raise BackendError(f"asked openvino for {precision}, the compiled model runs {self.info.precision}")

    def run(self, output: str, feeds: Feeds) -> NDArray[np.float32]:
        """Run the graph; `output` must be the one compiled. (B, T, H) float32, a fresh array."""
        self._check(output)
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        request.infer(self._feeds(feeds), share_inputs=True)
        # The request reuses its output buffer on the next call: hand back a copy.
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def run_many(self, output: str, batches: Sequence[Feeds]) -> list[NDArray[np.float32]]:
        """Several batches side by side, one stream per thread; results in the order given.

        Round robin over this thread's requests of the throughput model, with no
        Python callback: OpenVINO's own threads then never need the GIL, which a
        callback does and which deadlocks a compiled model destroyed under the GIL.
        """
        self._check(output)
        if len(batches) < 2 or self._streams < 2:
            return [self.run(output, feeds) for feeds in batches]
        requests = self._stream_requests()
        results: list[NDArray[np.float32]] = []
        in_flight: list[Any] = []  # requests started, oldest first; batch i runs on requests[i % streams]
        try:
            for index, feeds in enumerate(batches):
                if len(in_flight) == len(requests):
                    results.append(_finish(in_flight.pop(0)))
                request = requests[index % len(requests)]
                request.start_async(self._feeds(feeds), share_inputs=True)
                in_flight.append(request)
            while in_flight:
                results.append(_finish(in_flight.pop(0)))
        finally:
            for request in in_flight:  # an error above: let what runs finish before its inputs go
                request.wait()
        return results

    def _check(self, output: str) -> None:
        if output not in self.info.outputs:
            raise BackendError(f"this openvino model computes {self.info.outputs[0]}, not {output}")

    def _feeds(self, feeds: Feeds) -> Feeds:
        return {name: feeds[name] for name in self._inputs}

    def _compile(self, hint: str, streams: int) -> Any:
        config = {**self._config, "PERFORMANCE_HINT": hint, "NUM_STREAMS": streams}
        if self._cache is not None:  # a folder per compiled form: the plugin's cache key leaves settings out
            folder = self._cache / f"{hint.lower()}-{streams}"
            folder.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(folder)
        try:
            return self._core.compile_model(self._model, DEVICE, config)
        except Exception as error:
            raise BackendError(f"{self._path}: OpenVINO cannot compile this graph ({_first_line(error)})") from error

    def _stream_requests(self) -> list[Any]:
        """This thread's requests of the throughput model (compiled on first use), one per stream."""
        requests = getattr(self._local, "streams", None)
        if requests is None:
            with self._throughput_lock:
                if self._throughput is None:
                    self._throughput = self._compile("THROUGHPUT", self._streams)
            requests = self._local.streams = [self._throughput.create_infer_request() for _ in range(self._streams)]
        return requests


def _finish(request: Any) -> NDArray[np.float32]:
    """Wait for a started request and copy its output out (the request reuses the buffer)."""
    request.wait()
    return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)


def _loaded_from_cache(compiled: Any) -> bool | None:
    try:
        return bool(compiled.get_property("LOADED_FROM_CACHE"))
    except Exception:  # not every version reports it
        return None


def _read_model(core: Any, model_path: Path, output: str) -> Any:
    """The graph at `model_path` with `output` as its one output."""
    ov = openvino_module()
    try:
        model = core.read_model(str(model_path))
    except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
        raise BackendError(f"{model_path}: OpenVINO cannot read this graph ({_first_line(error)})") from error
    try:
        return ov.Model([model.output(output)], model.get_parameters(), model.get_friendly_name())
    except Exception as error:
        raise BackendError(f"{model_path}: the graph has no output {output!r} ({_first_line(error)})") from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__

