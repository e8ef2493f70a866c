"""int8 for OpenVINO: NNCF post-training quantisation of a bundle's fp32 graph, once, into the user cache.

The calibration texts are prose from the docstrings of Python's standard library
(see calibration_texts), so int8 needs no data set and no network. The
embedding lookups (Gather) stay fp32: quantising the word-embedding table would
move every token's input, and the static path must stay exact anyway.

Two recipe kinds, one made for each use (RECIPE_KINDS): "words", made for the int8 word gate
(mean word cosine against fp32), first splits each feed-forward block's outlier neurons
off into a small float block (outliers.py) and then quantises every other MatMul (without
int8 dot products, with 7-bit weights); "sentences" quantises every MatMul, faster but rougher per
token, made for the sentence gate (bertonnx.fidelity.SENTENCE_GATE). Under `fastest` either serves
any use whose gate it passes (backends/open.py). A recipe is data (Int8Recipe) whose name keys
the cached graph and its fidelity figures: a new recipe is a new name.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import logging
import os
import sys
import sysconfig
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertonnx.backends import outliers
from bertonnx.bundle import Bundle
from bertonnx.errors import BackendError, missing_extra
from bertonnx.io.atomic import atomic_directory
from bertonnx.tokenize import Tokenizer

CALIBRATION_TEXTS = 300
OUTLIER_NEURONS = 8
OUTLIER_SMOOTHING = 0.75
"""The word recipe with int8 dot products: 8 feed-forward neurons a layer kept float, SmoothQuant alpha 0.75 on the
other MatMuls (outliers.py), the scales folded into the weights since v2 (folds.py). Chosen on all-MiniLM-L6-v2
(Zen 4) by word cosine on standard-library prose outside the calibration set, among alphas 0.5 / 0.75 / 0.95 per kind
of MatMul and 2 to 16 outlier channels; 4 and 8 neurons tied, 8 leaves a margin at no measurable cost
(benchmarks/README.md). Since v3 the neurons are the largest over the prose and over every vocabulary entry alone
(vocabulary_feeds): least word cosine 0.986 -> 0.993 on HELD_OUT_PROSE, 0.945 -> 0.986 on the bench's corpus (4 / 8 /
16 neurons on the selection prose: 0.9941 / 0.9937 / 0.9930, tied again)."""
INT8_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
"""CPU flags of int8 dot products that add u8 x s8 products in 32 bits (VNNI's vpdpbusd, AMX tiles)."""
SENTENCE_SMOOTHING = 0.8
"""The sentence recipe's SmoothQuant alpha, on every MatMul with a constant weight (see _advanced_parameters)."""
GRAPH_FILE = "model.xml"


RECIPE_KINDS = ("words", "sentences")
"""The use each int8 recipe is made for, word and token vectors or sentence vectors; it may serve the other too,
held to that use's gate."""


@dataclass(frozen=True)
class Int8Recipe:
    """How a bundle is quantised for this CPU and use; its name keys the cached graph and its fidelity figures."""

    overflow_fix: str  # NNCF's OverflowFix value: "first_layer_only" (NNCF's default) or "enable" (every layer)
    kind: str = "words"  # one of RECIPE_KINDS
    outlier_neurons: int = 0  # words: feed-forward neurons a layer keeps float on the side (outliers.py)

    @property
    def name(self) -> str:
        bits = "/7-bit-weights" if self.overflow_fix == "enable" else ""
        if self.kind == "sentences":
            smoothing = f"smoothquant-{SENTENCE_SMOOTHING}-folded-ffn-down-by-vocabulary"
            return f"stdlib-prose-300/keep-gather/histogram-ranges/{smoothing}{bits}/v3"
        side = f"ffn-outliers-{self.outlier_neurons}-float-by-vocabulary/smoothquant-{OUTLIER_SMOOTHING}-folded"
        return f"stdlib-prose-300/keep-gather/{side}{bits}/v3"

    @property
    def keep_float(self) -> list[str]:
        """Name patterns of the MatMuls left float (besides every Gather)."""
        return [] if self.kind == "sentences" else [outliers.SIDE_PATTERN]

    @property
    def graph_dir(self) -> str:
        return "int8-" + hashlib.sha256(self.name.encode()).hexdigest()[:12]


def int8_recipe(cpu_flags: Collection[str], kind: str = "words") -> Int8Recipe:
    """The recipe for a CPU and a use (RECIPE_KINDS).

    Without int8 dot products (AVX2 alone), OpenVINO multiplies u8 activations by s8 weights with vpmaddubsw, which
    adds each pair of products in 16 bits and saturates: every layer's weights are then quantised to 7 bits (NNCF's
    overflow fix), so that a pair's sum always fits. With VNNI or AMX the products add in 32 bits, and NNCF's
    default (the fix on the first layer only) keeps 8-bit weights. On both, the word recipe quantises the
    down-projections too, their outlier neurons split off first (outliers.py). Since v3 AVX2 gets it as well, in
    place of float down-projections: with 7-bit weights the integers are exact, so its figures were computed on a
    Zen 4 (probes' mean word cosine 0.9924 against 0.9886, which the word gate refused; HELD_OUT_PROSE 0.9977 /
    0.993) -- its speed on an AVX2-only CPU is `fastest`'s to time there (benchmarks/README.md)."""
    if kind not in RECIPE_KINDS:
        raise ValueError(f"int8 recipe kind must be one of {RECIPE_KINDS}, got {kind!r}")
    neurons = OUTLIER_NEURONS if kind == "words" else 0
    overflow_fix = "first_layer_only" if set(cpu_flags) & set(INT8_DOT_FLAGS) else "enable"
    return Int8Recipe(overflow_fix=overflow_fix, kind=kind, outlier_neurons=neurons)


def quantized_graph(bundle: Bundle, tokenizer: Tokenizer, cache: Path, recipe: Int8Recipe) -> Path:
    """The int8 OpenVINO graph of `bundle`: from the cache, or quantised now (tens of seconds, once)."""
    graph = cache / recipe.graph_dir / GRAPH_FILE
    if graph.is_file():
        return graph
    try:
        import nncf
    except ImportError as error:
        raise missing_extra("openvino int8 (quantising with NNCF)", "openvino", error) from error
    from bertonnx.backends.openvino import openvino_module, shared_core

    ov = openvino_module()
    model = shared_core().read_model(str(bundle.model_path))
    inputs = [param.get_any_name() for param in model.inputs]
    feeds = calibration_feeds(tokenizer, inputs)
    try:
        wide = vocabulary_feeds(tokenizer, inputs)
        if recipe.kind == "sentences":
            model = outliers.prepare(model, feeds, SENTENCE_SMOOTHING, 0, down_alpha=SENTENCE_SMOOTHING,
                                     wide_feeds=wide)
        else:
            model = outliers.prepare(model, feeds, OUTLIER_SMOOTHING, recipe.outlier_neurons, wide_feeds=wide)
        with _quiet_nncf(nncf):
            quantized = nncf.quantize(
                model,
                nncf.Dataset(feeds),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(feeds),
                ignored_scope=nncf.IgnoredScope(types=["Gather"], patterns=recipe.keep_float, validate=False),
                advanced_parameters=_advanced_parameters(recipe),
            )
    except Exception as error:  # NNCF raises many kinds; none is the user's to handle differently
        raise BackendError(f"{bundle.model_path}: NNCF could not quantise this graph ({error})") from error
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_directory(cache / recipe.graph_dir) as work:
        ov.save_model(quantized, str(work / GRAPH_FILE), compress_to_fp16=False)
    return graph


def _advanced_parameters(recipe: Int8Recipe) -> object:
    """NNCF's advanced parameters for a recipe.

    Both kinds smooth in outliers.prepare, never with NNCF's SmoothQuant. The sentence recipe quantises every
    MatMul, the feed-forward down-projections too, and was picked by its least sentence cosine to fp32 over the
    probes and HELD_OUT_PROSE on all-MiniLM-L6-v2 (Zen 4): NNCF's defaults (SmoothQuant alpha 0.95 on MatMuls,
    min/max ranges) 0.987; histogram ranges 0.989; SmoothQuant off 0.990; alpha 0.5 / 0.7 / 0.9: 0.982 / 0.992 /
    0.988; alpha 0.8 0.992, and with histogram ranges 0.995 (this recipe; its mean word cosine 0.994), at the speed
    of NNCF's defaults. Since v2 the smoothing is outliers.prepare's (the same formula and alpha, down-projections
    included) with the scales folded into the weights (folds.py), not NNCF's Multiply nodes: least sentence cosine
    0.9944 on the probes, 0.9960 on HELD_OUT_PROSE, 1.02-1.09x v1's speed (Zen 4, benchmarks/README.md). v3 smooths
    the down-projections by their inputs' maxima over every vocabulary entry too (vocabulary_feeds): 0.9948 /
    0.9973, and on the bench's corpus of random words 0.9915 -> 0.9930 (its worst word 0.922 -> 0.979), at the same
    speed."""
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    overflow_fix = OverflowFix(recipe.overflow_fix)
    own_smoothing = AdvancedSmoothQuantParameters(matmul=-1)  # outliers.prepare smoothed the graph, folded
    if recipe.kind == "words":
        return AdvancedQuantizationParameters(overflow_fix=overflow_fix, smooth_quant_alphas=own_smoothing)
    return AdvancedQuantizationParameters(
        overflow_fix=overflow_fix,
        smooth_quant_alphas=own_smoothing,
        activations_range_estimator_params=RangeEstimatorParametersSet.HISTOGRAM,
    )


@contextlib.contextmanager
def _quiet_nncf(nncf: object) -> Iterator[None]:
    """NNCF's INFO lines and progress bars never reach stdout, which may carry data (`embed -o -`): its logs are
    silenced and anything it prints goes to stderr. BERTONNX_DEBUG=1 shows its logs."""
    logger = logging.getLogger("nncf")
    level = logger.level
    if not os.environ.get("BERTONNX_DEBUG"):
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logger.setLevel(level)


def calibration_texts(count: int = CALIBRATION_TEXTS) -> list[str]:
    """Paragraphs of English prose from the docstrings of Python's own standard library.

    Calibration needs text with the statistics of real sentences: random strings of
    vocabulary words set the int8 ranges so badly that all-MiniLM-L6-v2 falls to a mean
    word cosine of 0.96 (0.997 with prose). The standard library ships with every Python,
    so this needs no data file and no network; its sources are parsed, never imported.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node) or ""
            for paragraph in doc.split("\n\n"):
                text = " ".join(paragraph.split())
                letters = sum(ch.isalpha() or ch == " " for ch in text)
                if len(text.split()) >= 6 and letters >= 0.85 * len(text):
                    texts.append(text)
        if len(texts) >= 4 * count:
            break
    if not texts:
        raise BackendError(f"{root}: no standard-library docstrings to calibrate int8 on")
    return texts[:: max(1, len(texts) // count)][:count]  # spread over the modules read


def vocabulary_feeds(tokenizer: Tokenizer, inputs: list[str], batch: int = 1024) -> list[dict[str, np.ndarray]]:
    """Every vocabulary entry alone between the model's special tokens, in (batch, 3)-ish feeds.

    Prose from one field never wakes some neurons: all-MiniLM-L6-v2 has a feed-forward neuron in its last layer
    that fires for "sex" at 2.6x the range the docstrings set, so int8 clipped it (word cosine 0.945). Every word
    the model knows, each alone, wakes each such neuron at least once, whatever the user's field; the entries
    the tokenizer treats as special, and BERT's reserved "[unusedN]" slots, are left out."""
    special = set(tokenizer.backend.get_added_tokens_decoder())
    ids = np.array(sorted(index for entry, index in tokenizer.backend.get_vocab().items()
                          if index not in special and not (entry.startswith("[") and entry.endswith("]"))),
                   dtype=np.int64)
    return [tokenizer.pack(list(ids[start:start + batch, None])).feeds(inputs) for start in range(0, ids.size, batch)]


def calibration_feeds(tokenizer: Tokenizer, inputs: list[str]) -> list[dict[str, np.ndarray]]:
    """One unpadded (1, T) feed per calibration text, cut to the model's window, for the graph's inputs."""
    feeds = []
    for pieces in tokenizer.split(calibration_texts()):
        encoded = tokenizer.pack([pieces.ids[: tokenizer.window]])
        feeds.append(encoded.feeds(inputs))
    return feeds
