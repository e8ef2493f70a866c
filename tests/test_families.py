"""BERT-family encoders other than BERT: RoBERTa (byte-level BPE, positions after the pad id) and ELECTRA
(an embedding table narrower than the hidden states), each exported and checked against transformers
at token (export validation), word, sentence and static level. DistilBERT is in test_export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.models import TINY_MAX_LENGTH, build_tiny_electra, build_tiny_roberta
from helpers.reference import reference_words
from typer.testing import CliRunner

from bertonnx import Embedder
from bertonnx.cli.app import app
from bertonnx.export import export_bundle
from bertonnx.io.sinks import read_vectors
from bertonnx.options import WORD_POOLING_MODES

TEXTS = ["The king is unable to rule, kingly!", "apple music account", "How much is the Queen band?"]
WORDS_ALONE = ["king", "unable", "Queen", "kingly", "embeddings"]


@pytest.fixture(scope="module", params=["roberta", "electra"])
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """(model type, Hugging Face folder, exported bundle)."""
    build = {"roberta": build_tiny_roberta, "electra": build_tiny_electra}[request.param]
    folder = build(tmp_path_factory.mktemp("models") / request.param)
    result = export_bundle(str(folder), tmp_path_factory.mktemp("bundles") / request.param)
    assert result.manifest["source"]["model_type"] == request.param
    assert result.report.min_cosine >= 0.99999  # token and word level, both outputs, at full length too
    return request.param, folder, result.path


def torch_model(folder: Path):  # noqa: ANN201 - a transformers PreTrainedModel
    from transformers import AutoModel

    return AutoModel.from_pretrained(folder).eval()


@pytest.mark.parametrize("mode", WORD_POOLING_MODES)
def test_words_match_transformers(family: tuple[str, Path, Path], mode: str) -> None:
    _, folder, bundle = family
    model = torch_model(folder)
    for text, result in zip(TEXTS, Embedder.load(bundle, provider="cpu").contextual(TEXTS, pooling=mode)):
        words, expected = reference_words(model, folder, text, mode)
        assert list(result.words) == words
        np.testing.assert_allclose(result.vectors, expected, atol=2e-5)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_sentences_match_transformers_mean_pooling(family: tuple[str, Path, Path], backend: str) -> None:
    import torch
    from transformers import AutoTokenizer

    _, folder, bundle = family
    tokenizer, model = AutoTokenizer.from_pretrained(folder), torch_model(folder)
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    if backend == "openvino":
        pytest.importorskip("openvino")
    embedder = Embedder.load(bundle, backend=backend, precision="fp32")
    np.testing.assert_allclose(embedder.sentences(TEXTS), expected, atol=2e-5)


def test_static_vectors_are_the_table_rows_of_the_word_alone(family: tuple[str, Path, Path]) -> None:
    from transformers import AutoTokenizer

    kind, folder, bundle = family
    tokenizer = AutoTokenizer.from_pretrained(folder)
    table = torch_model(folder).get_input_embeddings().weight.detach().numpy()
    embedder = Embedder.load(bundle)
    vectors = embedder.static(WORDS_ALONE)
    assert vectors.shape == (len(WORDS_ALONE), 16 if kind == "electra" else 32)
    assert embedder.static_dim == table.shape[1]
    for word, vector in zip(WORDS_ALONE, vectors):
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        np.testing.assert_array_equal(vector, table[ids].mean(0))


def test_a_text_over_the_maximum_goes_through_windows(family: tuple[str, Path, Path]) -> None:
    embedder = Embedder.load(family[2])
    text = " ".join(["the king and queen rule the kingdom"] * TINY_MAX_LENGTH)
    result = embedder.contextual([text])[0]
    assert len(result.words) == 7 * TINY_MAX_LENGTH and not result.truncated
    assert np.isfinite(result.vectors).all()


def test_bulk_static_files_have_the_tables_width(family: tuple[str, Path, Path], tmp_path: Path) -> None:
    kind, _, bundle = family
    (tmp_path / "words.txt").write_text("\n".join(WORDS_ALONE) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["embed", str(bundle), "--static", "-i", str(tmp_path / "words.txt"), "-o", str(tmp_path / "w.npy")]
    )
    assert result.exit_code == 0, result.output
    keys, vectors = read_vectors(tmp_path / "w.npy")
    assert keys == WORDS_ALONE and vectors.shape == (5, 16 if kind == "electra" else 32)
    np.testing.assert_array_equal(vectors, Embedder.load(bundle).static(WORDS_ALONE))


def test_info_and_the_server_give_each_kind_its_width(family: tuple[str, Path, Path]) -> None:
    pytest.importorskip("uvicorn")
    from helpers.serve import serving

    kind, _, bundle = family
    static_width = 16 if kind == "electra" else 32
    info = CliRunner().invoke(app, ["info", str(bundle)])
    assert info.exit_code == 0, info.output
    assert ("static vector size" in info.output) == (kind == "electra")
    with serving(bundle) as server:
        described = server_info(server.url)
        assert (described["dim"], described["static_dim"]) == (32, static_width)
        static = server.post("/embed/words", {"texts": ["the king"], "kind": "static"}).json()
        contextual = server.post("/embed/words", {"texts": ["the king"], "kind": "contextual"}).json()
        assert static["dim"] == len(static["data"][0]["vectors"][0]) == static_width
        assert contextual["dim"] == len(contextual["data"][0]["vectors"][0]) == 32
        table = server.post("/embed/static", {"words": ["king"]}).json()
        assert table["dim"] == len(table["data"][0]["vector"]) == static_width


def server_info(url: str) -> dict:
    import httpx

    return httpx.get(url + "/info", timeout=30).json()


@pytest.mark.parametrize("recipe", ["words", "sentences"])
def test_int8_preparation_is_exact_in_float(family: tuple[str, Path, Path], recipe: str) -> None:
    """The outlier split, the smoothing and the folds before NNCF (backends/outliers.py, folds.py) hold on
    byte-level BPE and on a narrow embedding table too, the vocabulary sweep included."""
    ov = pytest.importorskip("openvino")
    from bertonnx.backends import outliers
    from bertonnx.backends.quantize import calibration_feeds, vocabulary_feeds
    from bertonnx.bundle import load_bundle
    from bertonnx.tokenize import Tokenizer

    bundle = load_bundle(family[2])
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    model = ov.Core().read_model(str(bundle.model_path))
    inputs = [param.get_any_name() for param in model.inputs]
    feeds = calibration_feeds(tokenizer, inputs)[:16]
    wide = vocabulary_feeds(tokenizer, inputs)
    assert sum(len(feed["input_ids"]) for feed in wide) > 100
    args = {"alpha": 0.75, "neurons": 8, "wide_feeds": wide} if recipe == "words" else {
        "alpha": 0.8, "neurons": 0, "down_alpha": 0.8}
    prepared = outliers.prepare(model.clone(), feeds, **args)
    for expected, found in zip(outliers._outputs(model, feeds[:4]), outliers._outputs(prepared, feeds[:4])):
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4)
    assert len(prepared.get_ordered_ops()) != len(model.get_ordered_ops())  # it did change the graph
