"""Writing outputs: the parts rows are appended to, and the files assembled from them atomically.

Each format is a few *parts*, byte streams that rows are appended to as they are
produced (bertonnx.io.sinks keeps them in a work directory, resumable). `.npy`
parts start with a 128-byte header slot, filled in once the row count is known,
so that a finished part *is* the file; the word2vec formats get their header and
`.npz` its zip frame when assembled. `assemble` then puts every file of the
output in place atomically, sidecars first and the main file last.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from numpy.typing import NDArray

from bertonnx.errors import OutputError
from bertonnx.io.atomic import make_hidden_dir, replace_all
from bertonnx.io.encoders import KeyBy, array_bytes, bin_rows, jsonl_records, txt_rows, vector_bytes
from bertonnx.io.files import (
    FLAG_DTYPE,
    ID_DTYPE,
    ID_SUFFIXES,
    NPY_HEADER_BYTES,
    VECTOR_DTYPE,
    RowBlock,
    check_rows,
    ids_path,
    output_files,
    sidecar_path,
    suffix_of,
    unknown_path,
)
from bertonnx.io.keys import key_lines, unescape_key

_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # fixed, so that reruns write identical bytes
_COPY_BLOCK = 1 << 22
_KEY_BLOCK = 1 << 12  # keys converted to numpy unicode at a time when an .npz is assembled


@dataclass(frozen=True)
class Part:
    """One byte stream of an output: rows are appended to it as they come.

    Attributes:
        name: its file name inside a work directory.
        encode: a block of rows -> the bytes appended.
        npy: (dtype, row shape) when the part is an .npy array with a header slot.
    """

    name: str
    encode: Callable[[RowBlock], bytes]
    npy: tuple[np.dtype, tuple[int, ...]] | None = None

    def start(self) -> bytes:
        """What a new, empty part holds: the header slot of an .npy part."""
        return bytes(NPY_HEADER_BYTES) if self.npy is not None else b""


def parts(suffix: str, dim: int, with_ids: bool, with_unknown: bool, key_by: KeyBy | None = None) -> list[Part]:
    """The parts rows of a `suffix` output are appended to; ids and flags only where the format has room, and
    where it has none (word2vec), the row's place in its keys when `key_by` says so (encoders.positioned_keys)."""
    if suffix in (".npy", ".npz"):
        found = [
            Part("vectors.npy", vector_bytes, (VECTOR_DTYPE, (dim,))),
            Part("keys.txt", lambda block: key_lines(block.keys)),
        ]
        if with_ids:
            found.append(Part("ids.npy", lambda block: array_bytes(block.ids, ID_DTYPE), (ID_DTYPE, (2,))))
        if with_unknown:
            found.append(Part("unknown.npy", lambda block: array_bytes(block.unknown, FLAG_DTYPE), (FLAG_DTYPE, ())))
        return found
    if suffix == ".jsonl":
        return [Part("rows.jsonl", lambda block: jsonl_records(
            block.keys, block.vectors, block.ids if with_ids else None, block.unknown if with_unknown else None))]
    encode = txt_rows if suffix == ".txt" else bin_rows
    return [Part("rows" + suffix, lambda block: encode(block, key_by))]


def assemble(
    out: Path, work: Path, rows: int, dim: int, with_ids: bool, with_unknown: bool, members: Sequence[str] = ()
) -> None:
    """Turn the finished parts in `work` into the output files at `out`, atomically, the main file last.

    Parts that are already the file (.npy arrays once their header is in, key lines,
    JSON lines) are renamed, not copied. Files of an earlier output that this one
    does not have (ids, flags) are removed first, so none is left beside rows it
    does not describe.

    Raises:
        OSError: the disk refused; `out` is then absent or the old file, and the parts are unchanged.
    """
    suffix = suffix_of(out)
    found = {part.name: part for part in parts(suffix, dim, with_ids, with_unknown)}
    for part in found.values():
        if part.npy is not None:
            _fill_header(work / part.name, part.npy, rows)
    files: list[tuple[Path, Path | Callable[[IO[bytes]], object]]]
    if suffix == ".npy":
        files = [(sidecar_path(out), work / "keys.txt")]
        files += [(ids_path(out), work / "ids.npy")] if with_ids else []
        files += [(unknown_path(out), work / "unknown.npy")] if with_unknown else []
        files.append((out, work / "vectors.npy"))
    elif suffix == ".npz":
        files = [(out, lambda stream: _write_npz(stream, work, [*found, *members]))]
    elif suffix == ".jsonl":
        files = [(out, work / "rows.jsonl")]
    else:
        header = f"{rows} {dim}\n".encode("ascii")
        files = [(out, lambda stream: _copy_after(stream, header, work / ("rows" + suffix)))]
    kept = {target for target, _ in files}
    for stale in output_files(out):
        if stale not in kept:
            stale.unlink(missing_ok=True)
    replace_all(files)


