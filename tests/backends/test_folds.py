"""Scales folded into weights before int8 (backends/folds.py): exact in float, and only where they hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bertonnx.backends import folds, outliers
from bertonnx.backends.quantize import calibration_feeds
from bertonnx.bundle import load_bundle
from bertonnx.tokenize import Tokenizer

ov = pytest.importorskip("openvino")
ops = ov.opset13


def _bert(tiny_bundle: Path) -> tuple[object, list[dict[str, np.ndarray]], int]:
    bundle = load_bundle(tiny_bundle)
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    model = ov.Core().read_model(str(bundle.model_path))
    feeds = calibration_feeds(tokenizer, [param.get_any_name() for param in model.inputs])[:24]
    return model, feeds, bundle.manifest["model"]["num_layers"]


def _hidden(model: object, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return [compiled(feed)["last_hidden_state"].copy() for feed in feeds]


def _names(model: object, kind: str) -> list[str]:
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == kind]


def test_the_word_recipe_leaves_no_smoothing_or_attention_scale_behind(tiny_bundle: Path) -> None:
    model, feeds, _ = _bert(tiny_bundle)
    before = _hidden(model, feeds)
    assert any(name.endswith("attention/self/Mul") for name in _names(model, "Multiply"))  # queries times a scalar
    prepared = outliers.prepare(model.clone(), feeds, alpha=0.75, neurons=8)
    multiplies = _names(prepared, "Multiply")
    assert not [name for name in multiplies if name.endswith(("/smooth", "attention/self/Mul", "attention/self/Mul_1"))]
    for expected, found in zip(before, _hidden(prepared, feeds)):
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4)


def test_the_sentence_recipe_keeps_a_multiply_only_behind_each_activation(tiny_bundle: Path) -> None:
    model, feeds, layers = _bert(tiny_bundle)
    before = _hidden(model, feeds)
    prepared = outliers.prepare(model.clone(), feeds, alpha=0.8, neurons=0, down_alpha=0.8)
    smooth = [name for name in _names(prepared, "Multiply") if name.endswith("/smooth")]
    assert len(smooth) == layers and all(name.endswith("/output/dense/MatMul/smooth") for name in smooth)
    assert not [name for name in _names(prepared, "MatMul") if "outlier_float" in name]
    for expected, found in zip(before, _hidden(prepared, feeds)):
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4)


def test_a_fold_that_does_not_hold_on_the_graph_is_not_used(tiny_bundle: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    model, feeds, layers = _bert(tiny_bundle)
    before = _hidden(model, feeds)
    into_values = folds._into_values
    monkeypatch.setattr(folds, "_into_values", lambda source, scale: into_values(source, scale * scale))  # wrong
    prepared = outliers.prepare(model.clone(), feeds, alpha=0.75, neurons=8)
    smooth = [name for name in _names(prepared, "Multiply") if name.endswith("/smooth")]
    assert len(smooth) == 3 * layers  # queries/keys/values, attention output, up-projection: Multiply nodes again
    for expected, found in zip(before, _hidden(prepared, feeds)):
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4)


def _scaled_linear(axis: int) -> tuple[object, object]:
    """x @ W + b times a scalar read from x's shape at `axis` (batch: varies; width: fixed), as BERT scales."""
    x = ops.parameter([-1, 4], np.float32, name="x")
    rng = np.random.default_rng(0)
    linear = ops.add(ops.matmul(x, ops.constant(rng.normal(size=(4, 3)).astype(np.float32)), False, False),
                     ops.constant(rng.normal(size=3).astype(np.float32)))
    size = ops.gather(ops.shape_of(x), ops.constant(np.int64(axis)), ops.constant(np.int64(0)))
    scalar = ops.divide(ops.constant(np.float32(1.0)), ops.sqrt(ops.convert(size, "f32")))
    out = ops.multiply(linear, scalar)
    return ov.Model([out], [x]), out


def _f32(model: object) -> object:
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


@pytest.mark.parametrize(("axis", "folded"), [(1, 1), (0, 0)])
def test_a_scalar_folds_only_if_it_is_the_same_on_every_feed(axis: int, folded: int) -> None:
    model, _ = _scaled_linear(axis)
    feeds = [{"x": np.ones((rows, 4), dtype=np.float32) * rows} for rows in (1, 3)]
    before = [_f32(model)(feed)[0].copy() for feed in feeds]
    found = folds.scalar_multiplies(model)
    assert len(found) == 1
    assert folds.fold_scalars(found, outliers._values(model, [scalar for _, scalar in found], feeds)) == folded
    model.validate_nodes_and_infer_types()
    assert len(_names(model, "Multiply")) == 1 - folded
    for feed, expected in zip(feeds, before):
        np.testing.assert_allclose(_f32(model)(feed)[0], expected, rtol=1e-5)
