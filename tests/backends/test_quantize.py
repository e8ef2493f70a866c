"""OpenVINO int8 through NNCF: the recipe follows the CPU's int8 arithmetic, and its name keys what is cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bertonnx.backends.choose import Machine
from bertonnx.backends.gate import fidelity_entry
from bertonnx.backends.outliers import SIDE_PATTERN
from bertonnx.backends.quantize import Int8Recipe, int8_recipe, quantized_graph
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


@pytest.mark.parametrize("flags", [AVX2, ZEN4, XEON, ALDER_LAKE])
def test_each_use_has_a_recipe_of_its_own(flags: frozenset[str]) -> None:
    words, sentences = int8_recipe(flags), int8_recipe(flags, "sentences")
    assert (words.kind, sentences.kind) == ("words", "sentences")
    assert words.overflow_fix == sentences.overflow_fix  # the CPU's arithmetic decides that for both
    assert words.keep_float == [SIDE_PATTERN]  # outliers split off, every other MatMul int8
    assert sentences.keep_float == []  # the sentence recipe: every MatMul int8
    assert words.name != sentences.name and words.graph_dir != sentences.graph_dir
    assert ("7-bit-weights" in sentences.name) is (flags == AVX2)


def test_everything_that_makes_a_recipe_is_in_its_name() -> None:
    recipes = [Int8Recipe(fix, kind, neurons) for fix in ("first_layer_only", "enable")
               for kind, neurons in (("words", 8), ("words", 4), ("sentences", 0))]
    assert len({recipe.name for recipe in recipes}) == len({recipe.graph_dir for recipe in recipes}) == len(recipes)
    assert int8_recipe(ZEN4).name == (
        "stdlib-prose-300/keep-gather/ffn-outliers-8-float-by-vocabulary/smoothquant-0.75-folded/v3")
    with pytest.raises(ValueError, match="words"):
        int8_recipe(ZEN4, "tokens")


def test_each_recipe_has_fidelity_figures_of_its_own(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    vnni = Machine(frozenset({"openvino", "nncf"}), (), ZEN4)
    (words_path, words), (sentences_path, sentences) = [
        fidelity_entry(bundle, "openvino", "int8", {"openvino": "x"}, vnni, kind) for kind in ("words", "sentences")]
    assert words_path != sentences_path and words_path.name.endswith("-openvino-int8.json")
    assert (words["recipe"], sentences["recipe"]) == (int8_recipe(ZEN4).name, int8_recipe(ZEN4, "sentences").name)
    bf16_path, bf16 = fidelity_entry(bundle, "openvino", "bf16", {"openvino": "x"}, vnni, "sentences")
    assert bf16["recipe"] is None and bf16_path.name.endswith("-openvino-bf16.json")  # a kind means int8 only


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


@pytest.mark.slow  # two real NNCF quantisations
def test_both_recipes_quantise_the_down_projections_without_vnni_too(tiny_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    bundle = load_bundle(tiny_bundle)
    tokenizer = Tokenizer.from_file(bundle.tokenizer_path, bundle.max_length)
    words, sentences = (len(_int8_weights(quantized_graph(bundle, tokenizer, tmp_path, int8_recipe(AVX2, kind))))
                        for kind in ("words", "sentences"))
    # query, key, value, attention output, up- and down-projection: the word recipe's side blocks stay float
    assert words == sentences == 6 * bundle.manifest["model"]["num_layers"] > 0
