"""bertonnx.io.sinks: checkpointed jobs round-trip every format, outputs appear atomically, killed jobs resume
exactly."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gensim.models import KeyedVectors
from helpers.outputs import checkpoint_position, leftovers, output_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from bertonnx.io.formats import SUPPORTED_SUFFIXES, RowBlock, ids_path, read_table, read_vectors, sidecar_path
from bertonnx.io.keys import escape_token, read_keys
from bertonnx.io.sinks import JobSpec, VectorSink, partial_dir

REPO = Path(__file__).resolve().parents[2]
DIM = 6
FINGERPRINT: dict[str, object] = {"input_sha256": "ab" * 32, "mode": "contextual", "chunk_size": 4}
SPEC = JobSpec(fingerprint=FINGERPRINT, dim=DIM)
AWKWARD_KEYS = [
    "king", "queen", "king",  # contextual mode repeats words
    "new york", "tab\there", "line\nbreak", "cr\rhere", "back\\slash", "\\n literally",
    "日本語", "café", "", " lead", "trail ", "nbsp\u00a0x", "emoji 🙂", "king",
]

# Run by a child process: writes every chunk of DATA (an .npz) with a pause between
# chunks, optionally under a file-size limit, then finishes.
CHILD = """
import json, resource, signal, sys, time
from pathlib import Path
import numpy as np
from bertonnx.io.formats import RowBlock
from bertonnx.io.sinks import JobSpec, VectorSink

