"""int8's word recipe on CPUs with int8 dot products: outlier neurons split off before NNCF (backends/outliers.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bertonnx.backends import outliers
from bertonnx.backends.quantize import calibration_feeds, int8_recipe, quantized_graph, vocabulary_feeds
from bertonnx.bundle import load_bundle
from bertonnx.tokenize import Tokenizer

AVX2 = frozenset({"avx2", "fma"})
ZEN4 = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
XEON = frozenset({"avx2", "avx512f", "avx512_vnni", "amx_bf16", "amx_int8"})
ALDER_LAKE = frozenset({"avx2", "avx_vnni"})


@pytest.mark.parametrize("flags", [AVX2, ZEN4, XEON, ALDER_LAKE])
def test_the_word_recipe_splits_outliers_off_on_every_cpu_class(flags: frozenset[str]) -> None:
    words = int8_recipe(flags)
    assert words.outlier_neurons == 8 and "ffn-outliers-8-float-by-vocabulary" in words.name
    assert words.keep_float == [outliers.SIDE_PATTERN]  # every MatMul int8 but the float side blocks
    assert int8_recipe(flags, "sentences").outlier_neurons == 0


def test_without_int8_dot_products_its_weights_have_7_bits() -> None:
    assert int8_recipe(AVX2).name == (
        "stdlib-prose-300/keep-gather/ffn-outliers-8-float-by-vocabulary/smoothquant-0.75-folded/7-bit-weights/v3")
    assert int8_recipe(ZEN4).name == (
        "stdlib-prose-300/keep-gather/ffn-outliers-8-float-by-vocabulary/smoothquant-0.75-folded/v3")


def _graph_and_feeds(tiny_bundle: Path) -> tuple[object, list[dict[str, np.ndarray]]]:
    ov = pytest.importorskip("openvino")
    bundle = load_bundle(tiny_bundle)
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    model = ov.Core().read_model(str(bundle.model_path))
    return model, calibration_feeds(tokenizer, [param.get_any_name() for param in model.inputs])[:24]


def _run(model: object, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return [compiled(feed)["last_hidden_state"].copy() for feed in feeds]


def test_the_split_is_exact_in_float(tiny_bundle: Path) -> None:
    model, feeds = _graph_and_feeds(tiny_bundle)
    before = _run(model, feeds)
    prepared = outliers.prepare(model, feeds, alpha=0.75, neurons=8)
    for expected, found in zip(before, _run(prepared, feeds)):
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4)
    side = [op.get_friendly_name() for op in prepared.get_ordered_ops()
            if op.get_type_name() == "MatMul" and "/outlier_float/" in op.get_friendly_name()]
    layers = load_bundle(tiny_bundle).manifest["model"]["num_layers"]
    assert len(side) == 2 * layers  # a float up- and down-projection of 8 neurons, a layer
    downs = [op for op in prepared.get_ordered_ops()
             if op.get_type_name() == "MatMul" and op.get_friendly_name().endswith("/output/dense/MatMul")
             and "attention" not in op.get_friendly_name()]
    assert [op.input_value(1).get_shape()[0] for op in downs] == [64 - 8] * layers  # the int8 one: the other 56


@pytest.mark.slow  # a real NNCF quantisation
def test_every_matmul_but_the_side_blocks_is_int8(tiny_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    import openvino as ov

    bundle = load_bundle(tiny_bundle)
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    graph = ov.Core().read_model(str(quantized_graph(bundle, tokenizer, tmp_path, int8_recipe(ZEN4))))
    int8 = [op for op in graph.get_ops()
            if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "i8"]
    layers = bundle.manifest["model"]["num_layers"]
    assert len(int8) == 6 * layers  # query, key, value, attention output, up- and down-projection


def test_every_vocabulary_entry_is_fed_alone_between_the_special_tokens(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    feeds = vocabulary_feeds(tokenizer, ["input_ids", "attention_mask"], batch=7)
    ids = np.concatenate([feed["input_ids"] for feed in feeds])
    assert ids.shape[1] == tokenizer.n_special + 1 and (np.concatenate([f["attention_mask"] for f in feeds]) == 1).all()
    assert (ids[:, 0] == tokenizer.prefix_ids[0]).all() and (ids[:, -1] == tokenizer.suffix_ids[-1]).all()
    vocab = tokenizer.backend.get_vocab()
    words = {entry for entry in vocab if not (entry.startswith("[") and entry.endswith("]"))}
    assert sorted(ids[:, 1].tolist()) == sorted(vocab[entry] for entry in words)  # each once, no [CLS]/[PAD]/...


def _down_maxima(tiny_bundle: Path) -> tuple[object, list[dict[str, np.ndarray]], list[dict[str, np.ndarray]],
                                             list[np.ndarray], list[np.ndarray]]:
    """The graph, prose feeds, vocabulary feeds, and each down-projection input's maxima over each."""
    model, feeds = _graph_and_feeds(tiny_bundle)
    bundle = load_bundle(tiny_bundle)
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    wide = vocabulary_feeds(tokenizer, [param.get_any_name() for param in model.inputs])
    downs = [ffn[3].input_value(0) for ffn in map(outliers._ffn_from, outliers._weighted_matmuls(model)) if ffn]
    prose, words = outliers._channel_maxima(model, downs, feeds), outliers._channel_maxima(model, downs, wide)
    return model, feeds, wide, prose, words


def test_the_outlier_neurons_are_the_largest_over_prose_and_vocabulary(tiny_bundle: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model, feeds, wide, prose, words = _down_maxima(tiny_bundle)
    assert any((w > p).any() for p, w in zip(prose, words))  # the vocabulary wakes some neuron more than prose
    seen: list[np.ndarray] = []
    split = outliers._split
    monkeypatch.setattr(outliers, "_split", lambda ffn, top, neurons: (seen.append(top), split(ffn, top, neurons)))
    before = _run(model, feeds[:4])
    prepared = outliers.prepare(model.clone(), feeds, alpha=0.75, neurons=8, wide_feeds=wide)
    assert len(seen) == len(prose)
    for top, p, w in zip(seen, prose, words):
        np.testing.assert_allclose(top, np.maximum(p, w), rtol=1e-5)
    for expected, found in zip(before, _run(prepared, feeds[:4])):
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4)


def test_the_sentence_recipe_smooths_the_down_projections_by_prose_and_vocabulary(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, feeds, wide, prose, words = _down_maxima(tiny_bundle)
    seen: list[np.ndarray] = []
    smooth = outliers._smooth

    def spy(matmuls: list[object], top: np.ndarray, alpha: float, fold: bool) -> None:
        name = matmuls[0].get_friendly_name()
        if name.endswith("/output/dense/MatMul") and "attention" not in name:  # a down-projection
            seen.append(top)
        smooth(matmuls, top, alpha, fold)

    monkeypatch.setattr(outliers, "_smooth", spy)
    before = _run(model, feeds[:4])
    prepared = outliers.prepare(model.clone(), feeds, alpha=0.8, neurons=0, down_alpha=0.8, wide_feeds=wide)
    assert len(seen) == len(prose)
    for top, p, w in zip(seen, prose, words):
        np.testing.assert_allclose(top, np.maximum(p, w), rtol=1e-5)
    for expected, found in zip(before, _run(prepared, feeds[:4])):
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4)
