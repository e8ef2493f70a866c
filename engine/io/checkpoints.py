"""The one checkpoint system of resumable jobs: a work folder beside the output, a fingerprint, sha-checked data.

A resumable job (a bulk job's VectorSink, bertonnx.io.sinks; a type-level job,
bertonnx.type_level.job) keeps its unfinished work in a hidden folder beside its
output, `.<OUT name>.partial/`, and records there, atomically, in `state.json`:
the job's fingerprint (every fact that fixes its output) and its position. The
data a checkpoint keeps is checked by sha256 on resume: whole arrays (`save_arrays`
/ `load_arrays`) or parts appended to segment by segment (`check_part`).

The refusals live here too, each with its way out as a fix (bertonnx.errors):
    * an existing output, unless `force`;
    * a work folder left by an unfinished job, unless `resume` (continue it) or
      `force` (start over);
    * a resume of another job: the message names every field that differs.
All are OutputError.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.errors import OutputError
from bertonnx.io.atomic import replace_all, write_atomic
from bertonnx.io.records import read_record, record_bytes

STATE_FILE = "state.json"
CHECKPOINT_SECONDS = 60.0
"""A checkpoint also falls at the next boundary (a slice's end) once this long has passed since the last, so a
slow job never loses more than about this much work; when checkpoints fall never changes the output."""
START_OVER = "start over with {force}"
"""The way out of a work folder that cannot be resumed; a message template, with the fix force=True."""


def partial_dir(out: Path) -> Path:
    """The hidden work folder of `out`, holding an unfinished job's data and its state."""
    return out.with_name(f".{out.name}.partial")


def has_state(work: Path) -> bool:
    """Whether `work` holds a job's state, i.e. an unfinished job."""
    return (work / STATE_FILE).is_file()


def claim(out: Path, targets: Sequence[Path], resume: bool, force: bool, unfinished: str | None = None) -> bool:
    """Refuse what must not be overwritten; True when the job resumes from the state in its work folder.

    Args:
        targets: every file the finished job writes (`out` and its sidecars).
        unfinished: how the refusal of an unfinished job describes the work folder's content
            (default: "an unfinished job for OUT;").

    Raises:
        OutputError: the work folder holds an unfinished job (without resume or force), or (no unfinished
            job) a target exists (without force).
    """
    work = partial_dir(out)
    if has_state(work) and not force:
        if not resume:
            held = unfinished if unfinished is not None else f"an unfinished job for {out.name};"
            raise OutputError(f"{work} holds {held} {{resume}} continues it, {{force}} starts over",
                              resume=True, force=True)
        return True
    refuse_existing(targets, force)
    return False


def refuse_existing(targets: Sequence[Path], force: bool) -> None:
    """Refuse to replace an existing output unless forced.

    Raises:
        OutputError: a target exists and not `force`.
    """
    existing = [path for path in targets if path.exists()]
    if existing and not force:
        raise OutputError(f"{existing[0]} exists; {{force}} replaces it", force=True)


def write_state(work: Path, record: Mapping[str, Any]) -> None:
    """`state.json` in `work`, atomically: the old state or the whole new one."""
    data = record_bytes(dict(record))
    write_atomic(work / STATE_FILE, lambda stream: stream.write(data))


def read_state(work: Path, kind: str | None = None, version: int | None = None) -> dict[str, Any]:
    """The state in `work`; with `kind`, checked to be a `kind` record of `version` (bertonnx.io.records).

    Raises:
        OutputError: no readable state, or another kind or version; the way out is to start over.
    """
    path = work / STATE_FILE
    if kind is not None and version is not None:
        return read_record(path, kind, version, START_OVER, force=True)
    try:
        state = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as error:
        raise OutputError(f"{work}: no readable checkpoint ({error}); {START_OVER}",
                          force=True) from error
    if not isinstance(state, dict):
        raise OutputError(f"{path}: no checkpoint recorded; {START_OVER}", force=True)
    return state


def check_same_job(saved: Mapping[str, object], wanted: Mapping[str, object]) -> None:
    """Refuse a resume unless the saved job's fields are the wanted ones, naming every field that differs.

    Raises:
        OutputError: "cannot resume: key: saved X, now Y; ..." for each field changed, added or dropped.
    """
    found = differences(saved, json.loads(json.dumps(dict(wanted))))  # as saved: tuples are lists
    if found:
        raise OutputError(f"cannot resume: {'; '.join(found)}; {START_OVER}", force=True)


def differences(saved: Mapping[str, object], wanted: Mapping[str, object]) -> list[str]:
    """'key: saved X, now Y' for each key whose value changed, appeared or vanished."""
    absent = "<absent>"
    return [
        f"{key}: saved {short(saved.get(key, absent))}, now {short(wanted.get(key, absent))}"
        for key in sorted(saved.keys() | wanted.keys())
        if saved.get(key, absent) != wanted.get(key, absent)
    ]


def short(value: object) -> str:
    """A value as a refusal shows it: a 64-digit hash by its first 12 digits."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return repr(value[:12] + "…")
    return repr(value)


def npy_bytes(array: NDArray[Any]) -> bytes:
    """`array` as the bytes of an .npy file."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def save_arrays(work: Path, arrays: Mapping[str, NDArray[Any]]) -> dict[str, str]:
    """Each array as `work/<name>`, all atomically; returns their sha256, for the state that comes after."""
    hashes: dict[str, str] = {}
    files = []
    for name, array in arrays.items():
        data = npy_bytes(array)
        hashes[name] = hashlib.sha256(data).hexdigest()
        files.append((work / name, _writer(data)))
    replace_all(files)
    return hashes


def load_arrays(work: Path, hashes: Mapping[str, str]) -> dict[str, NDArray[Any]]:
    """The arrays `save_arrays` wrote, each checked against its sha256.

    Raises:
        OutputError: an array is missing or is not what the checkpoint recorded.
    """
    arrays = {}
    for name, digest in hashes.items():
        path = work / name
        try:
            data = path.read_bytes()
        except OSError as error:
            raise OutputError(f"{path}: unreadable ({error}); {START_OVER}", force=True) from error
        if hashlib.sha256(data).hexdigest() != digest:
            raise OutputError(f"{path} does not match its checkpoint; {START_OVER}", force=True)
        arrays[name] = np.load(io.BytesIO(data), allow_pickle=False)
    return arrays


def check_part(path: Path, start: int, segments: Sequence[Sequence[object]]) -> None:
    """A part's bytes from `start` (past a header slot) are those its checkpoints recorded, segment by segment
    ((end, sha256) each): a damaged work folder is refused.

    Raises:
        OutputError: a segment record is damaged, or the bytes differ.
    """
    with path.open("rb") as stream:
        stream.seek(start)
        for end, digest in segments:
            if not isinstance(end, int) or end < start:
                raise OutputError(f"{path}: a damaged checkpoint record; {START_OVER}", force=True)
            found = hashlib.sha256()
            left = end - start
            while left:
                block = stream.read(min(left, 1 << 22))
                if not block:
                    break
                found.update(block)
                left -= len(block)
            if found.hexdigest() != digest:
                raise OutputError(f"{path}: bytes {start}-{end} are not what the job wrote (damaged?); "
                                  f"{START_OVER}", force=True)
            start = end


def _writer(data: bytes) -> Any:
    return lambda stream: stream.write(data)
