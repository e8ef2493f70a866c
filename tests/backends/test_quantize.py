"""OpenVINO int8 through NNCF: the recipe follows the CPU's int8 arithmetic, and its name keys what is cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bertonnx.backends.choose import Machine
from bertonnx.backends.gate import fidelity_entry
from bertonnx.backends.quantize import int8_recipe, quantized_graph
from bertonnx.bundle import load_bundle
from bertonnx.tokenize import Tokenizer

AVX2 = frozenset({"avx2", "fma"})
ZEN4 = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
XEON = frozenset({"avx2", "avx512f", "avx512_vnni", "amx_bf16", "amx_int8"})
ALDER_LAKE = frozenset({"avx2", "avx_vnni"})


@pytest.mark.parametrize(
    "flags,overflow_fix",
    [(AVX2, "enable"), (ZEN4, "first_layer_only"), (XEON, "first_layer_only"), (ALDER_LAKE, "first_layer_only")],
)
def test_weights_fit_16_bit_pair_sums_only_where_the_cpu_needs_it(flags: frozenset[str], overflow_fix: str) -> None:
    assert int8_recipe(flags).overflow_fix == overflow_fix


def test_the_recipe_names_its_overflow_choice_and_keys_the_cache(tiny_bundle: Path) -> None:
    avx2, vnni = int8_recipe(AVX2), int8_recipe(ZEN4)
    assert "7-bit-weights" in avx2.name and "7-bit" not in vnni.name
    assert avx2.graph_dir != vnni.graph_dir
    bundle = load_bundle(tiny_bundle)
    keys = [fidelity_entry(bundle, "openvino", "int8", {"openvino": "x"},
                           Machine(frozenset({"openvino", "nncf"}), (), flags))[1] for flags in (AVX2, ZEN4)]
    assert [key["recipe"] for key in keys] == [avx2.name, vnni.name]


def _int8_weights(graph: Path) -> list[np.ndarray]:
    import openvino as ov

    model = ov.Core().read_model(str(graph))
    return [op.get_data() for op in model.get_ops()
            if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "i8"]


@pytest.mark.slow  # a real NNCF quantisation per recipe
@pytest.mark.parametrize("flags,widest", [(AVX2, 64), (ZEN4, 127)])
def test_the_quantised_weights_are_as_wide_as_the_recipe_says(
    tiny_bundle: Path, tmp_path: Path, flags: frozenset[str], widest: int
) -> None:
    pytest.importorskip("nncf")
    bundle = load_bundle(tiny_bundle)
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    weights = _int8_weights(quantized_graph(bundle, tokenizer, tmp_path, int8_recipe(flags)))
    assert weights, "the graph holds no int8 weights"
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == widest
