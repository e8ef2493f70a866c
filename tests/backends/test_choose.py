"""`auto` and every named request: a pure function of the request, the installed packages and the CPU flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertonnx import BackendError, OptionError
from bertonnx.backends.choose import Machine, choose, cpu_flags

AMX = frozenset({"avx512f", "avx512_vnni", "amx_bf16", "amx_int8", "avx512_bf16"})
ZEN4 = frozenset({"avx512f", "avx512_vnni", "avx512_bf16"})
OLD = frozenset({"avx2", "fma"})
CPU_ONLY = ("CPUExecutionProvider",)
WITH_CUDA = ("CUDAExecutionProvider", "CPUExecutionProvider")


def machine(installed: str = "onnxruntime openvino nncf", flags: frozenset[str] = AMX,
            providers: tuple[str, ...] = CPU_ONLY) -> Machine:
    return Machine(installed=frozenset(installed.split()), ort_providers=providers, cpu_flags=flags)


@pytest.mark.parametrize(
    "installed,flags,providers,expected",
    [
        ("onnxruntime openvino", AMX, CPU_ONLY, ("openvino", "bf16")),
        ("onnxruntime openvino", ZEN4, CPU_ONLY, ("openvino", "bf16")),  # AVX512-BF16 without AMX
        ("onnxruntime openvino", OLD, CPU_ONLY, ("onnxruntime", "fp32")),  # no native bf16: never emulate it
        ("onnxruntime", AMX, CPU_ONLY, ("onnxruntime", "fp32")),  # the extra is not installed
        ("onnxruntime openvino", AMX, WITH_CUDA, ("onnxruntime", "fp32")),  # a GPU build goes first
        ("openvino", OLD, (), ("openvino", "fp32")),  # OpenVINO alone still runs
    ],
)
def test_auto_takes_the_fastest_faithful_choice(
    installed: str, flags: frozenset[str], providers: tuple[str, ...], expected: tuple[str, str]
) -> None:
    choice = choose("auto", "auto", "fp32", machine(installed, flags, providers))
    assert (choice.backend, choice.precision) == expected
    assert choice.reason


def test_auto_never_picks_int8() -> None:
    for flags in (AMX, ZEN4, OLD):
        assert choose("auto", "auto", "fp32", machine(flags=flags)).precision != "int8"


def test_auto_runs_a_reduced_bundle_as_exported() -> None:
    assert choose("auto", "auto", "int8", machine()) .backend == "onnxruntime"
    assert choose("auto", "auto", "int8", machine()).precision == "int8"


@pytest.mark.parametrize(
    "backend,precision,bundle,installed,flags,message",
    [
        ("openvino", "auto", "fp32", "onnxruntime", AMX,
         "backend 'openvino' is not installed: pip install 'bertonnx[openvino]'"),
        ("onnxruntime", "auto", "fp32", "openvino", AMX,
         "backend 'onnxruntime' is not installed: pip install 'bertonnx[cpu]'"),
        ("openvino", "bf16", "fp32", "onnxruntime openvino", OLD, "bf16 needs a CPU with AMX or AVX512-BF16"),
        ("onnxruntime", "bf16", "fp32", "onnxruntime openvino", AMX, "use backend='openvino'"),
        ("onnxruntime", "fp32", "int8", "onnxruntime", AMX, "export the model again without quantize='int8'"),
        ("openvino", "fp16", "fp32", "openvino", AMX, "fp16 is a GPU precision"),
        ("openvino", "fp32", "int8", "openvino", AMX, "openvino reads fp32 bundles"),
        ("openvino", "int8", "fp32", "onnxruntime openvino", AMX, "pip install 'bertonnx[openvino]'"),  # no nncf
        ("auto", "auto", "fp32", "", AMX, "no backend is installed"),
    ],
)
def test_impossible_requests_say_why_in_one_line(
    backend: str, precision: str, bundle: str, installed: str, flags: frozenset[str], message: str
) -> None:
    with pytest.raises(BackendError, match=message.replace("[", r"\[").replace("]", r"\]")) as raised:
        choose(backend, precision, bundle, machine(installed, flags))
    assert "\n" not in str(raised.value)


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(OptionError, match="unknown backend 'tvm'; expected one of auto, onnxruntime, openvino"):
        choose("tvm", "auto", "fp32", machine())
    known = "auto, fastest, fp32, bf16, fp16, int8"
    with pytest.raises(OptionError, match=f"unknown precision 'fp8'; expected one of {known}"):
        choose("auto", "fp8", "fp32", machine())


def test_tensorrt_may_run_an_fp32_bundle_at_fp16() -> None:
    choice = choose("onnxruntime", "fp16", "fp32", machine(providers=WITH_CUDA), provider="tensorrt")
    assert (choice.backend, choice.precision) == ("onnxruntime", "fp16")
    with pytest.raises(BackendError):
        choose("onnxruntime", "fp16", "fp32", machine(providers=WITH_CUDA), provider="cuda")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx512f", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()
