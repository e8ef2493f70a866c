"""Bulk jobs end to end: `bertonnx embed` lines/s and peak memory per format, beside the library in memory.

One run, one machine, one backend:
    * library: `Embedder.contextual_rows` (or `sentences`, `static`) on all N lines
      in one call, in a fresh process: the engine's own speed, the reference
      the CLI is held to;
    * baseline: the CLI on 200 lines into .npy: the runtime's own peak memory;
    * the CLI on N lines into every format (and stdout): lines/s of the job
      (its own summary line, model loading excluded), wall time, peak RSS.

Each command runs in a fresh process started by a small Python parent, whose
getrusage(RUSAGE_CHILDREN) gives the child's peak RSS. Ratios are within one
run; the machine is recorded with them.

    python -m bertonnx.benchmarks.bulk BUNDLE [--lines 20000] [--modes contextual] [--formats all] \
        [--backend auto --precision auto --threads N] [--in-process] [--out DIR]

--in-process adds, for each text format (.jsonl, .txt), a row of the same job with its rows encoded in the
job's own process (BERTONNX_ENCODE_WORKERS=0), the way text was written before encoding workers.

Writes DIR/bulk.json and DIR/bulk.md; prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bertonnx.benchmarks.machine import describe_machine
from bertonnx.benchmarks.workloads import Vocabulary
from bertonnx.bundle import load_bundle
from bertonnx.tokenize import Tokenizer

FORMATS = ("npy", "npz", "jsonl", "txt", "bin", "stdout")
MODES = ("static", "contextual", "sentences")
BASELINE_LINES = 200

_MEASURE = """
import resource, subprocess, sys
with open(sys.argv[1], "wb") as sink:
    done = subprocess.run(sys.argv[2:], stdout=sink, stderr=subprocess.PIPE)
