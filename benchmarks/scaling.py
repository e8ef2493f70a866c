"""Bulk throughput on Ray Data against one process: `python -m bertonnx.benchmarks.scaling`.

    python -m bertonnx.benchmarks.scaling [BUNDLE] [--texts 6000] [--repeat 3] [--out benchmarks/results/scaling]

What it answers: how `bertonnx embed-distributed` scales with workers, next to
`bertonnx embed` on the same machine, so that a cluster's throughput can be
estimated as workers x per-worker throughput.

Method:
    * one corpus of sentences (the benchmark corpus: log-normal word counts,
      Zipf words, some split into pieces; fixed seed), written to a file;
      contextual mode, one row per word;
    * configurations: `bertonnx embed` (embed_file) with 1 and with all
      threads, and embed_files on a local Ray with workers x threads =
      1x1, 1xN, Nx1 (N = the CPUs), all with the same --batch-size;
    * Ray starts once, before any timing, and one untimed job warms it; a
      distributed figure is embed_files' own wall time: from the first row
      asked for to the manifest written (reading, embedding, writing shards);
    * configurations run in rotation, and a run counts only if processes
      outside this benchmark's process tree (Ray's workers are in it) took
      under 5 % of the CPUs meanwhile; before each run it waits for a quiet
      moment. The median of the kept runs is reported;
    * the outputs are compared: the distributed rows must equal `bertonnx
      embed`'s, key for key and bit for bit.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console

from bertonnx.benchmarks.machine import cpu_times, describe_machine
from bertonnx.benchmarks.workloads import Vocabulary
from bertonnx.defaults import resolve_bundle
from bertonnx.embedder import Embedder
from bertonnx.io.formats import read_vectors
from bertonnx.jobs.bulk import BulkOptions, embed_file
from bertonnx.jobs.ray import DEFAULT_BATCH_LINES, Workers, embed_files, plan_inputs, read_output

console = Console()
QUIET = 0.03  # others' CPU share under which the machine counts as quiet before a run
KEEP = 0.05  # others' CPU share above which a run is dropped
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Config:
    name: str  # as the README's table says it
    workers: int  # 0: one process, no Ray
    threads: int


@dataclass
class Result:
    config: Config
    rows: int
    runs: list[float]  # rows/s of each kept run
    dropped: int  # runs taken while other processes were busy

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")


def configs(cpus: int) -> list[Config]:
    found = [
        Config("bertonnx embed --threads 1", 0, 1),
        Config(f"bertonnx embed (--threads {cpus})", 0, cpus),
        Config("embed-distributed --num-workers 1 --threads 1", 1, 1),
        Config(f"embed-distributed --num-workers 1 --threads {cpus}", 1, cpus),
        Config(f"embed-distributed (default: {cpus} workers x 1 thread)", cpus, 1),
    ]
    return list({(c.workers, c.threads): c for c in found}.values())  # one CPU: no duplicates


def main(
    bundle: Annotated[str | None, typer.Argument(help="Bundle (default: the embedded default model's)")] = None,
    texts: Annotated[int, typer.Option(help="Sentences in the corpus")] = 6000,
    repeat: Annotated[int, typer.Option(help="Kept runs per configuration")] = 3,
    batch_size: Annotated[int, typer.Option(help="Lines per actor call")] = DEFAULT_BATCH_LINES,
    out: Annotated[Path, typer.Option(help="Where report.json and report.md go")] = Path("benchmarks/results/scaling"),
) -> None:
    """Rows/s of contextual bulk embedding: one process against 1 and N local Ray workers."""
    import ray

    path = resolve_bundle(bundle)
    cpus = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="bertonnx-scaling-"))
    corpus = write_corpus(path, texts, work / "corpus.txt")
    options = BulkOptions(mode="contextual")
    inputs = plan_inputs([corpus], block_lines=batch_size)
    loaded = {threads: Embedder.load(path, threads=threads) for threads in {1, cpus}}
    ray.init(address="local", num_cpus=cpus, logging_level=logging.WARNING)  # as `embed-distributed` starts it
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    embed_files(path, inputs, work / "warm", options, workers=Workers(1, 1), force=True)

    def job(config: Config) -> Callable[[], tuple[int, float]]:
        def single() -> tuple[int, float]:
            started = time.perf_counter()
            report = embed_file(loaded[config.threads], corpus, work / "single.npy", options)
            return report.rows, time.perf_counter() - started

        def distributed() -> tuple[int, float]:
            plan = Workers(config.workers, config.threads)
            report = embed_files(path, inputs, work / "ray", options, workers=plan, force=True)
            return report.rows, report.seconds

        return distributed if config.workers else single

    results = {config: Result(config, 0, [], 0) for config in configs(cpus)}
    for _round in range(repeat * 4):  # rounds over the configurations still short of runs
        pending = [result for result in results.values() if len(result.runs) < repeat]
        if not pending:
            break
        for result in pending:
            wait_quiet(cpus)
            (rows, seconds), others = others_share_during(job(result.config), cpus)
            kept = others < KEEP
            result.rows = rows
            if kept:
                result.runs.append(rows / seconds)
            else:
                result.dropped += 1
            console.print(
                f"{result.config.name}: {rows} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s, "
                f"others {others:.1%} {'kept' if kept else 'dropped'}"
            )
    identical = same_output(work / "single.npy", work / "ray")
    ray.shutdown()
    lines = sum(1 for _ in corpus.open("rb"))
    write_report(out, list(results.values()), identical, texts=lines, batch_size=batch_size, bundle=path,
                 ray=ray.__version__)
    console.print((out / "report.md").read_text())


def write_corpus(bundle: Path, texts: int, path: Path) -> Path:
    """The benchmark corpus, one sentence per line (seed 0)."""
    tokenizer = Embedder.load(bundle, threads=1).tokenizer
    sentences = Vocabulary.of(tokenizer).corpus(texts, np.random.default_rng(0), tokenizer)
    path.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    return path


def same_output(single: Path, distributed: Path) -> bool:
    keys, vectors = read_vectors(single)
    ray_keys, ray_vectors = read_output(distributed)
    return keys == ray_keys and np.array_equal(vectors, ray_vectors)


def write_report(out: Path, results: list[Result], identical: bool, **settings: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base = {(r.config.workers, r.config.threads): r.median for r in results}
    one_worker = base.get((1, 1), float("nan"))
    record = {
        "schema": "bertonnx-scaling/1",
        "machine": describe_machine().to_dict(),
        "settings": {key: str(value) for key, value in settings.items()},
        "identical_to_single_process": identical,
        "results": [{**asdict(r.config), "rows": r.rows, "runs": r.runs, "dropped": r.dropped,
                     "median_rows_per_s": r.median} for r in results],
    }
    (out / "report.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    rows = [
        f"| {r.config.name} | {r.median:,.0f} | {r.median / one_worker:.2f}x | "
        f"{', '.join(f'{run:,.0f}' for run in r.runs)} |"
        for r in results
    ]
    (out / "report.md").write_text(
        "| configuration | rows/s (median) | x one Ray worker | kept runs |\n|---|---:|---:|---|\n"
        + "\n".join(rows)
        + f"\n\nRows: {results[0].rows:,} word vectors from {settings['texts']} sentences; distributed output "
        + ("identical to" if identical else "DIFFERENT FROM")
        + " `bertonnx embed`'s.\n",
        encoding="utf-8",
    )


# -- how busy the rest of the machine is ---------------------------------------


def others_share_during(run: Callable[[], Any], cpus: int) -> tuple[Any, float]:
    """Run `run`, and the share of the CPUs that processes outside this process tree took meanwhile.

    The tree is sampled every 0.25 s, so Ray workers that exit before the end still count as ours.
    """
    start = _tree_cpu()
    seen = dict(start)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            seen.update(_tree_cpu())

    sampler = threading.Thread(target=sample, daemon=True)
    busy, wall = _machine_busy(), time.perf_counter()
    sampler.start()
    result = run()
    done.set()
    sampler.join()
    seen.update(_tree_cpu())
    busy, wall = _machine_busy() - busy, time.perf_counter() - wall
    ours = sum(value - start.get(pid, 0.0) for pid, value in seen.items())
    return result, max(0.0, busy - ours) / (cpus * wall)


def wait_quiet(cpus: int, limit: float = 3600) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        _, others = others_share_during(lambda: time.sleep(3), cpus)
        if others < QUIET:
            return
    raise SystemExit(f"the machine was never quiet (others < {QUIET:.0%}) in {limit:.0f} s")


def _machine_busy() -> float:
    """CPU seconds every CPU has been busy (Linux: this benchmark reads /proc)."""
    reading = cpu_times()
    if reading is None:
        raise SystemExit("bertonnx.benchmarks.scaling needs /proc (Linux) to tell whether the machine is quiet")
    return reading.machine


def _tree_cpu() -> dict[int, float]:
    """CPU seconds (user + system, reaped children included) of this process and all its descendants."""
    parents, used = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        used[int(entry)] = sum(int(x) for x in fields[11:15]) / TICKS
    mine, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, of in parents.items() if of == parent and pid not in mine]
        mine.update(children)
        frontier += children
    return {pid: used[pid] for pid in mine if pid in used}


if __name__ == "__main__":
    typer.run(main)
