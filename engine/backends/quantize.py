"""int8 for OpenVINO: NNCF post-training quantisation of a bundle's fp32 graph, once, into the user cache.

The calibration texts are built from the bundle's own vocabulary (seeded, so a
rerun quantises identically), so int8 needs no data set and no network. The
embedding lookups (Gather) stay fp32: quantising the word-embedding table would
move every token's input, and the static path must stay exact anyway. The
result is then held to the int8 fidelity gate (mean word cosine against fp32)
before it serves anything.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bertonnx.bundle import Bundle
from bertonnx.errors import BackendError, missing_extra
from bertonnx.io.atomic import atomic_directory
from bertonnx.tokenize import Tokenizer

CALIBRATION_TEXTS = 200
CALIBRATION_SEED = 20261201
GRAPH_DIR = "int8"
GRAPH_FILE = "model.xml"
_PLAIN_WORD = re.compile(r"^[a-z]{2,}$")


def quantized_graph(bundle: Bundle, tokenizer: Tokenizer, cache: Path) -> Path:
    """The int8 OpenVINO graph of `bundle`: from the cache, or quantised now (tens of seconds, once)."""
    graph = cache / GRAPH_DIR / GRAPH_FILE
    if graph.is_file():
        return graph
    try:
        import nncf
    except ImportError as error:
        raise missing_extra("openvino int8 (quantising with NNCF)", "openvino", error) from error
    from bertonnx.backends.openvino import openvino_module

    ov = openvino_module()
    model = ov.Core().read_model(str(bundle.model_path))
    feeds = calibration_feeds(tokenizer, [param.get_any_name() for param in model.inputs])
    try:
        quantized = nncf.quantize(
            model,
            nncf.Dataset(feeds),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(feeds),
            ignored_scope=nncf.IgnoredScope(types=["Gather"], validate=False),
        )
    except Exception as error:  # NNCF raises many kinds; none is the user's to handle differently
        raise BackendError(f"{bundle.model_path}: NNCF could not quantise this graph ({error})") from error
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_directory(cache / GRAPH_DIR) as work:
        ov.save_model(quantized, str(work / GRAPH_FILE), compress_to_fp16=False)
    return graph


def calibration_texts(tokenizer: Tokenizer, count: int = CALIBRATION_TEXTS) -> list[str]:
    """Seeded texts of 8 to 120 plain words drawn from the vocabulary, with some punctuation."""
    vocabulary = sorted(word for word in tokenizer.backend.get_vocab() if _PLAIN_WORD.match(word))
    if len(vocabulary) < 10:
        vocabulary = sorted(w for w in tokenizer.backend.get_vocab() if w.isalpha()) or ["the"]
    rng = np.random.default_rng(CALIBRATION_SEED)
    lengths = np.clip(rng.lognormal(mean=3.0, sigma=0.7, size=count), 8, 120).astype(int)
    texts = []
    for length in lengths:
        words = [vocabulary[i] for i in rng.integers(0, len(vocabulary), size=length)]
        for at in rng.integers(4, length + 4, size=max(1, length // 12)):
            words.insert(min(int(at), len(words)), rng.choice([",", ".", "and", "the", "of"]))
        text = " ".join(words)
        texts.append(text[0].upper() + text[1:] + ".")
    return texts


def calibration_feeds(tokenizer: Tokenizer, inputs: list[str]) -> list[dict[str, np.ndarray]]:
    """One unpadded (1, T) feed per calibration text, cut to the model's window, for the graph's inputs."""
    feeds = []
    for pieces in tokenizer.split(calibration_texts(tokenizer)):
        encoded = tokenizer.pack([pieces.ids[: tokenizer.window]])
        feeds.append(encoded.feeds(inputs))
    return feeds
