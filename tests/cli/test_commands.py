"""The bertonnx command, through typer's CliRunner and, for kills, a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import choices_of, one_line_error, run
from helpers.outputs import checkpoint_position

from bertonnx import Embedder
from bertonnx.io.sinks import partial_dir, read_vectors

WORDS = "king\nqueen\nunable\nembedding\napple\n"
TEXTS = "The king is wise.\nThe queen is one of the great bands in history.\nHow much is an Apple music account?\n"


@pytest.fixture()
def words_file(tmp_path: Path) -> Path:
    path = tmp_path / "words.txt"
    path.write_text(WORDS, encoding="utf-8")
    return path


def test_export_then_info(tiny_model: Path, tmp_path: Path) -> None:
    result = run("export", tiny_model, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert "validation against PyTorch" in result.stdout and "last_hidden_state" in result.stdout
    info = run("info", tmp_path / "b")
    assert info.exit_code == 0 and "sha256 ok" in info.stdout and "max length" in info.stdout
    assert "words/tokens and sentences alike" in info.stdout  # one backend serves each use (no split here)
    manifest = json.loads(run("info", tmp_path / "b", "--json").stdout)
    assert manifest["format"] == "bertonnx-bundle"


@pytest.mark.parametrize(
    "args,message,code",
    [
        (["export", "/no/such/model", "--out", "{tmp}/b"], "no such folder", 1),
        (["info", "{tmp}/missing"], "no bundle here", 1),
        (["embed", "{tmp}/missing", "--static", "-i", "{words}"], "no bundle here", 1),
        (["embed", "{bundle}", "--static", "--contextual", "-i", "{words}"], "exactly one of", 2),
        (["embed", "{bundle}", "--static", "-i", "{tmp}/nope.txt"], "no such input file", 1),
        (["embed", "{bundle}", "--static", "-i", "{words}", "-o", "{tmp}/out.csv"], "unsupported suffix '.csv'", 2),
        (["embed", "{bundle}", "--static", "-i", "{words}", "-o", "{tmp}/o.npy", "--resume", "--force"],
         "give one of them", 2),
        (["embed", "{bundle}", "--sentences", "--pooling", "max", "-i", "{words}"], "does not apply to sentences", 2),
        (["embed", "{bundle}", "--static", "--provider", "cuda", "-i", "{words}"],
         "provider 'cuda' is not available", 1),
        (["embed", "{bundle}", "--sentences", "--backend", "tvm", "-i", "{words}"],
         "'tvm' is not one of 'auto', 'onnxruntime', 'openvino'", 2),
        (["embed", "{bundle}", "--sentences", "--backend", "onnxruntime", "--precision", "bf16", "-i", "{words}"],
         "onnxruntime runs a bundle at the precision it was exported at (fp32), not bf16", 1),
        (["embed", "{bundle}", "--static", "--threads", "0", "-i", "{words}"], "threads must be a positive", 2),
        (["embed", "{bundle}", "--static", "--pooling", "nonsense", "-i", "{words}"],
         "Invalid value for '--pooling'", 2),
        (["embed", "{bundle}", "--statc", "-i", "{words}"], "No such option: --statc", 2),
        (["embed", "{bundle}", "-i", "{words}"], "exactly one of --static, --contextual, --sentences, --type-level", 2),
        # an option of another mode is refused, never silently ignored
        (["embed", "{bundle}", "--static", "--normalize", "-i", "{words}"], "--normalize does not apply to --static",
         2),
        (["embed", "{bundle}", "--contextual", "--normalize", "-i", "{words}"], "--normalize does not apply", 2),
        (["embed", "{bundle}", "--contextual", "--unknown", "error", "-i", "{words}"],
         "--unknown does not apply to --contextual", 2),
        (["embed", "{bundle}", "--sentences", "--unknown", "zero", "-i", "{words}"],
         "--unknown does not apply to --sentences", 2),
        (["embed", "{bundle}", "--contextual", "--provider", "cuda", "--backend", "openvino", "-i", "{words}"],
         "provider 'cuda' is one of ONNX Runtime's; backend 'openvino' runs on the CPU", 2),
        (["embed", "{bundle}", "--static", "-i", "{words}", "-o", "{words}/out.npy"],
         "{words}/out.npy: {words} is a file, not a folder", 1),
    ],
)
def test_bad_requests_are_one_line_errors(
    args: list[str], message: str, code: int, tiny_bundle: Path, words_file: Path, tmp_path: Path
) -> None:
    filled = [a.format(tmp=tmp_path, bundle=tiny_bundle, words=words_file) for a in args]
    one_line_error(run(*filled), message.format(tmp=tmp_path, words=words_file), code)


@pytest.mark.parametrize("load,opened", [([], False), (["--precision", "fastest"], False),
                                         (["--backend", "onnxruntime"], True), (["--precision", "fp32"], True)])
def test_static_vectors_open_a_model_only_where_one_is_asked_for_by_name(
    tiny_bundle: Path, words_file: Path, monkeypatch: pytest.MonkeyPatch, load: list[str], opened: bool
) -> None:
    calls = []
    real = Embedder.load.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(Embedder, "load", classmethod(lambda cls, *a, **k: calls.append(a) or real(cls, *a, **k)))
    result = run("embed", tiny_bundle, "--static", *load, "-i", words_file)
    assert result.exit_code == 0, result.output
    assert bool(calls) is opened


def test_the_cpu_provider_goes_with_any_backend(tiny_bundle: Path, words_file: Path) -> None:
    result = run("embed", tiny_bundle, "--sentences", "--provider", "cpu", "--backend", "openvino", "-i", words_file)
    assert result.exit_code == 0, result.output
    assert "by openvino" in result.stderr


def test_dash_as_the_output_writes_json_lines_to_stdout(tiny_bundle: Path, words_file: Path) -> None:
    result = run("embed", tiny_bundle, "--static", "-i", words_file, "-o", "-")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["key"] for row in rows] == WORDS.split()


def test_an_os_error_reads_as_its_file_and_reason() -> None:
    from bertonnx.cli.console import one_line

    error = FileNotFoundError(2, "No such file or directory", "/proc/x.npy")
    assert one_line(error) == "/proc/x.npy: no such file or directory"


def test_existing_bundle_is_refused_without_force(tiny_model: Path, tiny_bundle: Path) -> None:
    one_line_error(run("export", tiny_model, "--out", tiny_bundle), "already exists; pass --force")


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".txt", ".bin", ".jsonl"])
def test_static_embed_every_format_round_trips(
    tiny_bundle: Path, words_file: Path, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"static{suffix}"
    result = run("embed", tiny_bundle, "--static", "-i", words_file, "-o", out)
    assert result.exit_code == 0, result.output
    keys, vectors = read_vectors(out)
    assert keys == WORDS.split()
    expected = Embedder.load(tiny_bundle, provider="cpu").static(WORDS.split())
    np.testing.assert_array_equal(vectors, expected)
    assert not partial_dir(out).exists()


@pytest.mark.parametrize("suffix,binary", [(".txt", False), (".bin", True)])
def test_word2vec_output_loads_in_gensim(tiny_bundle: Path, words_file: Path, tmp_path: Path, suffix: str,
                                        binary: bool) -> None:
    from gensim.models import KeyedVectors

    out = tmp_path / f"w2v{suffix}"
    assert run("embed", tiny_bundle, "--static", "-i", words_file, "-o", out).exit_code == 0
    loaded = KeyedVectors.load_word2vec_format(str(out), binary=binary)
    expected = Embedder.load(tiny_bundle, provider="cpu").static(["queen"])[0]
    np.testing.assert_allclose(loaded["queen"], expected, rtol=1e-6)
    assert loaded.vector_size == 32 and len(loaded.index_to_key) == 5


@pytest.mark.parametrize("suffix,binary", [(".txt", False), (".bin", True)])
@pytest.mark.parametrize("mode", ["--contextual", "--sentences"])
def test_contextual_and_sentence_rows_in_word2vec_have_unique_keys_gensim_loads(
    tiny_bundle: Path, tmp_path: Path, suffix: str, binary: bool, mode: str
) -> None:
    """Words repeat across and within lines, and so may whole lines: each row's key says where it came from."""
    import warnings

    from gensim.models import KeyedVectors

    from bertonnx.io.keys import escape_token

    lines = ["the king is wise and the queen is kind.", "the king is wise and the queen is kind.", "apple music"]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / f"rows{suffix}"
    assert run("embed", tiny_bundle, mode, "-i", source, "-o", out).exit_code == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gensim warns on a duplicate key, and keeps the last row under it
        loaded = KeyedVectors.load_word2vec_format(str(out), binary=binary)
    embedder = Embedder.load(tiny_bundle)  # the CLI's own defaults
    if mode == "--contextual":
        words = embedder.contextual(lines)
        expected_keys = [f"{word}@{line}:{index}" for line, found in enumerate(words, start=1)
                         for index, word in enumerate(found.words)]
        assert expected_keys[:3] == ["the@1:0", "king@1:1", "is@1:2"]
        expected = np.concatenate([found.vectors for found in words])
    else:
        expected_keys = [f"{escape_token(text)}@{line}" for line, text in enumerate(lines, start=1)]
        assert expected_keys[0] == "the\\sking\\sis\\swise\\sand\\sthe\\squeen\\sis\\skind.@1"
        expected = embedder.sentences(lines)
    assert loaded.index_to_key == expected_keys
    np.testing.assert_allclose(loaded.vectors, expected, rtol=1e-5, atol=1e-6)
    repeated = 7 if mode == "--contextual" else 1  # the second "is" of line 1; line 2, which repeats line 1
    np.testing.assert_allclose(loaded[expected_keys[repeated]], expected[repeated], rtol=1e-5, atol=1e-6)


