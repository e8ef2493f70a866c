"""Issue 26: what an interrupted bulk job keeps, checkpoints by time as well as by lines, and the output's size
estimated before the job writes the rest."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.outputs import checkpoint_position, output_bytes, output_files

from bertonnx import Embedder
from bertonnx.errors import OutputError
from bertonnx.io.sinks import partial_dir
from bertonnx.jobs import lines as lines_module
from bertonnx.jobs.bulk import BulkOptions, FileJob, embed_file

WORDS = "the king queen man woman apple music rule kingdom wise kind great band unable embedding".split()


def corpus(lines: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return "".join(" ".join(rng.choice(WORDS, size=rng.integers(3, 30))) + "\n" for _ in range(lines))


class Stop(Exception):
    """Raised from a progress callback: the job stops as if killed after that slice."""


def raise_at(lines: int, error: type[BaseException]):  # noqa: ANN201
    def progress(done_bytes: int, done_lines: int) -> None:
        if done_lines >= lines:
            raise error

    return progress


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text(corpus(600), encoding="utf-8")
    return path


@pytest.fixture()
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lines_module, "SLICE_LINES", 32)


def test_an_interrupt_before_the_first_checkpoint_leaves_nothing_behind(
    tiny: Embedder, source: Path, tmp_path: Path, small_slices: None
) -> None:
    """The issue: Ctrl-C 20 s in, before the first checkpoint, left a work folder of 0 rows that refused the same
    command. Now nothing is left, and the same call simply runs again."""
    out = tmp_path / "out.npy"
    job = FileJob.open(tiny, source, out, BulkOptions(mode="contextual"))
    with pytest.raises(KeyboardInterrupt):
        job.run(progress=raise_at(100, KeyboardInterrupt))
    assert job.kept_lines == 0
    assert not partial_dir(out).exists() and not any(path.exists() for path in output_files(out))
    report = embed_file(tiny, source, out, BulkOptions(mode="contextual"))  # not refused as an unfinished job
    assert report.lines == 600 and report.resumed_lines == 0


def test_an_interrupt_after_a_checkpoint_keeps_it_and_counts_its_lines(
    tiny: Embedder, source: Path, tmp_path: Path, small_slices: None
) -> None:
    out = tmp_path / "out.npy"
    options = BulkOptions(mode="contextual", chunk_lines=100)
    job = FileJob.open(tiny, source, out, options)
    with pytest.raises(KeyboardInterrupt):
        job.run(progress=raise_at(300, KeyboardInterrupt))
    assert job.kept_lines == int(checkpoint_position(out)["lines"]) and 100 <= job.kept_lines < 600
    with pytest.raises(OutputError, match="unfinished job"):  # the work is kept: a new run must choose
        FileJob.open(tiny, source, out, options)
    assert embed_file(tiny, source, out, options, resume=True).resumed_lines == job.kept_lines


def test_an_interrupted_job_reading_stdin_keeps_nothing_as_it_cannot_resume(
    tiny: Embedder, tmp_path: Path, small_slices: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(corpus(600).encode())))
    out = tmp_path / "out.npy"
    job = FileJob.open(tiny, None, out, BulkOptions(mode="contextual", chunk_lines=50))
    with pytest.raises(KeyboardInterrupt):
        job.run(progress=raise_at(300, KeyboardInterrupt))
    assert job.kept_lines == 0 and not partial_dir(out).exists()


def test_any_other_failure_keeps_the_work_as_before(tiny: Embedder, source: Path, tmp_path: Path,
                                                    small_slices: None) -> None:
    """Only an interrupt gives work up: a failure of the disk or the caller keeps the folder for a resume."""
    out = tmp_path / "out.npy"
    with pytest.raises(Stop):
        embed_file(tiny, source, out, BulkOptions(mode="contextual"), progress=raise_at(100, Stop))
    assert (partial_dir(out) / "state.json").is_file()


def test_a_checkpoint_falls_by_time_as_well_as_by_lines_and_changes_no_byte(
    tiny: Embedder, source: Path, tmp_path: Path, small_slices: None
) -> None:
    """With lines between checkpoints out of reach, a checkpoint still falls at the first slice end once
    `checkpoint_seconds` have passed (0 here: every slice), and the resumed output is byte-identical."""
    options = BulkOptions(mode="contextual", chunk_lines=10**9)
    reference = tmp_path / "reference.npy"
    embed_file(tiny, source, reference, options)
    out = tmp_path / "out.npy"
    with pytest.raises(Stop):
        embed_file(tiny, source, out, options, progress=raise_at(100, Stop), checkpoint_seconds=0)
    kept = int(checkpoint_position(out).get("lines", 0))
    assert kept >= 96 and kept % 32 == 0  # at a slice's end
    with pytest.raises(Stop):  # by lines alone, none would fall: the kept work stays as it was
        embed_file(tiny, source, out, options, resume=True, progress=raise_at(kept + 100, Stop))
    assert int(checkpoint_position(out)["lines"]) == kept
    report = embed_file(tiny, source, out, options, resume=True, checkpoint_seconds=0.001)
    assert report.resumed_lines == kept
    assert output_bytes(out) == {name.replace("reference", "out"): data
                                 for name, data in output_bytes(reference).items()}


@pytest.mark.parametrize("mode,suffix", [("contextual", ".npy"), ("sentences", ".jsonl"), ("static", ".txt")])
def test_the_output_size_is_estimated_from_the_first_slice(
    tiny: Embedder, tmp_path: Path, mode: str, suffix: str
) -> None:
    source = tmp_path / "in.txt"
    text = corpus(3000)
    if mode == "static":
        text = "".join(line.split()[0] + "\n" for line in text.splitlines())
    source.write_text(text, encoding="utf-8")
    out = tmp_path / f"out{suffix}"
    heard: list[tuple[int, int]] = []
    FileJob.open(tiny, source, out, BulkOptions(mode=mode)).run(expected_size=lambda size, lines: heard.append(
        (size, lines)))
    assert len(heard) == 1 and heard[0][1] == 512  # once, after the first slice
    written = sum(path.stat().st_size for path in output_files(out))
    assert abs(heard[0][0] - written) < 0.1 * written, (heard, written)


def test_no_size_is_estimated_for_stdin(tiny: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"king\nqueen\n")))
    heard: list[int] = []
    FileJob.open(tiny, None, tmp_path / "out.npy", BulkOptions()).run(expected_size=lambda size, _: heard.append(size))
    assert heard == []