out, data = Path(sys.argv[1]), np.load(sys.argv[2])
delay, limit = float(sys.argv[3]), int(sys.argv[4])
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
sink = VectorSink.open(out, JobSpec(json.loads(sys.argv[5]), int(sys.argv[6])), resume=False)
for index in range(len(data.files) // 2):
    sink.append(RowBlock(data[f"keys{index}"].tolist(), data[f"vectors{index}"]))
    sink.commit({"chunks": index + 1})
    time.sleep(delay)
sink.finish()
"""

Chunks = list[tuple[list[str], NDArray[np.float32]]]


def random_vectors(rows: int, seed: int, dim: int = DIM) -> NDArray[np.float32]:
    """Vectors over many magnitudes, so that text formats must really round-trip float32."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.integers(-30, 30, size=(rows, dim))
    return (rng.standard_normal((rows, dim)) * scale).astype(np.float32)


def make_chunks(sizes: list[int], seed: int = 0, dim: int = DIM) -> Chunks:
    """Chunks of the given row counts, keys cycling through AWKWARD_KEYS."""
    chunks: Chunks = []
    start = 0
    for number, rows in enumerate(sizes):
        keys = [AWKWARD_KEYS[(start + row) % len(AWKWARD_KEYS)] for row in range(rows)]
        chunks.append((keys, random_vectors(rows, seed + number, dim)))
        start += rows
    return chunks


def concatenated(chunks: Chunks) -> tuple[list[str], NDArray[np.float32]]:
    keys = [key for chunk_keys, _ in chunks for key in chunk_keys]
    return keys, np.concatenate([vectors for _, vectors in chunks])


def write_chunk(
    sink: VectorSink, index: int, keys: list[str], vectors: NDArray[np.float32], ids: NDArray[np.int64] | None = None
) -> None:
    """A chunk as a caller writes one: its rows, then a checkpoint after them."""
    sink.append(RowBlock(keys, vectors, ids))
    sink.commit({"chunks": index + 1})


def done_chunks(sink: VectorSink) -> int:
    """Chunks kept from the run that a resumed sink continues."""
    return int((sink.position or {}).get("chunks", 0))


def write_job(out: Path, chunks: Chunks, spec: JobSpec = SPEC, force: bool = False) -> Path:
    sink = VectorSink.open(out, spec, resume=False, force=force)
    for index, (keys, vectors) in enumerate(chunks):
        write_chunk(sink, index, keys, vectors)
    return sink.finish()


def save_chunks(path: Path, chunks: Chunks) -> Path:
    arrays: dict[str, Any] = {}  # Any: numpy's stubs reject ** into savez
    for index, (keys, vectors) in enumerate(chunks):
        arrays[f"keys{index}"] = np.array(keys, dtype=str)
        arrays[f"vectors{index}"] = vectors
    np.savez(path, **arrays)
    return path


def spawn_writer(
    tmp_path: Path, out: Path, chunks: Chunks, delay: float, limit: int
) -> subprocess.Popen[str]:
    """Run CHILD on `chunks`; a `limit` > 0 caps the size of every file it writes."""
    data = save_chunks(tmp_path / "chunks.npz", chunks)
    command = [sys.executable, "-c", CHILD, str(out), str(data), str(delay), str(limit),
               json.dumps(FINGERPRINT), str(DIM)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def checkpointed(out: Path) -> int:
    """Chunks up to the last checkpoint on disk."""
    return int(checkpoint_position(out).get("chunks", 0))


@pytest.fixture(params=SUPPORTED_SUFFIXES)
def suffix(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- round trips and format details -------------------------------------------


def test_round_trip_keeps_every_key_and_float(tmp_path: Path, suffix: str) -> None:
    chunks = make_chunks([7, 0, 10, 3])
    extremes = np.finfo(np.float32)
    chunks[0][1][0] = np.array([0.0, -0.0, 1e-45, extremes.max, -extremes.tiny, 1 / 3])
    keys, vectors = concatenated(chunks)
    out = write_job(tmp_path / f"vectors{suffix}", chunks)

    read, read_back = read_vectors(out)

    assert read == keys
    assert read_back.dtype == np.float32 and read_back.shape == (len(keys), DIM)
    assert read_back.tobytes() == vectors.tobytes()  # bitwise: also tells -0.0 from 0.0
    assert leftovers(tmp_path, out) == []


FINITE_FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(FINITE_FLOAT32, min_size=DIM, max_size=DIM))
def test_text_formats_keep_every_float32(tmp_path: Path, row: list[float]) -> None:
    vectors = np.array([row], dtype=np.float32)
    for suffix in (".txt", ".jsonl"):
        out = write_job(tmp_path / f"out{suffix}", [(["k"], vectors)], force=True)  # hypothesis reuses tmp_path
        assert read_vectors(out)[1].tobytes() == vectors.tobytes()


def test_chunking_does_not_change_the_bytes(tmp_path: Path, suffix: str) -> None:
    keys, vectors = concatenated(make_chunks([5, 0, 9, 1, 6]))
    bounds = [0, 5, 5, 14, 15, len(keys)]  # includes an empty chunk
    chunks = [(keys[a:b], vectors[a:b]) for a, b in zip(bounds, bounds[1:])]
    chunked = write_job(tmp_path / "a" / f"out{suffix}", chunks)
    one_shot = write_job(tmp_path / "b" / f"out{suffix}", [(keys, vectors)])
    assert output_bytes(chunked) == output_bytes(one_shot)


def test_npy_is_exactly_what_np_save_writes(tmp_path: Path) -> None:
    chunks = make_chunks([4, 5])
    keys, vectors = concatenated(chunks)
    out = write_job(tmp_path / "out.npy", chunks)
    np.save(tmp_path / "reference.npy", vectors)

    assert out.read_bytes() == (tmp_path / "reference.npy").read_bytes()
    assert sidecar_path(out) == tmp_path / "out.keys.txt"
    assert read_keys(sidecar_path(out)) == keys
    assert len(sidecar_path(out).read_bytes().split(b"\n")) == len(keys) + 1  # one line per key


def test_npz_holds_plain_arrays(tmp_path: Path) -> None:
    chunks = make_chunks([4, 5])
    keys, vectors = concatenated(chunks)
    out = write_job(tmp_path / "out.npz", chunks)
    with np.load(out, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["keys", "vectors"]
        assert archive["keys"].dtype == np.array(keys).dtype
        assert archive["keys"].tolist() == keys
        assert np.array_equal(archive["vectors"], vectors)


def test_jsonl_is_one_object_per_line(tmp_path: Path) -> None:
    chunks = make_chunks([3])
    out = write_job(tmp_path / "out.jsonl", chunks)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [record["key"] for record in records] == chunks[0][0]
    vectors = np.array([record["vector"] for record in records], dtype=np.float32)
    assert np.array_equal(vectors, chunks[0][1])


@pytest.mark.parametrize("suffix", [".txt", ".bin"])
def test_gensim_loads_word2vec_formats(tmp_path: Path, suffix: str) -> None:
    chunks = make_chunks([len(AWKWARD_KEYS), 3])
    keys, vectors = concatenated(chunks)
    out = write_job(tmp_path / f"out{suffix}", chunks)

    loaded = KeyedVectors.load_word2vec_format(str(out), binary=suffix == ".bin")

    first_rows = {escape_token(key): row for row, key in reversed(list(enumerate(keys)))}
    unique = sorted(first_rows, key=first_rows.__getitem__)  # first-occurrence order
    assert loaded.vector_size == DIM
    # gensim keeps the first row of a repeated key; its dropped rows leave None slots at the end.
    assert loaded.index_to_key[: len(unique)] == unique
    assert loaded.index_to_key[len(unique):] == [None] * (len(keys) - len(unique))
    first_vectors = vectors[[first_rows[key] for key in unique]]
    assert np.array_equal(loaded.vectors[: len(unique)], first_vectors)
    assert np.array_equal(loaded["new\\syork"], vectors[keys.index("new york")])
    assert np.array_equal(loaded["日本語"], vectors[keys.index("日本語")])


@pytest.mark.parametrize("suffix", [".txt", ".bin"])
def test_gensim_loads_an_empty_word2vec_file(tmp_path: Path, suffix: str) -> None:
    out = write_job(tmp_path / f"out{suffix}", [])
    loaded = KeyedVectors.load_word2vec_format(str(out), binary=suffix == ".bin")
    assert loaded.vectors.shape == (0, DIM)


def test_empty_job_writes_a_valid_empty_file(tmp_path: Path, suffix: str) -> None:
    none = write_job(tmp_path / "a" / f"out{suffix}", [])
    empty_chunk = write_job(tmp_path / "b" / f"out{suffix}", [([], np.zeros((0, DIM), np.float32))])

    keys, vectors = read_vectors(none)

    assert output_bytes(none) == output_bytes(empty_chunk)
    assert keys == [] and vectors.dtype == np.float32
    assert vectors.shape == ((0, 0) if suffix == ".jsonl" else (0, DIM))


# -- resuming -----------------------------------------------------------------


def test_killed_run_resumes_to_identical_bytes(tmp_path: Path, suffix: str) -> None:
    chunks = make_chunks([4] * 30)
    reference = write_job(tmp_path / "reference" / f"out{suffix}", chunks)
    out = tmp_path / "run" / f"out{suffix}"
    child = spawn_writer(tmp_path, out, chunks, delay=0.05, limit=0)
    deadline = time.monotonic() + 15
    while checkpointed(out) < 3 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL, "the writer ended before it was killed"
    assert not out.exists()

    sink = VectorSink.open(out, SPEC, resume=True)
    assert 3 <= done_chunks(sink) < len(chunks)
    for index in range(done_chunks(sink), len(chunks)):
        write_chunk(sink, index, *chunks[index])
    sink.finish()

    assert output_bytes(out) == output_bytes(reference)
    assert leftovers(out.parent, out) == []


def test_fingerprints_compare_as_json(tmp_path: Path) -> None:
    out = tmp_path / "out.npz"
    first = VectorSink.open(out, JobSpec({**FINGERPRINT, "layers": (1, 2)}, DIM), resume=False)
    write_chunk(first, 0, *make_chunks([3])[0])
    again = VectorSink.open(out, JobSpec({**FINGERPRINT, "layers": [1, 2]}, DIM), resume=True)
    assert done_chunks(again) == 1


def test_resume_picks_up_in_process(tmp_path: Path) -> None:
    chunks = make_chunks([3, 2, 4])
    out = tmp_path / "out.bin"
    first = VectorSink.open(out, SPEC, resume=False)
    write_chunk(first, 0, *chunks[0])
    write_chunk(first, 1, *chunks[1])

    second = VectorSink.open(out, SPEC, resume=True)
    assert done_chunks(second) == 2
    write_chunk(second, 2, *chunks[2])
    second.finish()
    assert read_vectors(out)[0] == concatenated(chunks)[0]


def test_resume_with_nothing_done_starts_fresh(tmp_path: Path, suffix: str) -> None:
    chunks = make_chunks([3, 2])
    out = tmp_path / f"out{suffix}"
    sink = VectorSink.open(out, SPEC, resume=True)
    assert done_chunks(sink) == 0
    for index, chunk in enumerate(chunks):
        write_chunk(sink, index, *chunk)
    sink.finish()
    assert read_vectors(out)[0] == concatenated(chunks)[0]


def test_an_existing_output_is_refused_unless_forced(tmp_path: Path, suffix: str) -> None:
    out = write_job(tmp_path / f"out{suffix}", make_chunks([2]))
    before = output_bytes(out)
    for resume in (False, True):  # resume with no work to continue is no licence to overwrite
        with pytest.raises(ValueError, match=r"out\.\w+ exists; force=True replaces it"):
            VectorSink.open(out, SPEC, resume=resume)
    assert output_bytes(out) == before and not partial_dir(out).exists()
    write_job(out, make_chunks([3], seed=4), force=True)
    assert read_vectors(out)[0] == make_chunks([3], seed=4)[0][0]


def test_unfinished_work_is_refused_unless_resumed_as_the_same_job_or_forced(tmp_path: Path) -> None:
    """A work folder blocks a new run, of this job or another; a resume under another job names what differs;
    neither throws any work away, and only force starts over."""
    out = tmp_path / "out.npy"
    write_chunk(VectorSink.open(out, SPEC, resume=False), 0, *make_chunks([2])[0])
    changed = JobSpec({**FINGERPRINT, "mode": "static", "pooling": "mean"}, DIM + 2)
    unfinished = r"holds an unfinished job for out\.npy; resume=True continues it, force=True starts"
    for spec in (SPEC, changed):
        with pytest.raises(ValueError, match=unfinished):
            VectorSink.open(out, spec, resume=False)

    with pytest.raises(ValueError) as caught:
        VectorSink.open(out, changed, resume=True)

    message = str(caught.value)
    assert "mode: saved 'contextual', now 'static'" in message
    assert "pooling: saved '<absent>', now 'mean'" in message
    assert f"dim: saved {DIM}, now {DIM + 2}" in message
    assert "input_sha256" not in message and "chunk_size" not in message
    assert message.startswith("cannot resume: ") and message.endswith("start over with force=True")
    assert checkpointed(out) == 1  # nothing was thrown away
    fresh = VectorSink.open(out, changed, resume=False, force=True)
    assert done_chunks(fresh) == 0 and fresh.rows == 0 and checkpointed(out) == 0


def test_resume_with_every_chunk_done_only_finishes(tmp_path: Path) -> None:
    chunks = make_chunks([2, 2])
    out = tmp_path / "out.jsonl"
    sink = VectorSink.open(out, SPEC, resume=False)
    for index, chunk in enumerate(chunks):
        write_chunk(sink, index, *chunk)
    resumed = VectorSink.open(out, SPEC, resume=True)
    assert done_chunks(resumed) == 2
    assert resumed.finish() == out
    assert not partial_dir(out).exists()


# -- atomicity and disk errors ------------------------------------------------


def test_existing_output_is_replaced_only_at_finish(tmp_path: Path) -> None:
    out = tmp_path / "out.npy"
    write_job(out, make_chunks([2]))
    before = output_bytes(out)
    sink = VectorSink.open(out, SPEC, resume=False, force=True)
    write_chunk(sink, 0, *make_chunks([5], seed=9)[0])
    assert output_bytes(out) == before
    sink.finish()
    assert read_vectors(out)[1].shape == (5, DIM)


def test_crash_between_renames_leaves_no_stale_main_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.npy"
    write_job(out, make_chunks([2]))
    chunks = make_chunks([5], seed=3)
    sink = VectorSink.open(out, SPEC, resume=False, force=True)
    write_chunk(sink, 0, *chunks[0])
    real_replace = os.replace

    def replace_all_but_main(source: Path, target: Path) -> None:
        if Path(target) == out:
            raise OSError(errno.EIO, "simulated crash")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_all_but_main)
    with pytest.raises(OSError, match="simulated crash"):
        sink.finish()
    monkeypatch.undo()

    assert not out.exists()  # the new sidecar must not sit beside the old vectors
    assert read_keys(sidecar_path(out)) == chunks[0][0]
    VectorSink.open(out, SPEC, resume=True).finish()
    assert read_vectors(out)[1].tobytes() == chunks[0][1].tobytes()
    assert leftovers(tmp_path, out) == []


FULL = [(suffix, "rows") for suffix in SUPPORTED_SUFFIXES] + [(".npz", "finish")]


@pytest.mark.parametrize("suffix,phase", FULL, ids=[f"{suffix}-{phase}" for suffix, phase in FULL])
def test_full_disk_leaves_no_output(tmp_path: Path, suffix: str, phase: str) -> None:
    """A per-file limit as the full disk. rows: 8 chunks of 8 rows fit every part, a 2,000-row chunk does not.
    finish: the .npz (every part zipped together, its keys widened to numpy unicode) does not fit; the other
    formats link their parts or copy one, so finishing needs no bigger file than a part."""
    limit = 16384 if phase == "rows" else 4096
    chunks = make_chunks([8] * 8 + ([2000] if phase == "rows" else []))
    out = tmp_path / "run" / f"out{suffix}"
    child = spawn_writer(tmp_path, out, chunks, delay=0, limit=limit)
    _, stderr = child.communicate(timeout=30)

    assert child.returncode == 1, stderr
    assert "File too large" in stderr and "could not write" in stderr and str(out) in stderr
    assert not out.exists()
    assert leftovers(out.parent, out) == [partial_dir(out).name]  # no temp files

    sink = VectorSink.open(out, SPEC, resume=True)
    assert done_chunks(sink) == 8
    for index in range(8, len(chunks)):
        write_chunk(sink, index, *chunks[index])
    sink.finish()
    assert output_bytes(out) == output_bytes(write_job(tmp_path / "reference" / out.name, chunks))


# -- refusals -----------------------------------------------------------------


def test_unknown_suffix_lists_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'\.csv'.*\.npy, \.npz, \.txt, \.bin, \.jsonl"):
        VectorSink.open(tmp_path / "out.csv", SPEC, resume=False)
    with pytest.raises(ValueError, match="unsupported suffix"):
        read_vectors(tmp_path / "out.csv")


def test_dim_mismatch_names_both_dims(tmp_path: Path) -> None:
    sink = VectorSink.open(tmp_path / "out.npy", SPEC, resume=False)
    expected = rf"expected vectors of dim {DIM}, found shape \(2, {DIM + 1}\)"
    with pytest.raises(ValueError, match=expected):
        write_chunk(sink, 0, ["a", "b"], np.zeros((2, DIM + 1), np.float32))
    assert done_chunks(sink) == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_vectors_are_refused(tmp_path: Path, bad: float) -> None:
    sink = VectorSink.open(tmp_path / "out.txt", SPEC, resume=False)
    vectors = np.zeros((3, DIM), np.float32)
    vectors[2, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf in 1 row.*first row 2"):
        write_chunk(sink, 0, ["a", "b", "c"], vectors)
    assert sink.rows == 0 and checkpointed(tmp_path / "out.txt") == 0


def test_chunk_checks(tmp_path: Path) -> None:
    sink = VectorSink.open(tmp_path / "out.npz", SPEC, resume=False)
    vectors = np.zeros((2, DIM), np.float32)
    with pytest.raises(ValueError, match="expected a float32 array of vectors, found float64"):
        write_chunk(sink, 0, ["a", "b"], vectors.astype(np.float64))
    with pytest.raises(ValueError, match=r"expected one key per vector \(2\), found 3 keys"):
        write_chunk(sink, 0, ["a", "b", "c"], vectors)
    with pytest.raises(ValueError, match="row 1: expected a str key, found int"):
        write_chunk(sink, 0, ["a", 7], vectors)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="row 0: .*not valid UTF-8"):
        write_chunk(sink, 0, ["\udcff", "b"], vectors)
    with pytest.raises(ValueError, match="ends with NUL"):
        write_chunk(sink, 0, ["a\x00", "b"], vectors)
    write_chunk(sink, 0, ["a", "b"], vectors)
    sink.finish()
    with pytest.raises(ValueError, match="already finished"):
        write_chunk(sink, 1, ["a", "b"], vectors)


def test_job_spec_checks() -> None:
    with pytest.raises(ValueError, match="positive int, found 0"):
        JobSpec({}, 0)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        JobSpec({"path": Path("x")}, DIM)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        JobSpec({"threshold": float("nan")}, DIM)


def test_output_path_must_not_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "out.npy").mkdir()
    with pytest.raises(ValueError, match="found a directory"):
        VectorSink.open(tmp_path / "out.npy", SPEC, resume=False)



# -- ids ----------------------------------------------------------------------

ID_SPEC = JobSpec(fingerprint=FINGERPRINT, dim=DIM, ids=True)


def chunk_ids(first_line: int, rows: int) -> NDArray[np.int64]:
    """(rows, 2): two rows a line, as contextual mode gives words."""
    return np.stack([first_line + np.arange(rows) // 2, np.arange(rows) % 2], axis=1).astype(np.int64)


def write_id_job(out: Path, chunks: Chunks) -> tuple[Path, NDArray[np.int64]]:
    sink = VectorSink.open(out, ID_SPEC, resume=False)
    parts = []
    line = 1
    for index, (keys, vectors) in enumerate(chunks):
        parts.append(chunk_ids(line, len(keys)))
        line += len(keys)
        write_chunk(sink, index, keys, vectors, parts[-1])
    return sink.finish(), np.concatenate(parts or [np.zeros((0, 2), np.int64)])


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".jsonl"])
def test_ids_go_where_the_format_has_room(tmp_path: Path, suffix: str) -> None:
    chunks = make_chunks([5, 0, 4])
    out, ids = write_id_job(tmp_path / f"out{suffix}", chunks)
    table = read_table(out)
    assert table.ids is not None and table.ids.tolist() == ids.tolist()
    assert table.keys == concatenated(chunks)[0]
    if suffix == ".npy":
        assert np.load(ids_path(out)).dtype == np.dtype("<i8")
    assert leftovers(tmp_path, out) == []


@pytest.mark.parametrize("suffix", [".txt", ".bin"])
def test_word2vec_formats_have_no_room_for_ids(tmp_path: Path, suffix: str) -> None:
    chunks = make_chunks([3])
    out, _ = write_id_job(tmp_path / f"out{suffix}", chunks)
    assert read_table(out).ids is None
    assert output_bytes(out) == output_bytes(write_job(tmp_path / "plain" / f"out{suffix}", chunks))


def test_a_chunk_must_carry_ids_exactly_when_the_job_does(tmp_path: Path) -> None:
    keys, vectors = make_chunks([2])[0]
    with pytest.raises(ValueError, match="opened with ids=True; found rows with ids=False"):
        write_chunk(VectorSink.open(tmp_path / "a.npy", ID_SPEC, resume=False), 0, keys, vectors)
    with pytest.raises(ValueError, match=r"expected \(2, 2\) integer ids"):
        write_chunk(VectorSink.open(tmp_path / "b.npy", ID_SPEC, resume=False), 0, keys, vectors, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="cannot resume: .*ids: saved True, now False"):
        VectorSink.open(tmp_path / "b.npy", SPEC, resume=True)


def test_a_resumed_job_with_ids_writes_the_same_bytes(tmp_path: Path) -> None:
    chunks = make_chunks([4, 4, 4])
    reference, _ = write_id_job(tmp_path / "reference" / "out.npy", chunks)
    out = tmp_path / "run" / "out.npy"
    sink = VectorSink.open(out, ID_SPEC, resume=False)
    write_chunk(sink, 0, *chunks[0], chunk_ids(1, 4))
    # a crash after chunk 1's rows were appended but before its checkpoint: chunk 1 is not done
    sink.append(RowBlock(*chunks[1], chunk_ids(5, 4)))
    sink.close()
    sink = VectorSink.open(out, ID_SPEC, resume=True)
    assert done_chunks(sink) == 1
    write_chunk(sink, 1, *chunks[1], chunk_ids(5, 4))
    write_chunk(sink, 2, *chunks[2], chunk_ids(9, 4))
    sink.finish()
    files = [out, sidecar_path(out), ids_path(out)]
    assert [path.read_bytes() for path in files] == [
        path.read_bytes() for path in (reference, sidecar_path(reference), ids_path(reference))
    ]


def test_an_old_state_file_names_its_version(tmp_path: Path) -> None:
    out = tmp_path / "out.npy"
    VectorSink.open(out, SPEC, resume=False)
    state = partial_dir(out) / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "version": 1}))
    with pytest.raises(ValueError, match="expected bertonnx-sink-partial version 3, found 1; start over"):
        VectorSink.open(out, SPEC, resume=True)
