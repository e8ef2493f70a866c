r"""Writing embeddings to disk in bulk: bounded memory, atomic, resumable.

`bertonnx embed` turns millions of input lines into vectors chunk by chunk. A
`VectorSink` takes those chunks and must survive three things: outputs larger
than RAM, a crash at any instant, and a rerun that should not redo finished work.

How it works:
    * Every finished chunk goes to a hidden work directory next to the output,
      `.<OUT name>.partial/`, as `chunk-NNNNNN.keys` (escaped keys, see below)
      then `chunk-NNNNNN.npy` (its vectors). Each file is written to a temp file,
      fsynced and renamed into place; the `.npy` is renamed last, so its presence
      is what marks the chunk finished. `state.json` there holds the job's spec.
    * `finish()` streams the chunks, one at a time, into temp files next to OUT
      in the requested format (the headers of `.npy`, `.txt` and `.bin` need the
      row count, only known now), fsyncs them and renames them into place:
      sidecars first, OUT last. So a visible OUT is always complete, and so are
      its sidecars. Only then is the work directory removed.
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

Formats, chosen by OUT's suffix (a job with no rows writes a valid empty file):
    .npy    (N, dim) float32, plus `<stem>.keys.txt`: one key per line, UTF-8,
            with backslash, LF and CR escaped as `\\`, `\n`, `\r` (`read_keys`).
    .npz    arrays `vectors` (N, dim) float32 and `keys` (N,) numpy unicode,
            stored uncompressed; loads with `allow_pickle=False`. Keys ending in
            NUL are refused (numpy drops trailing NULs). The `keys` array takes
            N * longest key * 4 bytes: prefer another format for long sentences.
    .txt    word2vec text: `N dim` header, then `key v1 ... vdim` per row, `%.9g`
            so every float32 reads back exactly.
    .bin    word2vec binary: `N dim` header, then `key`, a space, dim
            little-endian float32 and a newline per row.
    .jsonl  `{"key": ..., "vector": [...]}` per row, `%.9g` floats but -0.0 as
            `-0.0` (JSON reads `-0` as the integer 0), JSON string escapes
            only. An empty job writes an empty file, so its dim reads back as 0.
In both word2vec formats a key must be one whitespace-free token, so backslash
and every whitespace character are escaped: `\\`, `\n`, `\r`, `\t`, `\s` (space),
other whitespace (`str.isspace`) as `\uXXXX`; "new york" is stored as
`new\syork`. gensim loads both formats but keeps only the first row of a
repeated key (contextual mode repeats words): its `index_to_key` then ends with
one `None` slot, holding a zero vector, per dropped row. `read_vectors` returns
every row in order, with keys unescaped.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

import numpy as np
from numpy.typing import NDArray

from bertonnx.errors import OutputError
from bertonnx.io.atomic import TEMP_SUFFIX, replace_all, write_atomic

SUPPORTED_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".txt", ".bin", ".jsonl")
STATE_FILE = "state.json"
STATE_FORMAT = "bertonnx-sink-partial"
STATE_VERSION = 1
FLOAT_FORMAT = "%.9g"
"""Nine significant digits: the fewest that bring every float32 back exactly."""

_VECTOR_DTYPE = np.dtype("<f4")
_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # fixed, so that reruns write identical bytes
_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", " ": "\\s"}
_UNESCAPES = {escape[1]: char for char, escape in _NAMED_ESCAPES.items()}
_LINE_SPECIALS = re.compile(r"[\\\n\r]")
_TOKEN_SPECIALS = re.compile(r"[\\\s]")  # \s in a str pattern is exactly str.isspace()
_ESCAPE_SEQUENCE = re.compile(r"\\(u[0-9a-fA-F]{4}|.?)", re.DOTALL)
_NEGATIVE_ZERO = re.compile(r"(?<![\w.])-0(?![\w.])")  # the whole number "-0", not "1e-05"

Chunk = tuple[list[str], NDArray[np.float32]]
Writer = Callable[["_Parts", IO[bytes]], None]


@dataclass(frozen=True)
class JobSpec:
    """What makes two runs the same job, so that one may resume the other.

    Attributes:
        fingerprint: JSON-serialisable facts that fix every chunk's content
            (input sha256 and size, bundle id, mode, pooling, chunk size...).
        dim: the width of every vector.
    """

    fingerprint: dict[str, object]
    dim: int

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
            ValueError: unsupported suffix, `out` is a directory, or (resume) the
                work directory holds another job; the message names what differs.
        """
        out = Path(out)
        suffix_of(out)
        if out.is_dir():
            raise OutputError(f"{out}: expected an output file path, found a directory")
        work = partial_dir(out)
        _remove_temps(out.parent, [out, sidecar_path(out)])
        if resume and (work / STATE_FILE).is_file():
            _check_same_job(work, spec)
            _remove_temps(work, [])
            return cls(out, spec, _count_done(work))
        _start_fresh(work, spec)
        return cls(out, spec, 0)

    @property
    def done_chunks(self) -> int:
        """Chunks already finished: the caller skips that many chunks of its input."""
        return self._done

    def write_chunk(self, index: int, keys: Sequence[str], vectors: NDArray[np.float32]) -> None:
        """Store chunk `index` durably: it counts in `done_chunks` even after a crash.

        Raises:
            ValueError: out-of-order index, wrong dtype or dim, key count not equal
                to the row count, NaN or inf, or a key the format cannot hold.
            OSError: the disk refused the write; OUT is not touched.
        """
        self._check_open()
        if index != self._done:
            raise OutputError(
                f"chunks must come in order: expected chunk {self._done}, found {index}"
            )
        _check_vectors(vectors, self._spec.dim)
        _check_keys(keys, vectors.shape[0], self._suffix)
        lines = b"".join(escape_line(key).encode("utf-8") + b"\n" for key in keys)
        data = np.ascontiguousarray(vectors, dtype=_VECTOR_DTYPE)
        try:
            write_atomic(_keys_file(self._work, index), lambda stream: stream.write(lines))
            write_atomic(_vectors_file(self._work, index), partial(_write_array, data))
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
        parts = _Parts(self._work, self._done, self._spec.dim)
        try:
            replace_all([(target, partial(write, parts)) for target, write in _targets(self._out)])
        except OSError as error:
            raise _disk_error(error, str(self._out), self._out, self._work) from error
        shutil.rmtree(self._work)
        self._finished = True
        return self._out

    def _check_open(self) -> None:
        if self._finished:
            raise OutputError(f"{self._out}: this sink has already finished")


