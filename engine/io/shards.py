"""The shard format of a distributed job's output: shards + manifest.json, written in input order, read back.

    ShardWriter(work, dim, fmt)   takes rows batch by batch, writes each batch as one shard
    read_output(dir)              -> (keys, vectors), as bertonnx.io.formats.read_vectors reads one file
    read_ids(dir)                 -> (N, 3) int64 (file, line, word) of each row

Formats: "npy": shard-NNNNN.npy ((n, dim) float32), shard-NNNNN.keys.txt (escaped
keys, as bertonnx.io.keys writes them) and shard-NNNNN.ids.npy ((n, 3) int64 file,
line, word); "parquet": shard-NNNNN.parquet with columns file, line, word, key
and vector (fixed-size list of float32). The writer checks that ids strictly
increase, so a batch repeated or reordered fails the job rather than corrupting
it. Nothing here needs Ray; numpy shards need no pyarrow either.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertonnx.errors import JobError, OutputError, missing_extra
from bertonnx.io.checkpoints import npy_bytes
from bertonnx.io.keys import key_lines, read_keys
from bertonnx.io.records import read_record

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "bertonnx-shards"
MANIFEST_VERSION = 1
Batch = dict[str, Any]  # column name -> (n, ...) array, as Ray Data hands numpy batches


def require_pyarrow() -> tuple[Any, Any]:
    """(pyarrow, pyarrow.parquet), or a MissingExtraError naming the extra."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:
        raise missing_extra("Parquet", "distributed", error) from error
    return pyarrow, pyarrow.parquet


class ShardWriter:
    """Takes the job's rows batch by batch, in input order, and writes each batch as one shard."""

    def __init__(self, work: Path, dim: int, fmt: str, names: list[str]) -> None:
        self.work = work
        self.dim = dim
        self.fmt = fmt
        self.names = names
        self.written: list[dict[str, object]] = []
        self.skipped: list[tuple[str, int, str]] = []
        self.rows = 0
        self.lines = 0
        self.last = np.full(3, -1, dtype=np.int64)  # the id of the previous row

    def add(self, batch: Batch) -> None:
        ids = np.stack([batch["file"], batch["line"], batch["word"]], axis=1).astype(np.int64)  # (n, 3)
        _check_increasing(self.last, ids)
        self.last = ids[-1] if ids.size else self.last
        self.lines += int(np.count_nonzero(ids[:, 2] == 0))
        reasons = np.asarray(batch["skipped"], dtype=object)  # (n,)
        skipped = reasons != ""
        for file, line, reason in zip(ids[skipped, 0].tolist(), ids[skipped, 1].tolist(), reasons[skipped]):
            name = self.names[file] if file < len(self.names) else f"input {file}"
            self.skipped.append((name, line, str(reason)))
        keep = ~skipped
        if not keep.any():
            return
        keys = [str(key) for key in np.asarray(batch["key"], dtype=object)[keep]]
        vectors = np.ascontiguousarray(batch["vector"][keep], dtype=np.float32)  # (n, dim)
        if vectors.shape[1] != self.dim:
            raise JobError(f"expected vectors of dim {self.dim}, found shape {vectors.shape}")
        name = f"shard-{len(self.written):05d}"
        files = _SHARD_WRITERS[self.fmt](self.work, name, keys, vectors, ids[keep])
        first, last = ids[keep][0].tolist(), ids[keep][-1].tolist()
        self.written.append({"name": name, "rows": len(keys), "first": first, "last": last, "files": files})
        self.rows += len(keys)

    def manifest(self, job: dict[str, object]) -> dict[str, object]:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "kind": self.fmt,
            "dim": self.dim,
            "rows": self.rows,
            "lines": self.lines,
            "inputs": self.names,
            "job": job,
            "skipped": [list(entry) for entry in self.skipped],
            "shards": self.written,
        }


