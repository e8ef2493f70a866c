"""Bulk at any size: very long lines a group of windows at a time, resume that refuses any other setting,
no silent overwrite, unknown words flagged in every format with room, stdout that carries data alone,
and memory that does not grow with the input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import one_line_error, run
from helpers.memory import peak_rss_mb
from helpers.outputs import checkpoint_position

from bertonnx import Embedder
from bertonnx.io.formats import read_table, unknown_path
from bertonnx.io.sinks import partial_dir
from bertonnx.jobs import bulk
from bertonnx.jobs import rows as rows_module
from bertonnx.jobs.bulk import BulkOptions, Line, embed_file, embed_lines, job_fingerprint
from bertonnx.long_text import sentence_in_groups, word_rows_in_groups

CLI = [sys.executable, "-c", "from bertonnx.cli.app import main; main()"]
WORDS = "the king queen man woman apple music rule kingdom wise kind great band unable embedding".split()


def corpus(lines: int, seed: int = 0, words: tuple[int, int] = (3, 30)) -> str:
    rng = np.random.default_rng(seed)
    return "".join(" ".join(rng.choice(WORDS, size=rng.integers(*words))) + "\n" for _ in range(lines))


class Stop(Exception):
    """Raised from a progress callback: the job stops as if killed after that slice."""


def stop_at(lines: int):  # noqa: ANN201
    def progress(done_bytes: int, done_lines: int) -> None:
        if done_lines >= lines:
            raise Stop

    return progress


# -- very long lines ---------------------------------------------------------------------------------


def long_text(words: int, seed: int = 1) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS + ["embeddings", "unbelievably", "kingdoms"], size=words))


@pytest.mark.parametrize("pooling", ["mean", "first_last", "max"])
def test_a_long_text_in_groups_of_windows_equals_one_call(tiny: Embedder, pooling: str) -> None:
    text = tiny.prepare([long_text(900)]).pieces[0]
    whole = tiny.contextual_rows([long_text(900)], pooling=pooling)
    parts = [rows for rows, _ in word_rows_in_groups(tiny.runner, text, pooling, group=4)]
    assert len(parts) > 3  # several groups, so the carry between them is exercised
    assert sum(len(rows.words) for rows in parts) == len(whole.words)
    assert tuple(w for rows in parts for w in rows.words) == whole.words
    np.testing.assert_array_equal(np.concatenate([rows.word for rows in parts]), whole.word)
    np.testing.assert_array_equal(np.concatenate([rows.spans for rows in parts]), whole.spans)
    np.testing.assert_allclose(np.concatenate([rows.vectors for rows in parts]), whole.vectors, rtol=0, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_a_long_sentence_in_groups_of_windows_equals_one_call(tiny: Embedder, pooling: str) -> None:
    text = tiny.prepare([long_text(700)]).pieces[0]
    found = [vector for vector, _ in sentence_in_groups(tiny.runner, text, pooling, group=4)]
    assert all(vector is None for vector in found[:-1]) and len(found) > 2
    np.testing.assert_allclose(found[-1], tiny.sentences([long_text(700)], pooling=pooling)[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["contextual", "sentences"])
def test_bulk_streams_very_long_lines_with_the_same_rows(
    tiny: Embedder, mode: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    texts = ["the king", long_text(800), "a queen", long_text(300, seed=2)]
    lines = [Line(number, text, end_byte=0) for number, text in enumerate(texts, start=1)]
    options = BulkOptions(mode=mode)
    whole = embed_lines(tiny, lines, options, bulk.BulkReport())
    monkeypatch.setattr(rows_module, "LONG_TEXT_PIECES", 100)
    monkeypatch.setattr("bertonnx.long_text.GROUP_WINDOWS", 2)
    streamed = embed_lines(tiny, lines, options, bulk.BulkReport())
    assert streamed.keys == whole.keys and streamed.ids.tolist() == whole.ids.tolist()
    np.testing.assert_allclose(streamed.vectors, whole.vectors, rtol=0, atol=1e-6)

    source = tmp_path / "long.txt"
    source.write_text(long_text(3000) + "\n", encoding="utf-8")
    heard: list[int] = []
    embed_file(tiny, source, tmp_path / "out.npy", options, progress=lambda done, _: heard.append(done))
    assert len(heard) > 5 and heard == sorted(heard) and heard[-1] == source.stat().st_size  # progress inside


# -- resume you can trust -----------------------------------------------------------------------------


def interrupted(embedder: Embedder, source: Path, out: Path, options: BulkOptions) -> None:
    with pytest.raises(Stop):
        embed_file(embedder, source, out, options, progress=stop_at(300))
    assert (partial_dir(out) / "state.json").is_file() and not out.exists()


CHANGES = {
    "mode": {"mode": "sentences"},
    "pooling": {"pooling": "max"},
    "unknown": {"mode": "static", "unknown": "zero"},  # static vectors alone take an unknown policy
    "long_text": {"long_text": "truncate"},
    "normalize": {"mode": "sentences", "normalize": True},
    "on_error": {"on_error": "skip"},
}


def test_the_fingerprint_names_everything_that_changes_the_numbers(tiny: Embedder, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("king\n")
    found = job_fingerprint(tiny, source, BulkOptions(mode="sentences", max_length=16))
    runtime = tiny.runtime()
    assert (found["backend"], found["precision"], found["device"]) == (
        runtime["backend"], runtime["precision"], runtime["device"])
    assert found["graph"] == tiny.bundle.graph_sha256 and found["int8_recipe"] is None
    assert found["max_length"] == 16 and found["batch_tokens"] == tiny.batch_tokens
    assert "chunk_lines" not in found  # checkpoints may fall anywhere: resuming with another interval is fine
    # Each option, and the input's bytes, is a field of its own: a resume under another names it (io/test_sinks).
    base = job_fingerprint(tiny, source, BulkOptions(mode="contextual"))
    for field, change in CHANGES.items():
        changed = job_fingerprint(tiny, source, BulkOptions(**{"mode": "contextual", **change}))
        assert field in changed and changed[field] != base.get(field), field
    source.write_text("queen\n")
    assert job_fingerprint(tiny, source, BulkOptions(mode="contextual"))["sha256"] != base["sha256"]


def test_after_a_resume_the_report_counts_the_whole_output(tiny: Embedder, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text(corpus(900))
    out = tmp_path / "out.jsonl"
    options = BulkOptions(mode="contextual", chunk_lines=100)
    interrupted(tiny, source, out, options)
    report = embed_file(tiny, source, out, options, resume=True)
    rows = len(read_table(out).keys)
    assert report.rows == rows and report.lines == 900
    assert 0 < report.resumed_lines < 900 and report.lines_this_run == 900 - report.resumed_lines
    assert 0 < report.rows_this_run < rows


# -- no silent loss -------------------------------------------------------------------------------


def test_an_existing_output_is_refused_unless_forced(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.npy"
    assert run("embed", tiny_bundle, "--static", "-o", out, stdin="king\nqueen\n").exit_code == 0
    before = out.read_bytes()
    one_line_error(run("embed", tiny_bundle, "--static", "-o", out, stdin="man\n"),
                   f"{out} exists; --force replaces it")
    one_line_error(run("embed", tiny_bundle, "--static", "-i", tmp_path / "w.txt", "-o", out, "--resume")
                   if (tmp_path / "w.txt").write_text("man\n") else None, f"{out} exists; --force replaces it")
    assert out.read_bytes() == before
    assert run("embed", tiny_bundle, "--static", "-o", out, "--force", stdin="man\n").exit_code == 0
    assert read_table(out).keys == ["man"]


def test_unfinished_work_is_refused_unless_resumed_as_the_same_job(
    tiny: Embedder, tiny_bundle: Path, tmp_path: Path
) -> None:
    """The command line's words for both refusals: a new run over a killed job's work, and a resume under other
    settings. Neither deletes the work; the same command with --resume continues it."""
    source = tmp_path / "in.txt"
    source.write_text(corpus(600))
    out = tmp_path / "out.npy"
    interrupted(tiny, source, out, BulkOptions(mode="contextual", chunk_lines=100))
    state = (partial_dir(out) / "state.json").read_bytes()
    load = ("--chunk-lines", "100", "--backend", "onnxruntime", "--threads", "1")  # as `tiny` runs
    one_line_error(run("embed", tiny_bundle, "--contextual", "-i", source, "-o", out, *load),
                   "holds an unfinished job for out.npy; --resume continues it, --force starts over")
    other = run("embed", tiny_bundle, "--sentences", "-i", source, "-o", out, "--resume", *load)
    one_line_error(other, "mode: saved 'contextual', now 'sentences'")
    assert other.stderr.startswith("error: cannot resume: ") and "start over with --force" in other.stderr
    assert (partial_dir(out) / "state.json").read_bytes() == state
    done = run("embed", tiny_bundle, "--contextual", "-i", source, "-o", out, "--resume", *load)
    assert done.exit_code == 0, done.output
    assert "lines kept from the killed run" in done.stderr


# -- unknown words visible ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".jsonl"])
@pytest.mark.parametrize("mode", ["static", "contextual", "sentences"])
def test_rows_of_unknown_words_are_flagged(tiny: Embedder, tmp_path: Path, suffix: str, mode: str) -> None:
    source = tmp_path / "in.txt"
    texts = ["king", "🙂", "queen"] if mode == "static" else ["the king", "a 🙂 queen", "music"]
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / f"out{suffix}"
    unknown = {"unknown": "unk"} if mode == "static" else {}  # a contextual row of [UNK] is flagged as it is
    report = embed_file(tiny, source, out, BulkOptions(mode=mode, **unknown))  # type: ignore[arg-type]
    table = read_table(out)
    assert table.unknown is not None and table.unknown.dtype == bool
    assert [key for key, flag in zip(table.keys, table.unknown) if flag] == (
        ["🙂"] if mode != "sentences" else ["a 🙂 queen"])
    assert report.unknown_rows == 1
    if suffix == ".npy":
        assert np.load(unknown_path(out)).tolist() == table.unknown.tolist()
    if suffix == ".jsonl":
        assert all("unknown" in json.loads(line) for line in out.read_text(encoding="utf-8").splitlines())


# -- stdout carries data alone --------------------------------------------------------------------------


@pytest.mark.slow
def test_stdout_is_json_lines_only_even_when_int8_is_made_on_first_use(tiny_bundle: Path, tmp_path: Path) -> None:
    """An empty BERTONNX_HOME: the int8 graph is quantised (NNCF logs and bars) while stdout carries the rows."""
    env = {**os.environ, "BERTONNX_HOME": str(tmp_path / "home"), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("BERTONNX_DEBUG", None)
    done = subprocess.run([*CLI, "embed", str(tiny_bundle), "--contextual", "--backend", "openvino",
                           "--precision", "int8", "--min-fidelity", "0"],
                          input="the king is wise\na queen\n", env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["key"], r["line"]) for r in records] == [("the", 1), ("king", 1), ("is", 1), ("wise", 1),
                                                         ("a", 2), ("queen", 2)]
    assert any((tmp_path / "home").rglob("model.xml")), "int8 was not made in this run"


# -- constant memory ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode,suffix", [("contextual", ".jsonl"), ("contextual", ".npz"), ("static", ".txt")])
def test_memory_does_not_grow_with_the_input(tiny_bundle: Path, tmp_path: Path, mode: str, suffix: str) -> None:
    """10x the lines (~1.5 M rows of the tiny model): peak memory within a fixed bound of the small run's.
    Held whole, the large run's rows would take ~200 MB more (keys, vectors and their text)."""
    peaks = []
    for lines in (4_000, 40_000):
        source = tmp_path / f"in{lines}.txt"
        source.write_text(corpus(lines, words=(1, 2)) if mode == "static" else corpus(lines))
        if mode == "static":
            source.write_text("".join(line.split()[0] + "\n" for line in source.read_text().splitlines()))
        out = tmp_path / f"out{lines}{suffix}"
        peaks.append(peak_rss_mb([*CLI, "embed", str(tiny_bundle), f"--{mode}", "-i", str(source), "-o", str(out),
                                  "--backend", "onnxruntime", "--threads", "1"]))
        assert out.stat().st_size > 0
    print(f"peak RSS {mode} {suffix}: {peaks[0]:.0f} MB -> {peaks[1]:.0f} MB")
    assert peaks[1] - peaks[0] < 40, f"peak RSS {peaks[0]:.0f} MB -> {peaks[1]:.0f} MB"


