r"""Vector file formats, chosen by suffix: writers that stream blocks of rows, and readers.

Formats (a job with no rows writes a valid empty file):
    .npy    (N, dim) float32, plus `<stem>.keys.txt` (one key a line, see
            bertonnx.io.keys) and, with ids, `<stem>.ids.npy` ((N, 2) int64).
    .npz    arrays `vectors` (N, dim) float32, `keys` (N,) numpy unicode and,
            with ids, `ids` (N, 2) int64; stored uncompressed, loads with
            `allow_pickle=False`. Keys ending in NUL are refused (numpy drops
            trailing NULs). `keys` takes N * longest key * 4 bytes: prefer
            another format for long sentences.
    .txt    word2vec text: `N dim` header, then `key v1 ... vdim` per row, `%.9g`
            so every float32 reads back exactly. No ids (no room for them).
    .bin    word2vec binary: `N dim` header, then `key`, a space, dim
            little-endian float32 and a newline per row. No ids.
    .jsonl  `{"key": ..., "line": L, "word": W, "vector": [...]}` per row (line
            and word with ids only), `%.9g` floats but -0.0 as `-0.0` (JSON
            reads `-0` as the integer 0). An empty file reads back with dim 0.

Ids: row i's id is (line, word): the 1-based input line it came from and its
index among that line's rows, so 0 for a static word or a sentence, which give
one row a line (the numbering `bertonnx embed-distributed` uses, minus its file).

gensim loads both word2vec formats but keeps only the first row of a repeated
key (contextual mode repeats words): its `index_to_key` then ends with one
`None` slot, holding a zero vector, per dropped row. `read_vectors` returns
every row in order, with keys unescaped.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Protocol

import numpy as np
from numpy.typing import NDArray

from bertonnx.errors import OutputError
from bertonnx.io.atomic import replace_all
from bertonnx.io.keys import escape_token, key_lines, read_keys, unescape_key

SUPPORTED_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".txt", ".bin", ".jsonl")
ID_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".jsonl")  # the formats with room for ids
FLOAT_FORMAT = "%.9g"
"""Nine significant digits: the fewest that bring every float32 back exactly."""
VECTOR_DTYPE = np.dtype("<f4")
ID_DTYPE = np.dtype("<i8")

_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # fixed, so that reruns write identical bytes
_NEGATIVE_ZERO = re.compile(r"(?<![\w.])-0(?![\w.])")  # the whole number "-0", not "1e-05"


class Blocks(Protocol):
    """Rows to write, in blocks read one at a time, so that memory stays O(block)."""

    dim: int
    count: int  # blocks
    with_ids: bool

    def keys(self, index: int) -> list[str]: ...

    def key_lines(self, index: int) -> bytes: ...

    def vectors(self, index: int) -> NDArray[np.float32]: ...  # (n, dim) <f4

    def ids(self, index: int) -> NDArray[np.int64]: ...  # (n, 2) <i8

    def rows(self) -> int: ...


Writer = Callable[[Blocks, IO[bytes]], None]


@dataclass(frozen=True)
class Table:
    """A vector file read back whole."""

    keys: list[str]
    vectors: NDArray[np.float32]  # (N, dim)
    ids: NDArray[np.int64] | None  # (N, 2) line, word; None where the file holds none


class InMemory:
    """One block of rows held in memory: the `Blocks` that `write_vectors` writes."""

    count = 1

    def __init__(
        self, keys: Sequence[str], vectors: NDArray[np.float32], ids: NDArray[np.int64] | None = None
    ) -> None:
        self._keys = list(keys)
        self._vectors = np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE)  # (n, dim)
        self._ids = None if ids is None else np.ascontiguousarray(ids, dtype=ID_DTYPE)  # (n, 2)
        self.dim = int(self._vectors.shape[1])
        self.with_ids = ids is not None

    def keys(self, index: int) -> list[str]:
        return self._keys

    def key_lines(self, index: int) -> bytes:
        return key_lines(self._keys)

    def vectors(self, index: int) -> NDArray[np.float32]:
        return self._vectors

    def ids(self, index: int) -> NDArray[np.int64]:
        assert self._ids is not None, "ids asked of rows written without them"
        return self._ids

    def rows(self) -> int:
        return int(self._vectors.shape[0])


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


def targets(out: Path, with_ids: bool) -> list[tuple[Path, Writer]]:
    """The files that make up `out`, sidecars first and the main file last (see atomic.replace_all)."""
    suffix = suffix_of(out)
    ids = with_ids and suffix in ID_SUFFIXES
    if suffix == ".npy":
        sidecars: list[tuple[Path, Writer]] = [(sidecar_path(out), _write_key_lines)]
        return sidecars + ([(ids_path(out), _write_ids)] if ids else []) + [(out, _write_npy)]
    if suffix == ".npz":
        return [(out, partial(_write_npz, ids=ids))]
    if suffix == ".jsonl":
        return [(out, partial(_write_jsonl, ids=ids))]
    return [(out, _write_txt if suffix == ".txt" else _write_bin)]


def write_vectors(
    out: Path | str, keys: Sequence[str], vectors: NDArray[np.float32], ids: NDArray[np.int64] | None = None
) -> Path:
    """Write rows held in memory to `out` atomically, in the format its suffix names.

    Args:
        keys: one per row.
        vectors: (N, dim) float32, finite.
        ids: (N, 2) int64 (line, word), kept where the format has room.
    """
    out = Path(out)
    suffix = suffix_of(out)
    check_rows(keys, vectors, ids, int(vectors.shape[1]) if vectors.ndim == 2 else -1, suffix)
    blocks = InMemory(keys, vectors, ids)
    replace_all([(target, partial(write, blocks)) for target, write in targets(out, ids is not None)])
    return out


def read_table(path: Path | str) -> Table:
    """Read any output this module writes back, with its ids where it holds them."""
    path = Path(path)
    table = _READERS[suffix_of(path)](path)
    if len(table.keys) != table.vectors.shape[0]:
        raise OutputError(f"{path}: expected {table.vectors.shape[0]} keys, one a row, found {len(table.keys)}")
    if table.ids is not None and table.ids.shape != (table.vectors.shape[0], 2):
        raise OutputError(f"{path}: expected ids of shape ({table.vectors.shape[0]}, 2), found {table.ids.shape}")
    return table


def read_vectors(path: Path | str) -> tuple[list[str], NDArray[np.float32]]:
    """Read any output this module writes back into (keys, (N, dim) float32), in row order."""
    table = read_table(path)
    return table.keys, table.vectors


# -- checks: what a format can hold --------------------------------------------


def check_rows(
    keys: Sequence[str], vectors: NDArray[np.float32], ids: NDArray[np.int64] | None, dim: int, suffix: str
) -> None:
    """Refuse rows a format cannot hold faithfully, naming the first bad row.

    Raises:
        OutputError: wrong dtype or dim, NaN or inf, a key count or ids shape that
            is not one per row, or a key that is not a str, not UTF-8, or (.npz) ends in NUL.
    """
    _check_vectors(vectors, dim)
    _check_keys(keys, vectors.shape[0], suffix)
    if ids is not None:
        if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iu" or ids.shape != (vectors.shape[0], 2):
            found = f"{ids.dtype} {ids.shape}" if isinstance(ids, np.ndarray) else type(ids).__name__
            raise OutputError(f"expected ({vectors.shape[0]}, 2) integer ids (line, word), found {found}")


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


# -- writers: blocks -> one output format ----------------------------------------


def write_npy_header(stream: IO[bytes], shape: tuple[int, ...], dtype: np.dtype) -> None:
    """The header `np.save` writes, for an array whose rows are streamed after it."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(stream, header)


