"""Text rows (.jsonl, .txt) encoded in worker processes, so that writing text uses every core.

Formatting a float32 as its shortest decimal is orjson's C, but it holds the GIL:
a static job into .jsonl formatted on one core while the rest of the job waited
(1 M words: 0.16x the speed of .npy on a Zen 4). The workers are plain
`python -m bertonnx.io.encode_worker` subprocesses fed through pipes, not
`multiprocessing`: spawn re-imports the caller's main script (an unguarded
script would start again in every worker) and fork copies a process whose
backends run threads of their own.

Each worker holds one block at a time and blocks come back in the order they
went in, so the bytes are those of encoding in-process: a resumed job, or one
run with no workers, writes the same file. Workers run in a session of their own,
so a terminal's Ctrl-C goes to the job alone (it decides what an interrupt keeps),
and leave when their input closes, so a killed job leaves none behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from bertonnx.errors import OptionError, OutputError
from bertonnx.io.encode_worker import PartsSpec, read_answer, write_block, write_spec
from bertonnx.io.files import ENCODE_ROWS, RowBlock

PARALLEL_SUFFIXES = (".jsonl", ".txt")
"""Formats whose encoding is worth a process: the others are memory copies (arrays, .bin rows, key lines)."""
MAX_WORKERS = 4
POOL_AFTER_ROWS = 4 * ENCODE_ROWS
"""An automatic pool starts once a job has this many rows: a small job never pays for starting processes."""
WORKER_MODULE = "bertonnx.io.encode_worker"


WORKERS_VARIABLE = "BERTONNX_ENCODE_WORKERS"
"""Set it to a number of workers (0: encode in the job's own process) to override the choice on a shared host."""


def auto_workers() -> int:
    """One worker per CPU this process may run on, at most MAX_WORKERS, none on a single CPU (nothing to gain);
    or what BERTONNX_ENCODE_WORKERS says.

    Raises:
        OptionError: BERTONNX_ENCODE_WORKERS is not a whole number from 0 up.
    """
    told = os.environ.get(WORKERS_VARIABLE, "").strip()
    if told:
        if not told.isdigit():
            raise OptionError(f"{WORKERS_VARIABLE}={told!r}: expected a whole number of worker processes, 0 or more")
        return int(told)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus < 2 else min(cpus, MAX_WORKERS)


PIPE_BYTES = 1 << 20
"""Pipe buffer asked of Linux (its default maximum): a block crosses in a few writes, not hundreds."""


def _widen(stream: IO[bytes] | None) -> None:
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)  # type: ignore[union-attr]
    except (ImportError, OSError, AttributeError):
        pass  # not Linux, or a smaller limit: the default buffer works, in more writes


