"""Writing embeddings to disk in bulk: bounded memory, atomic, resumable.

`bertonnx embed` turns millions of input lines into vectors chunk by chunk. A
`VectorSink` takes those chunks and must survive three things: outputs larger
than RAM, a crash at any instant, and a rerun that should not redo finished work.

How it works:
    * Every finished chunk goes to a hidden work directory next to the output,
      `.<OUT name>.partial/`, as `chunk-NNNNNN.keys` (escaped keys), with ids
      `chunk-NNNNNN.ids` (an .npy array), then `chunk-NNNNNN.npy` (its vectors). Each file
      is written to a temp file, fsynced and renamed into place; the `.npy` is
      renamed last, so its presence is what marks the chunk finished.
      `state.json` there holds the job's spec.
    * `finish()` streams the chunks, one at a time, into temp files next to OUT
      in the format its suffix names (bertonnx.io.formats; the headers of `.npy`,
      `.txt` and `.bin` need the row count, only known now), fsyncs them and
      renames them into place: sidecars first, OUT last. So a visible OUT is
      always complete, and so are its sidecars. Only then is the work directory removed.
    * Memory stays O(one chunk) throughout.

Resuming: `VectorSink.open(out, spec, resume=True)` keeps the finished chunks of
a job with the same `JobSpec`; `done_chunks` says how many. The caller re-reads
its input, skips the first `done_chunks` chunks (`done_chunks * chunk_size`
lines), and continues with `write_chunk(done_chunks, ...)`. That is only correct
when chunk boundaries are the same as before, so the fingerprint must hold
everything that shapes a chunk's content: input sha256 and size, bundle id,
mode, pooling, chunk size. A run killed at any point, then resumed, writes an
output byte-identical to an uninterrupted run. If `finish()` itself fails (disk
full), the chunks are kept: resume, write nothing, and call `finish()` again.
Without `resume`, any previous work directory is discarded. An existing OUT is
left untouched until `finish()` replaces it. One process per OUT at a time.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bertonnx.errors import OutputError
from bertonnx.io.atomic import TEMP_SUFFIX, replace_all, write_atomic
from bertonnx.io.formats import (
    ID_DTYPE,
    SUPPORTED_SUFFIXES,
    VECTOR_DTYPE,
    check_rows,
    ids_path,
    read_vectors,
    sidecar_path,
    suffix_of,
    targets,
    write_array,
)
from bertonnx.io.keys import key_lines, read_keys
from bertonnx.io.records import read_record, record_bytes

# read_vectors, sidecar_path and SUPPORTED_SUFFIXES live in bertonnx.io.formats; they stay importable
# from here, the module that writes the files they read.
__all__ = ["JobSpec", "VectorSink", "partial_dir", "read_vectors", "sidecar_path", "SUPPORTED_SUFFIXES"]

STATE_FILE = "state.json"
STATE_FORMAT = "bertonnx-sink-partial"
STATE_VERSION = 2  # 2: chunks may carry ids
RESUME_REMEDY = "start over without resume"


@dataclass(frozen=True)
class JobSpec:
    """What makes two runs the same job, so that one may resume the other.

    Attributes:
        fingerprint: JSON-serialisable facts that fix every chunk's content
            (input sha256 and size, bundle id, mode, pooling, chunk size...).
        dim: the width of every vector.
        ids: every chunk carries (line, word) ids, written where the format has room.
    """

    fingerprint: dict[str, object]
    dim: int
    ids: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise OutputError(f"dim must be a positive int, found {self.dim!r}")
        try:
            json.dumps(self.fingerprint, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise OutputError(f"fingerprint must be JSON-serialisable: {error}") from error

    def record(self) -> dict[str, object]:
        """The job as `state.json` holds it; JSON round-tripped so tuples compare as lists."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "dim": self.dim,
            "ids": self.ids,
            "fingerprint": json.loads(json.dumps(self.fingerprint, sort_keys=True)),
        }