def partial_dir(out: Path) -> Path:
    """The hidden work directory of `out`, holding the finished chunks and job state."""
    return out.with_name(f".{out.name}.partial")


def sidecar_path(out: Path) -> Path:
    """Where a `.npy` output keeps its keys: `<stem>.keys.txt` next to it."""
    return out.with_name(f"{out.stem}.keys.txt")


def suffix_of(path: Path) -> str:
    """The format of `path`, lower-cased; a ValueError lists the supported ones."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(SUPPORTED_SUFFIXES)
        raise OutputError(f"{path}: unsupported suffix {suffix!r}; expected one of {supported}")
    return suffix


def escape_line(key: str) -> str:
    """Escape backslash, LF and CR, so that a key is exactly one line."""
    return _LINE_SPECIALS.sub(_escape_char, key)


def escape_token(key: str) -> str:
    """Escape backslash and all whitespace, so that a key is one word2vec token."""
    return _TOKEN_SPECIALS.sub(_escape_char, key)


def unescape_key(text: str) -> str:
    """Undo `escape_line` or `escape_token`."""
    return _ESCAPE_SEQUENCE.sub(lambda match: _unescape_sequence(match.group(1), text), text)


def read_keys(path: Path | str) -> list[str]:
    """Read a keys file: one `escape_line`-escaped key per newline-terminated line."""
    text = Path(path).read_bytes().decode("utf-8")
    if text and not text.endswith("\n"):
        raise OutputError(f"{path}: expected a newline after the last key, found {text[-20:]!r}")
    return [unescape_key(line) for line in text.split("\n")[:-1]]


def read_vectors(path: Path | str) -> tuple[list[str], NDArray[np.float32]]:
    """Read any output this module writes back into (keys, (N, dim) float32), in row order."""
    path = Path(path)
    return _READERS[suffix_of(path)](path)


# -- checks -------------------------------------------------------------------


def _check_vectors(vectors: NDArray[np.float32], dim: int) -> None:
    if not isinstance(vectors, np.ndarray) or vectors.dtype != np.float32:
        found = vectors.dtype if isinstance(vectors, np.ndarray) else type(vectors).__name__
        raise OutputError(f"expected a float32 array of vectors, found {found}")
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise OutputError(f"expected vectors of dim {dim}, found shape {vectors.shape}")
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        raise OutputError(
            f"expected finite vectors, found NaN or inf in {bad.size} row(s), first row {bad[0]}"
        )


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
            message = f"row {row}: key {key!r} is not valid UTF-8 ({error.reason})"
            raise OutputError(message) from error


def _check_same_job(work: Path, spec: JobSpec) -> None:
    state_path = work / STATE_FILE
    try:
        saved = json.loads(state_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OutputError(f"{state_path}: damaged ({error}); start over without resume") from error
    wanted = spec.record()
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        expected = f"expected a {STATE_FORMAT} state"
        raise OutputError(f"{state_path}: {expected}; start over without resume")
    differences = _differences(
        {"version": saved.get("version"), "dim": saved.get("dim")},
        {"version": wanted["version"], "dim": wanted["dim"]},
    ) + _differences(_as_dict(saved.get("fingerprint")), _as_dict(wanted["fingerprint"]))
    if differences:
        raise OutputError(
            f"{work} holds a different job ({'; '.join(differences)}); start over without resume"
        )


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


# -- the work directory -------------------------------------------------------


def _keys_file(work: Path, index: int) -> Path:
    return work / f"chunk-{index:06d}.keys"


def _vectors_file(work: Path, index: int) -> Path:
    return work / f"chunk-{index:06d}.npy"


def _start_fresh(work: Path, spec: JobSpec) -> None:
    if work.is_symlink() or (work.exists() and not work.is_dir()):
        raise FileExistsError(f"{work}: expected a work directory, found something else; remove it")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    state = json.dumps(spec.record(), indent=2, sort_keys=True).encode("utf-8")
    write_atomic(work / STATE_FILE, lambda stream: stream.write(state))


def _count_done(work: Path) -> int:
    """Finished chunks: the unbroken run from 0 whose vectors file (renamed last) exists."""
    done = 0
    while _vectors_file(work, done).is_file() and _keys_file(work, done).is_file():
        done += 1
    return done


def _remove_temps(directory: Path, targets: list[Path]) -> None:
    """Drop the temp files a killed run left: those of `targets`, or all when empty."""
    patterns = [f".{target.name}.*{TEMP_SUFFIX}" for target in targets] or [f".*{TEMP_SUFFIX}"]
    for pattern in patterns:
        for temp in directory.glob(pattern):
            temp.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Parts:
    """The finished chunks of a job, read back one at a time so memory stays O(chunk)."""

    work: Path
    count: int
    dim: int

    def vectors(self, index: int) -> NDArray[np.float32]:
        path = _vectors_file(self.work, index)
        try:
            vectors: NDArray[np.float32] = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as error:  # pickled objects, a damaged header
            raise OutputError(f"{path}: not a plain numpy array ({error}); start over without resume") from error
        if vectors.dtype != _VECTOR_DTYPE or vectors.ndim != 2 or vectors.shape[1] != self.dim:
            found = f"{vectors.dtype} {vectors.shape}"
            raise OutputError(f"{path}: expected <f4 vectors of dim {self.dim}, found {found}")
        return vectors

    def key_lines(self, index: int) -> bytes:
        return _keys_file(self.work, index).read_bytes()

    def chunk(self, index: int) -> Chunk:
        keys = read_keys(_keys_file(self.work, index))
        vectors = self.vectors(index)
        return _rows_checked(_keys_file(self.work, index), keys, vectors)

    def chunks(self) -> Iterator[Chunk]:
        return (self.chunk(index) for index in range(self.count))

    def rows(self) -> int:
        return sum(self.vectors(index).shape[0] for index in range(self.count))


# -- atomic files -------------------------------------------------------------


def _disk_error(error: OSError, what: str, out: Path, work: Path) -> OSError:
    """An OSError of the same errno that says what failed and what is left on disk."""
    culprit = f" ({error.filename})" if error.filename else ""
    return OSError(
        error.errno,
        f"could not write {what}: {error.strerror or error}{culprit}; {out} was not written, "
        f"finished chunks are kept in {work} (rerun with resume to continue)",
    )


# -- writers: finished chunks -> one output format ----------------------------


def _targets(out: Path) -> list[tuple[Path, Writer]]:
    """The files that make up `out`, main file last."""
    suffix = suffix_of(out)
    if suffix == ".npy":
        return [(sidecar_path(out), _write_key_lines), (out, _write_npy)]
    return [(out, _WRITERS[suffix])]


def _write_npy_header(stream: IO[bytes], shape: tuple[int, ...], dtype: np.dtype) -> None:
    """The header `np.save` writes, for an array whose rows are streamed after it."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(stream, header)