# -- the command line as a new user meets it ---------------------------------------------------------


@pytest.mark.slow
def test_a_reader_that_stops_early_is_no_error(tiny_bundle: Path, tmp_path: Path) -> None:
    """`bertonnx embed B --contextual < big.txt | head -3`: the pipe closes; the command says nothing more."""
    source = tmp_path / "in.txt"
    source.write_text(corpus(3000))
    with source.open("rb") as stdin:
        embed = subprocess.Popen([*CLI, "embed", str(tiny_bundle), "--contextual", "--backend", "onnxruntime"],
                                 stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        head = subprocess.run(["head", "-3"], stdin=embed.stdout, capture_output=True, timeout=300)
        assert embed.stdout is not None
        embed.stdout.close()
        _, stderr = embed.communicate(timeout=300)
    assert len(head.stdout.splitlines()) == 3 and all(json.loads(line) for line in head.stdout.splitlines())
    assert embed.returncode == 0 and b"error" not in stderr and b"Traceback" not in stderr, stderr


@pytest.mark.slow
def test_ctrl_c_says_where_the_work_is_and_how_to_continue(tiny_bundle: Path, tmp_path: Path) -> None:
    """SIGINT once the job is running: its first checkpoint is on disk. (The work folder alone is no sign of that:
    it appears when the job opens, before the job runs and its Ctrl-C handling is in place.)"""
    import signal
    import time

    source = tmp_path / "in.txt"
    source.write_text(corpus(20000))
    out = tmp_path / "out.npy"
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:  # a file, not a pipe nobody reads until the end: the bar cannot fill it and block
        job = subprocess.Popen([*CLI, "embed", str(tiny_bundle), "--contextual", "-i", str(source), "-o", str(out),
                                "--chunk-lines", "500", "--threads", "1"], stderr=stderr, text=True)
        try:
            deadline = time.monotonic() + 300  # a loaded machine: the load (auto times its candidates) may be slow
            while int(checkpoint_position(out).get("lines", 0)) == 0:
                assert job.poll() is None, f"the job ended before its first checkpoint: {log.read_text()}"
                assert time.monotonic() < deadline, "no checkpoint within 300 s"
                time.sleep(0.02)
            assert job.poll() is None, "the job ended before it could be interrupted"
            job.send_signal(signal.SIGINT)
            job.wait(timeout=300)
        finally:
            job.kill()  # nothing if it already ended
            job.wait()
    stderr_text = log.read_text()
    assert job.returncode == 130, stderr_text
    errors = [line for line in stderr_text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "interrupted" in errors[0] and "--resume continues it" in errors[0], stderr_text
    assert "Traceback" not in stderr_text and (partial_dir(out) / "state.json").exists() and not out.exists()
    kept = int(checkpoint_position(out)["lines"])  # how many lines, with thousands separators (issue 26)
    assert errors[0] == (f"error: interrupted: {kept:,} lines kept in {partial_dir(out)}; the same command with "
                         "--resume continues it"), stderr_text


def test_the_summary_counts_in_words(tiny_bundle: Path) -> None:
    result = run("embed", tiny_bundle, "--static", stdin="king\n")
    assert "1 vector from 1 line" in result.stderr