class VectorSink:
    """Takes the chunks of one output file; create it with `open` (protocol: module doc)."""

    def __init__(self, out: Path, spec: JobSpec, done_chunks: int) -> None:
        self._out = out
        self._spec = spec
        self._suffix = suffix_of(out)
        self._work = partial_dir(out)
        self._done = done_chunks
        self._finished = False

    @classmethod
    def open(cls, out: Path | str, spec: JobSpec, resume: bool) -> VectorSink:
        """Start a job writing `out`, or with `resume` keep the same job's finished chunks.

        Raises:
            OutputError: unsupported suffix, `out` is a directory, or (resume) the
                work directory holds another job; the message names what differs.
        """
        out = Path(out)
        suffix_of(out)
        if out.is_dir():
            raise OutputError(f"{out}: expected an output file path, found a directory")
        work = partial_dir(out)
        _remove_temps(out.parent, [target for target, _ in targets(out, with_ids=True)])
        if resume and (work / STATE_FILE).is_file():
            _check_same_job(work, spec)
            _remove_temps(work, [])
            return cls(out, spec, _count_done(work, spec.ids))
        _start_fresh(work, spec)
        return cls(out, spec, 0)

    @property
    def done_chunks(self) -> int:
        """Chunks already finished: the caller skips that many chunks of its input."""
        return self._done

    def write_chunk(
        self, index: int, keys: Sequence[str], vectors: NDArray[np.float32], ids: NDArray[np.int64] | None = None
    ) -> None:
        """Store chunk `index` durably: it counts in `done_chunks` even after a crash.

        Args:
            ids: (n, 2) int64 (line, word) of each row; required when the spec has ids, refused otherwise.

        Raises:
            OutputError: out-of-order index, wrong dtype or dim, key count or ids
                not one per row, NaN or inf, or a key the format cannot hold.
            OSError: the disk refused the write; OUT is not touched.
        """
        self._check_open()
        if index != self._done:
            raise OutputError(f"chunks must come in order: expected chunk {self._done}, found {index}")
        if (ids is not None) != self._spec.ids:
            found = f"found a chunk with ids={ids is not None}"
            raise OutputError(f"this job was opened with ids={self._spec.ids}; {found}")
        check_rows(keys, vectors, ids, self._spec.dim, self._suffix)
        lines = key_lines(keys)
        data = np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE)
        try:
            write_atomic(_keys_file(self._work, index), lambda stream: stream.write(lines))
            if ids is not None:
                write_atomic(_ids_file(self._work, index), partial(write_array, ids.astype(ID_DTYPE)))
            write_atomic(_vectors_file(self._work, index), partial(write_array, data))
        except OSError as error:
            raise _disk_error(error, f"chunk {index}", self._out, self._work) from error
        self._done += 1

    def finish(self) -> Path:
        """Assemble the output from the finished chunks atomically; drop the work directory.

        Raises:
            OSError: the disk refused the write; OUT is absent or still the old
                file, and the chunks are kept so that a resumed run can finish.
        """
        self._check_open()
        chunks = _Chunks(self._work, self._done, self._spec.dim, self._spec.ids)
        try:
            replace_all([(target, partial(write, chunks)) for target, write in targets(self._out, self._spec.ids)])
        except OSError as error:
            raise _disk_error(error, str(self._out), self._out, self._work) from error
        if self._suffix == ".npy" and not self._spec.ids:
            ids_path(self._out).unlink(missing_ok=True)  # an earlier run's ids would not be these rows'
        shutil.rmtree(self._work)
        self._finished = True
        return self._out

    def _check_open(self) -> None:
        if self._finished:
            raise OutputError(f"{self._out}: this sink has already finished")


def partial_dir(out: Path) -> Path:
    """The hidden work directory of `out`, holding the finished chunks and job state."""
    return out.with_name(f".{out.name}.partial")


# -- the work directory -------------------------------------------------------


def _keys_file(work: Path, index: int) -> Path:
    return work / f"chunk-{index:06d}.keys"


def _ids_file(work: Path, index: int) -> Path:
    return work / f"chunk-{index:06d}.ids"  # an .npy array; not named *.npy, which marks finished chunks


def _vectors_file(work: Path, index: int) -> Path:
    return work / f"chunk-{index:06d}.npy"


