"""Peak memory per system and case, each system in a fresh process of its own.

ru_maxrss is process-wide and only grows, and the timing process holds every
system at once, so memory is measured apart: one child process per system
builds it, runs each case's warm-up, resets the kernel's high-water mark
(/proc/self/clear_refs), runs the case once and reads VmHWM. The figure is
the whole process's peak resident memory: interpreter, libraries (torch
weighs hundreds of MB before any model), weights, ONNX Runtime's arena and
the call's working memory. Where the reset is impossible (not Linux) the
monotone ru_maxrss stands in and the method says so.

Run as `python -m bertonnx.benchmarks.memory JOB.json`; prints one JSON object.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bertonnx.benchmarks.contract import SystemSpec
from bertonnx.benchmarks.systems import build_system
from bertonnx.benchmarks.workloads import Workload

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
METHOD_HWM = "peak RSS of a fresh process per system (VmHWM, reset before each case)"
METHOD_MAXRSS = "peak RSS of a fresh process per system (ru_maxrss: monotone, includes earlier cases)"


@dataclass(frozen=True)
class MemoryResult:
    peaks_mb: dict[str, float]  # case name -> peak resident MB
    method: str
    error: str | None = None  # why the child failed, when it did


def measure_memory(spec: SystemSpec, workloads: Sequence[Workload]) -> MemoryResult:
    """Run `spec` on every workload in a child process and collect the peaks."""
    with tempfile.TemporaryDirectory(prefix="bertonnx-bench-mem-") as folder:
        job = Path(folder) / "job.json"
        cases = []
        for index, workload in enumerate(workloads):
            inputs = Path(folder) / f"case-{index}.json"
            inputs.write_text(json.dumps({"inputs": workload.inputs, "warmup": workload.warmup}), encoding="utf-8")
            cases.append({"name": workload.case.name, "file": str(inputs)})
        job.write_text(json.dumps({"spec": spec.to_dict(), "cases": cases}), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "bertonnx.benchmarks.memory", str(job)],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
            check=False,
        )
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return MemoryResult({}, METHOD_HWM, error=lines[-1] if lines else f"exit code {done.returncode}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return MemoryResult(found["peaks_mb"], found["method"])


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    system = build_system(SystemSpec(**job["spec"]))
    resettable = _can_reset()
    peaks = {}
    for case in job["cases"]:
        data = json.loads(Path(case["file"]).read_text(encoding="utf-8"))
        system.run(data["warmup"])
        if resettable:
            CLEAR_REFS.write_text("5")  # high-water mark := current RSS
        system.run(data["inputs"])
        peaks[case["name"]] = _peak_mb(resettable)
    print(json.dumps({"peaks_mb": peaks, "method": METHOD_HWM if resettable else METHOD_MAXRSS}))


def _can_reset() -> bool:
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return STATUS.is_file()


def _peak_mb(resettable: bool) -> float:
    if resettable:
        line = next(line for line in STATUS.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024  # kB
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, kB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20


if __name__ == "__main__":
    main(sys.argv[1])