def write_vectors(
    out: Path | str,
    keys: Sequence[str],
    vectors: NDArray[np.float32],
    ids: NDArray[np.int64] | None = None,
    unknown: NDArray[np.bool_] | None = None,
    extra: dict[str, NDArray[np.generic]] | None = None,
) -> Path:
    """Write rows held in memory to `out` atomically, in the format its suffix names.

    Args:
        keys: one per row.
        vectors: (N, dim) float32, finite.
        ids: (N, 2) int64 (line, word), kept where the format has room.
        unknown: (N,) bool, kept where the format has room.
        extra: more per-row arrays by name, or 0-d fields about the whole table, kept in an .npz only (e.g. a
            type-level table's counts, and its method).
    """
    out = Path(out)
    suffix = suffix_of(out)
    block = RowBlock(keys, vectors, ids, unknown)
    check_rows(block, int(vectors.shape[1]) if vectors.ndim == 2 else -1, suffix)
    keep_ids, keep_flags = ids is not None and suffix in ID_SUFFIXES, unknown is not None and suffix in ID_SUFFIXES
    work = make_hidden_dir(out)
    try:
        for part in parts(suffix, int(vectors.shape[1]), keep_ids, keep_flags):
            (work / part.name).write_bytes(part.start() + part.encode(block))
        members = []
        for name, values in (extra or {}).items() if suffix == ".npz" else ():
            if np.ndim(values) and len(values) != len(block):
                raise OutputError(f"{name}: expected {len(block)} values, one a row, found {len(values)}")
            np.save(work / f"{name}.npy", np.ascontiguousarray(values), allow_pickle=False)
            members.append(f"{name}.npy")
        assemble(out, work, len(block), int(vectors.shape[1]), keep_ids, keep_flags, members)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The header `np.save` writes for an array of this dtype and shape, exactly NPY_HEADER_BYTES long."""
    stream = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(stream, header)
    data = stream.getvalue()
    if len(data) != NPY_HEADER_BYTES:  # not for any shape a file can hold; the slot would be wrong
        raise OutputError(f"an .npy header for shape {shape} takes {len(data)} bytes, not {NPY_HEADER_BYTES}")
    return data


def _fill_header(path: Path, npy: tuple[np.dtype, tuple[int, ...]], rows: int) -> None:
    dtype, row_shape = npy
    header = npy_header(dtype, (rows, *row_shape))
    with path.open("r+b") as stream:
        stream.write(header)


def _copy_after(stream: IO[bytes], header: bytes, source: Path) -> None:
    stream.write(header)
    with source.open("rb") as part:
        shutil.copyfileobj(part, stream, _COPY_BLOCK)


def _zip_member(name: str) -> zipfile.ZipInfo:
    member = zipfile.ZipInfo(name, date_time=_ZIP_TIMESTAMP)
    member.external_attr = 0o644 << 16
    return member


def _write_npz(stream: IO[bytes], work: Path, names: list[str]) -> None:
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in names:
            with archive.open(_zip_member(name.replace(".txt", ".npy")), "w", force_zip64=True) as member:
                if name == "keys.txt":
                    _write_npz_keys(member, work / name)
                else:
                    with (work / name).open("rb") as part:
                        shutil.copyfileobj(part, member, _COPY_BLOCK)


def _key_blocks(path: Path) -> Iterator[list[str]]:
    """The keys of a keys part, a block at a time."""
    block: list[str] = []
    with path.open("rb") as stream:
        for line in stream:
            block.append(unescape_key(line[:-1].decode("utf-8")))
            if len(block) == _KEY_BLOCK:
                yield block
                block = []
    if block:
        yield block


def _write_npz_keys(member: IO[bytes], keys: Path) -> None:
    """keys.npy of an .npz: fixed-width numpy unicode, written a block at a time after a pass for the width."""
    width = rows = 0
    for block in _key_blocks(keys):
        width = max(width, max(len(key) for key in block))
        rows += len(block)
    dtype = np.dtype(f"<U{max(width, 1)}")  # numpy's own minimum: np.array([""]) is <U1
    member.write(npy_header(dtype, (rows,)))
    for block in _key_blocks(keys):
        member.write(np.array(block, dtype=dtype).tobytes())
