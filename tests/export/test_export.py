"""export_bundle on the tiny BERT (and once on the real default model)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertonnx.backends.onnxruntime import OnnxRuntimeBackend
from bertonnx.bundle import CONTEXTUAL_OUTPUT, STATIC_OUTPUT, load_bundle, sha256_file
from bertonnx.export import ExportError, ValidationError, export_bundle


def test_bundle_has_both_outputs_and_a_complete_manifest(tiny_bundle: Path) -> None:
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["onnx"]["outputs"] == {"static": STATIC_OUTPUT, "contextual": CONTEXTUAL_OUTPUT}
    assert manifest["model"] == {
        "hidden_size": 32, "embedding_size": 32, "vocab_size": manifest["model"]["vocab_size"], "max_length": 64,
        "num_layers": 2, "num_heads": 4,
    }
    assert len(manifest["source"]["weights_sha256"]) == 64
    for name, entry in manifest["files"].items():
        assert sha256_file(tiny_bundle / name) == entry["sha256"]
    assert {"torch", "onnxruntime", "tokenizers"} <= set(manifest["versions"])
    final = manifest["validation"]["final"]
    assert final["outputs"][STATIC_OUTPUT]["token_max_abs_diff"] == 0.0
    assert final["min_cosine"] >= 0.99999
    session = OnnxRuntimeBackend(tiny_bundle / "model.onnx", provider="cpu")
    assert set(session.info.outputs) == {STATIC_OUTPUT, CONTEXTUAL_OUTPUT}
    assert session.info.inputs == ("input_ids", "attention_mask", "token_type_ids")


@pytest.mark.parametrize("batch,length", [(1, 1), (3, 7), (2, 64)])
def test_dynamic_axes_accept_other_shapes_and_match_pytorch(
    tiny_bundle: Path, tiny_torch, batch: int, length: int
) -> None:
    import torch

    rng = np.random.default_rng(batch * 100 + length)
    ids = rng.integers(5, load_bundle(tiny_bundle).vocab_size, size=(batch, length)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[0, length // 2 + 1 :] = 0  # padding in the first row
    types = np.zeros_like(ids)
    session = OnnxRuntimeBackend(tiny_bundle / "model.onnx", provider="cpu")
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    with torch.inference_mode():
        expected = tiny_torch(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
        rows = tiny_torch.get_input_embeddings()(torch.from_numpy(ids)).numpy()
    static = session.run(STATIC_OUTPUT, feeds)
    hidden = session.run(CONTEXTUAL_OUTPUT, feeds)
    assert static.shape == hidden.shape == (batch, length, 32)
    np.testing.assert_array_equal(static, rows)
    real = mask.astype(bool)
    np.testing.assert_allclose(hidden[real], expected[real], atol=1e-5)


def test_static_table_is_the_word_embedding_matrix(tiny_bundle: Path, tiny_torch) -> None:
    table = load_bundle(tiny_bundle).load_table()
    np.testing.assert_array_equal(table, tiny_torch.get_input_embeddings().weight.detach().numpy())


def test_optimized_graph_keeps_static_output_exact(tiny_model: Path, tmp_path: Path) -> None:
    result = export_bundle(str(tiny_model), tmp_path / "opt", optimize=True)
    assert list(result.stages) == ["export", "optimized"]
    assert result.report.output(STATIC_OUTPUT).token_max_abs_diff == 0.0
    assert result.report.min_cosine >= 0.99999
    assert result.manifest["onnx"]["optimized"] is True


def test_int8_searches_settings_and_keeps_static_exact(tiny_model: Path, tmp_path: Path) -> None:
    steps: list[str] = []
    result = export_bundle(str(tiny_model), tmp_path / "q", quantize="int8", progress=steps.append)
    assert len(result.quant_trials) >= 4
    chosen = result.quant_trials[0]
    assert result.report == chosen.report
    # The random tiny model quantises well, so the fully quantised graph reaches the target.
    assert chosen.settings.keep_fp32 == "none"
    assert chosen.report.output(CONTEXTUAL_OUTPUT).word_mean_cosine >= 0.99
    assert {t.settings.keep_fp32 for t in result.quant_trials} == {"none", "ffn-down"}
    assert result.report.output(STATIC_OUTPUT).token_max_abs_diff == 0.0
    assert result.manifest["onnx"]["precision"] == "int8"
    assert any(step.startswith("int8 search") for step in steps)
    bundle_files = sorted(p.name for p in (tmp_path / "q").iterdir())
    assert bundle_files == ["config.json", "manifest.json", "model.onnx", "static_table.npy", "tokenizer.json"]


def test_refused_bundle_leaves_nothing_behind(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="under min_cosine=1.1"):
        export_bundle(str(tiny_model), tmp_path / "refused", min_cosine=1.1)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tiny_model: Path, tmp_path: Path) -> None:
    target = tmp_path / "b"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists; pass force=True"):
        export_bundle(str(tiny_model), target)
    assert (target / "keep.txt").read_text() == "mine"
    export_bundle(str(tiny_model), target, force=True)
    assert load_bundle(target).hidden_size == 32
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


@pytest.mark.parametrize(
    "model,message",
    [
        ("/no/such/folder", "no such folder"),
        ("./missing-model", "no such folder"),
    ],
)
def test_missing_model_folder_is_a_clear_error(model: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=message):
        export_bundle(model, tmp_path / "x")


def test_a_hub_id_without_a_network_fails_at_once_in_one_line(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import time

    with socket.socket() as closed:  # a port nothing listens on: the connection is refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache: nothing to load offline
    started = time.monotonic()
    with pytest.raises(ExportError, match=rf"someone/some-bert: cannot reach http://127.0.0.1:{port} to download it"):
        export_bundle("someone/some-bert", tmp_path / "x")
    assert time.monotonic() - started < 30  # not huggingface_hub's retries
    assert not (tmp_path / "x").exists()


def test_a_model_that_is_not_an_encoder_is_refused(tmp_path: Path) -> None:
    from transformers import GPT2Config

    folder = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(folder)
    with pytest.raises(ExportError, match="model type 'gpt2' is not a supported encoder"):
        export_bundle(str(folder), tmp_path / "x")


def test_unwritable_output_location_is_a_clear_error(tiny_model: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ExportError, match="file: exists and is not a folder, so out cannot go in it"):
        export_bundle(str(tiny_model), blocker / "bundle")
    with pytest.raises(ExportError, match=r"file/deeper: cannot create the folder for out \(Not a directory\)"):
        export_bundle(str(tiny_model), blocker / "deeper" / "bundle")
    with pytest.raises(ExportError, match="cannot write here"):
        export_bundle(str(tiny_model), Path("/proc/bertonnx-bundle"))


def test_missing_parent_folders_of_out_are_created(tiny_model: Path, tmp_path: Path) -> None:
    """As the README's first command does on a fresh clone: `--out bundles/minilm` without a bundles/ folder."""
    result = export_bundle(str(tiny_model), tmp_path / "bundles" / "nested" / "tiny")
    assert result.path == (tmp_path / "bundles" / "nested" / "tiny").resolve()
    assert (result.path / "manifest.json").is_file()


