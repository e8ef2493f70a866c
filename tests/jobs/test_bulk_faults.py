"""Bulk-file jobs under faults: SIGKILL at random points, then resume; a full disk, then resume.

Kills and full disks need a real process: the CLI runs as `python -c "from
bertonnx.cli.app import main; main()"`, always with --threads 1 so that every run
computes bit-identical vectors and outputs can be compared byte for byte.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import run
from helpers.outputs import checkpoint_position, leftovers, output_bytes, output_files
from helpers.texts import VOCABULARY

from bertonnx.io.sinks import partial_dir

pytestmark = pytest.mark.slow  # real processes killed mid-job and real full disks: seconds a case

CLI = [sys.executable, "-c", "from bertonnx.cli.app import main; main()"]
ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
CHUNK_LINES = 100
CORPUS_CHUNKS = 24
RANDOM = random.Random(6)  # the "random" kill points, fixed so that a failure can be replayed
KILL_AFTER_CHUNKS = RANDOM.sample(range(1, 18), 2)
KILL_AT_FRACTION = round(RANDOM.uniform(0.05, 1.0), 2)  # of the uninterrupted run's duration


def write_corpus(path: Path, lines: int, words: tuple[int, int] = (3, 30), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.write_text("\n".join(" ".join(rng.choice(VOCABULARY, size=rng.integers(*words))) for _ in range(lines)) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", CORPUS_CHUNKS * CHUNK_LINES)


@pytest.fixture(scope="module")
def reference_outputs(
    tiny_bundle: Path, corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str], tuple[dict[str, bytes], float]]:
    """The uninterrupted run's output files for (mode, suffix) and its duration, computed once each."""
    cache: dict[tuple[str, str], tuple[dict[str, bytes], float]] = {}

    def reference(mode: str, suffix: str) -> tuple[dict[str, bytes], float]:
        if (mode, suffix) not in cache:
            out = tmp_path_factory.mktemp("reference") / f"out{suffix}"
            started = time.monotonic()
            assert run(*embed_args(tiny_bundle, mode, corpus, out)).exit_code == 0
            cache[mode, suffix] = output_bytes(out), time.monotonic() - started
        return cache[mode, suffix]

    return reference


def embed_args(bundle: Path, mode: str, source: Path, out: Path | None) -> list[str]:
    target = [] if out is None else ["-o", str(out)]
    # The backend is named: `auto` would time its candidates in the reference run's first load, which then
    # takes longer than the killed runs (they read the cached verdict) and moves the kill past their end.
    return ["embed", str(bundle), f"--{mode}", "-i", str(source), *target, "--chunk-lines", str(CHUNK_LINES),
            "--threads", "1", "--backend", "onnxruntime"]


def temps_of(out: Path) -> list[Path]:
    """Temp files of OUT's own files, which only finish() writes."""
    return [temp for path in output_files(out) for temp in path.parent.glob(f".{path.name}.*.tmp")]


def finished_chunks(out: Path) -> int:
    """Lines up to the last checkpoint, in units of --chunk-lines (checkpoints fall at slice ends past them)."""
    return int(checkpoint_position(out).get("lines", 0)) // CHUNK_LINES


def kill_when(command: list[str], condition: Callable[[], bool], timeout: float = 120) -> bool:
    """Start `command`, SIGKILL it as soon as `condition()` holds; False if it ended first."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not condition():
            if process.poll() is not None:
                return False
            assert time.monotonic() < deadline, "the condition never held"
            time.sleep(0.001)
    finally:
        process.kill()  # SIGKILL; nothing if it already ended
        process.wait()
    return True


def check_after_kill(out: Path, reference: dict[str, bytes]) -> None:
    """The only thing a kill may leave under OUT's name is the complete, correct output."""
    if out.exists():
        assert output_bytes(out) == reference, "a killed job left an output that is not the complete one"


