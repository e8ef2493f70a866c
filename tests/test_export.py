"""export_bundle on the tiny BERT (and once on the real default model)."""

from __future__ import annotations

import json
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
    with pytest.raises(ValidationError, match="under --min-cosine 1.1"):
        export_bundle(str(tiny_model), tmp_path / "refused", min_cosine=1.1)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tiny_model: Path, tmp_path: Path) -> None:
    target = tmp_path / "b"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists; pass --force"):
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


def test_a_model_that_is_not_an_encoder_is_refused(tmp_path: Path) -> None:
    from transformers import GPT2Config

    folder = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(folder)
    with pytest.raises(ExportError, match="model type 'gpt2' is not a supported encoder"):
        export_bundle(str(folder), tmp_path / "x")


def test_unwritable_output_location_is_a_clear_error(tiny_model: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ExportError, match="file: exists and is not a folder, so --out cannot go in it"):
        export_bundle(str(tiny_model), blocker / "bundle")
    with pytest.raises(ExportError, match=r"file/deeper: cannot create the folder for --out \(Not a directory\)"):
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
