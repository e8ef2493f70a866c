"""The machine a benchmark ran on, and its peaks: the physical limits speed is measured against.

A peak is an estimate: nominal clock (turbo and thermal limits move the
real one) x FLOPs per cycle per core of one arithmetic, read off the vendor,
CPU family and SIMD flags. Each row of a report is held to the peak of the
arithmetic it ran: fp32 FMA, bf16 dot products (AVX512-BF16, AMX-BF16) or
int8 dot products (VNNI, AMX-INT8). Every figure says how it was obtained.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bertonnx.backends.base import default_threads

SIMD_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
LIBRARIES = (
    "bertonnx",
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "tokenizers",
    "torch",
    "transformers",
    "sentence-transformers",
    "optimum-onnx",
    "onnx",
)


ARITHMETIC = ("fp32", "bf16", "int8")
"""The arithmetic a row's matmuls ran in, each with a peak of its own."""
AMX_BF16_PER_CYCLE = 1024
"""AMX-BF16 FLOPs per cycle per core: Intel's figure for its tile unit (16x the 64 of AVX-512 fp32 FMA)."""
AMX_INT8_PER_CYCLE = 2048
"""AMX-INT8 operations per cycle per core: Intel's figure, twice its bf16 rate."""


@dataclass(frozen=True)
class Peak:
    """The per-core rate of one arithmetic, and why."""

    arithmetic: str  # fp32 | bf16 | int8
    flops_per_cycle: int  # FLOPs (int8: multiply-adds x 2) per cycle per core
    basis: str


@dataclass(frozen=True)
class Machine:
    """What the numbers were measured on."""

    cpu: str  # model name from /proc/cpuinfo
    vendor: str  # GenuineIntel, AuthenticAMD, ...
    family: int  # CPU family number; 0 when unknown
    flags: tuple[str, ...]  # the SIMD flags of SIMD_FLAGS this CPU has
    cores: int  # cores this process may run on (affinity)
    ghz: float  # nominal clock: "cpu MHz" of /proc/cpuinfo, an estimate
    flops_per_cycle: int  # fp32 FLOPs per cycle per core (FMA units x lanes x 2)
    peak_basis: str  # why flops_per_cycle has that value
    python: str
    system: str  # OS and architecture
    versions: dict[str, str]  # installed library versions
    ort_providers: tuple[str, ...]  # execution providers this onnxruntime offers
    gpu: str | None  # torch's CUDA device name, or None
    load_average: tuple[float, float, float]  # 1, 5, 15 minutes, when the description was taken
    peaks: tuple[Peak, ...] = ()  # one per ARITHMETIC; the fp32 one repeats flops_per_cycle and peak_basis

    def peak(self, arithmetic: str = "fp32") -> Peak:
        """The per-core rate of `arithmetic` on this machine."""
        for found in self.peaks:
            if found.arithmetic == arithmetic:
                return found
        if arithmetic == "fp32":
            return Peak("fp32", self.flops_per_cycle, self.peak_basis)
        raise ValueError(f"no {arithmetic} peak; expected one of {', '.join(p.arithmetic for p in self.peaks)}")

    def peak_gflops(self, threads: int, arithmetic: str = "fp32") -> float:
        """The peak of `arithmetic` on `threads` cores (at most all cores), in GFLOP/s."""
        return min(threads, self.cores) * self.ghz * self.peak(arithmetic).flops_per_cycle

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds spent so far by the whole machine and by this process, and the wall clock."""

    machine: float  # busy time of every CPU (user, system, irq, steal...) from /proc/stat
    own: float  # this process's user + system time, its reaped children included
    wall: float


def cpu_times() -> CpuTimes | None:
    """A reading to diff later; None where /proc/stat does not exist."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    ticks = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return CpuTimes(
        machine=(user + nice + system + irq + softirq + steal) / ticks,
        own=own.user + own.system + own.children_user + own.children_system,
        wall=time.monotonic(),
    )


def others_load(start: CpuTimes | None, end: CpuTimes | None) -> float | None:
    """Share of the machine's CPU capacity that other processes (and the hypervisor) took between two readings.

    Anything well above zero means the figures measured in between competed
    for the cores; OpenMP-based torch suffers from that far more than ORT.
    """
    if start is None or end is None or end.wall <= start.wall:
        return None
    others = (end.machine - start.machine) - (end.own - start.own)
    return max(0.0, others / ((end.wall - start.wall) * (os.cpu_count() or 1)))