# (mode, suffix, how the kill point is chosen, parameter)
KILLS = [
    ("contextual", ".npy", "after chunks", KILL_AFTER_CHUNKS[0]),
    ("sentences", ".jsonl", "after chunks", KILL_AFTER_CHUNKS[1]),
    ("contextual", ".txt", "during finish", None),
    ("sentences", ".npz", "at a time", KILL_AT_FRACTION),
    ("contextual", ".bin", "after chunks", KILL_AFTER_CHUNKS[0]),
]


@pytest.mark.parametrize("mode,suffix,point,parameter", KILLS,
                         ids=[f"{m}{s}-{p.replace(' ', '-')}" for m, s, p, _ in KILLS])
def test_sigkill_at_a_random_point_then_resume(
    tiny_bundle: Path,
    corpus: Path,
    reference_outputs: Callable[[str, str], tuple[dict[str, bytes], float]],
    tmp_path: Path,
    mode: str,
    suffix: str,
    point: str,
    parameter: float | None,
) -> None:
    """Killed after a random number of chunks (then again while resuming), while finish() writes
    the output, or a random fraction of a run's time in: whenever OUT exists it is the complete
    output, and a resumed run writes exactly the bytes of an uninterrupted one."""
    reference, seconds = reference_outputs(mode, suffix)

    out = tmp_path / "run" / f"out{suffix}"
    out.parent.mkdir()
    command = [*CLI, *embed_args(tiny_bundle, mode, corpus, out)]
    if point == "after chunks":
        assert kill_when(command, lambda: finished_chunks(out) >= parameter), "finished before the kill"
        assert not out.exists()
        done = finished_chunks(out)
        assert parameter <= done < CORPUS_CHUNKS
        # Killed again while resuming, a few chunks later.
        assert kill_when([*command, "--resume"], lambda: finished_chunks(out) >= done + 3)
        assert not out.exists()
    elif point == "during finish":
        assert kill_when(command, lambda: bool(temps_of(out))), "finished before the kill"
        assert finished_chunks(out) == CORPUS_CHUNKS
        check_after_kill(out, reference)
    else:  # a moment into the job proper (its work directory exists): mid-chunk, mid-write or mid-rename
        started: list[float] = []
        fraction = [parameter * seconds]  # `seconds` includes the reference's load: a job may end sooner

        def moment() -> bool:
            if not started and partial_dir(out).exists():
                started.append(time.monotonic())
            return bool(started) and time.monotonic() - started[0] >= fraction[0]

        for _ in range(5):  # the job ended before the kill: the same point of a shorter span, until it is killed
            killed = kill_when(command, moment)
            if killed and not (out.exists() and not partial_dir(out).exists()):  # killed with work left to do
                break
            assert output_bytes(out) == reference  # an uninterrupted run, at least, is whole
            for path in output_files(out):
                path.unlink(missing_ok=True)
            started.clear()
            fraction[0] /= 2
        else:
            pytest.fail("the job always finished before the kill")
        check_after_kill(out, reference)

    resumed = run(*embed_args(tiny_bundle, mode, corpus, out), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert output_bytes(out) == reference
    assert leftovers(out.parent, out) == []  # no work directory, no temp file


# -- a full disk --------------------------------------------------------------


def file_size_limit(limit: int) -> Callable[[], None]:
    """For preexec_fn: writes past `limit` bytes fail with EFBIG instead of killing the process."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("suffix,failing", [(".npy", "could not write rows:"), (".txt", "could not write {out}:")],
                         ids=["during rows", "during finish"])
def test_a_full_disk_is_a_clear_error_and_leaves_no_output(tiny_bundle: Path, tmp_path: Path, suffix: str,
                                                          failing: str) -> None:
    """RLIMIT_FSIZE as the full disk. .npy: 120 kB holds the first slices' vectors, not all. .txt: a
    limit one byte under the output's size holds its rows part (the output less its header), not the
    output, which finish() writes."""
    source = tmp_path / "corpus.txt"
    short = write_corpus(tmp_path / "short.txt", CHUNK_LINES, words=(3, 6), seed=1).read_text()
    source.write_text(short + write_corpus(tmp_path / "long.txt", 400, words=(20, 40), seed=2).read_text())
    reference = tmp_path / f"reference{suffix}"
    assert run(*embed_args(tiny_bundle, "contextual", source, reference)).exit_code == 0
    limit = 120_000 if suffix == ".npy" else reference.stat().st_size - 1
    out = tmp_path / "run" / f"out{suffix}"
    out.parent.mkdir()
    done = subprocess.run([*CLI, *embed_args(tiny_bundle, "contextual", source, out)], env=ENV,
                          preexec_fn=file_size_limit(limit), capture_output=True, text=True, timeout=120)

    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and len(errors) == 1, done.stderr
    assert failing.format(out=out) in errors[0] and "File too large" in errors[0]
    assert f"{out} was not written" in errors[0]
    assert "Traceback" not in done.stderr
    assert not any(path.exists() for path in output_files(out)) and temps_of(out) == []
    assert leftovers(out.parent, out) == [partial_dir(out).name]

    resumed = run(*embed_args(tiny_bundle, "contextual", source, out), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert list(output_bytes(out).values()) == list(output_bytes(reference).values())


# Runs as root in a private mount namespace (unshare -m): mounts a small tmpfs, runs the
# job into it until the disk is full, then grows the tmpfs and resumes. Prints JSON.
TMPFS_DRIVER = """
import json, os, subprocess, sys
directory, size, cli = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", directory], check=True)
out = os.path.join(directory, "out.npy")
first = subprocess.run(cli + ["-o", out], capture_output=True, text=True)
listing = sorted(os.listdir(directory))
subprocess.run(["mount", "-o", "remount,size=64m", directory], check=True)
second = subprocess.run(cli + ["-o", out, "--resume"], capture_output=True, text=True)
print(json.dumps({
    "returncode": first.returncode, "stderr": first.stderr, "listing": listing,
    "resumed": second.returncode, "final": sorted(os.listdir(directory)),
    "out": open(out, "rb").read().hex() if os.path.exists(out) else None,
}))
"""


def private_tmpfs_works() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt && umount /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not private_tmpfs_works(), reason="needs root and unshare -m to mount a private tmpfs")
@pytest.mark.parametrize(
    "size,failing",
    [("64k", "could not write ")],
    ids=["full during rows"],
)
def test_a_real_full_disk_enospc(tiny_bundle: Path, tmp_path: Path, size: str, failing: str) -> None:
    """ENOSPC from a real filesystem, not a process limit. The rows take ~400 kB; finishing an .npy links its
    parts, so it needs no more room (the .txt case of the test above fills the disk during finish)."""
    source = write_corpus(tmp_path / "corpus.txt", 400, words=(3, 12), seed=3)
    reference = tmp_path / "reference.npy"
    assert run(*embed_args(tiny_bundle, "contextual", source, reference)).exit_code == 0
    mount = tmp_path / "disk"
    mount.mkdir()
    cli = [*CLI, *embed_args(tiny_bundle, "contextual", source, None)]
    done = subprocess.run(["unshare", "-m", sys.executable, "-c", TMPFS_DRIVER, str(mount), size, json.dumps(cli)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    errors = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
    assert result["returncode"] == 1 and len(errors) == 1, result["stderr"]
    assert failing.format(out=mount / "out.npy") in errors[0], errors[0]
    assert "No space left on device" in errors[0] and "Traceback" not in result["stderr"]
    assert result["listing"] == [".out.npy.partial"]  # no output, no temp file
    assert result["resumed"] == 0
    assert result["final"] == ["out.ids.npy", "out.keys.txt", "out.npy", "out.unknown.npy"]
    assert bytes.fromhex(result["out"]) == reference.read_bytes()