def _write_array(array: NDArray[np.float32], stream: IO[bytes]) -> None:
    """Like `np.save`, but through `stream.write`, so that a full disk raises its real errno."""
    _write_npy_header(stream, array.shape, array.dtype)
    stream.write(array.tobytes())


def _write_npy(parts: _Parts, stream: IO[bytes]) -> None:
    _write_npy_header(stream, (parts.rows(), parts.dim), _VECTOR_DTYPE)
    for index in range(parts.count):
        stream.write(parts.vectors(index).tobytes())


def _write_key_lines(parts: _Parts, stream: IO[bytes]) -> None:
    for index in range(parts.count):
        stream.write(parts.key_lines(index))


def _write_npz_keys(parts: _Parts, stream: IO[bytes]) -> None:
    width = max((len(key) for keys, _ in parts.chunks() for key in keys), default=0)
    dtype = np.dtype(f"<U{max(width, 1)}")  # numpy's own minimum: np.array([""]) is <U1
    _write_npy_header(stream, (parts.rows(),), dtype)
    for keys, _ in parts.chunks():
        stream.write(np.array(keys, dtype=dtype).tobytes())


def _zip_member(name: str) -> zipfile.ZipInfo:
    member = zipfile.ZipInfo(name, date_time=_ZIP_TIMESTAMP)
    member.external_attr = 0o644 << 16
    return member