def fp32_flops_per_cycle(vendor: str, family: int, flags: set[str], arch: str) -> tuple[int, str]:
    """fp32 FLOPs per cycle per core, with the reasoning; two FMA pipes assumed wherever SIMD FMA exists."""
    if vendor == "AuthenticAMD" and "avx512f" in flags and family >= 26:
        return 64, "Zen 5: 2 x 512-bit FMA pipes x 16 lanes x 2"
    if vendor == "AuthenticAMD" and "avx2" in flags and "fma" in flags:
        # Zen 4 has AVX-512 but executes it as two 256-bit halves: no gain in peak over AVX2.
        return 32, "AMD Zen 2-4: 2 x 256-bit FMA pipes x 8 lanes x 2 (AVX-512 runs as 2 x 256-bit)"
    if "avx512f" in flags:
        return 64, "AVX-512: 2 x 512-bit FMA units x 16 lanes x 2 (SKUs with one FMA unit reach half)"
    if "avx2" in flags and "fma" in flags:
        return 32, "AVX2: 2 x 256-bit FMA units x 8 lanes x 2"
    if arch in ("aarch64", "arm64"):
        return 16, "Arm NEON: 2 x 128-bit FMA pipes x 4 lanes x 2 (wider SVE cores reach more)"
    return 16, "SSE: 2 x 128-bit units x 4 lanes x 2"


def peak_per_cycle(arithmetic: str, vendor: str, family: int, flags: set[str], arch: str) -> Peak:
    """FLOPs per cycle per core of `arithmetic` (fp32, bf16 or int8 matmuls), with the reasoning.

    bf16 and int8 are counted from the fp32 FMA rate of the same SIMD units:
    a dot-product instruction does 2 (vdpbf16ps) or 4 (vpdpbusd) products per
    32-bit lane where an FMA does one. AMX tiles are a unit of their own.
    """
    fp32, fp32_basis = fp32_flops_per_cycle(vendor, family, flags, arch)
    if arithmetic == "fp32":
        return Peak("fp32", fp32, fp32_basis)
    if arithmetic == "bf16":
        if "amx_bf16" in flags:
            return Peak("bf16", AMX_BF16_PER_CYCLE, f"AMX-BF16 tiles: {AMX_BF16_PER_CYCLE} FLOP/cycle (Intel's figure)")
        if "avx512_bf16" in flags:
            return Peak("bf16", 2 * fp32, f"AVX512-BF16: vdpbf16ps, 2 bf16 products per fp32 lane = 2 × {fp32}")
        return Peak("bf16", fp32, "no native bf16: bf16 is computed in fp32, so the fp32 peak")
    if arithmetic == "int8":
        if "amx_int8" in flags:
            return Peak("int8", AMX_INT8_PER_CYCLE, f"AMX-INT8 tiles: {AMX_INT8_PER_CYCLE} op/cycle (Intel's figure)")
        if "avx512_vnni" in flags or "avx_vnni" in flags:
            return Peak("int8", 4 * fp32, f"VNNI: vpdpbusd, 4 u8×s8 products per 32-bit lane = 4 × {fp32}")
        if "avx2" in flags:
            return Peak("int8", 2 * fp32, f"no VNNI: vpmaddubsw + vpmaddwd, about 2 × {fp32}")
        return Peak("int8", fp32, "no model of this CPU's int8 dot products: the fp32 peak")
    raise ValueError(f"unknown arithmetic {arithmetic!r}; expected one of {', '.join(ARITHMETIC)}")


def describe_machine() -> Machine:
    """Read the CPU, the libraries and the providers of this machine."""
    info = _cpuinfo()
    flags = set(info.get("flags", info.get("Features", "")).split())
    vendor = info.get("vendor_id", platform.processor() or "unknown")
    family = int(info["cpu family"]) if info.get("cpu family", "").isdigit() else 0
    arch = platform.machine().lower()
    peaks = tuple(peak_per_cycle(arithmetic, vendor, family, flags, arch) for arithmetic in ARITHMETIC)
    return Machine(
        cpu=info.get("model name", platform.processor() or "unknown"),
        vendor=vendor,
        family=family,
        flags=tuple(flag for flag in SIMD_FLAGS if flag in flags),
        cores=default_threads(),
        ghz=float(info.get("cpu MHz", "0") or 0) / 1000,
        flops_per_cycle=peaks[0].flops_per_cycle,
        peak_basis=peaks[0].basis,
        python=sys.version.split()[0],
        system=f"{platform.system()} {platform.release()} {platform.machine()}",
        versions=_versions(),
        ort_providers=_ort_providers(),
        gpu=_gpu_name(),
        load_average=os.getloadavg(),
        peaks=peaks,
    )


def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo; empty where there is none (macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    block = text.split("\n\n", 1)[0]
    pairs = (line.split(":", 1) for line in block.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def _versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _ort_providers() -> tuple[str, ...]:
    try:
        import onnxruntime
    except ImportError:
        return ()
    return tuple(onnxruntime.get_available_providers())


def _gpu_name() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
