"""Reading outputs back: any file bertonnx.io.formats writes -> a Table (keys, vectors, ids, unknown flags).

gensim loads both word2vec formats but keeps only the first row of a repeated
key (contextual mode repeats words): its `index_to_key` then ends with one
`None` slot, holding a zero vector, per dropped row. `read_vectors` returns
every row in order, with keys unescaped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
from numpy.typing import NDArray

from bertonnx.errors import OutputError
from bertonnx.io.files import VECTOR_DTYPE, Table, ids_path, sidecar_path, suffix_of, unknown_path
from bertonnx.io.keys import read_keys, unescape_key


def read_table(path: Path | str) -> Table:
    """Read any output this module writes back, with its ids and flags where it holds them."""
    path = Path(path)
    table = _READERS[suffix_of(path)](path)
    rows = table.vectors.shape[0]
    if len(table.keys) != rows:
        raise OutputError(f"{path}: expected {rows} keys, one a row, found {len(table.keys)}")
    if table.ids is not None and table.ids.shape != (rows, 2):
        raise OutputError(f"{path}: expected ids of shape ({rows}, 2), found {table.ids.shape}")
    if table.unknown is not None and table.unknown.shape != (rows,):
        raise OutputError(f"{path}: expected unknown flags of shape ({rows},), found {table.unknown.shape}")
    return table


def read_vectors(path: Path | str) -> tuple[list[str], NDArray[np.float32]]:
    """Read any output this module writes back into (keys, (N, dim) float32), in row order."""
    table = read_table(path)
    return table.keys, table.vectors


def _word2vec_header(line: bytes, path: Path) -> tuple[int, int]:
    fields = line.split()
    if len(fields) != 2 or not all(field.isdigit() for field in fields):
        raise OutputError(f"{path}: expected a 'rows dim' header, found {line[:80]!r}")
    return int(fields[0]), int(fields[1])


def _load_optional(path: Path) -> NDArray[np.generic] | None:
    return np.load(path, allow_pickle=False) if path.is_file() else None


def _read_npy(path: Path) -> Table:
    vectors = np.load(path, allow_pickle=False).astype(np.float32, copy=False)
    unknown = _load_optional(unknown_path(path))
    return Table(read_keys(sidecar_path(path)), vectors, _load_optional(ids_path(path)), unknown)


def _read_npz(path: Path) -> Table:
    with np.load(path, allow_pickle=False) as archive:
        keys, vectors = archive["keys"].tolist(), archive["vectors"]
        ids = archive["ids"] if "ids" in archive.files else None
        unknown = archive["unknown"] if "unknown" in archive.files else None
    return Table(keys, vectors.astype(np.float32, copy=False), ids, unknown)


def _read_txt(path: Path) -> Table:
    with path.open("rb") as stream:
        rows, dim = _word2vec_header(stream.readline(), path)
        keys: list[str] = []
        vectors = np.empty((rows, dim), dtype=np.float32)
        for row, line in enumerate(stream):
            key, _, numbers = line.rstrip(b"\r\n").partition(b" ")
            values = numbers.split(b" ")
            if row >= rows or len(values) != dim:
                found = f"row {row + 1} with {len(values)} values"
                raise OutputError(f"{path}: expected {rows} rows of {dim} values, found {found}")
            keys.append(unescape_key(key.decode("utf-8")))
            vectors[row] = np.array(values, dtype=np.float32)
    return Table(keys, vectors, None)


def _read_bin(path: Path) -> Table:
    data = path.read_bytes()
    start = data.find(b"\n") + 1
    rows, dim = _word2vec_header(data[:start], path)
    keys: list[str] = []
    vectors = np.empty((rows, dim), dtype=np.float32)
    for row in range(rows):
        space = data.find(b" ", start)
        if space < 0 or len(data) < space + 1 + 4 * dim:
            raise OutputError(f"{path}: expected {rows} rows, found {row} (truncated?)")
        keys.append(unescape_key(data[start:space].decode("utf-8").lstrip("\n")))
        vectors[row] = np.frombuffer(data, dtype=VECTOR_DTYPE, count=dim, offset=space + 1)
        start = space + 1 + 4 * dim
        if data[start : start + 1] == b"\n":  # optional: gensim writes none after a vector
            start += 1
    if start != len(data):
        raise OutputError(f"{path}: expected the end after {rows} rows, found {len(data) - start} more bytes")
    return Table(keys, vectors, None)


def _read_jsonl(path: Path) -> Table:
    keys: list[str] = []
    rows: list[list[float]] = []
    ids: list[tuple[int, int]] = []
    flags: list[bool] = []
    with path.open("rb") as stream:
        for line in stream:
            record = orjson.loads(line)
            keys.append(record["key"])
            rows.append(record["vector"])
            if "line" in record:
                ids.append((record["line"], record["word"]))
            if "unknown" in record:
                flags.append(bool(record["unknown"]))
    for name, found in (("line and word", ids), ("unknown", flags)):
        if len(found) not in (0, len(rows)):
            found_on = f"found them on {len(found)} of {len(rows)}"
            raise OutputError(f"{path}: expected {name} on every row or none, {found_on}")
    id_array = np.array(ids, dtype=np.int64).reshape(-1, 2) if ids else None
    unknown = np.array(flags, dtype=bool) if flags else None
    if not rows:
        return Table(keys, np.zeros((0, 0), dtype=np.float32), None)
    vectors = np.array(rows, dtype=np.float32)
    if vectors.ndim != 2:
        raise OutputError(f"{path}: expected vectors of one length, found shape {vectors.shape}")
    return Table(keys, vectors, id_array, unknown)


_READERS: dict[str, Callable[[Path], Table]] = {
    ".npy": _read_npy,
    ".npz": _read_npz,
    ".txt": _read_txt,
    ".bin": _read_bin,
    ".jsonl": _read_jsonl,
}
