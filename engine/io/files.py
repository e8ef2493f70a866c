"""What an output is: its format (by suffix), the files it consists of, and the rows it takes.

The formats themselves, and the modules that write and read them, are described in bertonnx.io.formats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bertonnx.errors import OutputError

SUPPORTED_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".txt", ".bin", ".jsonl")
ID_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".jsonl")  # the formats with room for ids and flags
VECTOR_DTYPE = np.dtype("<f4")
ID_DTYPE = np.dtype("<i8")
FLAG_DTYPE = np.dtype("|b1")
NPY_HEADER_BYTES = 128
"""What `np.save` writes for any 1-D or 2-D array of these dtypes: a header slot of this size is exact."""
ENCODE_ROWS = 2048
"""Rows encoded at a time: 2048 rows of 384 floats are ~10 MB of JSON."""


@dataclass(frozen=True)
class RowBlock:
    """Rows to append: a key and a vector each, with (line, word) ids and unknown flags where the job keeps them."""

    keys: Sequence[str]
    vectors: NDArray[np.float32]  # (n, dim)
    ids: NDArray[np.int64] | None = None  # (n, 2)
    unknown: NDArray[np.bool_] | None = None  # (n,)

    def __len__(self) -> int:
        return len(self.keys)

    def blocks(self, rows: int = ENCODE_ROWS) -> list[RowBlock]:
        """The rows in blocks of at most `rows`: a text format's encoding is never held for a whole block."""
        if len(self) <= rows:
            return [self]
        return [
            RowBlock(
                self.keys[start : start + rows],
                self.vectors[start : start + rows],
                None if self.ids is None else self.ids[start : start + rows],
                None if self.unknown is None else self.unknown[start : start + rows],
            )
            for start in range(0, len(self), rows)
        ]


@dataclass(frozen=True)
class Table:
    """A vector file read back whole."""

    keys: list[str]
    vectors: NDArray[np.float32]  # (N, dim)
    ids: NDArray[np.int64] | None  # (N, 2) line, word; None where the file holds none
    unknown: NDArray[np.bool_] | None = None  # (N,); None where the file holds none


def suffix_of(path: Path) -> str:
    """The format of `path`, lower-cased; an OutputError lists the supported ones."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(SUPPORTED_SUFFIXES)
        raise OutputError(f"{path}: unsupported suffix {suffix!r}; expected one of {supported}")
    return suffix


def sidecar_path(out: Path) -> Path:
    """Where a `.npy` output keeps its keys: `<stem>.keys.txt` next to it."""
    return out.with_name(f"{out.stem}.keys.txt")


def ids_path(out: Path) -> Path:
    """Where a `.npy` output keeps its ids: `<stem>.ids.npy` next to it."""
    return out.with_name(f"{out.stem}.ids.npy")


def unknown_path(out: Path) -> Path:
    """Where a `.npy` output keeps its unknown flags: `<stem>.unknown.npy` next to it."""
    return out.with_name(f"{out.stem}.unknown.npy")


def output_files(out: Path) -> list[Path]:
    """Every file an output at `out` may consist of: what a job must not overwrite unasked."""
    if suffix_of(out) == ".npy":
        return [out, sidecar_path(out), ids_path(out), unknown_path(out)]
    return [out]



# -- checks: what a format can hold --------------------------------------------


def check_rows(block: RowBlock, dim: int, suffix: str) -> None:
    """Refuse rows a format cannot hold faithfully, naming the first bad row.

    Raises:
        OutputError: wrong dtype or dim, NaN or inf, a key count, ids or flags that
            are not one per row, or a key that is not a str, not UTF-8, or (.npz) ends in NUL.
    """
    vectors = block.vectors
    _check_vectors(vectors, dim)
    _check_keys(block.keys, vectors.shape[0], suffix)
    ids = block.ids
    if ids is not None:
        if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iu" or ids.shape != (vectors.shape[0], 2):
            found = f"{ids.dtype} {ids.shape}" if isinstance(ids, np.ndarray) else type(ids).__name__
            raise OutputError(f"expected ({vectors.shape[0]}, 2) integer ids (line, word), found {found}")
    flags = block.unknown
    if flags is not None and (not isinstance(flags, np.ndarray) or flags.shape != (vectors.shape[0],)):
        found = f"{flags.dtype} {flags.shape}" if isinstance(flags, np.ndarray) else type(flags).__name__
        raise OutputError(f"expected ({vectors.shape[0]},) unknown flags, found {found}")


def _check_vectors(vectors: NDArray[np.float32], dim: int) -> None:
    if not isinstance(vectors, np.ndarray) or vectors.dtype != np.float32:
        found = vectors.dtype if isinstance(vectors, np.ndarray) else type(vectors).__name__
        raise OutputError(f"expected a float32 array of vectors, found {found}")
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise OutputError(f"expected vectors of dim {dim}, found shape {vectors.shape}")
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        raise OutputError(f"expected finite vectors, found NaN or inf in {bad.size} row(s), first row {bad[0]}")


def _check_keys(keys: Sequence[str], rows: int, suffix: str) -> None:
    if len(keys) != rows:
        raise OutputError(f"expected one key per vector ({rows}), found {len(keys)} keys")
    for row, key in enumerate(keys):
        if not isinstance(key, str):
            raise OutputError(f"row {row}: expected a str key, found {type(key).__name__}")
        if suffix == ".npz" and key.endswith("\x00"):
            raise OutputError(f"row {row}: key {key!r} ends with NUL, which numpy unicode drops")
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as error:
            raise OutputError(f"row {row}: key {key!r} is not valid UTF-8 ({error.reason})") from error


