"""Each int8 recipe in the bench, beside bf16 and fp32, with the sentence figure the sentence gate reads."""

from __future__ import annotations

import numpy as np
import pytest

from bertonnx.backends.choose import Machine
from bertonnx.backends.onnxruntime import CPU
from bertonnx.benchmarks.contract import Outputs
from bertonnx.benchmarks.fidelity import compare
from bertonnx.benchmarks.systems import SENTENCE_RECIPE, Availability, BundleFacts, plan_systems
from bertonnx.errors import OptionError

ZEN4 = Machine(frozenset({"onnxruntime", "openvino", "nncf"}), (CPU,),
               frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}))
NO_NNCF = Machine(frozenset({"onnxruntime", "openvino"}), (CPU,), ZEN4.cpu_flags)


def _int8_rows(machine: Machine, backends: tuple[str, ...]) -> dict[str, str]:
    available = Availability((CPU,), torch_cuda=False, sentence_transformers=False, machine=machine)
    specs, _ = plan_systems([BundleFacts("/b", "fp32", False)], "/m", ("cpu",), 2, available, backends)
    return {s.label: s.recipe for s in specs if s.kind == "bertonnx" and s.precision == "int8"}


def test_all_shows_both_int8_recipes() -> None:
    assert _int8_rows(ZEN4, ("all",)) == {"bertonnx openvino int8": "",
                                          "bertonnx openvino int8 (sentences recipe)": "sentences"}
    assert _int8_rows(ZEN4, (f"openvino:{SENTENCE_RECIPE}",)) == {
        "bertonnx openvino int8 (sentences recipe)": "sentences"}
    assert _int8_rows(NO_NNCF, ("all",)) == {}  # no NNCF: neither recipe, each said why (test_bench)


def test_an_unknown_recipe_is_refused() -> None:
    with pytest.raises(OptionError, match="BACKEND:PRECISION"):
        _int8_rows(ZEN4, ("openvino:int8/tokens",))


def test_sentence_fidelity_pools_each_inputs_tokens_as_sentence_transformers_does() -> None:
    rng = np.random.default_rng(1)
    expected = rng.normal(size=(8, 4)).astype(np.float32)  # (N, H): tokens of 2 inputs, 3 then 5
    found = expected + rng.normal(scale=0.5, size=expected.shape).astype(np.float32)
    counts = np.array([3, 5])
    words = np.zeros((2, 4), dtype=np.float32)
    fidelity = compare("pytorch", Outputs(expected, words), Outputs(found, words), 2, counts)
    slow = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
            for a, b in ((expected[:3].mean(0), found[:3].mean(0)), (expected[3:].mean(0), found[3:].mean(0)))]
    assert fidelity.sentence_min_cosine == pytest.approx(min(slow), rel=1e-5)
    assert fidelity.sentence_mean_cosine == pytest.approx(sum(slow) / 2, rel=1e-5)
    assert compare("pytorch", Outputs(expected, words), Outputs(found, words), 2).sentence_min_cosine is None
    short = compare("pytorch", Outputs(expected, words), Outputs(found, words), 2, np.array([3, 4]))
    assert short.sentence_min_cosine is None  # runs that do not cover the tokens: no figure, never a wrong one
