"""The machine a benchmark ran on, and its fp32 peak: the physical limit speed is measured against.

The peak is an estimate: nominal clock (turbo and thermal limits move the
real one) x fp32 FLOPs per cycle per core, read off the vendor, CPU family
and SIMD flags. Every figure says how it was obtained.
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

    def peak_gflops(self, threads: int) -> float:
        """fp32 peak of `threads` cores (at most all cores), in GFLOP/s."""
        return min(threads, self.cores) * self.ghz * self.flops_per_cycle

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


def describe_machine() -> Machine:
    """Read the CPU, the libraries and the providers of this machine."""
    info = _cpuinfo()
    flags = set(info.get("flags", info.get("Features", "")).split())
    vendor = info.get("vendor_id", platform.processor() or "unknown")
    family = int(info["cpu family"]) if info.get("cpu family", "").isdigit() else 0
    per_cycle, basis = fp32_flops_per_cycle(vendor, family, flags, platform.machine().lower())
    return Machine(
        cpu=info.get("model name", platform.processor() or "unknown"),
        vendor=vendor,
        family=family,
        flags=tuple(flag for flag in SIMD_FLAGS if flag in flags),
        cores=default_threads(),
        ghz=float(info.get("cpu MHz", "0") or 0) / 1000,
        flops_per_cycle=per_cycle,
        peak_basis=basis,
        python=sys.version.split()[0],
        system=f"{platform.system()} {platform.release()} {platform.machine()}",
        versions=_versions(),
        ort_providers=_ort_providers(),
        gpu=_gpu_name(),
        load_average=os.getloadavg(),
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