def check_output(out_dir: Path, force: bool) -> None:
    """Refuse to replace an existing output unless forced; cheap, so callers check before starting Ray."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not force:
        raise OutputError(f"{out_dir}: already exists; use {{force}} to replace it", force=True)


def _check_increasing(last: NDArray[np.int64], ids: NDArray[np.int64]) -> None:
    """Ids must strictly increase, across batches too: else a row is repeated or out of order."""
    both = np.concatenate([last[None, :], ids])  # (n + 1, 3)
    step = np.diff(both, axis=0)  # (n, 3)
    first_change = np.argmax(step != 0, axis=1)  # lexicographic: the first column that differs decides
    increasing = step[np.arange(step.shape[0]), first_change] > 0
    if not increasing.all():
        row = int(np.flatnonzero(~increasing)[0])
        raise JobError(
            f"row (file, line, word) {tuple(both[row + 1].tolist())} came after {tuple(both[row].tolist())}: "
            "a row was repeated or reordered"
        )


def _write_files(work: Path, contents: dict[str, bytes]) -> dict[str, str]:
    for name, data in contents.items():
        (work / name).write_bytes(data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}


def _write_npy_shard(
    work: Path, name: str, keys: list[str], vectors: NDArray[np.float32], ids: NDArray[np.int64]
) -> dict[str, str]:
    return _write_files(work, {
        f"{name}.npy": npy_bytes(vectors),
        f"{name}.keys.txt": key_lines(keys),
        f"{name}.ids.npy": npy_bytes(ids),
    })


def _write_parquet_shard(
    work: Path, name: str, keys: list[str], vectors: NDArray[np.float32], ids: NDArray[np.int64]
) -> dict[str, str]:
    pyarrow, parquet = require_pyarrow()
    table = pyarrow.table({
        "file": ids[:, 0],
        "line": ids[:, 1],
        "word": ids[:, 2],
        "key": pyarrow.array(keys, type=pyarrow.string()),
        "vector": pyarrow.FixedSizeListArray.from_arrays(pyarrow.array(vectors.reshape(-1)), vectors.shape[1]),
    })
    buffer = pyarrow.BufferOutputStream()
    parquet.write_table(table, buffer)
    return _write_files(work, {f"{name}.parquet": buffer.getvalue().to_pybytes()})


_SHARD_WRITERS = {"npy": _write_npy_shard, "parquet": _write_parquet_shard}


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of a distributed job's output.

    Raises:
        OutputError: no manifest (the job did not finish), or not one of ours.
    """
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise OutputError(f"{out_dir}: expected {MANIFEST} (written when a job finishes), found none")
    return read_record(path, MANIFEST_FORMAT, MANIFEST_VERSION)


def read_output(out_dir: str | Path) -> tuple[list[str], NDArray[np.float32]]:
    """Read a distributed job's output back into (keys, (N, dim) float32), in input order.

    Raises:
        OutputError: no manifest, or a shard whose sha256 or row count is not the manifest's.
    """
    keys: list[str] = []
    parts: list[NDArray[np.float32]] = []
    manifest = read_manifest(out_dir)
    for shard_keys, vectors, _ in _shards(Path(out_dir), manifest):
        keys.extend(shard_keys)
        parts.append(vectors)
    return keys, np.concatenate(parts) if parts else np.zeros((0, manifest["dim"]), np.float32)


def read_ids(out_dir: str | Path) -> NDArray[np.int64]:
    """(N, 3) int64: the (file, line, word) id of each row of read_output, in the same order."""
    parts = [ids for _, _, ids in _shards(Path(out_dir), read_manifest(out_dir))]
    return np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)


def _shards(
    out_dir: Path, manifest: dict[str, Any]
) -> Iterator[tuple[list[str], NDArray[np.float32], NDArray[np.int64]]]:
    for shard in manifest["shards"]:
        for name, digest in shard["files"].items():
            data = (out_dir / name).read_bytes()
            if hashlib.sha256(data).hexdigest() != digest:
                raise OutputError(f"{out_dir / name}: sha256 differs from the manifest's (damaged or replaced)")
        keys, vectors, ids = _read_shard(out_dir, shard["name"], manifest["kind"])
        if not len(keys) == vectors.shape[0] == ids.shape[0] == shard["rows"]:
            found = f"{len(keys)} keys, {vectors.shape[0]} vectors, {ids.shape[0]} ids"
            raise OutputError(f"{out_dir / shard['name']}: expected {shard['rows']} rows, found {found}")
        yield keys, vectors, ids


def _read_shard(
    out_dir: Path, name: str, kind: str
) -> tuple[list[str], NDArray[np.float32], NDArray[np.int64]]:
    if kind == "npy":
        vectors = np.load(out_dir / f"{name}.npy", allow_pickle=False)
        ids = np.load(out_dir / f"{name}.ids.npy", allow_pickle=False)
        return read_keys(out_dir / f"{name}.keys.txt"), vectors, ids
    _, parquet = require_pyarrow()
    table = parquet.read_table(out_dir / f"{name}.parquet")
    vector = table.column("vector").combine_chunks()
    vectors = vector.flatten().to_numpy().reshape(len(table), vector.type.list_size)
    ids = np.stack([table.column(column).to_numpy() for column in ("file", "line", "word")], axis=1)
    return table.column("key").to_pylist(), vectors, ids
