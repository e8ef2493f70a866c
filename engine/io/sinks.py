"""Writing embeddings to disk in bulk: constant memory, atomic, resumable, and never over what it was not told to.

`bertonnx embed` turns millions of input lines into vectors. A `VectorSink`
takes their rows as they are produced and must survive four things: outputs
larger than RAM, a crash at any instant, a rerun that should not redo finished
work, and a user who did not mean to replace a file.

How it works:
    * Rows are appended, block by block, to the *parts* of the output format
      (bertonnx.io.formats: e.g. an .npy output's vectors, keys, ids and flags)
      in a hidden work directory beside the output, `.<OUT name>.partial/`.
      Nothing is held in memory beyond the block being written.
    * `commit(position)` is a checkpoint: every part is flushed and fsynced,
      then `state.json` records, atomically, the byte size of each part, the
      rows so far and the caller's `position` (e.g. lines read). A killed job
      resumes from its last checkpoint: the parts are cut back to the recorded
      sizes and the caller continues from `position`.
    * `finish(position)` assembles the output from the parts (most are renamed,
      not copied: bertonnx.io.formats.assemble), sidecars first and OUT last, so
      a visible OUT is always complete; only then is the work directory removed.

Checkpoints may fall anywhere between blocks: as long as the caller cuts its
input into blocks the same way after a resume (blocks depend on the input
alone), a run killed at any point and resumed writes an output byte-identical
to an uninterrupted run. If `finish()` fails (disk full), the parts are kept:
resume and finish again.

What is refused (bertonnx.io.checkpoints, the checkpoint system this shares with
type-level jobs), with the way out in the message: an existing output (unless
`force`), and a work directory left by an unfinished job (unless `resume`, for
the same job, or `force`, which starts over). A resume under another job spec
names every field that differs. One process per OUT at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bertonnx.errors import OutputError, WorkKeptError
from bertonnx.io.atomic import TEMP_SUFFIX
from bertonnx.io.checkpoints import (
    START_OVER,
    STATE_FILE,
    check_part,
    check_same_job,
    claim,
    partial_dir,
    read_state,
    write_state,
)
from bertonnx.io.encode_pool import BlockEncoder
from bertonnx.io.encoders import KeyBy
from bertonnx.io.formats import (
    ID_SUFFIXES,
    SUPPORTED_SUFFIXES,
    Part,
    RowBlock,
    assemble,
    check_rows,
    output_files,
    parts,
    read_vectors,
    sidecar_path,
    suffix_of,
)

# read_vectors, sidecar_path and SUPPORTED_SUFFIXES live in bertonnx.io.formats; they stay importable
# from here, the module that writes the files they read.
__all__ = ["JobSpec", "VectorSink", "partial_dir", "read_vectors", "sidecar_path", "SUPPORTED_SUFFIXES"]

STATE_FORMAT = "bertonnx-sink-partial"
STATE_VERSION = 3  # 3: rows appended to format parts, checkpoints by byte size


@dataclass(frozen=True)
class JobSpec:
    """What makes two runs the same job, so that one may resume the other.

    Attributes:
        fingerprint: JSON-serialisable facts that fix every row (input sha256,
            graph sha256, backend, precision, mode, pooling...).
        dim: the width of every vector.
        ids: every row carries (line, word) ids, written where the format has room.
        unknown: every row carries an unknown-token flag, written where the format has room.
        key_by: rows repeat keys (a word in many places, a line twice): word2vec keys then carry the row's
            place ("line", or "word" for line and word), so that they stay unique (encoders.positioned_keys).
    """

    fingerprint: dict[str, object]
    dim: int
    ids: bool = False
    unknown: bool = False
    key_by: KeyBy | None = None

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
            "unknown": self.unknown,
            **({"key_by": self.key_by} if self.key_by else {}),
            "fingerprint": json.loads(json.dumps(self.fingerprint, sort_keys=True)),
        }


class VectorSink:
    """Takes the rows of one output file; create it with `open` (protocol: module doc)."""

    def __init__(self, out: Path, spec: JobSpec, checkpoint: dict[str, Any] | None,
                 encode_workers: int | None = None) -> None:
        self._out = out
        self._spec = spec
        self._suffix = suffix_of(out)
        self._work = partial_dir(out)
        keep = self._suffix in ID_SUFFIXES
        self._with_ids, self._with_unknown = spec.ids and keep, spec.unknown and keep
        self._parts = parts(self._suffix, spec.dim, self._with_ids, self._with_unknown, spec.key_by)
        self._encoder = BlockEncoder((self._suffix, spec.dim, self._with_ids, self._with_unknown, spec.key_by),
                                     [part.encode for part in self._parts], encode_workers)
        self._checkpoint = checkpoint
        self._rows = int(checkpoint["rows"]) if checkpoint else 0
        self._streams: dict[str, IO[bytes]] | None = None
        self._digests = {part.name: hashlib.sha256() for part in self._parts}  # bytes since the last checkpoint
        self._segments: list[dict[str, list[object]]] = list(checkpoint["segments"]) if checkpoint else []
        self._finished = False

    @classmethod
    def open(cls, out: Path | str, spec: JobSpec, resume: bool = False, force: bool = False,
             encode_workers: int | None = None) -> VectorSink:
        """Start a job writing `out`, or with `resume` continue the same job from its last checkpoint.

        Args:
            encode_workers: processes that encode text formats (bertonnx.io.encode_pool.BlockEncoder); None picks.

        Raises:
            OutputError: unsupported suffix, `out` is a directory, `out` exists (without
                force), an unfinished job's work directory (without resume or force), or
                (resume) the work directory holds another job: the message names what differs.
        """
        out = Path(out)
        suffix_of(out)
        if out.is_dir():
            raise OutputError(f"{out}: expected an output file path, found a directory")
        if out.parent.exists() and not out.parent.is_dir():
            raise OutputError(f"{out}: {out.parent} is a file, not a folder")
        if out.parent.is_dir() and not os.access(out.parent, os.W_OK | os.X_OK):
            raise OutputError(f"{out}: its folder {out.parent} is not writable")
        _remove_temps(out.parent, output_files(out))
        if claim(out, output_files(out), resume, force):
            checkpoint = _check_same_job(partial_dir(out), spec)
            sink = cls(out, spec, checkpoint, encode_workers)
            sink._cut_back()
            return sink
        sink = cls(out, spec, None, encode_workers)
        sink._start_fresh()
        return sink

    @property
    def position(self) -> dict[str, Any] | None:
        """The caller's position at the last checkpoint of a resumed job; None for a fresh one."""
        return None if self._checkpoint is None else dict(self._checkpoint["position"])

    @property
    def rows(self) -> int:
        """Rows in the output so far, those kept from a killed run included."""
        return self._rows

    @property
    def written(self) -> int:
        """Bytes in the parts so far, those kept from a killed run included: about the output's size so far."""
        if self._streams is None:
            return sum((self._work / part.name).stat().st_size for part in self._parts)
        return sum(stream.tell() for stream in self._streams.values())

    def append(self, block: RowBlock) -> None:
        """Append rows; they become durable at the next `commit`.

        Raises:
            OutputError: wrong dtype or dim, keys, ids or flags not one per row or
                missing where the job has them, NaN or inf, or a key the format cannot hold.
            OSError: the disk refused the write.
        """
        self._check_open()
        for name, wanted, found in (("ids", self._spec.ids, block.ids), ("unknown", self._spec.unknown,
                                                                              block.unknown)):
            if wanted != (found is not None):
                found_rows = f"found rows with {name}={found is not None}"
                raise OutputError(f"this job was opened with {name}={wanted}; {found_rows}")
        check_rows(block, self._spec.dim, self._suffix)
        streams = self._open_streams()
        try:
            self._write(streams, self._encoder.submit(block))
        except OSError as error:
            raise _disk_error(error, "rows", self._out, self._work) from error
        self._rows += len(block)

    def _write(self, streams: dict[str, IO[bytes]], encoded: list[list[bytes]]) -> None:
        """Encoded blocks (each the bytes of every part) onto the parts, in order."""
        for block in encoded:
            for part, data in zip(self._parts, block):
                streams[part.name].write(data)
                self._digests[part.name].update(data)

    def commit(self, position: dict[str, Any]) -> None:
        """A checkpoint: every row appended so far survives a crash, and a resume starts after `position`."""
        self._check_open()
        streams = self._open_streams()
        try:
            self._write(streams, self._encoder.drain())  # rows still with encoding workers: written first
            for stream in streams.values():
                stream.flush()
                os.fsync(stream.fileno())
            sizes = {name: stream.tell() for name, stream in streams.items()}
            segments = self._segments
            segments.append({name: [sizes[name], digest.hexdigest()] for name, digest in self._digests.items()})
            self._digests = {name: hashlib.sha256() for name in self._digests}
            self._checkpoint = {
                "rows": self._rows, "sizes": sizes, "segments": segments, "position": json.loads(json.dumps(position)),
            }
            write_state(self._work, {**self._spec.record(), "checkpoint": self._checkpoint})
        except OSError as error:
            raise _disk_error(error, "a checkpoint", self._out, self._work) from error

    def finish(self, position: dict[str, Any] | None = None) -> Path:
        """Assemble the output from the parts atomically; drop the work directory.

        Raises:
            OSError: the disk refused the write; OUT is absent or still the old
                file, and the parts are kept so that a resumed run can finish.
        """
        self._check_open()
        self.commit(position if position is not None else (self.position or {}))
        self._close_streams()
        try:
            assemble(self._out, self._work, self._rows, self._spec.dim, self._with_ids, self._with_unknown)
        except OSError as error:
            raise _disk_error(error, str(self._out), self._out, self._work) from error
        shutil.rmtree(self._work)
        self._finished = True
        return self._out

    def discard(self) -> None:
        """Drop the work directory of a job that cannot be resumed (its input is at fault)."""
        self._close_streams()
        shutil.rmtree(self._work, ignore_errors=True)
        self._finished = True

    def close(self) -> None:
        """Close the parts without finishing (a failed job): the last checkpoint stays resumable."""
        self._close_streams()

    def _open_streams(self) -> dict[str, IO[bytes]]:
        if self._streams is None:
            self._streams = {part.name: (self._work / part.name).open("r+b") for part in self._parts}
            for stream in self._streams.values():
                stream.seek(0, os.SEEK_END)
        return self._streams

    def _close_streams(self) -> None:
        self._encoder.close()
        if self._streams is not None:
            for stream in self._streams.values():
                stream.close()
            self._streams = None

    def _start_fresh(self) -> None:
        work = self._work
        if work.is_symlink() or (work.exists() and not work.is_dir()):
            raise FileExistsError(f"{work}: expected a work directory, found something else; remove it")
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        for part in self._parts:
            _write_part_start(work / part.name, part)  # a header slot, filled at finish: not in any digest
        self.commit({})
        self._checkpoint = None

    def _cut_back(self) -> None:
        """Cut every part back to the last checkpoint: what a killed run wrote after it is redone."""
        assert self._checkpoint is not None
        sizes = self._checkpoint.get("sizes", {})
        for part in self._parts:
            path = self._work / part.name
            size = sizes.get(part.name)
            found = path.stat().st_size if path.is_file() else -1
            if not isinstance(size, int) or found < size:
                raise OutputError(f"{path}: expected at least {size} bytes, found {max(found, 0)}; "
                                  f"{START_OVER}", force=True)
            os.truncate(path, size)
            check_part(path, len(part.start()), [segment[part.name] for segment in self._segments])
        _remove_temps(self._work, [])

    def _check_open(self) -> None:
        if self._finished:
            raise OutputError(f"{self._out}: this sink has already finished")


