"""Distributed embedding on Ray Data: row for row what `bertonnx embed` writes, even when a worker dies.

One real local Ray instance (2 CPUs; not the deprecated local_mode, which
cannot restart a dead actor) serves the whole module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bertonnx import Embedder
from bertonnx.cli.app import app
from bertonnx.io.formats import read_vectors
from bertonnx.jobs.bulk import BulkOptions
from bertonnx.jobs.ray import (
    EmbedBatch,
    Workers,
    adapter,
    embed_files,
    expand_inputs,
    plan_inputs,
    plan_workers,
    ray_session,
    read_ids,
    read_inputs,
    read_manifest,
    read_output,
    shards,
)
from bertonnx.jobs.ray import inputs as inputs_module

ray = pytest.importorskip("ray", reason="needs the distributed extra: pip install 'bertonnx[distributed]'")
pyarrow = pytest.importorskip("pyarrow")

runner = CliRunner()

VOCAB = (
    "the a king queen man woman apple music account is are wise kind strong friends rule kingdom eats every "
    "day one great bands history fruit company play unable embedding ruling kingly played"
).split()
TWO_WORKERS = Workers(count=2, threads=1)


def make_texts(count: int, seed: int) -> list[str]:
    """Texts of 1 to 80 words: some pass the tiny model's 64 pieces, so windows are used too."""
    rng = np.random.default_rng(seed)
    return [
        " ".join(rng.choice(VOCAB, size=int(rng.integers(1, 80)))) + rng.choice(["", ".", "?"])
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # a new instance, whatever else runs here
    # Ray Data binds its log handler to the stderr of its first run: let that be the real one, not a CliRunner's.
    ray.data.range(1).materialize()
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Per mode: two input files, then their concatenation (what single-process `embed` reads)."""
    folder = tmp_path_factory.mktemp("corpus")
    words = [str(word) for word in np.random.default_rng(1).choice(VOCAB + ["xylophone", "qz"], size=500)]
    files = {}
    for mode, lines in (("static", words), ("text", make_texts(300, seed=2))):
        parts = [folder / f"{mode}-0.txt", folder / f"{mode}-1.txt", folder / f"{mode}-all.txt"]
        parts[0].write_text("\n".join(lines[:180]) + "\n", encoding="utf-8")
        parts[1].write_text("\r\n".join(lines[180:]), encoding="utf-8")  # CRLF, no final newline
        parts[2].write_text("\n".join(lines) + "\n", encoding="utf-8")
        files[mode] = parts
    return files


def run(*args: object):  # noqa: ANN201 - click Result
    return runner.invoke(app, [str(arg) for arg in args])


def single_process(bundle: Path, source: Path, out: Path, *args: str) -> tuple[list[str], np.ndarray]:
    """`bertonnx embed` on one thread, as each Ray worker runs (a backend's sums may differ across thread counts)."""
    result = run("embed", bundle, "-i", source, "-o", out, "--threads", "1", *args)
    assert result.exit_code == 0, result.output
    return read_vectors(out)


def expected_ids(bundle: Path, inputs: list[Path], mode: str) -> np.ndarray:
    """(file, line, word) of every row, from Embedder directly rather than the code under test."""
    embedder = Embedder.load(bundle)
    ids = []
    for file, path in enumerate(inputs):
        texts = path.read_text(encoding="utf-8").splitlines()
        words = [len(r.words) for r in embedder.contextual(texts)] if mode == "contextual" else [1] * len(texts)
        ids += [(file, line, word) for line, count in enumerate(words, start=1) for word in range(count)]
    return np.array(ids, dtype=np.int64)


@pytest.mark.parametrize(
    "mode,fmt,extra",
    [
        ("static", "npy", ["--unknown", "unk"]),
        ("contextual", "npy", []),
        ("contextual", "parquet", ["--pooling", "first_last"]),
        ("sentences", "npy", ["--normalize"]),
    ],
)
def test_equals_single_process_row_for_row(
    ray_cluster: None, tiny_bundle: Path, corpus: dict[str, list[Path]], tmp_path: Path,
    mode: str, fmt: str, extra: list[str],
) -> None:
    *inputs, whole = corpus["static" if mode == "static" else "text"]
    keys, vectors = single_process(tiny_bundle, whole, tmp_path / "single.npy", f"--{mode}", *extra)
    out = tmp_path / "out"
    glob = inputs[0].parent / f"{inputs[0].stem[:-2]}-[01].txt"  # the two parts, not their concatenation
    result = run(
        "embed-distributed", tiny_bundle, "-i", glob,
        "-o", out, f"--{mode}", "--format", fmt, "--num-workers", 2, "--batch-size", 32, "--shard-rows", 200,
        *extra,
    )
    assert result.exit_code == 0, result.output
    got_keys, got_vectors = read_output(out)
    assert len(got_keys) == len(keys) and got_keys == keys
    np.testing.assert_allclose(got_vectors, vectors, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(read_ids(out), expected_ids(tiny_bundle, inputs, mode))
    manifest = read_manifest(out)
    assert manifest["rows"] == len(keys) and manifest["lines"] == (500 if mode == "static" else 300)
    assert manifest["inputs"] == [str(path) for path in inputs] and len(manifest["shards"]) >= 2
    assert f"{len(keys)} vectors from" in result.stderr and "2 worker(s) x 1 thread(s)" in result.stderr


def test_a_dead_worker_loses_and_repeats_no_row(
    ray_cluster: None, tiny_bundle: Path, corpus: dict[str, list[Path]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = tmp_path / "a-worker-died"

    class DiesOnce(EmbedBatch):
        """The first actor to reach its third batch exits, as a crashed or killed process would."""

        calls = 0

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            self.calls += 1
            if self.calls == 3:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    pass
                else:
                    os._exit(1)
            return super().__call__(batch)

    monkeypatch.setattr(adapter, "EmbedBatch", DiesOnce)
    *inputs, whole = corpus["text"]
    keys, vectors = single_process(tiny_bundle, whole, tmp_path / "single.npy", "--contextual")
    plan = plan_inputs(inputs, block_lines=16)
    report = embed_files(tiny_bundle, plan, tmp_path / "out", BulkOptions(mode="contextual"), workers=TWO_WORKERS)
    assert marker.exists(), "no worker died: the test proved nothing"
    ids = read_ids(tmp_path / "out")
    np.testing.assert_array_equal(ids, expected_ids(tiny_bundle, inputs, "contextual"))
    assert report.rows == len(ids) == len(keys) and report.lines == 300
    got_keys, got_vectors = read_output(tmp_path / "out")
    assert got_keys == keys
    np.testing.assert_allclose(got_vectors, vectors, rtol=0, atol=1e-6)


def test_a_lost_batch_fails_the_job_and_leaves_no_output(
    ray_cluster: None, tiny_bundle: Path, corpus: dict[str, list[Path]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class LosesABatch(EmbedBatch):
        """Returns no rows for the batch holding line 17 of the first file, as a lost task would."""

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            rows = super().__call__(batch)
            if ((batch["file"] == 0) & (batch["line"] == 17)).any():
                return {name: column[:0] for name, column in rows.items()}
            return rows

    monkeypatch.setattr(adapter, "EmbedBatch", LosesABatch)
    *inputs, _ = corpus["text"]
    plan = plan_inputs(inputs, block_lines=16)
    with pytest.raises(RuntimeError, match="expected rows from 300 input lines, found 284: rows were lost"):
        embed_files(tiny_bundle, plan, tmp_path / "out", BulkOptions(mode="contextual"), workers=TWO_WORKERS)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_job_leaves_the_old_output_as_it_was(
    ray_cluster: None, tiny_bundle: Path, corpus: dict[str, list[Path]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With force, the new directory replaces the old one only once it is complete (atomic_directory)."""
    (tmp_path / "in.txt").write_text("king\nqueen\n", encoding="utf-8")
    embed_files(tiny_bundle, plan_inputs([tmp_path / "in.txt"]), tmp_path / "out", BulkOptions(), workers=Workers(1, 1))
    before = {path.name: path.read_bytes() for path in (tmp_path / "out").iterdir()}

    class Fails(EmbedBatch):
        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            raise OSError(5, "simulated disk error")

    monkeypatch.setattr(adapter, "EmbedBatch", Fails)
    with pytest.raises(OSError, match="simulated disk error"):
        embed_files(tiny_bundle, plan_inputs([tmp_path / "in.txt"]), tmp_path / "out", BulkOptions(),
                    workers=Workers(1, 1), force=True)
    assert {path.name: path.read_bytes() for path in (tmp_path / "out").iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.txt", "out"]  # no hidden sibling left


def test_skipped_lines_are_reported_with_their_file(
    ray_cluster: None, tiny_bundle: Path, tmp_path: Path
) -> None:
    first, second, whole = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "all.txt"
    first.write_text("king\n\nqueen\n", encoding="utf-8")
    second.write_text("apple\n\N{GRINNING FACE}\nmusic\n", encoding="utf-8")
    whole.write_text(first.read_text() + second.read_text(), encoding="utf-8")
    keys, vectors = single_process(tiny_bundle, whole, tmp_path / "single.npy", "--static", "--on-error", "skip")
    result = run(
        "embed-distributed", tiny_bundle, "-i", first, "-i", second, "-o", tmp_path / "out", "--static",
        "--on-error", "skip",
    )
    assert result.exit_code == 0, result.output
    got_keys, got_vectors = read_output(tmp_path / "out")
    assert got_keys == keys == ["king", "queen", "apple", "music"]
    np.testing.assert_array_equal(got_vectors, vectors)
    skipped = read_manifest(tmp_path / "out")["skipped"]
    assert [(name, line) for name, line, _ in skipped] == [(str(first), 2), (str(second), 2)]
    assert f"skipped {first} line 2: is blank" in result.stderr
    assert "4 vectors from 6 lines" in result.stderr and "2 skipped" in result.stderr
    np.testing.assert_array_equal(read_ids(tmp_path / "out")[:, :2], [[0, 1], [0, 3], [1, 1], [1, 3]])


def test_embed_batch_keeps_the_line_of_every_row(tiny_bundle: Path) -> None:
    adapter = EmbedBatch(tiny_bundle, BulkOptions(mode="contextual", on_error="skip"), threads=1, inputs=["a", "b"])
    texts = np.array(["the king", "  ", "a queen is wise"], dtype=object)
    rows = adapter({"file": np.array([0, 0, 1]), "line": np.array([7, 8, 1]), "text": texts})
    assert rows["file"].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert rows["line"].tolist() == [7, 7, 8, 1, 1, 1, 1]
    assert rows["word"].tolist() == [0, 1, 0, 0, 1, 2, 3]
    assert rows["key"].tolist() == ["the", "king", "", "a", "queen", "is", "wise"]
    assert rows["skipped"].tolist() == ["", "", "is blank", "", "", "", ""]
    expected = Embedder.load(tiny_bundle, threads=1).contextual(["the king", "a queen is wise"])  # as the adapter
    np.testing.assert_array_equal(rows["vector"][[0, 1, 3, 4, 5, 6]], np.concatenate([r.vectors for r in expected]))
    empty = adapter({"file": np.zeros(0, np.int64), "line": np.zeros(0, np.int64), "text": np.zeros(0, object)})
    assert empty["vector"].shape == (0, 32) and empty["key"].size == 0


@pytest.mark.parametrize("mode", ["contextual", "sentences"])
def test_the_adapter_works_on_any_dataset_with_a_text_column(ray_cluster: None, tiny_bundle: Path, mode: str) -> None:
    """A user's own Dataset: a differently named text column, no file/line ids, an id column carried along."""
    texts = make_texts(40, seed=5)
    dataset = ray.data.from_items([{"doc": f"d{i}", "body": text} for i, text in enumerate(texts)])
    rows = dataset.map_batches(
        EmbedBatch,
        fn_constructor_kwargs={"bundle": str(tiny_bundle), "options": BulkOptions(mode=mode), "text_column": "body"},
        compute=ray.data.ActorPoolStrategy(size=2), batch_size=7, batch_format="numpy",
    ).take_all()
    embedder = Embedder.load(tiny_bundle)
    if mode == "sentences":
        expected_docs, expected_keys, expected = [f"d{i}" for i in range(40)], texts, embedder.sentences(texts)
    else:
        results = embedder.contextual(texts)
        expected_docs = [f"d{i}" for i, r in enumerate(results) for _ in r.words]
        expected_keys = [word for r in results for word in r.words]
        expected = np.concatenate([r.vectors for r in results])
    found = sorted(rows, key=lambda row: (int(row["doc"][1:]), row["word"]))
    assert [row["doc"] for row in found] == expected_docs and [row["key"] for row in found] == expected_keys
    np.testing.assert_allclose(np.stack([row["vector"] for row in found]), expected, rtol=0, atol=1e-6)
    assert {row["file"] for row in rows} == {0} and all(1 <= row["line"] <= 7 for row in rows)


def test_the_adapter_refuses_columns_it_would_overwrite(tiny_bundle: Path) -> None:
    adapter = EmbedBatch(tiny_bundle, BulkOptions(mode="sentences"))
    with pytest.raises(ValueError, match="input columns key, vector would clash with the output's"):
        adapter({"text": np.array(["the king"], dtype=object), "vector": np.zeros(1), "key": np.array(["k"])})
    with pytest.raises(ValueError, match="expected a column 'text' of texts, found body"):
        adapter({"body": np.array(["the king"], dtype=object)})


def test_empty_input_writes_an_empty_output(ray_cluster: None, tiny_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    report = embed_files(tiny_bundle, plan_inputs([tmp_path / "empty.txt"]), tmp_path / "out",
                         BulkOptions(mode="sentences"), workers=Workers(count=1, threads=1))
    assert report.rows == report.lines == report.shards == 0
    keys, vectors = read_output(tmp_path / "out")
    assert keys == [] and vectors.shape == (0, 32)


def one_line_error(result, pattern: str, code: int = 1) -> None:  # noqa: ANN001 - click Result
    assert result.exit_code == code, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and pattern in errors[0], result.stderr


def test_a_bad_line_stops_the_job_naming_file_and_line(
    ray_cluster: None, tiny_bundle: Path, tmp_path: Path
) -> None:
    (tmp_path / "in.txt").write_text("the king\n\nthe queen\n", encoding="utf-8")
    result = run("embed-distributed", tiny_bundle, "-i", tmp_path / "in.txt", "-o", tmp_path / "out",
                 "--contextual")
    one_line_error(result, f"{tmp_path / 'in.txt'}: line 2 is blank")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args,message,code",
    [
        ("--static --contextual -i {tmp}/in.txt -o {tmp}/out", "exactly one of", 2),
        ("--static --pooling cls -i {tmp}/in.txt -o {tmp}/out", "does not apply to static", 2),
        ("--sentences -i {tmp}/nothing-*.txt -o {tmp}/out", "no file matches this glob", 1),
        ("--sentences -i {tmp}/missing.txt -o {tmp}/out", "no such input file", 1),
        ("--sentences -i {tmp}/in.txt -o {tmp}", "already exists", 1),
    ],
)
def test_user_errors_fail_before_ray_starts(
    tiny_bundle: Path, tmp_path: Path, args: str, message: str, code: int
) -> None:
    (tmp_path / "in.txt").write_text("king\n", encoding="utf-8")
    one_line_error(run("embed-distributed", tiny_bundle, *args.format(tmp=tmp_path).split()), message, code)


@pytest.mark.parametrize(
    "extra,message",
    [
        (("--normalize",), "--normalize does not apply to --type-level"),
        (("--long-text", "truncate"), "--long-text does not apply to --type-level"),
        (("--on-error", "skip"), "--on-error does not apply to --type-level"),
        (("--normalize", "--on-error", "skip"), "--normalize, --on-error do not apply to --type-level"),
        (("--max-length", "8"), "--max-length does not apply to --type-level"),
    ],
)
def test_type_level_refuses_what_embed_refuses(
    tiny_bundle: Path, tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    """embed-distributed --type-level refuses the bulk-only flags as `bertonnx embed --type-level` does (one rule),
    on the command line, before Ray starts."""
    (tmp_path / "vocab.txt").write_text("king\n", encoding="utf-8")
    (tmp_path / "corpus.txt").write_text("the king\n", encoding="utf-8")
    args = ["-i", tmp_path / "vocab.txt", "--corpus", tmp_path / "corpus.txt", "-o", tmp_path / "out.npy", *extra]
    one_line_error(run("embed-distributed", tiny_bundle, "--type-level", *args), message, 2)
    one_line_error(run("embed", tiny_bundle, "--type-level", *args), message, 2)
    assert not (tmp_path / "out.npy").exists()


def test_inputs_in_jsonl_and_parquet_read_as_text_lines(ray_cluster: None, tmp_path: Path) -> None:
    texts = ["the king is wise.", "", "a queen", "naïve café"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(texts)))
    pyarrow.parquet.write_table(pyarrow.table({"body": texts}), tmp_path / "in.parquet", row_group_size=3)
    plan = plan_inputs([tmp_path / "in.txt", tmp_path / "in.jsonl", tmp_path / "in.parquet"], "body", 2)
    assert [(span.file, span.first, span.count) for span in plan.spans] == [
        (0, 1, 2), (0, 3, 2), (1, 1, 2), (1, 3, 2), (2, 1, 2), (2, 3, 1), (2, 4, 1)  # Parquet: within row groups
    ]
    lines = read_inputs(plan).materialize()
    assert lines.num_blocks() == len(plan.spans)  # one block a span, so that every worker gets some
    rows = sorted((row["file"], row["line"], row["text"]) for row in lines.take_all())
    assert rows == [(file, line, text) for file in range(3) for line, text in enumerate(texts, start=1)]


def test_a_jsonl_record_without_the_field_names_its_line(ray_cluster: None, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"text": "king"}\n\n{"body": "queen"}\n', encoding="utf-8")
    assert plan_inputs([tmp_path / "in.jsonl"]).records == 2
    with pytest.raises(Exception, match=r"in.jsonl: line 3: expected a string field 'text', found no such field"):
        read_inputs(plan_inputs([tmp_path / "in.jsonl"], block_lines=2)).take_all()


def test_read_output_refuses_a_damaged_shard(ray_cluster: None, tiny_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("king\nqueen\n", encoding="utf-8")
    embed_files(tiny_bundle, plan_inputs([tmp_path / "in.txt"]), tmp_path / "out", BulkOptions(), workers=Workers(1, 1))
    assert read_output(tmp_path / "out")[0] == ["king", "queen"]
    shard = tmp_path / "out" / "shard-00000.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 differs"):
        read_output(tmp_path / "out")
    with pytest.raises(ValueError, match="expected manifest.json"):
        read_output(tmp_path)


@pytest.mark.parametrize(
    "count,threads,cluster,node,expected",
    [
        (None, None, 2, 2, Workers(2, 1)),  # one single-threaded worker per CPU
        (1, None, 2, 2, Workers(1, 2)),  # a single worker takes every CPU
        (None, 4, 16, 8, Workers(4, 4)),
        (2, None, 32, 8, Workers(2, 8)),  # a worker cannot span nodes
        (3, 1, 2, 2, Workers(3, 1)),  # asked for: Ray queues what does not fit
    ],
)
def test_plan_workers(count: int | None, threads: int | None, cluster: int, node: int, expected: Workers) -> None:
    assert plan_workers(count, threads, cluster, node) == expected


def test_rows_out_of_order_or_repeated_fail() -> None:
    last = np.array([0, 5, 1])
    shards._check_increasing(last, np.array([[0, 5, 2], [0, 6, 0], [1, 1, 0]]))
    for ids in ([[0, 5, 1]], [[0, 6, 0], [0, 6, 0]], [[0, 6, 0], [0, 5, 3]]):
        with pytest.raises(RuntimeError, match="repeated or reordered"):
            shards._check_increasing(last, np.array(ids))


def test_spans_read_lines_as_bertonnx_embed_does(tmp_path: Path) -> None:
    bom = "\N{ZERO WIDTH NO-BREAK SPACE}"  # read_lines drops it at the start of a file only
    (tmp_path / "in.txt").write_text(f"{bom}one\ntwo\r\n{bom}three\n\nfive", encoding="utf-8")
    plan = plan_inputs([tmp_path / "in.txt"], block_lines=2)
    assert [(span.first, span.count) for span in plan.spans] == [(1, 2), (3, 2), (5, 1)] and plan.lines == 5
    assert plan.records == 5  # a blank text line is a record (that fails or is skipped); in JSONL it holds none
    read = [(line.number, line.text) for span in plan.spans for line in inputs_module._span_lines(span)]
    assert read == [(1, "one"), (2, "two"), (3, f"{bom}three"), (4, ""), (5, "five")]
    (tmp_path / "bad.txt").write_bytes(b"fine\nbad \xff\n")
    with pytest.raises(ValueError, match=r"bad.txt: line 2 is not valid UTF-8 \(byte 9 of the input\)"):
        plan_inputs([tmp_path / "bad.txt"])


def test_expand_inputs_keeps_a_stable_order(tmp_path: Path) -> None:
    for name in ("b.txt", "a.txt", "c.jsonl"):
        (tmp_path / name).write_text("x\n")
    found = expand_inputs([str(tmp_path / "*.txt"), str(tmp_path / "c.jsonl"), str(tmp_path / "a.txt")])
    assert found == [tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.jsonl"]


@pytest.fixture()
def running_cluster() -> Iterator[str]:
    """A one-CPU Ray head started with `ray start`, as an operator would; yields its address."""
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip("the ray command is not installed next to this Python")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Its own temp dir (short: it holds Unix sockets), so that its address file does not outlive it in /tmp/ray.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "RAY_AUTH_MODE": "token"},  # as Ray >= 2.59 starts a head anyway
    )
    try:
        assert head.stdout is not None
        for line in head.stdout:  # --block prints this once every head process is up
            if "Ray runtime started" in line:
                break
        else:
            pytest.fail(f"ray start --head exited with {head.wait()}")
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block stops the head's processes when it is told to
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_joins_a_running_cluster_by_address(
    running_cluster: str, tiny_bundle: Path, corpus: dict[str, list[Path]], tmp_path: Path
) -> None:
    """A fresh driver process joins the cluster at --address (or `auto`), rather than starting Ray of its own."""
    *inputs, whole = corpus["text"]
    keys, vectors = single_process(tiny_bundle, whole, tmp_path / "single.npy", "--contextual")

    def driver(out: Path, address: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
        env = {name: value for name, value in os.environ.items() if name not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
        return subprocess.run(
            [sys.executable, "-c", "from bertonnx.cli.app import main; main()", "embed-distributed", str(tiny_bundle),
             "-i", str(inputs[0]), "-i", str(inputs[1]), "-o", str(out), "--contextual", "--address", address],
            capture_output=True, text=True, timeout=300, env={**env, **env_vars},
        )

    refused = driver(tmp_path / "refused", running_cluster)  # without the cluster's token: told what to set
    assert refused.returncode == 1
    last_line = refused.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: could not join the Ray cluster at {running_cluster}")
    assert "set RAY_AUTH_MODE=token" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "refused").exists()
    by_address = driver(tmp_path / "by-address", running_cluster, RAY_AUTH_MODE="token")
    auto = driver(tmp_path / "auto", "auto", RAY_AUTH_MODE="token", RAY_ADDRESS=running_cluster)
    for job, out in ((by_address, "by-address"), (auto, "auto")):
        assert job.returncode == 0, job.stderr
        assert "1 worker(s) x 1 thread(s)" in job.stderr  # the cluster's one CPU, not this machine's two
        got_keys, got_vectors = read_output(tmp_path / out)
        assert got_keys == keys
        np.testing.assert_allclose(got_vectors, vectors, rtol=0, atol=1e-6)


def test_without_ray_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'bertonnx\[distributed\]'"):
        ray_session().__enter__()


@pytest.mark.parametrize("cap,context", [(2, "sentence"), (1000, "sentence"), (1000, "window:3")])
def test_type_level_on_ray_equals_one_process(
    ray_cluster: None, tiny_bundle: Path, corpus: dict[str, list[Path]], tmp_path: Path, cap: int, context: str
) -> None:
    """Two corpus files on two workers: the same contexts (the first `cap` of each word, in input order, each read in
    its sentence or window) as one process over their concatenation, so the same counts and flags, and vectors up to
    float summation order."""
    *inputs, whole = corpus["text"]
    cut = []
    for path in (*inputs, whole):  # sentences ending mid-line, so that lines are cut into several contexts
        cut.append(tmp_path / path.name)
        cut[-1].write_bytes(path.read_bytes().replace(b" kingdom ", b" kingdom. "))
    *inputs, whole = cut
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("king\nqueen\napple\nunable\nkingly\nzebra\nu.s.\n", encoding="utf-8")
    single = tmp_path / "single.npz"
    one = run("embed", tiny_bundle, "--type-level", "-i", vocab, "--corpus", whole, "--max-contexts", cap,
              "--context", context, "-o", single, "--backend", "onnxruntime", "--threads", 1)
    assert one.exit_code == 0, one.output
    out = tmp_path / "ray.npz"
    result = run("embed-distributed", tiny_bundle, "--type-level", "-i", vocab, "--corpus", inputs[0],
                 "--corpus", inputs[1], "--max-contexts", cap, "--context", context, "-o", out, "--num-workers", 2,
                 "--batch-size", 32, "--threads", 1, "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert "7 type-level vectors" in result.stderr and "300 corpus lines" in result.stderr
    with np.load(single) as expected, np.load(out) as found:
        assert found["keys"].tolist() == expected["keys"].tolist()
        np.testing.assert_array_equal(found["counts"], expected["counts"])
        np.testing.assert_array_equal(found["fallback"], expected["fallback"])
        np.testing.assert_allclose(found["vectors"], expected["vectors"], rtol=0, atol=1e-6)
        assert found["context"].item() == context and found["prior"].item() == 5.0
        fallback = found["fallback"].tolist()
        assert fallback[5:] == [True, True] and not any(fallback[:5])  # zebra and u.s. are not in the corpus
        if cap == 2:
            assert found["counts"][:5].tolist() == [2] * 5
    assert (tmp_path / "ray.counts.tsv").read_text() == (tmp_path / "single.counts.tsv").read_text()
