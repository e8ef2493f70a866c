"""The at-scale run: a job watched from outside (memory against lines), coverage from its counts, the sample
ratio, and the whole run on the tiny model through the real CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bertonnx import Embedder
from bertonnx.benchmarks.type_level import vocabulary_words
from bertonnx.benchmarks.type_level_scale import (
    checkpoint_coverage,
    coverage,
    frequent_words,
    main,
    sample_ratio,
    watch,
)
from bertonnx.io.checkpoints import partial_dir
from bertonnx.type_level.matching import Vocabulary

GROW = """
import sys, time
sys.stderr.write("type-level: corpus: 1,024 lines, 10% of the input\\n"); sys.stderr.flush()
time.sleep(0.6)
held = bytearray(b"x" * 80_000_000)
time.sleep(0.6)
sys.stderr.write("type-level: corpus: 2,048 lines, 20% of the input\\ndone\\n"); sys.stderr.flush()
time.sleep(0.6)
"""


def test_watch_sees_memory_against_the_lines_reported(tmp_path: Path) -> None:
    run = watch([sys.executable, "-c", GROW], tmp_path / "job.log", every=0.1)
    assert run.returncode == 0 and run.summary.endswith("done")
    assert {s.lines for s in run.samples} >= {1024, 2048}
    early = min(s.hwm_mb for s in run.samples if s.lines == 1024)
    late = min(s.hwm_mb for s in run.samples if s.lines == 2048)
    assert late >= early + 60 and run.peak_mb >= late  # the 80 MB held between the two reports
    assert all(a.seconds < b.seconds for a, b in zip(run.samples, run.samples[1:]))


def test_watch_interrupts_a_job_as_ctrl_c_does(tmp_path: Path) -> None:
    waits = "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('kept', flush=True)\n" \
            "    import sys; sys.stderr.write('interrupted\\n'); raise SystemExit(130)"
    run = watch([sys.executable, "-c", waits], tmp_path / "job.log", every=0.1, stop_after=1.0)
    assert run.returncode == 130 and run.summary == "interrupted" and run.wall_seconds < 30


def test_checkpoint_coverage_reads_counts_by_slot(tiny: Embedder, tmp_path: Path) -> None:
    words = vocabulary_words(tiny, 0, compounds=False)[:5]
    slots = Vocabulary.of(tiny.tokenizer, words).slot
    counts = np.zeros(int(slots.max()) + 1, dtype=np.int64)
    counts[slots] = [0, 3, 100, 12, 1]
    work = partial_dir(tmp_path / "vectors.npz")
    work.mkdir()
    np.save(work / "counts.npy", counts)
    (work / "state.json").write_text(json.dumps({"position": {"lines_total": 4096}}), encoding="utf-8")
    found = checkpoint_coverage(tmp_path / "vectors.npz", tiny, words)
    assert found == {"words": 5, ">=1": 4, ">=10": 2, ">=100": 1, "corpus_lines": 4096}
    assert checkpoint_coverage(tmp_path / "vectors.npz", tiny, words, {words[2]})[">=100"] == 1


def test_coverage_counts_corpus_contexts_only(tmp_path: Path) -> None:
    counts = tmp_path / "v.counts.tsv"
    counts.write_text("# bertonnx type-level: method=corpus\nword\tcontexts\tsource\nthe\t100\tcorpus\n"
                      "of\t12\tcorpus\nrare\t1\tcorpus\nnever\t6\ttemplates\nword\t3\tcorpus\n", encoding="utf-8")
    assert coverage(counts) == {"words": 5, ">=1": 4, ">=10": 2, ">=100": 1}
    assert coverage(counts, {"rare", "never"}) == {"words": 2, ">=1": 1, ">=10": 0, ">=100": 0}


def _corpus(embedder: Embedder, path: Path, lines: int) -> list[str]:
    words = vocabulary_words(embedder, 0, compounds=False)
    texts = [" ".join(words[(i * 7 + k) % len(words)] for k in range(9)) for i in range(lines)]
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return words


def test_sample_ratio_times_both_passes_on_the_same_lines(tiny: Embedder, tmp_path: Path) -> None:
    words = _corpus(tiny, tmp_path / "c.txt", 40)
    found = sample_ratio(tiny, tmp_path / "c.txt", words[:10], 30)
    assert found["lines"] == 30 and found["contexts"] > 0
    assert found["ratio"] == pytest.approx(found["corpus_lines_per_s"] / found["contextual_lines_per_s"])


def test_the_whole_run_on_the_tiny_model(tiny: Embedder, tiny_bundle: Path, tmp_path: Path) -> None:
    _corpus(tiny, tmp_path / "c.txt", 60)
    main([str(tiny_bundle), str(tmp_path / "c.txt"), "--words", "12", "--sample", "20", "--every", "0.2",
          "--out", str(tmp_path / "out"), "--", "--max-contexts", "3"])
    record = json.loads((tmp_path / "out" / "scale.json").read_text())
    assert record["corpus_lines"] == 60 and record["job"]["returncode"] == 0
    assert record["coverage"]["words"] == 12 and record["coverage"][">=1"] > 0 and record["coverage"][">=100"] == 0
    assert record["job"]["peak_mb"] > 50 and record["sample"]["lines"] == 20
    assert "--max-contexts" in record["job"]["command"] and record["finished"]
    table = (tmp_path / "out" / "scale.md").read_text(encoding="utf-8")
    assert "| 60 |" in table and "finished" in table and "12 (all)" in table


def test_frequent_words_come_from_the_corpus_by_count(tiny: Embedder, tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("Apple apple, pear.\napple pear fig 42\n", encoding="utf-8")
    assert frequent_words(tiny, corpus, 2) == ["apple", "pear"]
    assert frequent_words(tiny, corpus, 9, lines=1) == ["apple", "pear"]