sys.stderr.buffer.write(done.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(done.returncode)
"""

_LIBRARY = """
import json, sys, time
from bertonnx import Embedder
bundle, path, mode, backend, precision, threads = sys.argv[1:7]
emb = Embedder.load(bundle, backend=backend, precision=precision, threads=int(threads) if threads != "-" else None)
lines = open(path, encoding="utf-8").read().splitlines()
run = {"contextual": lambda texts: emb.contextual_rows(texts), "sentences": lambda texts: emb.sentences(texts),
       "static": lambda texts: emb.static(texts)}[mode]
run(lines[:256])
started = time.perf_counter()
run(lines)
print(json.dumps({"seconds": time.perf_counter() - started, "runtime": emb.runtime()}, default=str))
"""


@dataclass(frozen=True)
class Row:
    mode: str
    target: str  # a format, "stdout", "library (in memory)" or "baseline"
    lines: int
    lines_per_second: float
    wall_seconds: float
    peak_mb: float
    output_mb: float | None


def measure(command: list[str], stdout: Path, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stderr) of `command` in a fresh process, its stdout into `stdout`.

    Peak RSS is the largest single process's in the tree (getrusage's children): the job's, as its encoding
    workers are smaller (about 40 MB each at rest)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(stdout), *command], capture_output=True, text=True,
                          env=None if env is None else {**os.environ, **env})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    return wall, int(done.stdout.split()[-1]) / 1024, done.stderr


def job_rate(stderr: str) -> float:
    """The job's own lines/s, from the CLI's summary line."""
    found = re.findall(r"([\d,.]+) lines/s\)", stderr)
    if not found:
        raise RuntimeError(f"no lines/s in the summary: {stderr[-500:]}")
    return float(found[-1].replace(",", ""))


def write_inputs(bundle: Path, lines: int, folder: Path, seed: int = 0) -> dict[str, Path]:
    """Mixed-length sentences (median 18 words) for contextual and sentences, Zipf words for static."""
    loaded = load_bundle(bundle, verify=False)
    tokenizer = Tokenizer.from_file(loaded.tokenizer_path, loaded.max_length)
    words = Vocabulary.of(tokenizer)
    texts = words.corpus(lines, np.random.default_rng([seed, 1]), tokenizer)
    drawn = words.draw(lines, np.random.default_rng([seed, 2]))
    paths = {"texts": folder / "texts.txt", "words": folder / "words.txt"}
    paths["texts"].write_text("\n".join(texts) + "\n", encoding="utf-8")
    paths["words"].write_text("\n".join(drawn) + "\n", encoding="utf-8")
    for name in ("texts", "words"):
        small = folder / f"{name}-{BASELINE_LINES}.txt"
        small.write_text("".join(paths[name].read_text(encoding="utf-8").splitlines(True)[:BASELINE_LINES]))
        paths[f"{name}-small"] = small
    return paths


TEXT_FORMATS = ("jsonl", "txt")
IN_PROCESS = {"BERTONNX_ENCODE_WORKERS": "0"}


def bench(bundle: Path, lines: int, modes: list[str], formats: list[str], load: list[str], folder: Path,
          in_process: bool = False) -> list[Row]:
    cli = [sys.executable, "-c", "from bertonnx.cli.app import main; main()"]
    inputs = write_inputs(bundle, lines, folder)
    backend, precision, threads = load[1], load[3], (load[5] if len(load) > 5 else "-")
    rows: list[Row] = []
    for mode in modes:
        source = inputs["words" if mode == "static" else "texts"]
        done = subprocess.run([sys.executable, "-c", _LIBRARY, str(bundle), str(source), mode, backend, precision,
                               threads], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        seconds = json.loads(done.stdout.splitlines()[-1])["seconds"]
        rows.append(Row(mode, "library (in memory)", lines, lines / seconds, seconds, float("nan"), None))
        small = inputs["words-small" if mode == "static" else "texts-small"]
        out = folder / f"baseline-{mode}.npy"
        wall, peak, _ = measure([*cli, "embed", str(bundle), f"--{mode}", "-i", str(small), "-o", str(out),
                                 "--force", *load], folder / "stdout")
        rows.append(Row(mode, "baseline (200 lines, .npy)", BASELINE_LINES, float("nan"), wall, peak, None))
        runs = [(fmt, fmt, None) for fmt in formats]
        if in_process:
            runs += [(fmt, f"{fmt} (encoded in-process)", IN_PROCESS) for fmt in formats if fmt in TEXT_FORMATS]
        for fmt, label, env in runs:
            target = [] if fmt == "stdout" else ["-o", str(folder / f"out-{mode}.{fmt}"), "--force"]
            stdout = folder / f"stdout-{mode}.jsonl"
            wall, peak, stderr = measure([*cli, "embed", str(bundle), f"--{mode}", "-i", str(source), *target, *load],
                                         stdout, env)
            written = stdout if fmt == "stdout" else folder / f"out-{mode}.{fmt}"
            size = sum(path.stat().st_size for path in written.parent.glob(f"{written.stem}*") if path.is_file())
            rows.append(Row(mode, label, lines, job_rate(stderr), wall, peak, size / 1e6))
            for path in folder.glob(f"out-{mode}*"):
                path.unlink()
            stdout.unlink(missing_ok=True)
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| mode | output | lines/s | × library | × .npy | wall s | peak RSS MB | over baseline MB | output MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        library = next(r for r in rows if r.mode == row.mode and r.target.startswith("library"))
        npy = next((r for r in rows if r.mode == row.mode and r.target == "npy"), None)
        baseline = next(r for r in rows if r.mode == row.mode and r.target.startswith("baseline"))
        rate = "" if np.isnan(row.lines_per_second) else f"{row.lines_per_second:,.0f}"
        vs_library = "" if np.isnan(row.lines_per_second) else f"{row.lines_per_second / library.lines_per_second:.2f}"
        vs_npy = f"{row.lines_per_second / npy.lines_per_second:.2f}" if npy and row.output_mb is not None else ""
        peak = "" if np.isnan(row.peak_mb) else f"{row.peak_mb:,.0f}"
        over = f"{row.peak_mb - baseline.peak_mb:+,.0f}" if row.output_mb is not None else ""
        size = "" if row.output_mb is None else f"{row.output_mb:,.0f}"
        lines.append(f"| {row.mode} | {row.target} | {rate} | {vs_library} | {vs_npy} | {row.wall_seconds:.1f} | "
                     f"{peak} | {over} | {size} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--modes", default="contextual", help=f"comma-separated: {', '.join(MODES)}")
    parser.add_argument("--formats", default="all", help=f"comma-separated: {', '.join(FORMATS)}, or all")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--in-process", action="store_true",
                        help="also run each text format with its rows encoded in the job's own process")
    parser.add_argument("--out", type=Path, default=Path("bench-bulk"))
    args = parser.parse_args(argv)
    modes = [mode for mode in args.modes.split(",") if mode]
    formats = list(FORMATS) if args.formats == "all" else [fmt for fmt in args.formats.split(",") if fmt]
    load = ["--backend", args.backend, "--precision", args.precision]
    if args.threads is not None:
        load += ["--threads", str(args.threads)]
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="bertonnx-bulk-") as work:
        rows = bench(args.bundle, args.lines, modes, formats, load, Path(work), args.in_process)
    args.out.mkdir(parents=True, exist_ok=True)
    heading = (f"{machine.cpu} ({', '.join(machine.flags) or 'no AVX-512'}), {machine.cores} cores; "
               f"{args.lines:,} lines; {' '.join(load)}")
    text = f"{heading}\n\n{table(rows)}\n"
    (args.out / "bulk.md").write_text(text, encoding="utf-8")
    (args.out / "bulk.json").write_text(json.dumps({"machine": machine.to_dict(), "lines": args.lines,
                                                    "load": load, "rows": [asdict(row) for row in rows]},
                                                   indent=2, default=str), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