@pytest.mark.slow
def test_default_model_exports_within_fidelity(default_bundle: Path) -> None:
    manifest = json.loads((default_bundle / "manifest.json").read_text())
    assert manifest["source"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["model"]["hidden_size"] == 384
    assert manifest["model"]["vocab_size"] == 30522
    assert manifest["model"]["max_length"] == 512
    final = manifest["validation"]["final"]
    assert final["outputs"][STATIC_OUTPUT]["token_max_abs_diff"] == 0.0
    assert final["outputs"][CONTEXTUAL_OUTPUT]["token_min_cosine"] >= 0.99999
    assert final["tokens"] > 512  # the maximum-length probe was in the batch


def test_fp16_graph_keeps_fp32_inputs_outputs_and_an_exact_table(tiny_model: Path, tiny_torch, tmp_path: Path) -> None:
    import onnx

    result = export_bundle(str(tiny_model), tmp_path / "half", fp16=True)
    assert result.manifest["onnx"]["precision"] == "fp16"
    assert list(result.stages) == ["export", "fp16"]
    assert result.report.min_cosine >= 0.999
    graph = onnx.load(str(tmp_path / "half" / "model.onnx")).graph
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer)
    assert {o.type.tensor_type.elem_type for o in graph.output} == {onnx.TensorProto.FLOAT}
    table = load_bundle(tmp_path / "half").load_table()
    np.testing.assert_array_equal(table, tiny_torch.get_input_embeddings().weight.detach().numpy())


