"""Single-sentence latency with ONNX Runtime spin-waiting off and on: `python -m bertonnx.benchmarks.spin`.

    python -m bertonnx.benchmarks.spin [BUNDLE...] [--torch-model DIR] [--rounds 5] [--calls 300] [--threads N]

`bertonnx bench` interleaves its systems in one process, which is fair only
while no thread busy-waits: spinning ORT threads starve whatever runs next
(PyTorch's p50 went from 8.7 to 57-71 ms when tried). So here every
measurement runs in a fresh process of its own, as a server would have the
machine to itself: each bundle with spinning off (the default) and on
(`Embedder.load(spin=True)`, `bertonnx serve --spin`), and PyTorch eager
(whose OpenMP threads spin by default) as the reference. The processes
alternate for --rounds rounds; each reports the p50 of --calls calls of the
latency workload's sentence after a warm-up, and the median over rounds is kept.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bertonnx.benchmarks.workloads import SHORT_SENTENCE

console = Console()
CHILD = """
import json, sys, time, gc
kind, source, threads, spin, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
text, backend, precision = sys.argv[6], sys.argv[7], sys.argv[8]
if kind == "pytorch":
    from bertonnx.benchmarks.systems import SystemSpec, build_system
    system = build_system(SystemSpec("pytorch", "pytorch", "contextual", source, "cpu", threads))
    run = lambda: system.run([text])
else:
    from bertonnx.embedder import Embedder
    embedder = Embedder.load(source, backend=backend, precision=precision, threads=threads, spin=spin)
    run = lambda: embedder.contextual([text])
for _ in range(20):
    run()
gc.disable()
times = []
for _ in range(calls):
    started = time.perf_counter_ns()
    run()
    times.append(time.perf_counter_ns() - started)
times.sort()
print(json.dumps({"p50_ms": times[len(times) // 2] / 1e6}))
"""


def main(
    bundles: Annotated[list[Path], typer.Argument(help="Bundles to time")],
    torch_model: Annotated[Path, typer.Option(help="Hugging Face folder of the same weights")],
    rounds: Annotated[int, typer.Option(help="Alternating rounds; the median is kept")] = 5,
    calls: Annotated[int, typer.Option(help="Timed calls per process")] = 300,
    threads: Annotated[int, typer.Option(help="Threads for every system")] = 2,
    out: Annotated[Path, typer.Option(help="report.json and report.md go here")] = Path("benchmarks/results/spin"),
    backends: Annotated[
        str, typer.Option(help="Comma-separated: onnxruntime (spin off and on), or openvino:PRECISION")
    ] = "onnxruntime",
) -> None:
    """p50 latency of one short sentence, each system alone in its own process."""
    chosen = [entry.strip() for entry in backends.split(",") if entry.strip()]
    systems = [("pytorch", str(torch_model), False, "")] + [
        (f"bertonnx {bundle.name}", str(bundle), spin, entry)
        for bundle in bundles
        for entry in chosen
        for spin in ((False, True) if entry == "onnxruntime" else (False,))  # spinning is ONNX Runtime's
    ]
    found: dict[str, list[float]] = {_label(*system): [] for system in systems}
    for round_ in range(rounds):
        for kind, source, spin, entry in systems[round_ % len(systems):] + systems[: round_ % len(systems)]:
            backend, _, precision = (entry or "onnxruntime").partition(":")
            child = subprocess.run(
                [sys.executable, "-c", CHILD, "pytorch" if kind == "pytorch" else "bertonnx", source, str(threads),
                 "1" if spin else "0", str(calls), SHORT_SENTENCE, backend, precision or "auto"],
                capture_output=True, text=True, check=True,
            )
            p50 = json.loads(child.stdout.strip().splitlines()[-1])["p50_ms"]
            found[_label(kind, source, spin, entry)].append(p50)
            console.print(f"round {round_ + 1}: {_label(kind, source, spin, entry)} p50 {p50:.2f} ms")
            time.sleep(1)
    medians = {label: statistics.median(values) for label, values in found.items()}
    torch_p50 = medians[_label(*systems[0])]
    out.mkdir(parents=True, exist_ok=True)
    record = {"schema": "bertonnx-spin/1", "threads": threads, "calls": calls, "rounds": rounds,
              "text": SHORT_SENTENCE, "p50_ms": found, "median_p50_ms": medians}
    (out / "report.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    lines = ["| system | p50 ms (median of rounds) | × PyTorch |", "|---|---:|---:|"]
    lines += [f"| {label} | {value:.2f} | {value / torch_p50:.2f}× |" for label, value in medians.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    console.print("\n".join(lines))


def _label(kind: str, source: str, spin: bool, entry: str) -> str:
    if kind == "pytorch":
        return "pytorch eager"
    return f"{kind} {entry.replace(':', ' ')}" + (f" spin {'on' if spin else 'off'}" if entry == "onnxruntime" else "")


if __name__ == "__main__":
    typer.run(main)
