"""int8 for OpenVINO: NNCF post-training quantisation of a bundle's fp32 graph, once, into the user cache.

The calibration texts are prose from the docstrings of Python's standard library
(see calibration_texts), so int8 needs no data set and no network. The
embedding lookups (Gather) stay fp32: quantising the word-embedding table would
move every token's input, and the static path must stay exact anyway; so do the
feed-forward down-projections (KEEP_FLOAT). The
result is then held to the int8 fidelity gate (mean word cosine against fp32)
before it serves anything.
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

from bertonnx.bundle import Bundle
from bertonnx.errors import BackendError, missing_extra
from bertonnx.io.atomic import atomic_directory
from bertonnx.tokenize import Tokenizer

CALIBRATION_TEXTS = 300
KEEP_FLOAT = [r".*layer\.\d+/output/dense/MatMul$"]
"""BERT's feed-forward down-projections stay float: their GELU inputs carry outliers that int8
ranges clip (all-MiniLM-L6-v2's probe word cosine: 0.986 with them in int8, see benchmarks/README.md)."""
INT8_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
"""CPU flags of int8 dot products that add u8 x s8 products in 32 bits (VNNI's vpdpbusd, AMX tiles)."""
GRAPH_FILE = "model.xml"


@dataclass(frozen=True)
class Int8Recipe:
    """How a bundle is quantised for this CPU; its name keys the cached graph and its fidelity figures."""

    overflow_fix: str  # NNCF's OverflowFix value: "first_layer_only" (NNCF's default) or "enable" (every layer)

    @property
    def name(self) -> str:
        if self.overflow_fix == "enable":
            return "stdlib-prose-300/keep-gather-ffn-down/7-bit-weights/v1"
        return "stdlib-prose-300/keep-gather-ffn-down/v1"  # the recipe's name before the overflow choice existed

    @property
    def graph_dir(self) -> str:
        return "int8-" + hashlib.sha256(self.name.encode()).hexdigest()[:12]


def int8_recipe(cpu_flags: Collection[str]) -> Int8Recipe:
    """The recipe for a CPU. Without int8 dot products (AVX2 alone), OpenVINO multiplies u8 activations by s8
    weights with vpmaddubsw, which adds each pair of products in 16 bits and saturates: every layer's weights
    are then quantised to 7 bits (NNCF's overflow fix), so that a pair's sum always fits. With VNNI or AMX the
    products add in 32 bits, and NNCF's default (the fix on the first layer only) keeps 8-bit weights."""
    if set(cpu_flags) & set(INT8_DOT_FLAGS):
        return Int8Recipe(overflow_fix="first_layer_only")
    return Int8Recipe(overflow_fix="enable")


def quantized_graph(bundle: Bundle, tokenizer: Tokenizer, cache: Path, recipe: Int8Recipe) -> Path:
    """The int8 OpenVINO graph of `bundle`: from the cache, or quantised now (tens of seconds, once)."""
    graph = cache / recipe.graph_dir / GRAPH_FILE
    if graph.is_file():
        return graph
    try:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    except ImportError as error:
        raise missing_extra("openvino int8 (quantising with NNCF)", "openvino", error) from error
    from bertonnx.backends.openvino import openvino_module, shared_core

    ov = openvino_module()
    model = shared_core().read_model(str(bundle.model_path))
    feeds = calibration_feeds(tokenizer, [param.get_any_name() for param in model.inputs])
    try:
        with _quiet_nncf(nncf):
            quantized = nncf.quantize(
                model,
                nncf.Dataset(feeds),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(feeds),
                ignored_scope=nncf.IgnoredScope(types=["Gather"], patterns=KEEP_FLOAT, validate=False),
                advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix(recipe.overflow_fix)),
            )
    except Exception as error:  # NNCF raises many kinds; none is the user's to handle differently
        raise BackendError(f"{bundle.model_path}: NNCF could not quantise this graph ({error})") from error
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_directory(cache / recipe.graph_dir) as work:
        ov.save_model(quantized, str(work / GRAPH_FILE), compress_to_fp16=False)
    return graph


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


def calibration_feeds(tokenizer: Tokenizer, inputs: list[str]) -> list[dict[str, np.ndarray]]:
    """One unpadded (1, T) feed per calibration text, cut to the model's window, for the graph's inputs."""
    feeds = []
    for pieces in tokenizer.split(calibration_texts()):
        encoded = tokenizer.pack([pieces.ids[: tokenizer.window]])
        feeds.append(encoded.feeds(inputs))
    return feeds