def _write_npz(parts: _Parts, stream: IO[bytes]) -> None:
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open(_zip_member("vectors.npy"), "w", force_zip64=True) as member:
            _write_npy(parts, member)
        with archive.open(_zip_member("keys.npy"), "w", force_zip64=True) as member:
            _write_npz_keys(parts, member)


def _write_txt(parts: _Parts, stream: IO[bytes]) -> None:
    stream.write(f"{parts.rows()} {parts.dim}\n".encode("ascii"))
    row_format = " ".join([FLOAT_FORMAT] * parts.dim)
    for keys, vectors in parts.chunks():
        lines = (
            f"{escape_token(key)} {row_format % tuple(row)}\n"
            for key, row in zip(keys, vectors.tolist())
        )
        stream.write("".join(lines).encode("utf-8"))


def _write_bin(parts: _Parts, stream: IO[bytes]) -> None:
    stream.write(f"{parts.rows()} {parts.dim}\n".encode("ascii"))
    for keys, vectors in parts.chunks():
        records = (
            escape_token(key).encode("utf-8") + b" " + row.tobytes() + b"\n"
            for key, row in zip(keys, vectors)
        )
        stream.write(b"".join(records))


def _write_jsonl(parts: _Parts, stream: IO[bytes]) -> None:
    for keys, vectors in parts.chunks():
        stream.write(jsonl_records(keys, vectors))


