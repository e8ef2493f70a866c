"""The sentence gate's figures: mean-pooled sentence cosines against a slow reference, on held-out prose."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bertonnx.backends.gate import precision_gate
from bertonnx.fidelity import (
    HELD_OUT_PROSE,
    SENTENCE_GATE,
    Gate,
    GateResult,
    OutputFidelity,
    sentence_cosines,
)


def test_sentence_cosines_match_a_slow_reference() -> None:
    rng = np.random.default_rng(0)
    expected = rng.normal(size=(3, 5, 4)).astype(np.float32)  # (B, T, H)
    found = expected + rng.normal(scale=0.3, size=expected.shape).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    slow = []
    for row in range(3):
        a = expected[row, mask[row] == 1].mean(axis=0).astype(np.float64)
        b = found[row, mask[row] == 1].mean(axis=0).astype(np.float64)
        slow.append(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    np.testing.assert_allclose(sentence_cosines(expected, found, mask), slow, rtol=1e-6)
    found[2, 1:] = 100.0  # padding never counts
    np.testing.assert_allclose(sentence_cosines(expected, found, mask)[2], slow[2], rtol=1e-6)


def _figures(sentence_min: float | None) -> OutputFidelity:
    return OutputFidelity("last_hidden_state", 0.1, 0.95, 0.99, 0.1, 0.96, 0.995, sentence_min,
                          None if sentence_min is None else 0.998)


def test_the_sentence_gate_reads_the_least_sentence_cosine() -> None:
    assert precision_gate("sentences", None) == SENTENCE_GATE == Gate("sentence_min_cosine", 0.99)
    assert precision_gate("sentences", 0.95) == Gate("sentence_min_cosine", 0.95)  # --min-fidelity replaces it
    assert GateResult("int8", "fp32", _figures(0.991), SENTENCE_GATE).passed
    refused = GateResult("int8", "fp32", _figures(0.989), SENTENCE_GATE)
    assert not refused.passed
    with pytest.raises(Exception, match="sentence min cosine 0.98900"):
        refused.check()
    assert "sentence cosine min 0.98900" in refused.summary()


def test_a_figure_never_measured_never_passes() -> None:
    """Export's validation has no sentence figures: held to the sentence gate, it is refused, not read as 0."""
    result = GateResult("int8", "PyTorch fp32, at export", _figures(None), SENTENCE_GATE)
    assert math.isnan(result.figure) and not result.passed
    assert "sentence cosine min" not in result.summary() and result.summary().endswith("FAILED")
    back = GateResult.from_dict({k: v for k, v in result.to_dict().items() if not k.startswith("sentence_")})
    assert back.fidelity.sentence_min_cosine is None  # figures cached before sentence figures still read


def test_held_out_prose_is_not_calibration_text() -> None:
    """int8 is judged on text it was never calibrated on: no held-out sentence, nor any 6-word run of one, occurs in
    the standard-library prose that calibrates it."""
    from bertonnx.backends.quantize import calibration_texts

    calibration = " ".join(calibration_texts()).lower()
    for text in HELD_OUT_PROSE:
        words = text.lower().split()
        for start in range(len(words) - 5):
            assert " ".join(words[start : start + 6]) not in calibration, text