class _Worker:
    """One encoding subprocess: a block goes in, the bytes of every part come out."""

    def __init__(self, spec: PartsSpec) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        # A session of its own: a terminal's Ctrl-C reaches the job, never a worker still starting (which would die
        # with a traceback); the job's end closes the worker's input, and it leaves.
        self.process = subprocess.Popen([sys.executable, "-m", WORKER_MODULE], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, start_new_session=True)
        for stream in (self.process.stdin, self.process.stdout):
            _widen(stream)
        try:
            write_spec(self._stdin, spec)
        except OSError as error:
            raise self._stopped() from error

    @property
    def _stdin(self) -> IO[bytes]:
        return self.process.stdin  # type: ignore[return-value]

    def send(self, block: RowBlock) -> None:
        try:
            write_block(self._stdin, block)
        except OSError as error:  # BrokenPipeError: the worker is gone
            raise self._stopped() from error

    def receive(self) -> list[bytes]:
        try:
            encoded, error = read_answer(self.process.stdout)  # type: ignore[arg-type]
        except (EOFError, OSError, ValueError, KeyError) as failure:
            raise self._stopped() from failure
        if error is not None:
            raise OutputError(f"an encoding worker failed: {error}")
        return encoded

    def _stopped(self) -> OutputError:
        code = self.process.poll()
        said = "stopped" if code is None else f"stopped with exit code {code}"
        return OutputError(f"an encoding worker ({WORKER_MODULE}) {said} before it answered")

    def close(self, wait: float) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass  # a worker gone before us
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class EncodePool:
    """Worker processes that encode a format's blocks, their bytes handed back in the order the blocks came.

    `submit` keeps every worker busy across calls (a job's blocks come one slice at a time, each smaller than a
    worker's share would be); `drain` collects what is still in flight (before a checkpoint)."""

    def __init__(self, spec: PartsSpec, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"an encode pool needs at least one worker, found {workers}")
        self._workers: list[_Worker] = []
        self._busy: deque[_Worker] = deque()  # in the order their blocks came
        try:
            for _ in range(workers):
                self._workers.append(_Worker(spec))
        except BaseException:
            self.close()  # the workers already started leave; the error that stopped the others is raised
            raise
        self._idle: list[_Worker] = list(reversed(self._workers))

    def submit(self, block: RowBlock) -> list[list[bytes]]:
        """Hand `block` to a worker; the bytes of earlier blocks it had to wait for (the oldest), if any."""
        if self._idle:
            worker = self._idle.pop()
            worker.send(block)
            self._busy.append(worker)
            return []
        worker = self._busy.popleft()
        encoded = worker.receive()
        worker.send(block)  # it starts on this block while the caller writes the one it finished
        self._busy.append(worker)
        return [encoded]

    def drain(self) -> list[list[bytes]]:
        """The bytes of every block still in flight, in order; every worker idle after."""
        done = []
        while self._busy:
            worker = self._busy.popleft()
            done.append(worker.receive())
            self._idle.append(worker)
        return done

    def encode(self, blocks: Iterable[RowBlock]) -> Iterator[list[bytes]]:
        """Each block's bytes, one entry per part, in the order of `blocks`."""
        for block in blocks:
            yield from self.submit(block)
        yield from self.drain()

    def close(self, wait: float = 5.0) -> None:
        """Stop every worker, blocks in flight dropped: their input closes and they leave; one still busy after
        `wait` seconds is killed."""
        workers, self._workers, self._idle = self._workers, [], []
        self._busy.clear()
        for worker in workers:
            worker.close(wait)


class BlockEncoder:
    """Encodes a sink's blocks: in this process, or, for text formats in a job large enough, in an EncodePool.

    `submit` returns the bytes that are ready (with workers, those of earlier blocks), `drain` the rest: a sink
    writes both, in order, and drains before every checkpoint.

    Args:
        workers: None picks by itself (auto_workers(), once the job passes POOL_AFTER_ROWS rows); a number starts
            that many workers at the first block; 0 always encodes in this process.
    """

    def __init__(self, spec: PartsSpec, encoders: list[Callable[[RowBlock], bytes]], workers: int | None) -> None:
        self._spec, self._encoders = spec, encoders
        parallel = spec[0] in PARALLEL_SUFFIXES
        self._workers = (auto_workers() if workers is None else workers) if parallel else 0
        self._after = POOL_AFTER_ROWS if workers is None else 0
        self._seen = 0
        self._pool: EncodePool | None = None

    def submit(self, block: RowBlock) -> list[list[bytes]]:
        """The bytes of each part for blocks done so far: this block's ENCODE_ROWS slices in this process, or,
        with workers, those of earlier slices that had to finish to make room for these."""
        if self._pool is None and self._workers and self._seen + len(block) > self._after:
            self._pool = EncodePool(self._spec, self._workers)
        self._seen += len(block)
        if self._pool is None:
            return [[encode(small) for encode in self._encoders] for small in block.blocks()]
        return [encoded for small in block.blocks() for encoded in self._pool.submit(small)]

    def drain(self) -> list[list[bytes]]:
        """The bytes of every slice still being encoded, in order."""
        return self._pool.drain() if self._pool is not None else []

    def encode(self, block: RowBlock) -> list[list[bytes]]:
        """`block`'s bytes, all of them: submit, then drain."""
        return self.submit(block) + self.drain()

    @property
    def workers(self) -> int:
        """Worker processes running now (0 while encoding in this process)."""
        return len(self._pool._workers) if self._pool is not None else 0

    def close(self) -> None:
        """Stop the workers; slices in flight are dropped (a sink closes after its last checkpoint)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