def write_array(array: NDArray[np.generic], stream: IO[bytes]) -> None:
    """Like `np.save`, but through `stream.write`, so that a full disk raises its real errno."""
    write_npy_header(stream, array.shape, array.dtype)
    stream.write(array.tobytes())


def _write_npy(blocks: Blocks, stream: IO[bytes]) -> None:
    write_npy_header(stream, (blocks.rows(), blocks.dim), VECTOR_DTYPE)
    for index in range(blocks.count):
        stream.write(blocks.vectors(index).tobytes())


def _write_ids(blocks: Blocks, stream: IO[bytes]) -> None:
    write_npy_header(stream, (blocks.rows(), 2), ID_DTYPE)
    for index in range(blocks.count):
        stream.write(blocks.ids(index).tobytes())


def _write_key_lines(blocks: Blocks, stream: IO[bytes]) -> None:
    for index in range(blocks.count):
        stream.write(blocks.key_lines(index))


def _write_npz_keys(blocks: Blocks, stream: IO[bytes]) -> None:
    width = max((len(key) for index in range(blocks.count) for key in blocks.keys(index)), default=0)
    dtype = np.dtype(f"<U{max(width, 1)}")  # numpy's own minimum: np.array([""]) is <U1
    write_npy_header(stream, (blocks.rows(),), dtype)
    for index in range(blocks.count):
        stream.write(np.array(blocks.keys(index), dtype=dtype).tobytes())


def _zip_member(name: str) -> zipfile.ZipInfo:
    member = zipfile.ZipInfo(name, date_time=_ZIP_TIMESTAMP)
    member.external_attr = 0o644 << 16
    return member