def _write_part_start(path: Path, part: Part) -> None:
    with path.open("wb") as stream:
        stream.write(part.start())


def _check_same_job(work: Path, spec: JobSpec) -> dict[str, Any]:
    """The saved checkpoint, once the saved job is the same as `spec`."""
    saved = read_state(work, STATE_FORMAT, STATE_VERSION)
    wanted = spec.record()
    shape = ("dim", "ids", "unknown")
    fingerprint = saved.get("fingerprint")
    check_same_job({**{k: saved.get(k) for k in shape}, **(fingerprint if isinstance(fingerprint, dict) else {})},
                   {**{k: wanted[k] for k in shape}, **wanted["fingerprint"]})  # type: ignore[dict-item]
    checkpoint = saved.get("checkpoint")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("rows"), int):
        raise OutputError(f"{work / STATE_FILE}: no checkpoint recorded; {START_OVER}", force=True)
    return checkpoint


def _remove_temps(directory: Path, targets: list[Path]) -> None:
    """Drop the temp files a killed run left: those of `targets`, or all when empty."""
    patterns = [f".{target.name}.*{TEMP_SUFFIX}" for target in targets] or [f".*{TEMP_SUFFIX}"]
    for pattern in patterns:
        for temp in directory.glob(pattern):
            temp.unlink(missing_ok=True)


def _disk_error(error: OSError, what: str, out: Path, work: Path) -> WorkKeptError:
    """An OSError of the same errno that says what failed and what is left on disk."""
    culprit = f" ({error.filename})" if error.filename else ""
    number = f"[Errno {error.errno}] " if error.errno is not None else ""
    return WorkKeptError(
        error.errno,
        f"{number}could not write {what}: {error.strerror or error}{culprit}; {out} was not written, "
                f"finished work is kept in {work}" + " (rerun with {resume} to continue)",
        resume=True,
    )
