"""bertonnx.io.encode_pool: text formats encoded in worker processes write the bytes encoding in-process writes,
and the workers never outlive the job, whatever ends it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.outputs import output_bytes

from bertonnx.errors import OptionError, OutputError
from bertonnx.io import encode_pool
from bertonnx.io.assembly import parts
from bertonnx.io.encode_pool import WORKERS_VARIABLE, BlockEncoder, EncodePool, auto_workers
from bertonnx.io.encode_worker import PartsSpec
from bertonnx.io.formats import RowBlock
from bertonnx.io.sinks import JobSpec, VectorSink

DIM = 5
KEYS = ["king", "queen", "king", "tab\there", "line\nbreak", "日本語", "", " lead", "emoji 🙂"]


def block(rows: int, seed: int = 0) -> RowBlock:
    """Rows over many magnitudes (text must round-trip float32), with ids and flags, keys that repeat."""
    rng = np.random.default_rng(seed)
    vectors = (rng.standard_normal((rows, DIM)) * 10.0 ** rng.integers(-30, 30, size=(rows, DIM))).astype(np.float32)
    ids = np.column_stack([np.arange(rows) // 3 + 1, np.arange(rows) % 3]).astype(np.int64)
    return RowBlock([KEYS[row % len(KEYS)] for row in range(rows)], vectors, ids, rng.random(rows) < 0.2)


@pytest.mark.parametrize("spec", [(".jsonl", DIM, True, True, None), (".jsonl", DIM, False, False, None),
                                  (".txt", DIM, False, False, "word"), (".txt", DIM, False, False, None)])
def test_workers_encode_the_bytes_of_the_process_itself(spec: PartsSpec) -> None:
    encoders = [part.encode for part in parts(*spec)]  # type: ignore[arg-type]
    blocks = [block(rows, seed) for seed, rows in enumerate([7, 1, 0, 30, 2, 11])]  # more blocks than workers
    expected = [[encode(b) for encode in encoders] for b in blocks]
    pool = EncodePool(spec, workers=2)
    try:
        assert list(pool.encode(blocks)) == expected
        assert list(pool.encode(blocks[:1])) == expected[:1]  # the pool serves block after block
    finally:
        pool.close()


@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_a_sink_with_workers_writes_what_one_without_writes(tmp_path: Path, suffix: str) -> None:
    spec = JobSpec({"job": 1}, DIM, ids=True, unknown=True, key_by="word")
    outputs = []
    for workers in (0, 3):
        out = tmp_path / str(workers) / f"out{suffix}"
        sink = VectorSink.open(out, spec, encode_workers=workers)
        for seed, rows in enumerate([5000, 1, 2100]):  # blocks of several ENCODE_ROWS slices, and of one row
            sink.append(block(rows, seed))
            sink.commit({"blocks": seed + 1})
        sink.finish()
        outputs.append(output_bytes(out))
    assert outputs[0] == outputs[1]


def test_workers_stay_busy_across_appends_and_a_checkpoint_writes_all_they_hold(tmp_path: Path) -> None:
    """A job appends one slice (smaller than a worker's share) at a time: blocks stay in flight between appends,
    and each checkpoint first writes every one of them, in order."""
    spec = JobSpec({"job": 4}, DIM, ids=True, unknown=True)
    outputs, sizes = [], []
    for workers in (0, 2):
        out = tmp_path / str(workers) / "out.jsonl"
        sink = VectorSink.open(out, spec, encode_workers=workers)
        checkpoints = []
        for index in range(10):
            sink.append(block(512, index))
            if index % 3 == 2:
                sink.commit({"slices": index + 1})
                checkpoints.append(sink.written)
        sink.finish()
        outputs.append(out.read_bytes())
        sizes.append(checkpoints)
    assert outputs[0] == outputs[1]
    assert sizes[0] == sizes[1]  # a checkpoint holds the same bytes with workers as without


def test_a_resumed_job_with_workers_writes_the_same_bytes(tmp_path: Path) -> None:
    spec = JobSpec({"job": 2}, DIM, ids=True, unknown=True)
    reference = tmp_path / "reference.jsonl"
    sink = VectorSink.open(reference, spec, encode_workers=0)
    for seed in range(3):
        sink.append(block(3000, seed))
        sink.commit({"blocks": seed + 1})
    sink.finish()

    out = tmp_path / "out.jsonl"
    sink = VectorSink.open(out, spec, encode_workers=2)
    sink.append(block(3000, 0))
    sink.commit({"blocks": 1})
    sink.append(block(3000, 1))  # never committed: the resume redoes it
    sink.close()
    sink = VectorSink.open(out, spec, resume=True, encode_workers=2)
    assert sink.position == {"blocks": 1}
    for seed in (1, 2):
        sink.append(block(3000, seed))
        sink.commit({"blocks": seed + 1})
    sink.finish()
    assert out.read_bytes() == reference.read_bytes()


def test_workers_leave_when_the_job_closes(tmp_path: Path) -> None:
    encoder = BlockEncoder((".jsonl", DIM, True, True, None),
                           [part.encode for part in parts(".jsonl", DIM, True, True)], workers=2)
    list(encoder.encode(block(10)))
    processes = [worker.process for worker in encoder._pool._workers]  # type: ignore[union-attr]
    assert encoder.workers == 2 and all(process.poll() is None for process in processes)
    encoder.close()
    assert encoder.workers == 0 and all(process.poll() is not None for process in processes)


def test_a_worker_that_dies_is_a_clear_error(tmp_path: Path) -> None:
    pool = EncodePool((".jsonl", DIM, False, False, None), workers=1)
    try:
        worker = pool._workers[0]
        worker.process.kill()
        worker.process.wait()
        with pytest.raises(OutputError, match=r"an encoding worker \(bertonnx.io.encode_worker\) stopped"):
            list(pool.encode([block(3), block(4)]))
    finally:
        pool.close()


# A job writing .jsonl through two workers until it is stopped; it answers Ctrl-C as the CLI does, quietly.
CHILD = """
import sys, time
import numpy as np
from bertonnx.io.formats import RowBlock
from bertonnx.io.sinks import JobSpec, VectorSink

sink = VectorSink.open(sys.argv[1], JobSpec({"job": 3}, 4), encode_workers=2)
try:
    while True:
        sink.append(RowBlock(["w"] * 5000, np.ones((5000, 4), dtype=np.float32)))
        print(*[w.process.pid for w in sink._encoder._pool._workers], flush=True)
        time.sleep(0.05)
except KeyboardInterrupt:
    sys.exit(130)
finally:
    sink.close()
"""


def start_job(tmp_path: Path) -> tuple[subprocess.Popen[str], list[int]]:
    job = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "out.jsonl")], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    pids = [int(pid) for pid in job.stdout.readline().split()]  # type: ignore[union-attr]
    assert len(pids) == 2, job.stderr.read()  # type: ignore[union-attr]
    return job, pids


def gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(_alive(pid) for pid in pids)


def test_ctrl_c_stops_the_job_and_its_workers_without_their_tracebacks(tmp_path: Path) -> None:
    job, pids = start_job(tmp_path)
    try:
        os.killpg(job.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the job's process group
        _, stderr = job.communicate(timeout=60)
    finally:
        job.kill()
        job.wait()
    assert job.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr  # no worker heard it
    assert gone(pids)


def test_workers_leave_when_their_job_is_killed(tmp_path: Path) -> None:
    job, pids = start_job(tmp_path)
    try:
        job.kill()  # the job alone, no chance to close anything: its workers see their input end
        job.wait()
        assert gone(pids)
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """A process that runs (a zombie, reaped by nobody but already gone, does not count)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return status != "Z"


def test_binary_formats_never_start_workers() -> None:
    for suffix in (".npy", ".npz", ".bin"):
        encoder = BlockEncoder((suffix, DIM, False, False, None),
                               [part.encode for part in parts(suffix, DIM, False, False)], workers=2)
        list(encoder.encode(block(5000)))
        assert encoder.workers == 0


def test_an_automatic_pool_waits_for_a_large_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKERS_VARIABLE, "1")
    encoder = BlockEncoder((".jsonl", DIM, False, False, None),
                           [part.encode for part in parts(".jsonl", DIM, False, False)], workers=None)
    try:
        list(encoder.encode(block(encode_pool.POOL_AFTER_ROWS)))
        assert encoder.workers == 0  # a small job is encoded where it runs
        list(encoder.encode(block(1)))
        assert encoder.workers == 1
    finally:
        encoder.close()


def test_the_worker_count_follows_the_cpus_and_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKERS_VARIABLE, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert auto_workers() == 0  # one CPU: nothing to gain
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)))
    assert auto_workers() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert auto_workers() == encode_pool.MAX_WORKERS
    monkeypatch.setenv(WORKERS_VARIABLE, "0")
    assert auto_workers() == 0
    monkeypatch.setenv(WORKERS_VARIABLE, "two")
    with pytest.raises(OptionError, match="BERTONNX_ENCODE_WORKERS='two': expected a whole number"):
        auto_workers()


def test_a_worker_that_cannot_start_stops_the_others_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[encode_pool._Worker] = []
    real = encode_pool._Worker

    def second_fails(spec: PartsSpec) -> encode_pool._Worker:
        if started:
            raise OSError(24, "Too many open files")
        started.append(real(spec))
        return started[-1]

    monkeypatch.setattr(encode_pool, "_Worker", second_fails)
    with pytest.raises(OSError, match="Too many open files"):
        EncodePool((".jsonl", DIM, False, False, None), workers=2)
    assert started and started[0].process.poll() is not None
