"""Backends: what runs a bundle's graph. One protocol (base.Backend), two implementations.

onnxruntime.py  ONNX Runtime: CPU, CUDA (IO binding), TensorRT (fp16, engine cache)
openvino.py     OpenVINO on the CPU: fp32, bf16, int8 (NNCF, quantize.py), compiled-model cache
choose.py       what a request may run: a pure function of it, the installed packages and the CPU flags
measure.py      `auto` and `fastest` on the CPU: time the candidates once per machine, cache the verdict
gate.py         a reduced precision held to its fidelity gate, figures cached per bundle, backend and CPU
open.py         composes them: choose, time, open, gate (open_backend)

This face only re-exports. Neither onnxruntime nor openvino is imported until a backend of its kind opens.
"""

from __future__ import annotations

from bertonnx.backends.base import Backend, BackendInfo
from bertonnx.backends.gate import cache_root
from bertonnx.backends.measure import Timings
from bertonnx.backends.open import Opened, open_backend

__all__ = ["Backend", "BackendInfo", "Opened", "Timings", "cache_root", "open_backend"]
