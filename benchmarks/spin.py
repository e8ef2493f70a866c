"""Single-sentence latency, each system alone in a fresh process: `python -m bertonnx.benchmarks.spin`.

    python -m bertonnx.benchmarks.spin [BUNDLE...] --torch-model DIR [--backends auto,onnxruntime]
        [--peers] [--rounds 5] [--calls 300] [--threads N]

`bertonnx bench` interleaves its systems in one process; a system whose threads
spin on after a call (PyTorch's OpenMP pool) then slows whichever runs next,
and one short sentence is where that shows most. So here every measurement runs
in a fresh process of its own, as a server would have the machine to itself:
each bundle's backends (ONNX Runtime with spinning on, its default, and off),
PyTorch eager, and with --peers sentence-transformers on its ONNX Runtime and
OpenVINO backends (the peer a user picks with one argument). Every system makes
a sentence vector of the latency workload's sentence (bertonnx:
`Embedder.sentences`; sentence-transformers: `encode`). The processes alternate
for --rounds rounds; each reports the p50 of --calls calls after a warm-up, and
the median over rounds is kept.
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
if kind in ("pytorch", "st-onnx", "st-openvino"):
    from bertonnx.benchmarks.contract import SystemSpec
    from bertonnx.benchmarks.systems import build_system
    if kind == "pytorch":
        spec = SystemSpec("pytorch", "pytorch", "contextual", source, "cpu", threads)
    else:
        spec = SystemSpec("sentence-transformers", kind, "contextual", source, "cpu", threads, kind[3:])
    system = build_system(spec)
    run = lambda: system.run([text])
else:
    from bertonnx.embedder import Embedder
    embedder = Embedder.load(source, backend=backend, precision=precision, threads=threads, spin=spin)
    run = lambda: embedder.sentences([text])
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
        str, typer.Option(help="Comma-separated: auto, onnxruntime (spin on and off), or openvino:PRECISION")
    ] = "auto,onnxruntime",
    peers: Annotated[
        bool, typer.Option(help="Also time sentence-transformers' ONNX and OpenVINO backends (optimum-onnx, "
                           "optimum-intel)")
    ] = True,
) -> None:
    """p50 latency of one short sentence, each system alone in its own process."""
    chosen = [entry.strip() for entry in backends.split(",") if entry.strip()]
    systems = [("pytorch", str(torch_model), False, "")]
    if peers:
        systems += [("st-openvino", str(torch_model), False, ""), ("st-onnx", str(torch_model), False, "")]
    systems += [
        (f"bertonnx {bundle.name}", str(bundle), spin, entry)
        for bundle in bundles
        for entry in chosen
        for spin in ((True, False) if entry == "onnxruntime" else (True,))  # spinning is ONNX Runtime's
    ]
    found: dict[str, list[float]] = {_label(*system): [] for system in systems}
    for round_ in range(rounds):
        for kind, source, spin, entry in systems[round_ % len(systems):] + systems[: round_ % len(systems)]:
            backend, _, precision = (entry or "onnxruntime").partition(":")
            child = subprocess.run(
                [sys.executable, "-c", CHILD, kind if not kind.startswith("bertonnx") else "bertonnx", source,
                 str(threads),
                 "1" if spin else "0", str(calls), SHORT_SENTENCE, backend, precision or "auto"],
                capture_output=True, text=True, check=True,
            )
            p50 = json.loads(child.stdout.strip().splitlines()[-1])["p50_ms"]
            found[_label(kind, source, spin, entry)].append(p50)
            console.print(f"round {round_ + 1}: {_label(kind, source, spin, entry)} p50 {p50:.2f} ms")
            time.sleep(1)
    medians = {label: statistics.median(values) for label, values in found.items()}
    torch_p50 = medians[_label(*systems[0])]
    st_openvino = medians.get("ST openvino")
    out.mkdir(parents=True, exist_ok=True)
    record = {"schema": "bertonnx-spin/1", "threads": threads, "calls": calls, "rounds": rounds,
              "text": SHORT_SENTENCE, "p50_ms": found, "median_p50_ms": medians}
    (out / "report.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    from bertonnx.benchmarks.machine import describe_machine

    machine = describe_machine()
    lines = [f"{machine.cpu} (family {machine.family}), {threads} threads; SIMD: {', '.join(machine.flags)}", "",
             "| system | p50 ms (median of rounds) | p50 / PyTorch's | p50 / ST OpenVINO's |", "|---|---:|---:|---:|"]
    lines += [
        f"| {label} | {value:.2f} | {value / torch_p50:.2f}× | "
        + (f"{value / st_openvino:.2f}× |" if st_openvino else "– |")
        for label, value in medians.items()
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    console.print("\n".join(lines))


def _label(kind: str, source: str, spin: bool, entry: str) -> str:
    if kind == "pytorch":
        return "pytorch eager"
    if kind.startswith("st-"):
        return f"ST {kind[3:]}"
    return f"{kind} {entry.replace(':', ' ')}" + (f" spin {'on' if spin else 'off'}" if entry == "onnxruntime" else "")


if __name__ == "__main__":
    typer.run(main)