def _check_same_job(work: Path, spec: JobSpec) -> None:
    saved = read_record(work / STATE_FILE, STATE_FORMAT, STATE_VERSION, RESUME_REMEDY)
    wanted = spec.record()
    differences = _differences(
        {"dim": saved.get("dim"), "ids": saved.get("ids")}, {"dim": wanted["dim"], "ids": wanted["ids"]}
    ) + _differences(_as_dict(saved.get("fingerprint")), _as_dict(wanted["fingerprint"]))
    if differences:
        raise OutputError(f"{work} holds a different job ({'; '.join(differences)}); {RESUME_REMEDY}")


def _as_dict(value: object) -> dict[str, object]:
    return dict(value) if isinstance(value, dict) else {}


def _differences(saved: dict[str, object], wanted: dict[str, object]) -> list[str]:
    """'key: saved X, now Y' for each key whose value changed, appeared or vanished."""
    absent = "<absent>"
    return [
        f"{key}: saved {saved.get(key, absent)!r}, now {wanted.get(key, absent)!r}"
        for key in sorted(saved.keys() | wanted.keys())
        if saved.get(key, absent) != wanted.get(key, absent)
    ]


def _start_fresh(work: Path, spec: JobSpec) -> None:
    if work.is_symlink() or (work.exists() and not work.is_dir()):
        raise FileExistsError(f"{work}: expected a work directory, found something else; remove it")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    state = record_bytes(spec.record())
    write_atomic(work / STATE_FILE, lambda stream: stream.write(state))


def _count_done(work: Path, ids: bool) -> int:
    """Finished chunks: the unbroken run from 0 whose vectors file (renamed last) exists."""
    done = 0
    while (
        _vectors_file(work, done).is_file()
        and _keys_file(work, done).is_file()
        and (not ids or _ids_file(work, done).is_file())
    ):
        done += 1
    return done


def _remove_temps(directory: Path, targets: list[Path]) -> None:
    """Drop the temp files a killed run left: those of `targets`, or all when empty."""
    patterns = [f".{target.name}.*{TEMP_SUFFIX}" for target in targets] or [f".*{TEMP_SUFFIX}"]
    for pattern in patterns:
        for temp in directory.glob(pattern):
            temp.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Chunks:
    """The finished chunks of a job as bertonnx.io.formats.Blocks, read back one at a time."""

    work: Path
    count: int
    dim: int
    with_ids: bool

    def vectors(self, index: int) -> NDArray[np.float32]:
        path = _vectors_file(self.work, index)
        vectors = self._load(path)
        if vectors.dtype != VECTOR_DTYPE or vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise OutputError(f"{path}: expected <f4 vectors of dim {self.dim}, found {vectors.dtype} {vectors.shape}")
        return vectors

    def ids(self, index: int) -> NDArray[np.int64]:
        path = _ids_file(self.work, index)
        ids = self._load(path)
        rows = self.vectors(index).shape[0]
        if ids.dtype != ID_DTYPE or ids.shape != (rows, 2):
            raise OutputError(f"{path}: expected <i8 ids of shape ({rows}, 2), found {ids.dtype} {ids.shape}")
        return ids

    def key_lines(self, index: int) -> bytes:
        return _keys_file(self.work, index).read_bytes()

    def keys(self, index: int) -> list[str]:
        keys = read_keys(_keys_file(self.work, index))
        rows = self.vectors(index).shape[0]
        if len(keys) != rows:
            raise OutputError(f"{_keys_file(self.work, index)}: expected {rows} keys, one a row, found {len(keys)}")
        return keys

    def rows(self) -> int:
        return sum(self.vectors(index).shape[0] for index in range(self.count))

    @staticmethod
    def _load(path: Path) -> NDArray[np.generic]:
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as error:  # pickled objects, a damaged header
            raise OutputError(f"{path}: not a plain numpy array ({error}); {RESUME_REMEDY}") from error


def _disk_error(error: OSError, what: str, out: Path, work: Path) -> OSError:
    """An OSError of the same errno that says what failed and what is left on disk."""
    culprit = f" ({error.filename})" if error.filename else ""
    return OSError(
        error.errno,
        f"could not write {what}: {error.strerror or error}{culprit}; {out} was not written, "
        f"finished chunks are kept in {work} (rerun with resume to continue)",
    )