def test_quantize_and_fp16_exclude_each_other(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="exclude each other"):
        export_bundle(str(tiny_model), tmp_path / "x", quantize="int8", fp16=True)


def test_distilbert_exports_without_token_types(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    import torch
    from transformers import DistilBertConfig, DistilBertModel

    from bertonnx import Embedder

    folder = Path(shutil.copytree(tiny_model, tmp_path / "distil"))
    (folder / "model.safetensors").unlink()
    torch.manual_seed(0)
    vocab = load_bundle_vocab(folder)
    config = DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                              max_position_embeddings=64)
    DistilBertModel(config).save_pretrained(folder)
    result = export_bundle(str(folder), tmp_path / "b")
    assert result.manifest["source"]["model_type"] == "distilbert"
    assert result.manifest["onnx"]["inputs"] == ["input_ids", "attention_mask"]
    assert result.report.min_cosine >= 0.99999
    embedder = Embedder.load(tmp_path / "b", provider="cpu")
    assert embedder.contextual(["the king is wise"])[0].vectors.shape == (4, 32)


def load_bundle_vocab(folder: Path) -> int:
    return len(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"])


def _as_sentence_transformers_folder(model: Path, folder: Path, config: dict[str, object] | str) -> Path:
    """A copy of `model` laid out as a sentence-transformers model (Transformer, mean Pooling), by hand."""
    import shutil

    folder = Path(shutil.copytree(model, folder))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (folder / "sentence_bert_config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return folder


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_sentence_transformers_max_length_is_recorded_and_matches_encode(
    tiny_model: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    from bertonnx import Embedder

    assert "sentence_transformers_max_length" not in json.loads((tiny_bundle / "manifest.json").read_text())["model"]
    assert Embedder.load(tiny_bundle, backend="onnxruntime", provider="cpu").sentence_transformers_max_length is None
    folder = _as_sentence_transformers_folder(tiny_model, tmp_path / "st", {"max_seq_length": 16})
    result = export_bundle(str(folder), tmp_path / "b")
    assert result.manifest["model"]["sentence_transformers_max_length"] == 16
    emb = Embedder.load(tmp_path / "b", backend="onnxruntime", provider="cpu")
    assert emb.sentence_transformers_max_length == 16
    texts = ["the king is wise", "the king and queen rule the kingdom; the queen is kind, the man is strong " * 3,
             "how much is an apple music account? " * 2]
    assert emb.count_tokens(texts).tolist()[1:] > [16, 16]  # the long ones are cut
    found = emb.sentences(texts, max_length=emb.sentence_transformers_max_length)
    expected = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    assert _cosines(found, expected).min() >= 0.99999


@pytest.mark.parametrize(
    "config,expected",
    [
        ({"max_seq_length": 1000}, 64),  # capped at the model's own maximum
        ({"max_seq_length": None}, None),
        ({"do_lower_case": False}, None),
    ],
)
def test_sentence_transformers_max_length_read_from_the_source(
    tiny_model: Path, tmp_path: Path, config: dict[str, object], expected: int | None
) -> None:
    from bertonnx.export.convert import load_model, resolve_source

    folder = _as_sentence_transformers_folder(tiny_model, tmp_path / "st", config)
    assert load_model(resolve_source(str(folder))).sentence_transformers_max_length == expected


@pytest.mark.parametrize(
    "config,message",
    [
        ('{"max_seq_length": "long"}', "max_seq_length must be a positive whole number, found 'long'"),
        ('{"max_seq_length": 0}', "max_seq_length must be a positive whole number, found 0"),
        ("{not json", "cannot read sentence_bert_config.json"),
    ],
)
def test_a_broken_sentence_transformers_config_is_a_clear_error(
    tiny_model: Path, tmp_path: Path, config: str, message: str
) -> None:
    folder = _as_sentence_transformers_folder(tiny_model, tmp_path / "st", config)
    with pytest.raises(ExportError, match=message):
        export_bundle(str(folder), tmp_path / "b")
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_default_model_sentences_match_sentence_transformers_past_its_max_length(
    default_model: Path, default_bundle: Path
) -> None:
    """all-MiniLM-L6-v2's BERT takes 512 positions, but sentence-transformers cuts at 256: so must we, for parity."""
    from sentence_transformers import SentenceTransformer

    from bertonnx import Embedder

    emb = Embedder.load(default_bundle, backend="onnxruntime", provider="cpu")
    assert emb.sentence_transformers_max_length == 256
    words = ("The queen is one of the great bands in history, and the kingdom's embeddings are unusual. " * 60).split()
    texts = [" ".join(words[:n]) for n in range(170, 430, 6)]
    positions = emb.count_tokens(texts)  # word pieces + [CLS] and [SEP]
    kept = (positions >= 255) & (positions <= 600)
    texts = [text for text, keep in zip(texts, kept.tolist()) if keep]
    assert len(texts) >= 30 and positions[kept].min() <= 262 and positions[kept].max() >= 590
    found = emb.sentences(texts, max_length=emb.sentence_transformers_max_length)
    model = SentenceTransformer(str(default_model), device="cpu")
    assert model.max_seq_length == 256
    assert _cosines(found, model.encode(texts, convert_to_numpy=True)).min() >= 0.99999


def _run_cli(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """The installed `bertonnx` in a fresh process: warnings print once per process, and pytest captures its own."""
    command = [str(Path(sys.executable).parent / "bertonnx"), *args]
    environment = {key: value for key, value in os.environ.items() if key != "BERTONNX_DEBUG"}
    return subprocess.run(command, env={**environment, **env}, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("debug", ["", "1"])
def test_exporter_warnings_are_silenced_unless_debugging(
    tiny_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, debug: str
) -> None:
    """In-process, fast: no warning and no log record from torch.onnx, optimum or the quantiser reach the user."""
    import warnings

    monkeypatch.setenv("BERTONNX_DEBUG", debug)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("INFO"):
        warnings.simplefilter("always")
        export_bundle(str(tiny_model), tmp_path / "b", quantize="int8" if not debug else None)
    categories = {type(w.message).__name__ for w in caught}
    if debug:
        assert "TracerWarning" in categories
    else:
        assert not caught and not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")], categories


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--optimize", "--quantize", "int8"], ["--fp16"]])
def test_export_prints_no_exporter_warnings(tiny_model: Path, tmp_path: Path, flags: list[str]) -> None:
    done = _run_cli(["export", str(tiny_model), "--out", str(tmp_path / "b"), *flags])
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr.lower() and "no gpu" not in done.stderr, done.stderr


@pytest.mark.slow
def test_exporter_warnings_show_under_bertonnx_debug(tiny_model: Path, tmp_path: Path) -> None:
    done = _run_cli(["export", str(tiny_model), "--out", str(tmp_path / "b")], BERTONNX_DEBUG="1")
    assert done.returncode == 0, done.stderr
    assert "TracerWarning" in done.stderr


@pytest.mark.parametrize("umask,mode", [(0o022, 0o755), (0o077, 0o700)])
def test_bundle_permissions_follow_the_umask(tiny_model: Path, tmp_path: Path, umask: int, mode: int) -> None:
    """As `mkdir` and any other tool would: not mkdtemp's 0o700 whatever the umask."""
    before = os.umask(umask)
    try:
        path = export_bundle(str(tiny_model), tmp_path / "b").path
    finally:
        os.umask(before)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert {stat.S_IMODE(f.stat().st_mode) for f in path.iterdir()} == {mode & 0o666}


def test_a_folder_without_a_model_is_one_short_line(tmp_path: Path) -> None:
    """transformers would guess a type from the folder's name ("empty" -> mpt) or list every type it knows."""
    from helpers.cli import one_line_error, run

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    result = run("export", empty, "--out", tmp_path / "out")
    one_line_error(result, f"{empty}: expected a Hugging Face model folder with config.json, found notes.txt")
    assert len(result.stderr) < 300
    (empty / "config.json").write_text("{}")
    one_line_error(run("export", empty, "--out", tmp_path / "out"),
                   "config.json: names no model_type; expected one of bert")