def _write_npz(blocks: Blocks, stream: IO[bytes], ids: bool) -> None:
    members: list[tuple[str, Writer]] = [("vectors.npy", _write_npy), ("keys.npy", _write_npz_keys)]
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, write in members + ([("ids.npy", _write_ids)] if ids else []):
            with archive.open(_zip_member(name), "w", force_zip64=True) as member:
                write(blocks, member)


def _write_txt(blocks: Blocks, stream: IO[bytes]) -> None:
    stream.write(f"{blocks.rows()} {blocks.dim}\n".encode("ascii"))
    row_format = " ".join([FLOAT_FORMAT] * blocks.dim)
    for index in range(blocks.count):
        lines = (
            f"{escape_token(key)} {row_format % tuple(row)}\n"
            for key, row in zip(blocks.keys(index), blocks.vectors(index).tolist())
        )
        stream.write("".join(lines).encode("utf-8"))


def _write_bin(blocks: Blocks, stream: IO[bytes]) -> None:
    stream.write(f"{blocks.rows()} {blocks.dim}\n".encode("ascii"))
    for index in range(blocks.count):
        records = (
            escape_token(key).encode("utf-8") + b" " + row.tobytes() + b"\n"
            for key, row in zip(blocks.keys(index), blocks.vectors(index))
        )
        stream.write(b"".join(records))


def _write_jsonl(blocks: Blocks, stream: IO[bytes], ids: bool) -> None:
    for index in range(blocks.count):
        stream.write(jsonl_records(blocks.keys(index), blocks.vectors(index), blocks.ids(index) if ids else None))


def jsonl_records(
    keys: Sequence[str], vectors: NDArray[np.float32], ids: NDArray[np.int64] | None = None
) -> bytes:
    """Rows as JSON lines `{"key": ..., "line": ..., "word": ..., "vector": [...]}`, floats that round-trip float32."""
    vector_format = ", ".join([FLOAT_FORMAT] * vectors.shape[1])
    keys_json = [json.dumps(key, ensure_ascii=False) for key in keys]
    if ids is None:
        heads = [f'{{"key": {key}, ' for key in keys_json]
    else:
        pairs = zip(keys_json, ids.tolist())
        heads = [f'{{"key": {key}, "line": {line}, "word": {word}, ' for key, (line, word) in pairs]
    lines = (
        f'{head}"vector": [{_json_numbers(vector_format % tuple(row))}]}}\n'
        for head, row in zip(heads, vectors.tolist())
    )
    return "".join(lines).encode("utf-8")


def _json_numbers(text: str) -> str:
    """`%.9g` numbers as JSON, where a bare `-0` would read back as the integer 0."""
    if "-0," in text or text.endswith("-0"):  # a cheap test first: signed zeros are rare
        return _NEGATIVE_ZERO.sub("-0.0", text)
    return text


# -- readers -----------------------------------------------------------------------


def _word2vec_header(line: bytes, path: Path) -> tuple[int, int]:
    fields = line.split()
    if len(fields) != 2 or not all(field.isdigit() for field in fields):
        raise OutputError(f"{path}: expected a 'rows dim' header, found {line[:80]!r}")
    return int(fields[0]), int(fields[1])


def _read_npy(path: Path) -> Table:
    vectors = np.load(path, allow_pickle=False).astype(np.float32, copy=False)
    ids = np.load(ids_path(path), allow_pickle=False) if ids_path(path).is_file() else None
    return Table(read_keys(sidecar_path(path)), vectors, ids)


def _read_npz(path: Path) -> Table:
    with np.load(path, allow_pickle=False) as archive:
        keys, vectors = archive["keys"].tolist(), archive["vectors"]
        ids = archive["ids"] if "ids" in archive.files else None
    return Table(keys, vectors.astype(np.float32, copy=False), ids)


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
    with path.open("rb") as stream:
        for line in stream:
            record = json.loads(line)
            keys.append(record["key"])
            rows.append(record["vector"])
            if "line" in record:
                ids.append((record["line"], record["word"]))
    if len(ids) not in (0, len(rows)):
        found = f"found them on {len(ids)} of {len(rows)}"
        raise OutputError(f"{path}: expected line and word on every row or none, {found}")
    id_array = np.array(ids, dtype=np.int64).reshape(-1, 2) if ids else None
    if not rows:
        return Table(keys, np.zeros((0, 0), dtype=np.float32), None)
    vectors = np.array(rows, dtype=np.float32)
    if vectors.ndim != 2:
        raise OutputError(f"{path}: expected vectors of one length, found shape {vectors.shape}")
    return Table(keys, vectors, id_array)


_READERS: dict[str, Callable[[Path], Table]] = {
    ".npy": _read_npy,
    ".npz": _read_npz,
    ".txt": _read_txt,
    ".bin": _read_bin,
    ".jsonl": _read_jsonl,
}
