"""The type-level corpus pass at scale, as a user runs it: `python -m bertonnx.benchmarks.type_level_scale`.

    python -m bertonnx.benchmarks.corpus CORPUS --lines 1000000 --packages numpy,sympy,torch,transformers
    python -m bertonnx.benchmarks.type_level_scale BUNDLE CORPUS [--words 30000] [--sample 2000] \
        [--frequent] [--out DIR] [-- EXTRA EMBED OPTIONS]

One `bertonnx embed BUNDLE --type-level -i VOCAB --corpus CORPUS -o OUT.npz` job in a fresh process (the
product's own bulk job: its checkpoints, its streaming), watched from outside: its resident memory
(VmRSS, and the high-water mark VmHWM) read from /proc every few seconds beside the corpus lines the job
had reported by then, so memory is seen against the lines read within one run. After it: wall time,
the job's own lines/s, peak RSS, and from its counts .tsv how many vocabulary words reached 1, 10 and
100 contexts (all words, and the bundle's whole-word entries alone).

The vocabulary is benchmarks/type_level.py's: the bundle's whole-word entries, then word+suffix compounds
to --words (the compounds never occur in text, so that pass never ends early: every line is read); or, with
--frequent, the corpus's own --words most frequent words, which it can fill, so the pass can stop early.

Beside it, in this process, the corpus pass against `Embedder.contextual_rows` on the corpus's first
--sample lines, slice by slice, interleaved (which goes first alternates): the speed ratio on the same lines.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from bertonnx.benchmarks.machine import describe_machine
from bertonnx.benchmarks.type_level import vocabulary_words
from bertonnx.embedder import Embedder
from bertonnx.io.checkpoints import partial_dir
from bertonnx.type_level.contexts import DEFAULT_CONTEXT
from bertonnx.type_level.matching import Vocabulary
from bertonnx.type_level.vectors import TypeSums

THRESHOLDS = (1, 10, 100)
SLICE = 512  # lines per call in the sample, as the bulk path's slices
_PROGRESS = re.compile(r"corpus: ([\d,]+) lines")
_RATE = re.compile(r"corpus: [\d,]+ lines, [^\n]*?([\d,.]+) lines/s")
_TOOK = re.compile(r"([\d,.]+) s\)\s*$")
_READ = re.compile(r"\(([\d,]+) corpus lines")
_CLI = [sys.executable, "-c", "from bertonnx.cli.app import main; main()"]


@dataclass(frozen=True)
class Sample:
    """One look at the running job: seconds since start, corpus lines it had reported, memory in MB."""

    seconds: float
    lines: int
    rss_mb: float
    hwm_mb: float


@dataclass
class JobRun:
    """The watched job: what ran, how long, its peak, its own summary, and the samples."""

    command: list[str]
    wall_seconds: float
    peak_mb: float  # the job's VmHWM at its last sample, else the largest seen
    returncode: int
    summary: str  # the job's last stderr lines
    samples: list[Sample] = field(default_factory=list)


def watch(command: list[str], log: Path, every: float = 5.0, stop_after: float | None = None) -> JobRun:
    """Run `command` with its stderr into `log`, reading its memory from /proc every `every` seconds; after
    `stop_after` seconds, interrupt it as Ctrl-C does (it keeps its last checkpoint)."""
    started = time.monotonic()
    samples: list[Sample] = []
    with log.open("w", encoding="utf-8") as sink:
        job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink)
        status = Path(f"/proc/{job.pid}/status")
        interrupted = False
        while job.poll() is None:
            memory = _memory(status)
            if memory is not None:
                samples.append(Sample(time.monotonic() - started, _lines_reported(log), *memory))
            if stop_after is not None and not interrupted and time.monotonic() - started > stop_after:
                job.send_signal(signal.SIGINT)
                interrupted = True
            time.sleep(every)
    wall = time.monotonic() - started
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-6:]
    peak = max((s.hwm_mb for s in samples), default=float("nan"))
    return JobRun(command, wall, peak, job.returncode, "\n".join(tail), samples)


def _memory(status: Path) -> tuple[float, float] | None:
    try:
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
    except (FileNotFoundError, ProcessLookupError):
        return None
    if "VmRSS" not in fields or "VmHWM" not in fields:
        return None  # a zombie between exit and wait
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _lines_reported(log: Path) -> int:
    found = _PROGRESS.findall(log.read_text(encoding="utf-8", errors="replace"))
    return int(found[-1].replace(",", "")) if found else 0


def coverage(counts_tsv: Path, words: set[str] | None = None) -> dict[str, int]:
    """How many words (of `words`, or all) the counts file gives at least 1, 10 and 100 corpus contexts."""
    counts = []
    for line in counts_tsv.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or line == "word\tcontexts\tsource":  # the header, not the entry "word"
            continue
        word, contexts, source = line.split("\t")
        if words is None or word in words:
            counts.append(int(contexts) if source == "corpus" else 0)
    return {"words": len(counts), **{f">={n}": sum(c >= n for c in counts) for n in THRESHOLDS}}


def frequent_words(embedder: Embedder, corpus: Path, count: int, lines: int = 100_000) -> list[str]:
    """The `count` most frequent alphabetic words of the corpus's first `lines` lines, split and normalised as
    the model does: a vocabulary every word of which the corpus can fill."""
    backend = embedder.tokenizer.backend
    found: Counter[str] = Counter()
    with corpus.open(encoding="utf-8") as stream:
        for line in islice(stream, lines):
            normal = backend.normalizer.normalize_str(line) if backend.normalizer else line
            found.update(w for w, _ in backend.pre_tokenizer.pre_tokenize_str(normal) if w.isalpha())
    return [word for word, _ in found.most_common(count)]


def checkpoint_coverage(output: Path, embedder: Embedder, words: list[str],
                        only: set[str] | None = None) -> dict[str, int]:
    """As `coverage`, from an interrupted job's last checkpoint (its per-word counts, and the corpus lines it
    had read then)."""
    work = partial_dir(output)
    counts = np.load(work / "counts.npy")[Vocabulary.of(embedder.tokenizer, words).slot]
    kept = [int(c) for word, c in zip(words, counts) if only is None or word in only]
    position = json.loads((work / "state.json").read_text(encoding="utf-8"))["position"]
    return {"words": len(kept), **{f">={n}": sum(c >= n for c in kept) for n in THRESHOLDS},
            "corpus_lines": int(position["lines_total"])}


def sample_ratio(embedder: Embedder, corpus: Path, words: list[str], lines: int,
                 context: str = DEFAULT_CONTEXT) -> dict[str, float]:
    """The corpus pass under `context` (every line holding a vocabulary word reaches the model: no word is ever
    full) and `contextual_rows` on the corpus's first `lines` lines, slice by slice, interleaved."""
    with corpus.open(encoding="utf-8") as stream:
        texts = [line.rstrip("\n") for line in islice(stream, lines)]
    sums = TypeSums(embedder.runner, Vocabulary.of(embedder.tokenizer, words), max_contexts=10**9, context=context)
    # Warm-up, untimed: both paths once on the first slice (a cold first pass ran 0.82x where warm ones ran 0.94x)
    TypeSums(embedder.runner, sums.vocabulary, max_contexts=10**9, context=context).add_corpus(texts[:SLICE])
    embedder.contextual_rows(texts[:SLICE])
    corpus_s = contextual_s = 0.0
    for index, start in enumerate(range(0, len(texts), SLICE)):
        part = texts[start : start + SLICE]
        for which in ((0, 1) if index % 2 == 0 else (1, 0)):
            began = time.perf_counter()
            if which == 0:
                sums.add_corpus(part)
            else:
                embedder.contextual_rows(part)
            spent = time.perf_counter() - began
            corpus_s, contextual_s = (corpus_s + spent, contextual_s) if which == 0 else (corpus_s,
                                                                                         contextual_s + spent)
    return {"lines": len(texts), "corpus_lines_per_s": len(texts) / corpus_s,
            "contextual_lines_per_s": len(texts) / contextual_s, "ratio": contextual_s / corpus_s,
            "contexts": int(sums.counts.sum())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--words", type=int, default=30_000)
    parser.add_argument("--frequent", action="store_true",
                        help="the vocabulary: the corpus's --words most frequent words, instead of the bundle's")
    parser.add_argument("--sample", type=int, default=2_000, help="lines of the interleaved speed ratio (0: none)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--stop-after", type=float, default=None,
                        help="seconds after which the job is interrupted (Ctrl-C); coverage then comes from its "
                             "last checkpoint")
    parser.add_argument("--out", type=Path, default=Path("type-level-scale"))
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:cut]), argv[cut + 1 :]  # after --: more `bertonnx embed` options
    args.out.mkdir(parents=True, exist_ok=True)
    embedder = Embedder.load(args.bundle)
    words = frequent_words(embedder, args.corpus, args.words) if args.frequent else vocabulary_words(
        embedder, args.words)
    whole = set(vocabulary_words(embedder, 0, compounds=False))
    vocab = args.out / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n", encoding="utf-8")
    context = extra[extra.index("--context") + 1] if "--context" in extra[:-1] else DEFAULT_CONTEXT
    ratio = sample_ratio(embedder, args.corpus, words, args.sample, context) if args.sample else None
    print(f"sample: {json.dumps(ratio)}", file=sys.stderr)
    output = args.out / "vectors.npz"
    command = [*_CLI, "embed", str(args.bundle), "--type-level", "-i", str(vocab), "--corpus", str(args.corpus),
               "-o", str(output), "--unknown", "unk", "--force", *extra]
    run = watch(command, args.out / "job.log", args.every, args.stop_after)
    counts = output.with_name("vectors.counts.tsv")
    finished = run.returncode == 0
    record = {
        "schema": "bertonnx-type-level-scale/1", "machine": describe_machine().to_dict(),
        "corpus": str(args.corpus), "corpus_lines": sum(1 for _ in args.corpus.open("rb")),
        "job": asdict(run), "sample": ratio, "sample_context": context,
        "finished": finished,
        "coverage": coverage(counts) if finished else checkpoint_coverage(output, embedder, words),
        "coverage_whole_words": coverage(counts, whole) if finished else checkpoint_coverage(
            output, embedder, words, whole),
    }
    (args.out / "scale.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    md = markdown(record)
    (args.out / "scale.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))


def markdown(record: dict[str, Any], marks: tuple[int, ...] = (10_000, 50_000, 100_000, 200_000, 500_000)) -> list[str]:
    """scale.md: the run in one row, memory against the lines read, and the sample's ratio."""
    job, found, whole = record["job"], record["coverage"], record["coverage_whole_words"]
    samples = job["samples"]
    read = _READ.findall(job["summary"])
    lines = found.get("corpus_lines") or (int(read[-1].replace(",", "")) if read else 0)
    took = [float(found_s.replace(",", "")) for found_s in _TOOK.findall(job["summary"])]  # the job's own seconds
    # a job too short for its summary to show its seconds (0 s) gives its own lines/s, or none
    rate = [f"{lines / took[-1]:,.0f}"] if took and took[-1] > 0 and lines else _RATE.findall(job["summary"])
    md = ["| corpus lines read | wall s | lines/s (job) | peak RSS MB | ended | words | ≥ 1 | ≥ 10 | ≥ 100 |",
          "|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    ended = "finished" if record.get("finished", job["returncode"] == 0) else "interrupted"
    if "reached" in job["summary"]:
        ended += ", every word full: stopped early"
    for label, cover in (("all", found), ("whole-word entries", whole)):
        md.append(f"| {lines:,} | {job['wall_seconds']:,.0f} | {rate[-1] if rate else ''} | {job['peak_mb']:,.0f} | "
                  f"{ended} | {cover['words']:,} ({label}) | {cover['>=1']:,} | {cover['>=10']:,} | "
                  f"{cover['>=100']:,} |")
    reached = samples[-1]["lines"] if samples else 0
    rows = [next(s for s in samples if s["lines"] >= mark) for mark in marks if reached >= mark]
    if rows:
        md += ["", "| corpus lines reported | seconds | RSS MB | peak so far MB |", "|---:|---:|---:|---:|"]
        md += [f"| {s['lines']:,} | {s['seconds']:,.0f} | {s['rss_mb']:,.0f} | {s['hwm_mb']:,.0f} |" for s in rows]
    sample = record.get("sample")
    if sample:
        md += ["", f"Sample, the corpus's first {sample['lines']:,} lines, interleaved: corpus pass "
                   f"({record.get('sample_context', 'line')} contexts) {sample['corpus_lines_per_s']:,.1f} lines/s, "
                   f"`contextual_rows` {sample['contextual_lines_per_s']:,.1f} lines/s: {sample['ratio']:.2f}×."]
    return md


if __name__ == "__main__":
    main()
