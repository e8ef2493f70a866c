"""bertonnx.io.formats without a model or a sink: every format round-trips plain numpy arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from bertonnx.io.formats import (
    ID_SUFFIXES,
    SUPPORTED_SUFFIXES,
    ids_path,
    jsonl_records,
    read_table,
    read_vectors,
    sidecar_path,
    write_vectors,
)

KEYS = ["king", "new york", "line\nbreak", "", "日本語", "king", "tab\there", "back\\slash"]


def vectors(rows: int = len(KEYS), dim: int = 5, seed: int = 0) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal((rows, dim)) * 10.0 ** rng.integers(-30, 30, size=(rows, dim))).astype(np.float32)
    if rows:
        values[0, :2] = [0.0, -0.0]  # a text format must keep the sign of zero
    return values


IDS = np.array([[1, 0], [2, 0], [2, 1], [4, 0], [5, 0], [5, 1], [5, 2], [9, 0]], dtype=np.int64)


@pytest.mark.parametrize("suffix", SUPPORTED_SUFFIXES)
@pytest.mark.parametrize("with_ids", [False, True])
def test_every_format_round_trips_bitwise(tmp_path: Path, suffix: str, with_ids: bool) -> None:
    data = vectors()
    out = write_vectors(tmp_path / f"out{suffix}", KEYS, data, IDS if with_ids else None)
    table = read_table(out)
    assert table.keys == KEYS
    assert table.vectors.dtype == np.float32 and table.vectors.tobytes() == data.tobytes()
    if with_ids and suffix in ID_SUFFIXES:
        assert table.ids is not None and table.ids.tolist() == IDS.tolist()
    else:
        assert table.ids is None
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []  # no temp left


@pytest.mark.parametrize("suffix", SUPPORTED_SUFFIXES)
def test_no_rows_is_a_valid_empty_file(tmp_path: Path, suffix: str) -> None:
    out = write_vectors(tmp_path / f"out{suffix}", [], np.zeros((0, 5), np.float32), np.zeros((0, 2), np.int64))
    keys, data = read_vectors(out)
    assert keys == [] and data.shape == ((0, 0) if suffix == ".jsonl" else (0, 5))


def test_npy_files_are_what_numpy_writes(tmp_path: Path) -> None:
    data = vectors()
    out = write_vectors(tmp_path / "out.npy", KEYS, data, IDS)
    np.save(tmp_path / "ref.npy", data)
    np.save(tmp_path / "ref.ids.npy", IDS)
    assert out.read_bytes() == (tmp_path / "ref.npy").read_bytes()
    assert ids_path(out).read_bytes() == (tmp_path / "ref.ids.npy").read_bytes()
    assert sidecar_path(out).read_text(encoding="utf-8").count("\n") == len(KEYS)


def test_npz_and_jsonl_name_their_ids(tmp_path: Path) -> None:
    with np.load(write_vectors(tmp_path / "out.npz", KEYS, vectors(), IDS), allow_pickle=False) as archive:
        assert sorted(archive.files) == ["ids", "keys", "vectors"] and archive["ids"].dtype == np.int64
    first = json.loads(jsonl_records(KEYS[:1], vectors(1), IDS[:1]).decode("utf-8"))
    assert list(first) == ["key", "line", "word", "vector"] and (first["line"], first["word"]) == (1, 0)
    assert list(json.loads(jsonl_records(KEYS[:1], vectors(1)))) == ["key", "vector"]


@pytest.mark.parametrize(
    "keys,data,ids,message",
    [
        (KEYS[:2], np.zeros((2, 5)), None, "expected a float32 array of vectors, found float64"),
        (KEYS[:1], np.zeros((2, 5), np.float32), None, r"expected one key per vector \(2\), found 1 keys"),
        (KEYS[:2], np.full((2, 5), np.nan, np.float32), None, "NaN or inf in 2 row"),
        (KEYS[:2], np.zeros((2, 5), np.float32), np.zeros((3, 2), np.int64), r"expected \(2, 2\) integer ids"),
        (["a", "b\x00"], np.zeros((2, 5), np.float32), None, "row 1: key 'b\\\\x00' ends with NUL"),
    ],
)
def test_rows_a_format_cannot_hold_are_refused(
    tmp_path: Path, keys: list[str], data: NDArray[np.float32], ids: NDArray[np.int64] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        write_vectors(tmp_path / "out.npz", keys, data, ids)
    assert list(tmp_path.iterdir()) == []


def test_unknown_suffix_lists_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'\.csv'.*\.npy, \.npz, \.txt, \.bin, \.jsonl"):
        write_vectors(tmp_path / "out.csv", ["a"], np.zeros((1, 2), np.float32))


@pytest.mark.parametrize("with_ids,with_unknown", [(True, True), (True, False), (False, True), (False, False)])
def test_jsonl_is_byte_for_byte_what_orjson_writes_of_each_row(with_ids: bool, with_unknown: bool) -> None:
    """JSON lines are built from one orjson call per block: the bytes must be those of dumping each row's dict."""
    import orjson

    from bertonnx.io.encoders import jsonl_records

    rng = np.random.default_rng(7)
    rows = 300
    vectors = (rng.standard_normal((rows, 5)) * 10.0 ** rng.integers(-45, 38, size=(rows, 5))).astype(np.float32)
    vectors[0] = [-0.0, 0.0, np.float32(1e-45), np.finfo(np.float32).max, -np.finfo(np.float32).tiny]
    keys = [f"w{i}" for i in range(rows - 4)] + ['q"uote\\back', "new\nline\ttab", "日本語 🙂", ""]
    ids = np.column_stack([np.arange(rows) + 1, np.arange(rows) % 3]).astype(np.int64) if with_ids else None
    unknown = rng.random(rows) < 0.3 if with_unknown else None
    expected = b""
    for row in range(rows):
        record: dict[str, object] = {"key": keys[row]}
        if ids is not None:
            record.update(line=int(ids[row, 0]), word=int(ids[row, 1]))
        if unknown is not None:
            record["unknown"] = bool(unknown[row])
        record["vector"] = vectors[row]
        expected += orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)
    assert jsonl_records(keys, vectors, ids, unknown) == expected
    assert jsonl_records(keys[:1], vectors[:1], None if ids is None else ids[:1],
                         None if unknown is None else unknown[:1]) == expected.split(b"\n")[0] + b"\n"