def jsonl_records(keys: Sequence[str], vectors: NDArray[np.float32]) -> bytes:
    """Rows as JSON lines `{"key": ..., "vector": [...]}`, floats that round-trip float32."""
    vector_format = ", ".join([FLOAT_FORMAT] * vectors.shape[1])
    lines = (
        f'{{"key": {json.dumps(key, ensure_ascii=False)}, '
        f'"vector": [{_json_numbers(vector_format % tuple(row))}]}}\n'
        for key, row in zip(keys, vectors.tolist())
    )
    return "".join(lines).encode("utf-8")


def _json_numbers(text: str) -> str:
    """`%.9g` numbers as JSON, where a bare `-0` would read back as the integer 0."""
    if "-0," in text or text.endswith("-0"):  # a cheap test first: signed zeros are rare
        return _NEGATIVE_ZERO.sub("-0.0", text)
    return text


_WRITERS: dict[str, Writer] = {
    ".npz": _write_npz,
    ".txt": _write_txt,
    ".bin": _write_bin,
    ".jsonl": _write_jsonl,
}


# -- key escapes and readers --------------------------------------------------


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _unescape_sequence(sequence: str, text: str) -> str:
    if sequence in _UNESCAPES:
        return _UNESCAPES[sequence]
    if len(sequence) == 5:  # uXXXX
        return chr(int(sequence[1:], 16))
    raise OutputError(
        f"bad escape '\\{sequence}' in key {text!r}; expected one of "
        f"{', '.join(_NAMED_ESCAPES.values())} or \\uXXXX"
    )


def _word2vec_header(line: bytes, path: Path) -> tuple[int, int]:
    fields = line.split()
    if len(fields) != 2 or not all(field.isdigit() for field in fields):
        raise OutputError(f"{path}: expected a 'rows dim' header, found {line[:80]!r}")
    return int(fields[0]), int(fields[1])


def _rows_checked(path: Path, keys: list[str], vectors: NDArray[np.float32]) -> Chunk:
    if len(keys) != vectors.shape[0]:
        raise OutputError(f"{path}: expected {vectors.shape[0]} keys, one a row, found {len(keys)}")
    return keys, vectors


def _read_npy(path: Path) -> Chunk:
    vectors = np.load(path, allow_pickle=False).astype(np.float32, copy=False)
    return _rows_checked(path, read_keys(sidecar_path(path)), vectors)


def _read_npz(path: Path) -> Chunk:
    with np.load(path, allow_pickle=False) as archive:
        keys, vectors = archive["keys"].tolist(), archive["vectors"]
    return _rows_checked(path, keys, vectors.astype(np.float32, copy=False))


def _read_txt(path: Path) -> Chunk:
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
    return _rows_checked(path, keys, vectors)


def _read_bin(path: Path) -> Chunk:
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
        vectors[row] = np.frombuffer(data, dtype=_VECTOR_DTYPE, count=dim, offset=space + 1)
        start = space + 1 + 4 * dim
        if data[start : start + 1] == b"\n":  # optional: gensim writes none after a vector
            start += 1
    if start != len(data):
        extra = len(data) - start
        raise OutputError(f"{path}: expected the end after {rows} rows, found {extra} more bytes")
    return keys, vectors


def _read_jsonl(path: Path) -> Chunk:
    keys: list[str] = []
    rows: list[list[float]] = []
    with path.open("rb") as stream:
        for line in stream:
            record = json.loads(line)
            keys.append(record["key"])
            rows.append(record["vector"])
    if not rows:
        return keys, np.zeros((0, 0), dtype=np.float32)
    vectors = np.array(rows, dtype=np.float32)
    if vectors.ndim != 2:
        raise OutputError(f"{path}: expected vectors of one length, found shape {vectors.shape}")
    return keys, vectors


_READERS: dict[str, Callable[[Path], Chunk]] = {
    ".npy": _read_npy,
    ".npz": _read_npz,
    ".txt": _read_txt,
    ".bin": _read_bin,
    ".jsonl": _read_jsonl,
}
