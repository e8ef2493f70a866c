"""Which backend and precision run a bundle: a pure function of the request and the machine.

`auto` here is the guess from the flags alone, the fastest *faithful* choice,
never one that lowers fidelity past the bf16 gate. On a CPU, open_backend then
times every candidate once per machine and lets the measurement decide
(measure.py); this guess stands where there is nothing to time (one candidate,
a GPU) and is what the bench plans with.

- CUDA, where onnxruntime-gpu is installed (it falls back to the CPU, with a
  warning, where no GPU answers);
- else OpenVINO at bf16, where the `openvino` package is installed and the CPU
  computes bf16 natively (AMX or AVX512-BF16);
- else ONNX Runtime on the CPU at the bundle's own precision.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from bertonnx.backends.onnxruntime import CUDA
from bertonnx.errors import BackendError
from bertonnx.options import BACKENDS, PRECISIONS, check_choice

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags (as /proc/cpuinfo names them) of native bf16 arithmetic."""
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
INSTALL_HINTS = {
    "onnxruntime": "pip install 'bertonnx[cpu]' (or 'bertonnx[gpu]' for CUDA)",
    "openvino": "pip install 'bertonnx[openvino]'",
}


@dataclass(frozen=True)
class Machine:
    """What the choice depends on: installed packages, ONNX Runtime's providers, CPU flags."""

    installed: frozenset[str]  # of "onnxruntime", "openvino", "nncf"
    ort_providers: tuple[str, ...]  # onnxruntime.get_available_providers(), () without onnxruntime
    cpu_flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        return bool(self.cpu_flags & set(BF16_FLAGS))


@dataclass(frozen=True)
class Choice:
    backend: str  # onnxruntime | openvino
    precision: str  # fp32 | bf16 | fp16 | int8
    reason: str  # why, in a few words, for `info` and the bench table
    recipe: str = "words"  # OpenVINO int8's recipe kind (quantize.RECIPE_KINDS): the use it is made for


def choose(backend: str, precision: str, bundle_precision: str, machine: Machine, provider: str = "auto") -> Choice:
    """The backend and precision to run, or a one-line error saying why the request cannot run here.

    Args:
        backend: auto | onnxruntime | openvino.
        precision: auto | fp32 | bf16 | fp16 | int8.
        bundle_precision: the precision the bundle's graph was exported at.
        machine: what is installed and what the CPU can do.
        provider: ONNX Runtime's execution provider; TensorRT can run an fp32 bundle at fp16.

    Raises:
        OptionError: an unknown backend or precision name.
        BackendError: a backend that is not installed, or a precision it cannot run here.
    """
    check_choice(backend, BACKENDS, "backend")
    check_choice(precision, PRECISIONS, "precision")
    if backend == "auto":
        return _auto(precision, bundle_precision, machine)
    _require_installed(backend, machine.installed)
    if backend == "onnxruntime":
        wanted = bundle_precision if precision == "auto" else precision
        tensorrt_fp16 = provider == "tensorrt" and wanted == "fp16" and bundle_precision == "fp32"
        if wanted != bundle_precision and not tensorrt_fp16:
            remedy, fixes = _how_to_get(wanted)
            raise BackendError(
                f"onnxruntime runs a bundle at the precision it was exported at ({bundle_precision}), "
                f"not {wanted}; " + remedy,
                **fixes,
            )
        return Choice("onnxruntime", wanted, "asked for")
    if bundle_precision != "fp32":
        raise BackendError(
            f"openvino reads fp32 bundles and lowers the precision itself; this bundle is {bundle_precision}. "
            "Export without {optimize}/{quantize}/{fp16} for openvino",
            optimize=True, quantize="int8", fp16=True,
        )
    if precision == "auto":
        return Choice("openvino", "bf16" if machine.native_bf16 else "fp32", "asked for openvino")
    if precision == "bf16" and not machine.native_bf16:
        raise BackendError(
            "bf16 needs a CPU with AMX or AVX512-BF16; this one has neither "
            "(its bf16 would be emulated, slower than fp32)"
        )
    if precision == "fp16":
        raise BackendError("fp16 is a GPU precision: export with {fp16} and run on onnxruntime with CUDA", fp16=True)
    if precision == "int8" and "nncf" not in machine.installed:
        raise BackendError(
            "openvino int8 quantises the bundle on first use with NNCF: pip install 'bertonnx[openvino]'"
        )
    return Choice("openvino", precision, "asked for")


def _auto(precision: str, bundle_precision: str, machine: Machine) -> Choice:
    has_ort = "onnxruntime" in machine.installed
    has_ov = "openvino" in machine.installed
    if precision not in ("auto", "fp32", "bf16"):
        # fp16 and int8 change the numbers: run them only where the bundle or the user asks by name.
        backend = "onnxruntime" if bundle_precision == precision else "openvino"
        return choose(backend, precision, bundle_precision, machine)
    if has_ort and CUDA in machine.ort_providers and precision == "auto":
        return Choice("onnxruntime", bundle_precision, "CUDA available")
    if has_ov and bundle_precision == "fp32" and machine.native_bf16 and precision in ("auto", "bf16"):
        return Choice("openvino", "bf16", "CPU has native bf16")
    if precision == "bf16":
        return choose("openvino", "bf16", bundle_precision, machine)
    if has_ort:
        return Choice("onnxruntime", bundle_precision, "default")
    if has_ov and bundle_precision == "fp32":
        return Choice("openvino", "fp32", "onnxruntime not installed")
    raise BackendError(f"no backend is installed: {INSTALL_HINTS['onnxruntime']}, or {INSTALL_HINTS['openvino']}")


def _require_installed(backend: str, installed: Collection[str]) -> None:
    if backend not in installed:
        raise BackendError(f"backend {backend!r} is not installed: {INSTALL_HINTS[backend]}")


def _how_to_get(precision: str) -> tuple[str, dict[str, object]]:
    """How to run `precision` after all: a message with its fixes (bertonnx.errors.Fix)."""
    return {
        "int8": ("export with {quantize}, or use {backend} {precision}",
                 {"quantize": "int8", "backend": "openvino", "precision": "int8"}),
        "fp16": ("export with {fp16} (for CUDA), or use {provider}", {"fp16": True, "provider": "tensorrt"}),
        "bf16": ("use {backend} on a CPU with AMX or AVX512-BF16", {"backend": "openvino"}),
        "fp32": ("export the model again without {quantize} or {fp16}", {"quantize": "int8", "fp16": True}),
    }[precision]


def this_machine() -> Machine:
    """The Machine this process runs on."""
    installed = frozenset(
        name for name in ("onnxruntime", "openvino", "nncf") if importlib.util.find_spec(name) is not None
    )
    providers: tuple[str, ...] = ()
    if "onnxruntime" in installed:
        import onnxruntime

        providers = tuple(onnxruntime.get_available_providers())
    return Machine(installed=installed, ort_providers=providers, cpu_flags=cpu_flags())


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags, as Linux names them; empty where /proc/cpuinfo is not there."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()
