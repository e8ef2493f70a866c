"""Issue 26 for type-level jobs: an interrupt that kept nothing leaves nothing; checkpoints by time as well as by
lines, in both passes, with resumed outputs byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertonnx import Embedder
from bertonnx.io.checkpoints import partial_dir
from bertonnx.jobs import lines as lines_module
from bertonnx.type_level import job as job_module
from bertonnx.type_level import vectors as vectors_module
from bertonnx.type_level.job import TypeLevelJob
from bertonnx.type_level.vectors import TypeLevelOptions

VOCAB = ["king", "queen", "apple", "zebra", "music"]
NEVER = 10**9  # lines between checkpoints out of reach: only time makes one


class Stop(Exception):
    pass


@pytest.fixture()
def vocab(tmp_path: Path) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    words = "the a king queen apple music band kingdom is wise and of rule every day friends".split()
    rng = np.random.default_rng(0)
    path = tmp_path / "corpus.txt"
    path.write_text("".join(" ".join(rng.choice(words, size=int(rng.integers(3, 14)))) + "\n" for _ in range(300)),
                    encoding="utf-8")
    return path


def interrupt(*args: object) -> None:
    raise KeyboardInterrupt


def saved_position(out: Path) -> dict[str, int]:
    return json.loads((partial_dir(out) / "state.json").read_text())["position"]


def test_an_interrupt_before_anything_is_kept_leaves_nothing_behind(
    embedder: Embedder, vocab: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.npy"
    job = TypeLevelJob(embedder, vocab, [], out, TypeLevelOptions()).open(False, False)
    job.sums.add_templates = interrupt  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        job.run()
    assert (job.kept_lines, job.kept_words) == (0, 0) and not partial_dir(out).exists()
    again = TypeLevelJob(embedder, vocab, [], out, TypeLevelOptions()).open(False, False)  # not refused
    assert again.run().words == len(VOCAB)


def test_an_interrupt_after_the_corpus_pass_keeps_its_lines(
    embedder: Embedder, vocab: Path, corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.npy"
    job = TypeLevelJob(embedder, vocab, [corpus], out, TypeLevelOptions(max_contexts=NEVER)).open(False, False)
    job.sums.add_templates = interrupt  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        job.run()
    assert job.kept_lines == 300 and saved_position(out)["lines_total"] == 300


def test_the_corpus_pass_checkpoints_by_time_too(
    embedder: Embedder, vocab: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lines_module, "SLICE_LINES", 32)
    options = TypeLevelOptions(max_contexts=NEVER, chunk_lines=NEVER)
    whole = tmp_path / "whole.npy"
    TypeLevelJob(embedder, vocab, [corpus], whole, options).open(False, False).run()

    def stop(what: str, done: int, total: int, lines: int) -> None:
        if lines >= 96:
            raise Stop

    out = tmp_path / "out.npy"
    with pytest.raises(Stop):
        TypeLevelJob(embedder, vocab, [corpus], out, options, checkpoint_seconds=0).open(False, False).run(stop)
    assert saved_position(out)["lines_total"] >= 64  # a checkpoint at a slice's end, by time alone
    resumed = TypeLevelJob(embedder, vocab, [corpus], out, options).open(resume=True, force=False)
    assert resumed.kept_lines >= 64
    resumed.run()
    assert out.read_bytes() == whole.read_bytes()


def test_the_templates_pass_checkpoints_by_time_on_a_grid_that_changes_no_byte(
    embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps of TEMPLATE_WORDS words (16 here) inside a chunk out of reach: a checkpoint by time after a step, and
    a resume from it batches the rest as an unbroken run does."""
    monkeypatch.setattr(job_module, "TEMPLATE_WORDS", 16)
    monkeypatch.setattr(vectors_module, "TEMPLATE_WORDS", 16)
    base = [f"{a}{b}" for a in "abcdefghij" for b in "klmnopqrst"]  # 100 words
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(base) + "\n", encoding="utf-8")
    options = TypeLevelOptions(chunk_lines=NEVER)
    whole = tmp_path / "whole.npz"
    TypeLevelJob(embedder, vocab, [], whole, options).open(False, False).run()
    heard: list[int] = []

    def stop(what: str, done: int, total: int, lines: int) -> None:
        heard.append(done)
        if done >= 32:
            raise Stop

    out = tmp_path / "out.npz"
    with pytest.raises(Stop):
        TypeLevelJob(embedder, vocab, [], out, options, checkpoint_seconds=0).open(False, False).run(stop)
    assert heard == [16, 32] and saved_position(out)["template_done"] == 32
    resumed = TypeLevelJob(embedder, vocab, [], out, options).open(resume=True, force=False)
    assert resumed.kept_words == 32
    resumed.run()
    assert out.read_bytes() == whole.read_bytes()
