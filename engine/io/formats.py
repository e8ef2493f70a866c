r"""Vector file formats, chosen by suffix: rows encoded as they come, files assembled at the end, and readers.

Formats (a job with no rows writes a valid empty file):
    .npy    (N, dim) float32, plus `<stem>.keys.txt` (one key a line, see
            bertonnx.io.keys), with ids `<stem>.ids.npy` ((N, 2) int64) and with
            unknown flags `<stem>.unknown.npy` ((N,) bool).
    .npz    arrays `vectors` (N, dim) float32, `keys` (N,) numpy unicode and, when
            the rows carry them, `ids` (N, 2) int64 and `unknown` (N,) bool;
            stored uncompressed, loads with `allow_pickle=False`. Keys ending in
            NUL are refused (numpy drops trailing NULs). `keys` takes N * longest
            key * 4 bytes: prefer another format for long sentences.
    .txt    word2vec text: `N dim` header, then `key v1 ... vdim` per row. No ids
            or flags (no room for them).
    .bin    word2vec binary: `N dim` header, then `key`, a space, dim
            little-endian float32 and a newline per row. No ids or flags.
    .jsonl  `{"key":...,"line":L,"word":W,"unknown":false,"vector":[...]}` per row
            (line and word with ids only, unknown with flags only). An empty file
            reads back with dim 0.

Text numbers (.txt, .jsonl) are the shortest decimal that reads back as the same
float32 (orjson's), -0.0 included: every float32 round-trips exactly.

Ids: row i's id is (line, word): the 1-based input line it came from and its
index among that line's rows, so 0 for a static word or a sentence, which give
one row a line (the numbering `bertonnx embed-distributed` uses, minus its file).
Unknown: True where the row's word (a sentence: any of its words) maps to the
tokenizer's unknown token, e.g. most emoji with an uncased English vocabulary.

How a file is made: each format is a few *parts*, byte streams that rows are
appended to as they are produced (bertonnx.io.sinks keeps them in a work
directory, resumable). `.npy` parts start with a 128-byte header slot, filled
in once the row count is known, so that a finished part *is* the file; the
word2vec formats get their header and `.npz` its zip frame when assembled.
`assemble` then puts every file of the output in place atomically, sidecars
first and the main file last.

gensim loads both word2vec formats but keeps only the first row of a repeated
key (contextual mode repeats words): its `index_to_key` then ends with one
`None` slot, holding a zero vector, per dropped row. `read_vectors` returns
every row in order, with keys unescaped.
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
import orjson
from numpy.typing import NDArray

from bertonnx.errors import OutputError
from bertonnx.io.atomic import make_hidden_dir, replace_all
from bertonnx.io.keys import escape_token, key_lines, read_keys, unescape_key

SUPPORTED_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".txt", ".bin", ".jsonl")
ID_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".jsonl")  # the formats with room for ids and flags
VECTOR_DTYPE = np.dtype("<f4")
ID_DTYPE = np.dtype("<i8")
FLAG_DTYPE = np.dtype("|b1")
NPY_HEADER_BYTES = 128
"""What `np.save` writes for any 1-D or 2-D array of these dtypes: a header slot of this size is exact."""

_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # fixed, so that reruns write identical bytes
_COPY_BLOCK = 1 << 22
ENCODE_ROWS = 2048
"""Rows encoded at a time: 2048 rows of 384 floats are ~10 MB of JSON."""
_KEY_BLOCK = 1 << 12  # keys converted to numpy unicode at a time when an .npz is assembled


@dataclass(frozen=True)
class RowBlock:
    """Rows to append: a key and a vector each, with (line, word) ids and unknown flags where the job keeps them."""

    keys: Sequence[str]
    vectors: NDArray[np.float32]  # (n, dim)
    ids: NDArray[np.int64] | None = None  # (n, 2)
    unknown: NDArray[np.bool_] | None = None  # (n,)

    def __len__(self) -> int:
        return len(self.keys)

    def pieces(self, rows: int = ENCODE_ROWS) -> list[RowBlock]:
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


def parts(suffix: str, dim: int, with_ids: bool, with_unknown: bool) -> list[Part]:
    """The parts rows of a `suffix` output are appended to; ids and flags only where the format has room."""
    if suffix in (".npy", ".npz"):
        found = [
            Part("vectors.npy", _vector_bytes, (VECTOR_DTYPE, (dim,))),
            Part("keys.txt", lambda block: key_lines(block.keys)),
        ]
        if with_ids:
            found.append(Part("ids.npy", lambda block: _array(block.ids, ID_DTYPE), (ID_DTYPE, (2,))))
        if with_unknown:
            found.append(Part("unknown.npy", lambda block: _array(block.unknown, FLAG_DTYPE), (FLAG_DTYPE, ())))
        return found
    if suffix == ".jsonl":
        return [Part("rows.jsonl", lambda block: jsonl_records(
            block.keys, block.vectors, block.ids if with_ids else None, block.unknown if with_unknown else None))]
    return [Part("rows" + suffix, _txt_rows if suffix == ".txt" else _bin_rows)]


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
        extra: more per-row arrays by name, kept in an .npz only (e.g. a type-level table's counts).
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
            if len(values) != len(block):
                raise OutputError(f"{name}: expected {len(block)} values, one a row, found {len(values)}")
            np.save(work / f"{name}.npy", np.ascontiguousarray(values), allow_pickle=False)
            members.append(f"{name}.npy")
        assemble(out, work, len(block), int(vectors.shape[1]), keep_ids, keep_flags, members)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


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


# -- encoders: rows -> the bytes of a part ------------------------------------------


def _array(values: NDArray[np.generic] | None, dtype: np.dtype) -> bytes:
    assert values is not None, "a part asked for ids or flags the rows do not carry"
    return np.ascontiguousarray(values, dtype=dtype).tobytes()


def _vector_bytes(block: RowBlock) -> bytes:
    return _array(block.vectors, VECTOR_DTYPE)


def _number_rows(vectors: NDArray[np.float32]) -> list[bytes]:
    """Each row's numbers as `a,b,c`: orjson's shortest float32 decimals, -0.0 kept."""
    if vectors.shape[0] == 0:
        return []
    text = orjson.dumps(np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE), option=orjson.OPT_SERIALIZE_NUMPY)
    return text[2:-2].split(b"],[")  # numbers never hold a bracket


def jsonl_records(
    keys: Sequence[str],
    vectors: NDArray[np.float32],
    ids: NDArray[np.int64] | None = None,
    unknown: NDArray[np.bool_] | None = None,
) -> bytes:
    """Rows as JSON lines `{"key":...,"line":...,"word":...,"unknown":...,"vector":[...]}`, floats exact as float32."""
    heads = [b'{"key":' + orjson.dumps(key) for key in keys]
    if ids is not None:
        heads = [head + b',"line":%d,"word":%d' % (line, word) for head, (line, word) in zip(heads, ids.tolist())]
    if unknown is not None:
        heads = [head + (b',"unknown":true' if flag else b',"unknown":false') for head, flag in zip(heads, unknown)]
    return b"".join(head + b',"vector":[' + row + b"]}\n" for head, row in zip(heads, _number_rows(vectors)))


def _txt_rows(block: RowBlock) -> bytes:
    return b"".join(
        escape_token(key).encode("utf-8") + b" " + row.replace(b",", b" ") + b"\n"
        for key, row in zip(block.keys, _number_rows(block.vectors))
    )


def _bin_rows(block: RowBlock) -> bytes:
    data = np.ascontiguousarray(block.vectors, dtype=VECTOR_DTYPE)
    return b"".join(
        escape_token(key).encode("utf-8") + b" " + row.tobytes() + b"\n" for key, row in zip(block.keys, data)
    )


# -- assembly: parts -> output files ---------------------------------------------------


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


# -- readers -----------------------------------------------------------------------


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

__all__ = [
    "ID_SUFFIXES", "SUPPORTED_SUFFIXES", "Part", "RowBlock", "Table", "assemble", "check_rows", "ids_path",
    "jsonl_records", "output_files", "parts", "read_table", "read_vectors", "sidecar_path", "suffix_of",
    "unknown_path", "write_vectors",
]