def test_contextual_and_sentences_from_stdin(tiny_bundle: Path) -> None:
    result = run("embed", tiny_bundle, "--contextual", stdin=TEXTS)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["key"] for r in rows[:5]] == ["The", "king", "is", "wise", "."]
    embedder = Embedder.load(tiny_bundle)  # the CLI's own defaults
    np.testing.assert_allclose(rows[1]["vector"], embedder.contextual(["The king is wise."])[0].vectors[1], rtol=1e-5)
    sentences = run("embed", tiny_bundle, "--sentences", "--normalize", stdin=TEXTS)
    vectors = np.array([json.loads(line)["vector"] for line in sentences.stdout.splitlines()])
    assert vectors.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-6)


def test_crlf_and_missing_final_newline_are_read_as_lines(tiny_bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"king\r\nqueen\r\napple")
    out = tmp_path / "out.npy"
    assert run("embed", tiny_bundle, "--static", "-i", path, "-o", out).exit_code == 0
    assert read_vectors(out)[0] == ["king", "queen", "apple"]


def test_empty_input_writes_an_empty_output(tiny_bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    out = tmp_path / "out.npy"
    assert run("embed", tiny_bundle, "--static", "-i", path, "-o", out).exit_code == 0
    assert read_vectors(out)[1].shape == (0, 32)


def test_non_utf8_input_names_line_and_byte_offset(tiny_bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("king\nqueen\ncaf\xe9\n".encode("latin-1"))
    out = tmp_path / "out.npy"
    one_line_error(run("embed", tiny_bundle, "--static", "-i", path, "-o", out),
                   "line 3 is not valid UTF-8 (byte 14 of the input)")
    assert not out.exists()


def test_bad_lines_fail_or_are_skipped_as_asked(tiny_bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    path.write_text("king\n\n   \n🙂\nqueen\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    one_line_error(run("embed", tiny_bundle, "--static", "-i", path, "-o", out), "line 2 is blank")
    assert not out.exists()
    skipped = run("embed", tiny_bundle, "--static", "-i", path, "-o", out, "--on-error", "skip")
    assert skipped.exit_code == 0
    assert "skipped line 4: maps to the unknown token" in skipped.stderr
    assert read_vectors(out)[0] == ["king", "queen"]
    kept = run("embed", tiny_bundle, "--static", "-i", path, "-o", out, "--on-error", "skip", "--unknown", "unk",
               "--force")
    assert kept.exit_code == 0 and read_vectors(out)[0] == ["king", "🙂", "queen"]

def checkpointed_lines(out: Path) -> int:
    """Input lines up to the last checkpoint of a running job, read as a resume reads them."""
    return int(checkpoint_position(out).get("lines", 0))


@pytest.mark.slow
def test_a_killed_bulk_job_resumes_to_identical_bytes(tiny_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "corpus.txt"
    rng = np.random.default_rng(0)
    vocabulary = "the king queen man woman apple music rule kingdom wise kind great band".split()
    source.write_text(
        "\n".join(" ".join(rng.choice(vocabulary, size=rng.integers(3, 30))) for _ in range(6000)) + "\n"
    )
    args = ["embed", str(tiny_bundle), "--contextual", "-i", str(source), "--chunk-lines", "100",
            "--threads", "1"]
    reference = tmp_path / "reference.npy"
    assert run(*args, "-o", reference).exit_code == 0

    out = tmp_path / "killed.npy"
    command = [sys.executable, "-c", "from bertonnx.cli.app import main; main()", *args, "-o", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while checkpointed_lines(out) < 300 and time.monotonic() < deadline:
        assert process.poll() is None, "the job finished before it could be killed"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists(), "a killed job left an output that looks complete"
    done = checkpointed_lines(out)
    assert 300 <= done < 6000

    resumed = run(*args, "-o", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert f"{done:,} lines kept from the killed run" in resumed.stderr
    assert out.read_bytes() == reference.read_bytes()
    assert out.with_name("killed.keys.txt").read_bytes() == reference.with_name("reference.keys.txt").read_bytes()


EMBED_CHOICES = {
    "--provider": ["auto", "cpu", "cuda", "tensorrt"],
    "--backend": ["auto", "onnxruntime", "openvino"],
    "--precision": ["auto", "fastest", "fp32", "bf16", "fp16", "int8"],
    "--pooling": ["mean", "first", "last", "first_last", "max", "sum", "cls"],
    "--unknown": ["error", "unk", "zero"],
    "--long-text": ["window", "truncate", "error"],
    "--on-error": ["fail", "skip"],
}


@pytest.mark.parametrize("flag", list(EMBED_CHOICES))
def test_cli_choices_match_the_engine(tiny_bundle: Path, flag: str) -> None:
    """What each flag of `embed` takes (as the command itself lists it) and what the library takes are both the
    list written here: a choice added to, dropped from or misspelt on either side fails."""
    from bertonnx.options import (
        BACKENDS,
        LONG_TEXT_POLICIES,
        ON_ERROR_POLICIES,
        PRECISIONS,
        PROVIDERS,
        SENTENCE_POOLING_MODES,
        UNKNOWN_POLICIES,
        WORD_POOLING_MODES,
    )

    library = {
        "--provider": PROVIDERS, "--backend": BACKENDS, "--precision": PRECISIONS, "--unknown": UNKNOWN_POLICIES,
        "--pooling": WORD_POOLING_MODES + SENTENCE_POOLING_MODES[1:], "--long-text": LONG_TEXT_POLICIES,
        "--on-error": ON_ERROR_POLICIES,
    }
    assert SENTENCE_POOLING_MODES == ("mean", "cls")  # mean is also a word pooling: --pooling lists it once
    assert choices_of("embed", tiny_bundle, "--sentences", flag) == EMBED_CHOICES[flag]
    assert list(library[flag]) == EMBED_CHOICES[flag]


def test_cli_refuses_unknown_providers_and_negative_threads(tiny_bundle: Path, tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("king\n")
    one_line_error(run("embed", tiny_bundle, "--static", "--threads", "-1", "-i", words),
                   "threads must be a positive whole number, got -1", code=2)
    one_line_error(run("embed", tiny_bundle, "--static", "--provider", "tpu", "-i", words),
                   "Invalid value for '--provider': 'tpu' is not one of 'auto', 'cpu', 'cuda', 'tensorrt'", code=2)


def test_a_static_job_opens_no_model_unless_one_is_asked_for(tiny_bundle: Path, words_file: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Static vectors are table rows: the job neither opens, compiles nor times a backend for them."""
    import bertonnx.runner

    opened: list[object] = []
    real = bertonnx.runner.open_backend
    monkeypatch.setattr(bertonnx.runner, "open_backend", lambda *args, **kw: opened.append(args) or real(*args, **kw))
    result = run("embed", tiny_bundle, "--static", "-i", words_file, "-o", tmp_path / "a.npy")
    assert result.exit_code == 0, result.output
    assert opened == []
    result = run("embed", tiny_bundle, "--static", "-i", words_file, "-o", tmp_path / "b.npy",
                 "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert len(opened) == 1  # asked for by name: opened as asked
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_a_static_job_resumes_whatever_backend_began_it(tiny_bundle: Path, tmp_path: Path) -> None:
    from bertonnx.jobs.bulk import embed_file
    from bertonnx.jobs.rows import BulkOptions

    source = tmp_path / "words.txt"
    source.write_text("".join(f"{word}\n" for word in ["king", "queen", "apple", "bank"] * 300))
    out = tmp_path / "out.npy"

    def stop(done_bytes: int, lines: int) -> None:
        if lines >= 600:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_file(Embedder.load(tiny_bundle, backend="onnxruntime", threads=1), source, out,
                   BulkOptions(mode="static", chunk_lines=100), progress=stop)
    resumed = run("embed", tiny_bundle, "--static", "-i", source, "-o", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "lines kept from the killed run" in resumed.stderr
    np.testing.assert_array_equal(np.load(out), Embedder.table_only(tiny_bundle).static(source.read_text().split()))
